"""The management card process: asyncio + zmq loop; the only I/O of the supervisor.

    python -m supervisor.runner --run-dir DIR --slot N

It says hello to the backplane (which grants the epoch and the role), applies the
boot configuration, then binds the control ROUTER (cards), the state PUB (per-card
Clone streams) and the CLI ROUTER, behind a ZAP handler started first.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import secrets
import signal
import sys

from chassis.clock import MonotonicClock, WallClock
from chassis.ipc import keys as keyring
from chassis.ipc.buffers import return_big_buffers
from chassis.ipc.envelope import Envelope
from chassis.ipc.messages import (
    Ack,
    CardStates,
    CardStatus,
    CredUpdate,
    Error,
    Heartbeat,
    Hello,
    NpuBinds,
    Power,
    ProcEvent,
    Ready,
    Register,
    Reply,
    Request,
    Update,
)
from chassis.ipc.rpc import Pending, RpcError
from chassis.ipc.rundir import RunDir
from chassis.ipc.sockets import Channel, Incoming, Node
from supervisor.cards import MANAGEMENT, CardManager
from supervisor.certificates import Certificates
from supervisor.cli import CommandFailure, Engine
from supervisor.crls import CrlService
from supervisor.fanout import STREAMS, Fanout
from supervisor.ha import Follower, Replicator
from supervisor.ike import commands as ike_commands
from supervisor.pki import cmp_commands, crl_commands
from supervisor.pki import commands as pki_commands
from supervisor.pki.enrollment import CmpService
from supervisor.pki.service import PkiService
from supervisor.recovery import SessionRecovery
from supervisor.workers import Workers

log = logging.getLogger("supervisor")

BEACON_EVERY = 5  # heartbeat intervals between sequence beacons
VERSION = {
    "image_version": "21.28.0-sim",
    "build": "segw-sim 0.1.0",
    "description": "StarOS SeGW chassis simulator",
}


def card_topic(slot: int) -> bytes:
    # NUL-terminated so that topic "slot-1" never prefix-matches "slot-10".
    return f"slot-{slot}\0".encode()


BEACON_TOPIC = b"beacon\0"


def lab_placeholders(text: str, lab: dict) -> str:
    """`${lab.ca.url}` and friends: the lab's addresses are chosen when the chassis starts."""

    def value(m: re.Match) -> str:
        return str(lab.get(m.group(1), {}).get(m.group(2), m.group(0)))

    return re.sub(r"\$\{lab\.(\w+)\.(\w+)\}", value, text)


class System:
    """What the CLI engine may ask of the running supervisor (see supervisor.cli)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.platform = sup.manifest["platform"]

    def card_table(self) -> list[dict]:
        return self.sup.card_table()

    def card_reboot(self, slot: int, force: bool) -> str:
        return self.sup.reboot(slot)

    def version(self) -> dict:
        return dict(VERSION)

    @property
    def pki(self) -> PkiService:
        return self.sup.certs.pki

    def credentials_changed(self) -> None:
        self.sup.credentials_changed()

    def credential_report(self, kind: str, name: str | None) -> list[dict]:
        return self.sup.certs.credential_report(kind, name)

    async def cmp_fetch(self, card: int | None, name: str, ca: str) -> str:
        return await self.sup.certs.cmp_fetch(card, name, ca)

    async def ike_sas(self, method: str = "ike.sas") -> dict[int, list[dict]]:
        return await self.sup.ike_sas(method)

    async def ipsec_inject(self, spi: bytes, count: int, size: int) -> int:
        """Inner packets through a child: the card is the one named in the SPI's top byte."""
        slot = spi[0]
        card = self.sup.cards.cards.get(slot)
        if card is None or not card.in_service:
            raise CommandFailure(f"Failure: no packet card in service in slot {slot}")
        try:
            return await self.sup.pending.call(
                self.sup.ctl, Request("ipsec.inject", {"spi": spi, "count": count, "size": size}),
                to=f"slot-{slot}".encode(), timeout=10,
            )  # fmt: skip
        except (TimeoutError, RpcError) as exc:
            raise CommandFailure(f"Failure: {exc or 'the card did not answer'}") from None

    def propagation(self) -> list[float]:
        return list(self.sup.fanout.propagation)

    async def card_switch(self, src: int | None, dst: int | None) -> str:
        """A planned management-card switchover: the backplane makes the standby active;
        this MIO steps down and comes back as the standby."""
        try:
            return await self.sup.pending.call(
                self.sup.bp, Request("mgmt.switch", {"from": src, "to": dst}), timeout=5
            )
        except (TimeoutError, RpcError) as exc:
            raise CommandFailure(f"Failure: {exc or 'the backplane did not answer'}") from None

    async def card_migrate(self, src: int, dst: int) -> str:
        return await self.sup.recovery.migrate(src, dst)

    async def card_halt(self, slot: int, force: bool) -> str:
        """An active card migrates its SAs to the standby first, then goes offline."""
        sup = self.sup
        card = sup.cards.cards.get(slot)
        if card is None or slot not in sup.packet_slots:
            raise CommandFailure(f"Failure: slot {slot} holds no packet card")
        if card.state == "offline":
            raise CommandFailure(f"Failure: card {slot} is already offline")
        standby = sup.recovery.standby()
        if card.state == "active" and standby is not None and standby != slot:
            return await sup.recovery.migrate(slot, standby, halt=True)
        if card.state == "active" and not force:
            raise CommandFailure(
                f"Failure: no standby card in service to migrate card {slot} to; "
                "-force halts it and its tunnels are lost"
            )
        sup.halt(slot)
        return f"Info: card {slot} is offline"

    def crl_report(self, name: str | None) -> list[dict]:
        return self.sup.crls.report(name)

    def crl_refetch(self, name: str) -> None:
        self.sup.crls.refetch(name)

    @property
    def cmp(self) -> CmpService:
        return self.sup.certs.cmp

    async def cmp_enroll(self, kind: str, args: dict, boot: bool, card: int | None = None) -> str:
        return await self.sup.certs.cmp_enroll(kind, args, boot, card=card)


