"""Management-card redundancy: the standby MIO kept in sync with the active one.

The active supervisor binds a ROUTER on the chassis's "sync" endpoint (CURVE, like every
socket); the standby connects, says hello and gets a snapshot; from then on every change is
pushed to it and acked:
- the running configuration (its text and version: what `show configuration` prints, so it
  applies unchanged at a takeover, without the startup-config's exec commands);
- the packet cards' roles and the NPU's SPI owners (session recovery swaps them);
- the CRL cache: each verified CRL with its index and version (sent once per new version;
  after that only its fetch times), so the new active neither fetches again nor makes the
  cards take a new version of what they hold;
- the CMP statistics and history (`show cmp statistics`, `show cmp history`);
- before a CMP request goes out, the name of the certificate whose journal entry was just
  written: the active waits for the standby's ack, so a takeover never finds a request on
  the wire that the standby does not know.
The certificate store, the CMP journal and the expiry-trap marks live on /flash, which the
two MIOs share here as StarOS mirrors the standby's flash (the simulator's run directory).

The backplane decides who is active and grants the epoch (chassis/mgmt_pair.py); the
standby's takeover itself is Supervisor.take_over (supervisor/runner.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from chassis.ipc import keys as keyring
from chassis.ipc.messages import Request
from chassis.ipc.rpc import RpcError

if TYPE_CHECKING:
    from chassis.ipc.sockets import Incoming
    from supervisor.runner import Supervisor

log = logging.getLogger("ha")


INDEX_TIMEOUT_S = 10.0  # a push with a CRL index: a million serials is 20 MB


def snapshot(sup: Supervisor) -> dict:
    """What the standby needs to take over (everything not on the shared /flash) but the
    CRLs, which go apart (crl_marks): their indexes are large."""
    return {
        "config": sup.engine.config_text(),
        "version": sup.engine.version,
        "roles": {str(s): c.role for s, c in sup.cards.cards.items()},
        "owners": {str(k): v for k, v in sup.recovery.owners.items()},
        "cmp_stats": sup.certs.cmp.stats(),
    }


def crl_entries(sup: Supervisor) -> dict:
    """The CRL cache's entries by key (none before the first `ca-crl` or CDP fetch)."""
    cache = sup.crls._cache
    return {} if cache is None else {e.key: e for e in cache.entries()}


def crl_marks(entries: dict) -> dict[str, tuple]:
    """What moves in a CRL entry: a new version means a new index to send."""
    return {k: (e.version, e.last_fetch, e.last_result, e.next_refresh)
            for k, e in entries.items()}  # fmt: skip


