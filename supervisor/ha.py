"""Management-card redundancy: the standby MIO kept in sync with the active one.

The active supervisor binds a ROUTER on the chassis's "sync" endpoint (CURVE, like every
socket); the standby connects, says hello and gets a snapshot; from then on every change is
pushed to it and acked:
- the running configuration (its text and version: what `show configuration` prints, so it
  applies unchanged at a takeover, without the startup-config's exec commands);
- the packet cards' roles and the NPU's SPI owners (session recovery swaps them);
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


def snapshot(sup: Supervisor) -> dict:
    """What the standby needs to take over (everything not on the shared /flash)."""
    return {
        "config": sup.engine.config_text(),
        "version": sup.engine.version,
        "roles": {str(s): c.role for s, c in sup.cards.cards.items()},
        "owners": {str(k): v for k, v in sup.recovery.owners.items()},
    }


class Replicator:
    """The active side: pushes changes to the standby and waits for its acks."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.chan = None
        self.peer: bytes | None = None  # the standby's identity, once it said hello
        self.sent: dict = {}  # the last snapshot the standby acked
        self.pushing: asyncio.Task | None = None

    def start(self, endpoint: str) -> None:
        self.chan = self.sup.node.router(endpoint)
        self.sup._listen(self.chan, self.on_message)

    def on_message(self, inc: Incoming, env) -> None:
        msg = env.msg
        if isinstance(msg, Request) and msg.method == "sync.hello":
            self.peer, self.sent = inc.peer, snapshot(self.sup)
            self.chan.reply(inc, True, self.sent)
            log.info("standby MIO %s in sync (configuration version %d)",
                     inc.peer.decode(errors="replace"), self.sent["version"])  # fmt: skip

    def tick(self) -> None:
        """Push what changed since the standby's last ack (one push in flight at a time).
        The configuration is rendered only when its version moved."""
        if self.peer is None or (self.pushing is not None and not self.pushing.done()):
            return
        sup, sent = self.sup, self.sent
        roles = {str(s): c.role for s, c in sup.cards.cards.items()}
        owners = {str(k): v for k, v in sup.recovery.owners.items()}
        if (sup.engine.version, roles, owners) == (
            sent.get("version"),
            sent.get("roles"),
            sent.get("owners"),
        ):
            return
        self.pushing = sup._spawn(self._push(snapshot(sup)))

    async def _push(self, state: dict) -> None:
        if await self.push({"state": state}):
            self.sent = state

    async def push(self, update: dict) -> bool:
        """Send one update and wait for the ack (bounded); False when the standby did not
        answer (it may be gone: the active goes on alone)."""
        if self.peer is None or self.chan is None:
            return False
        try:
            await self.sup.pending.call(self.chan, Request("sync.update", update),
                                        to=self.peer, timeout=self.sup.interval * 10)  # fmt: skip
            return True
        except (TimeoutError, RpcError) as exc:
            log.warning("standby MIO did not ack: %s", exc or "no answer")
            return False

    async def before_cmp(self, cert_name: str) -> None:
        """A CMP request whose journal entry matters is about to go out: the standby must
        know of it first."""
        await self.push({"cmp": cert_name})


class Follower:
    """The standby side: follows the active's snapshot and updates, acks each."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.state: dict = {}
        self.cmp: list[str] = []  # CMP requests the active announced
        self.chan = None

    async def run(self, endpoint: str) -> None:
        sup = self.sup
        server = keyring.public_key(sup.run.keys, "mgmt")
        self.chan = sup.node.dealer(endpoint, server, f"mio-sync-{sup.slot}")
        sup._listen(self.chan, self.on_message)
        while not self.state:
            try:
                self.state = await sup.pending.call(self.chan, Request("sync.hello", {}),
                                                    timeout=sup.interval * 10)  # fmt: skip
                log.info("in sync with the active MIO (configuration version %s)",
                         self.state.get("version"))  # fmt: skip
            except (TimeoutError, RpcError):
                await asyncio.sleep(sup.interval)

    def on_message(self, inc: Incoming, env) -> None:
        msg = env.msg
        if isinstance(msg, Request) and msg.method == "sync.update":
            if "state" in msg.args:
                self.state = msg.args["state"]
            if "cmp" in msg.args:
                self.cmp.append(str(msg.args["cmp"]))
            self.chan.reply(inc, True, {"version": self.state.get("version")})

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None