class Supervisor:
    def __init__(self, run: RunDir, slot: int) -> None:
        self.run, self.slot = run, slot
        self.manifest = run.manifest()
        self.topology = self.manifest["topology"]
        timers = self.manifest["timers"]
        self.interval, self.liveness = timers["interval"], timers["liveness"]
        me = next(c for c in self.topology["cards"] if c["slot"] == slot)
        self.role = me["role"]
        self.node = Node(run.keys, f"{me['type']}-{slot}", key_name="mgmt")
        self.mono, self.wall = MonotonicClock(), WallClock()
        self.cards = CardManager.from_topology(self.topology, self.interval, self.liveness)
        self.packet_slots = [s for s, c in self.cards.cards.items() if c.type not in MANAGEMENT]
        self.fanout = Fanout(self.packet_slots, self._publish, self._unicast)
        self.platform = self.manifest["platform"]
        self.workers = Workers()
        self.certs = Certificates(self)
        self.crls = CrlService(self)
        self.recovery = SessionRecovery(self)
        self.replicator: Replicator | None = None  # active: keeps the standby MIO in sync
        self.follower: Follower | None = None  # standby: follows the active MIO
        self.bp_seen = 0  # messages read from the backplane
        self.bp_reply_at = 0  # bp_seen at its latest answer to us
        self.mgmt_events: dict[int, tuple[int, ProcEvent]] = {}  # slot -> (bp_seen, event)
        self.crl_refresh: asyncio.Task | None = None
        self.template_status: dict[int, dict] = {}  # slot -> crypto template -> ready / why not
        self.card_counters: dict[int, dict] = {}
        self.npu_binds: list[dict] = []
        self.npu_owners: dict[int, int] = {}  # SPI slot bits served by another card
        self.map_owner: dict[str, int | None] = {}  # crypto map -> the slot that initiates it
        self.card_maps: dict[int, list[str]] = {}  # what each card says it initiates
        self.telling: set[int] = set()  # slots with an assignment in flight
        self.asking: asyncio.Task | None = None  # card.seen: a question to the backplane
        self.services: list[dict] = []  # bound wsg-services: address, port, context/template
        self.engine = Engine(
            System(self),
            plugins=[
                pki_commands.register,
                cmp_commands.register,
                ike_commands.register,
                crl_commands.register,
            ],  # fmt: skip
        )
        self.published_version = -1
        self.sessions: dict[str, object] = {}
        self.background: set[asyncio.Task] = set()
        self.pending = Pending()
        self.bp: Channel | None = None
        self.ctl: Channel | None = None
        self.pub: Channel | None = None
        self.cli: Channel | None = None
        self.stopping = asyncio.Event()

    # --- start-up ------------------------------------------------------------

    async def serve(self) -> None:
        keys = self.run.keys
        ep = self.manifest["endpoints"]
        self.bp = self.node.dealer(
            ep["backplane"], keyring.public_key(keys, "backplane"), f"mgmt-{self.slot}"
        )
        self._listen(self.bp, self.on_backplane)
        hello = await self.pending.call(
            self.bp, Hello(self.slot, self.role, os.getpid()), timeout=10
        )
        self.node.epoch, self.role = hello["epoch"], hello["role"]
        log.info("slot %d: %s, epoch %d", self.slot, self.role, self.node.epoch)
        self.background.add(asyncio.create_task(self._beat_backplane()))
        # The CMP modules take 0.6 s and more to import: in a thread from the start (not
        # awaited: boot goes on), so that a later enrollment or a takeover's resumed request
        # rarely finds the event loop importing them.
        self.background.add(
            asyncio.ensure_future(
                asyncio.to_thread(importlib.import_module, "supervisor.pki.cmp.client")
            )
        )
        if self.role == "active":
            boot = lab_placeholders(
                self.topology.get("startup_config", ""), self.manifest.get("lab", {})
            )
            await self._activate(hello["slots"], boot)
        elif "sync" in ep:  # the standby follows the active (supervisor/ha.py)
            self.follower = Follower(self)
            self.background.add(asyncio.create_task(self.follower.run(ep["sync"])))
        await self.stopping.wait()
        for t in list(self.background):
            t.cancel()
        self.workers.close()
        self.node.close()

    async def _activate(self, slots: list[dict], config: str, state: dict | None = None) -> None:
        """Serve as the active MIO: apply ``config`` (the startup-config at boot, the
        replicated running configuration at a takeover), restore the store, resume CMP
        requests, bind the cards' and the CLI's sockets and publish."""
        ep = self.manifest["endpoints"]
        self._adopt_slots(slots, self.mono.now())
        self.cards.cards[self.slot].state, self.cards.cards[self.slot].pid = "active", os.getpid()
        if state:  # roles and SPI owners as the old active left them (session recovery)
            for slot, role in (state.get("roles") or {}).items():
                if int(slot) in self.cards.cards and int(slot) in self.packet_slots:
                    self.cards.cards[int(slot)].role = role
            self.recovery.owners = {int(k): int(v) for k, v in (state.get("owners") or {}).items()}
            self.certs.cmp.restore_stats(state.get("cmp_stats") or {})
        for err in await self.engine.apply_boot_async(config):
            # The line itself may hold key data: log its number and the reason only.
            log.warning("boot configuration line %d: %s", err.line_no, err.message)
        await self.certs.restore_from_store()
        self.node.start_auth()
        self.ctl = self.node.router(ep["control"])
        self.pub = self.node.publisher(ep["state"])
        self.cli = self.node.router(ep["cli"])
        if "sync" in ep:
            self.replicator = Replicator(self)
            self.replicator.start(ep["sync"])
            self.certs.cmp.before_send = self.replicator.before_cmp
        self.certs.resume_cmp()  # after the sockets: the cards re-attach meanwhile
        if state and state.get("crls"):
            self.crls.restore(state["crls"])  # before publish_config: its ca-crl lines
        self.publish_config()
        self.sync_credentials()
        self._listen(self.ctl, self.on_card)
        self._listen(self.cli, self.on_cli)
        self.background.add(asyncio.create_task(self._tick()))

    def _adopt_slots(self, slots: list[dict], now: float) -> None:
        """The slots as the backplane answered (hello, status): packet cards started, the
        management cards' roles and states."""
        for entry in slots:
            if entry["pid"] and entry["slot"] in self.packet_slots:
                self.cards.on_started(entry["slot"], entry["pid"], now)
            elif entry["slot"] in self.cards.cards and entry["type"] in MANAGEMENT:
                card = self.cards.cards[entry["slot"]]  # roles as the backplane has them now
                card.pid, card.state, card.role = entry["pid"], entry["state"], entry["role"]
        # The backplane's events read in the same batch as its answer but after it were
        # handled before the awaiting coroutine resumed: newer than ``slots``, so again.
        for seen, event in list(self.mgmt_events.values()):
            if seen > self.bp_reply_at:
                self._mgmt_event(event)

    async def take_over(self, inc: Incoming, args: dict) -> None:
        """The backplane made this standby MIO the active one (the old one failed or is
        being switched over): serve with the replicated state, at the new epoch."""
        started = self.mono.now()
        self.role, self.node.epoch = "active", int(args["epoch"])
        follower, self.follower = self.follower, None
        state = follower.taken_over() if follower is not None else {}
        if follower is not None:
            follower.close()
        status = await self.pending.call(self.bp, Request("status", {}), timeout=5)
        config = state.get("config") or lab_placeholders(
            self.topology.get("startup_config", ""), self.manifest.get("lab", {})
        )  # never synced: the startup-config, as a restarted MIO would
        await self._activate(status["slots"], config, state)
        took = round((self.mono.now() - started) * 1e3, 1)
        log.warning("active from epoch %d (%s): configuration version %s, %d CMP requests "
                    "announced, serving after %.1f ms", self.node.epoch, args.get("why", ""),
                    state.get("version"), len(follower.cmp) if follower else 0, took)  # fmt: skip
        self.bp.reply(inc, True, {"took_ms": took, "cards": len(self.packet_slots)})

    async def _beat_backplane(self) -> None:
        """Both MIOs heartbeat the backplane: it detects a hung active and promotes the
        standby (chassis/mgmt_pair.py)."""
        while True:
            synced = self.follower is not None and bool(self.follower.state)
            self.bp.send(Heartbeat(self.mono.now(), int(synced)))  # state_seq: in sync
            await asyncio.sleep(self.interval)

    def _listen(self, channel: Channel, handler) -> None:
        channel.listen(lambda inc: self._dispatch(channel, inc, handler))

    def _dispatch(self, channel: Channel, inc: Incoming, handler) -> None:
        if inc.error is not None:
            log.warning("bad message from %r: %s", inc.peer, inc.error.reason)
            channel.send(Error(inc.error.ref or 0, inc.error.reason), to=inc.peer)
            return
        if channel is self.bp:  # the backplane's messages, in order (see _adopt_slots)
            self.bp_seen += 1
            if isinstance(inc.env.msg, Reply):
                self.bp_reply_at = self.bp_seen
        if self.pending.resolve(inc):
            return
        try:
            handler(inc, inc.env)
        except Exception as exc:  # a bad request must not take the management card down
            log.exception("while handling %s", inc.env.type)
            channel.send(Error(inc.env.id, f"internal error: {type(exc).__name__}"), to=inc.peer)

    # --- the packet cards --------------------------------------------------

    def _card_slot(self, peer: bytes | None) -> int | None:
        name = (peer or b"").decode(errors="replace")
        if name.startswith("slot-") and name[5:].isdigit() and int(name[5:]) in self.packet_slots:
            return int(name[5:])
        return None

    def on_card(self, inc: Incoming, env: Envelope) -> None:
        slot, msg, now = self._card_slot(inc.peer), env.msg, self.mono.now()
        if slot is None:
            self.ctl.send(Error(env.id, f"unknown card identity {inc.peer!r}"), to=inc.peer)
        elif isinstance(msg, Heartbeat):
            self.cards.on_heartbeat(slot, msg.sent)
        elif isinstance(msg, Register):
            fresh = self.cards.cards[slot].boot_id != msg.boot_id
            why = (
                self.cards.on_register(slot, msg.pid, msg.boot_id, now)
                if msg.slot == slot
                else "slot mismatch"
            )
            if why is None and fresh:  # a new process holds nothing yet
                self.fanout.forget(slot)
                self.certs.vsm_fetch.pop(slot, None)
                self.card_counters.pop(slot, None)
            role = self.cards.cards[slot].role if slot in self.cards.cards else ""
            self.ctl.reply(inc, why is None, {"epoch": self.node.epoch, "role": role}, why or "")
            log.info("slot %d: register pid %d %s", slot, msg.pid, why or "accepted")
        elif isinstance(msg, Request) and msg.method == "snapshot":
            stream = msg.args.get("stream", "config")
            if stream not in STREAMS:
                self.ctl.reply(inc, False, error=f"no stream {stream!r}")
            else:
                self.ctl.reply(inc, True, self.fanout.snapshot(slot, stream))
        elif isinstance(msg, Ready):
            self.fanout.on_ack(slot, "config", msg.seq, now)
            self.fanout.on_ack(slot, "cred", msg.cred_seq, now)
            self.cards.on_ready(slot, msg.seq, now)
        elif isinstance(msg, CardStatus):
            self.template_status[slot] = msg.templates
            self.card_counters[slot] = msg.counters
            self.card_maps[slot] = list(msg.maps)
            self.update_npu()
        elif isinstance(msg, Ack):
            self.fanout.on_ack(slot, msg.stream, msg.seq, now)
            if msg.stream == "config":
                self.cards.on_ack(slot, msg.seq)
        elif isinstance(msg, Request) and msg.method == "ping":
            self.ctl.reply(inc, True, msg.args)
        elif isinstance(msg, Request) and msg.method == "ckpt":  # session recovery
            self._spawn(self.recovery.relay(inc, slot, msg.args))
        elif isinstance(msg, Request) and msg.method == "crl-fetch":
            self._spawn(self._crl_fetch(inc, msg.args))
        elif isinstance(msg, Request) and msg.method == "cred-fetch":
            try:
                self.ctl.reply(inc, True, self.certs.fetch_bundle(slot, msg.args))
            except CommandFailure as exc:
                self.ctl.reply(inc, False, error=exc.message)
        else:
            self.ctl.send(Error(env.id, f"supervisor does not handle {env.type}"), to=inc.peer)

    async def _crl_fetch(self, inc: Incoming, args: dict) -> None:
        """A card needs the CRL of a certificate's CDP: one fetch per URL, shared."""
        try:
            self.ctl.reply(inc, True, await self.crls.fetch_for_card(args))
        except (KeyError, TypeError, ValueError) as exc:
            self.ctl.reply(inc, False, error=f"bad crl-fetch request: {exc}")

    def _publish(self, slot: int, update: Update, seq: int) -> None:
        self.pub.send(update, topic=card_topic(slot), seq=seq)

    def _unicast(self, slot: int, update: CredUpdate, seq: int) -> None:
        self.ctl.send(update, to=f"slot-{slot}".encode(), seq=seq)

    def publish_config(self) -> None:
        if self.engine.version == self.published_version:
            return
        self.published_version = self.engine.version
        projection = self.engine.projection()
        self.crls.sync(projection["config"])
        for index, slot in enumerate(sorted(self.packet_slots)):
            self.fanout.set_config(slot, "config", projection)
            # each card hands out its own share of every IP pool (cards/pools.py)
            self.fanout.set_config(
                slot, "pool-share", {"index": index, "of": len(self.packet_slots)}
            )
        contexts = projection["config"].get("context", {}).items()
        self.services = [
            {**svc["bind"], "template": f"{ctx_name}/{svc['bind']['template']}"}
            for ctx_name, ctx in contexts
            for svc in ctx.get("wsg-service", {}).values()
            if "bind" in svc
        ] + [
            {**cmap["bind"], "template": f"{ctx_name}/crypto-map/{name}", "map": True}
            for ctx_name, ctx in contexts
            for name, cmap in ctx.get("crypto-map", {}).items()
            if "bind" in cmap and "peer" in cmap
        ]
        self.update_npu()

    def update_npu(self) -> None:
        """Tell the NPU where the services listen and which cards can serve each of them:
        new SAs go only to cards that hold the template's credentials (cards/templates.py)."""
        binds = [
            {
                **svc,
                "slots": [
                    slot
                    for slot in self.packet_slots
                    if self.template_status.get(slot, {}).get(svc["template"]) == "ready"
                ],
            }
            for svc in self.services
        ]
        owners = dict(self.recovery.owners)
        if binds != self.npu_binds or owners != self.npu_owners:
            self.npu_binds, self.npu_owners = binds, owners
            self.bp.send(NpuBinds(binds, owners))
        self.assign_maps(binds)

    def assign_maps(self, binds: list[dict]) -> None:
        """One card initiates each crypto map: its owner stays while it can serve the map,
        else the lowest ready slot takes over. A card whose reported list differs from what it
        should initiate is told again (it reports its list in every CardStatus)."""
        for bind in binds:
            if bind.get("map"):
                owner = self.map_owner.get(bind["template"])
                if owner is not None and self.cards.cards[owner].state == "unreachable":
                    continue  # cut off but alive: it still holds the map's SA
                able = [s for s in bind["slots"] if self.cards.cards[s].in_service]
                if self.map_owner.get(bind["template"]) not in able:
                    self.map_owner[bind["template"]] = min(able, default=None)
        maps = {b["template"] for b in binds if b.get("map")}
        self.map_owner = {m: s for m, s in self.map_owner.items() if m in maps}
        for slot in self.packet_slots:
            want = sorted(m for m, s in self.map_owner.items() if s == slot)
            have = self.card_maps.get(slot, [])
            if want != have and self.cards.cards[slot].in_service and slot not in self.telling:
                self._spawn(self._tell_maps(slot, want))

    async def _tell_maps(self, slot: int, maps: list[str]) -> None:
        self.telling.add(slot)
        try:
            got = await self.pending.call(
                self.ctl, Request("ike.maps", {"own": maps}), to=f"slot-{slot}".encode(), timeout=2
            )
            self.card_maps[slot] = list(got)
            log.info("slot %d initiates crypto maps: %s", slot, ", ".join(maps) or "none")
        except (TimeoutError, RpcError) as exc:
            log.warning("slot %d: crypto map assignment not taken: %s", slot, exc)
        finally:
            self.telling.discard(slot)

    def sync_credentials(self) -> None:
        """Push the store's certificates and keys to every packet card (ASR 5500 only)."""
        wanted = self.certs.pki.pushed_credentials() if self.platform == "asr5500" else {}
        in_service = [s for s in self.packet_slots if self.cards.cards[s].in_service]
        self.fanout.push_creds(wanted, in_service, self.mono.now())

    async def _tick(self) -> None:
        step = self.interval / 4
        beat = beacon = expiry = 0.0
        while True:
            await asyncio.sleep(step)
            self.ctl.pump()  # deadlines only after every queued heartbeat
            now = self.mono.now()
            for slot in self.cards.check(now):
                card = self.cards.cards[slot]
                log.warning("slot %d: %s: %s", slot, card.state, card.failure)
                if card.state == "failed":
                    self.card_maps.pop(slot, None)
                    self.assign_maps(self.npu_binds)  # its crypto maps go to another card
                    self.recovery.on_failed(slot)  # the standby takes its SAs over
            late = self.cards.late(now)
            if late and (self.asking is None or self.asking.done()):
                self.asking = self._spawn(self._ask_backplane(late))
            if now - beat >= self.interval:
                beat = now
                for slot, card in self.cards.cards.items():
                    if (
                        slot in self.packet_slots
                        and card.state in ("booting", "active", "standby")
                        and card.boot_id
                    ):
                        self.ctl.send(Heartbeat(now), to=f"slot-{slot}".encode())
            if now - beacon >= self.interval * BEACON_EVERY:
                beacon = now
                self.pub.send(self.fanout.beacon(), topic=BEACON_TOPIC)
            self.publish_config()
            self.recovery.publish()
            if self.replicator is not None:
                self.replicator.tick()
            if now - expiry >= 1.0:
                expiry = now
                try:
                    self.certs.expiry_check()
                except Exception:  # a bad certificate must not stop the heartbeats
                    log.exception("certificate expiry check")
                if self.crl_refresh is None or self.crl_refresh.done():
                    self.crl_refresh = self._spawn(self.crls.refresh())
            if self.cards.take_changed():
                self.bp.send(CardStates(self.cards.states()))

    # --- the backplane -------------------------------------------------------

    async def _ask_backplane(self, slots: list[int]) -> None:
        """When did the backplane last hear these cards (their heartbeats on its channel)?
        A card it still hears is cut off from us, not hung (supervisor/cards.py)."""
        try:
            seen = await self.pending.call(
                self.bp, Request("card.seen", {"slots": slots}), timeout=self.interval
            )
        except (TimeoutError, RpcError) as exc:
            log.debug("card.seen: %s", exc)
            return
        for slot, sent in seen.items():
            if isinstance(sent, int | float):
                self.cards.on_backplane_seen(int(slot), sent)

    def on_backplane(self, inc: Incoming, env: Envelope) -> None:
        msg, now = env.msg, self.mono.now()
        if isinstance(msg, Request) and msg.method == "mgmt.takeover":
            self._spawn(self.take_over(inc, msg.args))
            return
        if isinstance(msg, Request) and msg.method == "mgmt.step-down":
            # We were active, hung, and another MIO took over meanwhile (a higher epoch):
            # stop obeying ourselves; the backplane starts this slot again as the standby.
            log.warning("stepping down: MIO epoch %d is newer than ours (%d)",
                        msg.args.get("epoch", 0), self.node.epoch)  # fmt: skip
            self.stopping.set()
            return
        if not isinstance(msg, ProcEvent) or msg.slot not in self.cards.cards:
            return
        card = self.cards.cards[msg.slot]
        if card.type in MANAGEMENT:
            self.mgmt_events[msg.slot] = (self.bp_seen, msg)
            self._mgmt_event(msg)
        elif msg.event == "started":
            self.cards.on_started(msg.slot, msg.pid, now)
        elif msg.event == "exited":
            self.cards.on_exited(msg.slot, msg.pid, now, msg.code)
            log.warning("slot %d: process %d exited (%s)", msg.slot, msg.pid, msg.code)
            if self.cards.cards[msg.slot].state == "failed":
                self.recovery.on_failed(msg.slot)

    def _mgmt_event(self, msg: ProcEvent) -> None:
        """The other management card started, said hello (with its role) or exited."""
        card = self.cards.cards[msg.slot]
        card.pid = msg.pid if msg.event != "exited" else None
        card.role = msg.role or card.role
        card.state = {"started": "booting", "hello": card.role, "exited": "failed"}.get(
            msg.event, card.state
        )

    # --- what the CLI asks -----------------------------------------------------

    def card_table(self) -> list[dict]:
        rows = self.cards.table(self.mono.now())
        for row in rows:
            if row["slot"] in self.packet_slots:
                row["cred_seq"] = self.fanout.acked["cred"][row["slot"]]
                row["templates"] = self.template_status.get(row["slot"], {})
                # a failed, offline or booting card serves nothing, whatever it last said;
                # an unreachable one (an IPC partition) still does: its last word stands
                card = self.cards.cards[row["slot"]]
                serving = card.in_service or card.state == "unreachable"
                row["counters"] = self.card_counters.get(row["slot"], {}) if serving else {}
            if self.platform == "asr9000" and row["type"] == "vsm":
                fetched = self.certs.vsm_fetch.get(row["slot"])
                row["fetch"] = fetched
                row["attach"] = (
                    f"cert {fetched['name']} v{fetched['generation']}" if fetched else "no cert"
                )
        return rows

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def credentials_changed(self) -> None:
        if self.ctl is None:  # still booting: the first sync follows the binds
            return
        self.sync_credentials()
        self.crls.credentials_changed(self.engine.projection()["config"])
        if self.platform == "asr9000":
            self.certs.auto_fetch()

    async def ike_sas(self, method: str = "ike.sas") -> dict[int, list[dict]]:
        """Every card in service's IKE SAs ("ike.sas") or CHILD_SAs ("ipsec.sas"), asked at
        once; a card that does not answer in time maps to None (the show says so)."""
        slots = [s for s in self.packet_slots if self.cards.cards[s].in_service]
        # cut off from us (an IPC partition): its tunnels are up but it cannot be asked
        cut_off = {s: None for s in self.packet_slots if self.cards.cards[s].state == "unreachable"}

        async def ask(slot: int):
            try:
                return slot, await self.pending.call(
                    self.ctl, Request(method, {}), to=f"slot-{slot}".encode(), timeout=5
                )
            except (TimeoutError, RpcError) as exc:
                log.warning("slot %d: no answer to %s: %s", slot, method, exc or "timeout")
                return slot, None

        return dict(await asyncio.gather(*(ask(s) for s in slots))) | cut_off

    async def _ike_keys(self, inc: Incoming) -> None:
        """The keys of every IKE SA and CHILD_SA of the cards in service, for the key file of
        `chassis capture --keys` (written 0600 by that client). A request of the CLI socket's
        own, not a CLI command: keys never reach a CLI session, `show` output or a log line."""
        by_card = await self.ike_sas("ike.keys")
        sas = [sa for slot in sorted(by_card) for sa in by_card[slot] or []]
        log.debug("ike.keys: keys of %d IKE SAs to a capture client", len(sas))
        self.cli.reply(inc, True, sas)

    def halt(self, slot: int) -> None:
        """Take a packet card out of service and stop its process (`card halt`)."""
        self.cards.set_state(slot, "offline", self.mono.now())
        self.bp.send(Power(slot, "stop"))
        self.card_maps.pop(slot, None)
        self.assign_maps(self.npu_binds)

    def reboot(self, slot: int) -> str:
        card = self.cards.cards.get(slot)
        if card is None:
            raise CommandFailure(f"Failure: slot {slot} is empty")
        if card.type in MANAGEMENT:
            raise CommandFailure(f"Failure: card {slot} is a management card; use card switch")
        self.cards.on_reboot(slot, self.mono.now())
        self.bp.send(Power(slot, "restart"))
        self.card_maps.pop(slot, None)
        self.assign_maps(self.npu_binds)  # its crypto maps go to another card
        return f"Info: card {slot} is rebooting"

    def _cli_done(self, inc: Incoming, sid: str, session, res) -> None:
        if res.close:
            self.sessions.pop(sid, None)
        reply = {
            "output": res.output,
            "data": res.data,
            "error": res.error,
            "close": res.close,
            "prompt": session.prompt,
        }
        self.cli.reply(inc, True, reply)
        self.publish_config()

    def on_cli(self, inc: Incoming, env: Envelope) -> None:
        msg = env.msg
        if isinstance(msg, Request) and msg.method == "ping":  # round-trip probe (benchmarks)
            self.cli.reply(inc, True, msg.args)
            return
        if isinstance(msg, Request) and msg.method == "ike.keys":  # chassis capture --keys
            self._spawn(self._ike_keys(inc))
            return
        if isinstance(msg, Request) and msg.method == "clock.warp":  # fault: move the wall clock
            seconds = msg.args.get("seconds")
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
                self.cli.reply(inc, False, error="clock.warp needs a number of seconds")
                return
            self.wall.warp(float(seconds))
            for slot in self.packet_slots:  # the cards check certificates on this clock too
                self.fanout.set_config(slot, "clock", {"offset": self.wall.offset})
            log.warning(
                "wall clock warped by %+.0f s, now %s", seconds, self.wall.datetime().isoformat()
            )
            self.cli.reply(
                inc, True, {"now": self.wall.datetime().isoformat(), "offset": self.wall.offset}
            )
            return
        if not isinstance(msg, Request) or not msg.method.startswith("cli."):
            self.cli.send(Error(env.id, f"CLI socket does not handle {env.type}"), to=inc.peer)
            return
        args = msg.args
        if msg.method == "cli.open":
            card = args.get("card")
            if card is not None and card not in self.packet_slots:
                self.cli.reply(inc, False, error=f"--card {card}: no packet card in that slot")
                return
            sid = secrets.token_hex(8)
            self.sessions[sid] = session = self.engine.new_session(now=self.wall.datetime)
            session.card = card  # the VSM that card-specific commands (cmp) act for
            self.cli.reply(inc, True, {"session": sid, "prompt": session.prompt})
            return
        session = self.sessions.get(args.get("session"))
        if session is None:
            self.cli.reply(inc, False, error="no such CLI session")
        elif msg.method == "cli.exec":
            res = session.execute(str(args.get("line", "")))
            if res.pending is None:
                self._cli_done(inc, args["session"], session, res)
            else:  # the command waits on I/O; other sessions and the cards go on meanwhile
                task = asyncio.create_task(res.pending())
                self.background.add(task)
                task.add_done_callback(self.background.discard)
                task.add_done_callback(
                    lambda t: self._cli_done(inc, args["session"], session, t.result())
                )
        elif msg.method == "cli.complete":
            self.cli.reply(inc, True, session.complete(str(args.get("text", ""))))
        elif msg.method == "cli.help":
            self.cli.reply(inc, True, [list(h) for h in session.help(str(args.get("text", "")))])
        elif msg.method == "cli.close":
            self.sessions.pop(args["session"], None)
            self.cli.reply(inc, True)
        else:
            self.cli.reply(inc, False, error=f"unknown CLI method {msg.method}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervisor.runner")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--slot", type=int, required=True)
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.DEBUG if os.environ.get("CHASSIS_DEBUG") else logging.INFO,
        format=f"%(asctime)s slot{args.slot} %(name)s %(levelname)s %(message)s",
    )
    return_big_buffers()  # CRL indexes and snapshots are sent as big messages
    sup = Supervisor(run, args.slot)

    async def runner():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sup.stopping.set)
        await sup.serve()

    asyncio.run(runner())
    return 0


if __name__ == "__main__":
    sys.exit(main())