class Replicator:
    """The active side: pushes changes to the standby and waits for its acks."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.chan = None
        self.peer: bytes | None = None  # the standby's identity, once it said hello
        self.sent: dict = {}  # the last snapshot the standby acked
        self.crls_sent: dict[str, tuple] = {}  # crl_marks the standby acked
        self.pushing: asyncio.Task | None = None

    def start(self, endpoint: str) -> None:
        self.chan = self.sup.node.router(endpoint)
        self.sup._listen(self.chan, self.on_message)

    def on_message(self, inc: Incoming, env) -> None:
        msg = env.msg
        if isinstance(msg, Request) and msg.method == "sync.hello":
            entries = crl_entries(self.sup)
            cache = self.sup.crls._cache
            self.peer, self.sent, self.crls_sent = inc.peer, snapshot(self.sup), crl_marks(entries)
            crls = [cache.export(e) for e in entries.values()]
            self.chan.reply(inc, True, {**self.sent, "crls": crls})
            log.info("standby MIO %s in sync (configuration version %d)",
                     inc.peer.decode(errors="replace"), self.sent["version"])  # fmt: skip

    def tick(self) -> None:
        """Push what changed since the standby's last ack (one push in flight at a time).
        The configuration is rendered only when its version moved."""
        if self.peer is None or (self.pushing is not None and not self.pushing.done()):
            return
        sup, sent, update = self.sup, self.sent, {}
        roles = {str(s): c.role for s, c in sup.cards.cards.items()}
        owners = {str(k): v for k, v in sup.recovery.owners.items()}
        stats = sup.certs.cmp.stats()
        if (sup.engine.version, roles, owners, stats) != (
            sent.get("version"),
            sent.get("roles"),
            sent.get("owners"),
            sent.get("cmp_stats"),
        ):
            update["state"] = snapshot(sup)
        entries = crl_entries(sup)
        marks = crl_marks(entries)
        if marks != self.crls_sent:
            cache = sup.crls._cache
            update["crls"] = [
                cache.export(entries[k], index=self.crls_sent.get(k, (None,))[0] != m[0])
                for k, m in marks.items() if self.crls_sent.get(k) != m
            ]  # fmt: skip
            update["crl_gone"] = [k for k in self.crls_sent if k not in marks]
        if update:
            self.pushing = sup._spawn(self._push(update, marks))

    async def _push(self, update: dict, marks: dict) -> None:
        indexes = any(e.get("index") is not None for e in update.get("crls", []))
        if await self.push(update, timeout=INDEX_TIMEOUT_S if indexes else None):
            self.sent = update.get("state", self.sent)
            if "crls" in update:
                self.crls_sent = marks

    async def push(self, update: dict, timeout: float | None = None) -> bool:
        """Send one update and wait for the ack (bounded: 10 heartbeat intervals unless
        told); False when the standby did not answer (it may be gone: the active goes on
        alone)."""
        if self.peer is None or self.chan is None:
            return False
        try:
            await self.sup.pending.call(self.chan, Request("sync.update", update), to=self.peer,
                                        timeout=timeout or self.sup.interval * 10)  # fmt: skip
            return True
        except (TimeoutError, RpcError) as exc:
            log.warning("standby MIO did not ack: %s", exc or "no answer")
            return False

    async def before_cmp(self, cert_name: str) -> None:
        """A CMP request whose journal entry matters is about to go out: the standby must
        know of it first (and of the statistics that count it)."""
        state = snapshot(self.sup)
        if await self.push({"cmp": cert_name, "state": state}):
            self.sent = state


class Follower:
    """The standby side: follows the active's snapshot and updates, acks each."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.state: dict = {}
        self.crls: dict[str, dict] = {}  # the active's CRL cache, exported, by key
        self.cmp: list[str] = []  # CMP requests the active announced
        self.chan = None

    async def run(self, endpoint: str) -> None:
        sup = self.sup
        server = keyring.public_key(sup.run.keys, "mgmt")
        self.chan = sup.node.dealer(endpoint, server, f"mio-sync-{sup.slot}")
        sup._listen(self.chan, self.on_message)
        while not self.state:
            try:
                state = await sup.pending.call(self.chan, Request("sync.hello", {}),
                                               timeout=INDEX_TIMEOUT_S)  # fmt: skip
                self.crls = {_key(e): e for e in state.pop("crls", [])}
                self.state = state
                log.info("in sync with the active MIO (configuration version %s)",
                         self.state.get("version"))  # fmt: skip
            except (TimeoutError, RpcError):
                await asyncio.sleep(sup.interval)

    def on_message(self, inc: Incoming, env) -> None:
        msg = env.msg
        if isinstance(msg, Request) and msg.method == "sync.update":
            if "state" in msg.args:
                self.state = msg.args["state"]
            for exported in msg.args.get("crls", []):
                old = self.crls.get(_key(exported), {})
                self.crls[_key(exported)] = {"index": old.get("index"), **exported}
                if "index" in exported:
                    log.info("CRL %s version %s from the active MIO", _key(exported),
                             exported.get("version"))  # fmt: skip
            for key in msg.args.get("crl_gone", []):
                self.crls.pop(key, None)
            if "cmp" in msg.args:
                self.cmp.append(str(msg.args["cmp"]))
            self.chan.reply(inc, True, {"version": self.state.get("version")})

    def taken_over(self) -> dict:
        """Everything followed, for Supervisor.take_over."""
        return {**self.state, "crls": list(self.crls.values())} if self.state else {}

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None


def _key(exported: dict) -> str:
    """A CRL entry's key (supervisor/pki/crl.py Entry.key): its name, or its URL."""
    return exported["name"] if exported.get("name") is not None else exported["url"]
