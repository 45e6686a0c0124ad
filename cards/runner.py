"""The packet card process: asyncio + zmq loop; the only I/O of a card.

    python -m cards.runner --run-dir DIR --slot N

It subscribes to its Clone stream first, registers with the supervisor, takes a
snapshot, and reports Ready only once everything is applied. Heartbeats run both
ways; when the supervisor goes quiet the card keeps serving and registers again.
The card heartbeats the backplane too (on its NPU channel), so the supervisor can tell a
card cut off from it (alive on the backplane) from a hung one; the backplane also sets
the fault-injection filter of the card's supervisor channels there (`chassis fault ipc`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import secrets
import signal
import sys
from collections import Counter

from cards import http1, templates
from cards.credentials import Credentials
from cards.crls import CrlEntry, CrlStore
from cards.recovery import Holding, Outbox
from chassis.clock import MonotonicClock, WallClock
from chassis.ipc import keys as keyring
from chassis.ipc.buffers import return_big_buffers
from chassis.ipc.clone import Outcome, Replica
from chassis.ipc.datapath import DatagramPipe
from chassis.ipc.envelope import Envelope
from chassis.ipc.messages import (
    Ack,
    Beacon,
    CardStatus,
    CredUpdate,
    Datagram,
    Datagrams,
    Error,
    Heartbeat,
    Ready,
    Register,
    Request,
    Update,
    burst,
    burst_items,
)
from chassis.ipc.rpc import Pending, RpcError
from chassis.ipc.rundir import RunDir
from chassis.ipc.sockets import Channel, Incoming, IpcFault, Node
from chassis.randomness import SystemRandom

log = logging.getLogger("card")
RECOVERY_SLICE = 500  # SAs restored, adopted or synced per event-loop turn
CKPT_TIMEOUT_S = 12.0  # a relayed full batch of many SAs (the MIO waits up to 10 s)
MAX_UNACKED_BATCHES = 50  # checkpoint batches kept for a silent standby, then a full one
OCSP_MAX_BYTES = 64 * 1024  # an OCSP answer larger than this is refused (an error: CRL next)


class Card:
    def __init__(self, run: RunDir, slot: int, npu_fd: int | None = None) -> None:
        self.run, self.slot = run, slot
        # gateway datagrams from and to the NPU: the socketpair the backplane started us with
        # (chassis/ipc/datapath.py), else the bus
        self.pipe = DatagramPipe.inherited(npu_fd) if npu_fd is not None else None
        self.manifest = run.manifest()
        me = next(c for c in self.manifest["topology"]["cards"] if c["slot"] == slot)
        self.type, self.role = me["type"], me["role"]
        timers = self.manifest["timers"]
        self.interval, self.liveness = timers["interval"], timers["liveness"]
        self.node = Node(run.keys, f"{self.type}-{slot}", key_name=f"slot-{slot}")
        self.mono = MonotonicClock()
        self.boot_id = secrets.token_hex(8)
        self.replica = Replica()  # the configuration stream
        self.cred_replica = Replica()  # the credential stream (ASR 5500 pushes)
        self.credentials = Credentials()
        self.credentials.pushed = self.cred_replica.entries
        self.template_status: dict[str, str] = {}
        self.loading_gateway = False
        self.wall = WallClock()  # certificate validity and revocation: `chassis fault warp`
        self.crls = CrlStore()  # the CRLs from the management card, by name and by URL
        self.crl_fetches: dict[str, asyncio.Future] = {}  # CDP URL -> the request in flight
        # session recovery (cards/recovery.py): our checkpoints to the standby, when we are
        # active and one is in service; the checkpoints we hold as the standby, per card
        self.outbox: Outbox | None = None
        self.ckpt_to: int | None = None
        self.ckpt_full = False
        self.ckpt_task: asyncio.Task | None = None
        self.holdings: dict[int, Holding] = {}
        self.owned_maps: list[str] = []  # crypto maps the supervisor has this card initiate
        self.gateway = None  # built when a service is bound: the IKE modules take 0.1 s to load
        self.counters: Counter[str] = Counter()
        self.reported: dict = {}
        self.pending = Pending()
        self.epoch = 0  # the highest management epoch seen; lower ones are ignored
        self.registered = False
        self.last_refusal = ""
        self.last_supervisor = self.mono.now()
        self.ctl: Channel | None = None
        self.sub: Channel | None = None
        self.syncing: asyncio.Task | None = None
        self.background: set[asyncio.Task] = set()
        self.stopping = asyncio.Event()

    @property
    def config(self) -> dict:
        return self.replica.entries.get("config", {})

    async def serve(self) -> None:
        ep, keys = self.manifest["endpoints"], self.run.keys
        self._connect_supervisor()
        # The NPU (in the backplane) hands this card its gateway datagrams.
        self.npu = self.node.dealer(
            ep["backplane"], keyring.public_key(keys, "backplane"), f"card-{self.slot}"
        )
        self.npu.send(Request("npu.attach", {}))
        self.npu.listen(lambda inc: self._dispatch(self.npu, inc, self.on_npu))
        if self.pipe is not None:
            self.pipe.listen(self._datagrams)
        tasks = [asyncio.create_task(self._tick())]
        await self.stopping.wait()
        for t in tasks:
            t.cancel()
        self.node.close()

    def _connect_supervisor(self) -> None:
        """(Re)connect to the supervisor's sockets. Again when the backplane says another MIO
        took over (`mgmt.moved`): the new one binds the same endpoints, but a connection to a
        hung old active would stay up (and swallow what we send) until that process ends. Not
        on a mere silence: a busy supervisor reads what was queued on the old connection."""
        ep, keys = self.manifest["endpoints"], self.run.keys
        server = keyring.public_key(keys, "mgmt")
        faults = (self.ctl.fault, self.sub.fault) if self.ctl is not None else (None, None)
        for old in (self.ctl, self.sub):
            if old is not None:
                old.close()
        self.sub = self.node.subscriber(
            ep["state"], server, [f"slot-{self.slot}\0".encode(), b"beacon\0"]
        )
        self.ctl = self.node.dealer(ep["control"], server, f"slot-{self.slot}")
        self.ctl.fault, self.sub.fault = faults  # a `chassis fault ipc` outlives it
        for channel, handler in ((self.ctl, self.on_control), (self.sub, self.on_state)):
            channel.listen(lambda inc, c=channel, h=handler: self._dispatch(c, inc, h))

    def _dispatch(self, channel: Channel, inc: Incoming, handler) -> None:
        if inc.error is not None:
            log.warning("bad message: %s", inc.error.reason)
            if channel is self.ctl:
                channel.send(Error(inc.error.ref or 0, inc.error.reason))
            return
        if inc.env.epoch < self.epoch:
            log.info("ignored %s from older epoch %d < %d", inc.env.type, inc.env.epoch, self.epoch)
            return
        if self.pending.resolve(inc):
            return
        try:
            handler(inc, inc.env)
        except Exception:
            log.exception("while handling %s", inc.env.type)

    # --- control --------------------------------------------------------------

    def on_control(self, inc: Incoming, env: Envelope) -> None:
        msg = env.msg
        if isinstance(msg, Heartbeat):
            self.last_supervisor = self.mono.now()
        elif isinstance(msg, CredUpdate):
            self._on_cred(env.seq, msg)
        elif isinstance(msg, Request) and msg.method == "cmp-fetch":
            self._spawn(self._cmp_fetch(inc, msg.args))
        elif isinstance(msg, Request) and msg.method == "ike.sas":
            self.ctl.reply(inc, True, self.gateway.sa_table() if self.gateway else [])
        elif isinstance(msg, Request) and msg.method == "ipsec.inject":
            try:
                if self.gateway is None:
                    raise KeyError("no IKE service on this card")
                args = msg.args
                outs = self.gateway.inject(bytes(args["spi"]), int(args["count"]),
                                           int(args["size"]), self.mono.now())  # fmt: skip
            except KeyError as exc:
                self.ctl.reply(inc, False, error=str(exc.args[0]))
            else:
                self._ike(outs)
                self.ctl.reply(inc, True, sum(1 for o in outs if type(o).__name__ == "Send"))
        elif isinstance(msg, Request) and msg.method == "ipsec.sas":
            rows = self.gateway.child_table(self.mono.now()) if self.gateway else []
            self.ctl.reply(inc, True, rows)
        elif isinstance(msg, Request) and msg.method == "ike.keys":  # chassis capture --keys
            self.ctl.reply(inc, True, self.gateway.key_table() if self.gateway else [])
        elif isinstance(msg, Request) and msg.method == "ike.maps":
            self.owned_maps = sorted(msg.args.get("own", []))
            if self.gateway is not None:
                self._ike(self.gateway.own_maps(self.owned_maps, self.mono.now()))
            self.ctl.reply(inc, True, self.owned_maps)
            self._report()
        elif isinstance(msg, Request) and msg.method == "ckpt.hold":  # we are the standby
            self._hold(inc, msg.args)
        elif isinstance(msg, Request) and msg.method == "takeover":
            self._spawn(self._take_over(inc, int(msg.args["slot"])))
        elif isinstance(msg, Request) and msg.method == "takeover.sync":  # the NPU steers here
            self._spawn(self._start_syncs(inc))
        elif isinstance(msg, Request) and msg.method == "ckpt.full":  # `card migrate` from us
            batch = self.gateway.checkpoint_batch(Outbox(), full=True) if self.gateway else None
            self.ctl.reply(inc, batch is not None, batch, "" if batch else "no IKE service")
        elif isinstance(msg, Request) and msg.method == "release":  # migrated: they live on
            dropped = self.gateway.release() if self.gateway else 0  # at the other card
            self.role, self.outbox, self.ckpt_to = "standby", None, None
            self.ctl.reply(inc, True, {"released": dropped})
            self._report()
        elif isinstance(msg, Request) and msg.method == "credentials":
            self.ctl.reply(inc, True, self.credentials.summary())
        elif isinstance(msg, Error):
            log.warning("supervisor reports: %s", msg.reason)
        else:
            self.ctl.send(Error(env.id, f"card does not handle {env.type}"))

    async def _register(self) -> None:
        """Register, take the snapshot, apply it, then report Ready."""
        try:
            reply = await self.pending.call(
                self.ctl,
                Register(self.slot, self.type, self.role, os.getpid(), self.boot_id),
                timeout=self.interval * 5,
            )
            self.epoch = max(self.epoch, reply["epoch"])
            self.role = reply.get("role") or self.role  # a takeover may have swapped roles
            self.node.epoch = self.epoch
            await self._resync(self.replica, "config")
            await self._resync(self.cred_replica, "cred")
            self.registered, self.last_refusal = True, ""
            self.last_supervisor = self.mono.now()
            self.ctl.send(Ready(self.replica.seq, self.cred_replica.seq))
            self.check_templates(force=True)
            log.info(
                "ready: config seq %d, credential seq %d, epoch %d",
                self.replica.seq,
                self.cred_replica.seq,
                self.epoch,
            )
        except (TimeoutError, RpcError) as exc:
            if str(exc) != self.last_refusal:  # retried every interval: say it once
                log.warning("registration: %s", exc)
                self.last_refusal = str(exc)

    async def _resync(self, replica: Replica, stream: str) -> None:
        replica.reset()
        snap = await self.pending.call(
            self.ctl, Request("snapshot", {"stream": stream}), timeout=self.interval * 5
        )
        if replica.on_snapshot(snap["seq"], snap["entries"]) is Outcome.GAP:
            await self._resync(replica, stream)
        if replica is self.cred_replica:
            self.credentials.pushed = replica.entries

    # --- state stream -------------------------------------------------------

    def on_state(self, inc: Incoming, env: Envelope) -> None:
        msg = env.msg
        if isinstance(msg, Update):
            outcome = self.replica.on_update(env.seq, msg.key, msg.value)
            if outcome is Outcome.APPLIED:
                self.ctl.send(Ack(env.seq))
                self.check_templates()
            elif outcome is Outcome.GAP:
                log.warning("config update lost before %d: resync", env.seq)
                self._start(self._resync_and_ack(self.replica, "config"))
        elif isinstance(msg, Beacon):
            for replica, stream, seqs in (
                (self.replica, "config", msg.seqs),
                (self.cred_replica, "cred", msg.cred),
            ):
                latest = seqs.get(str(self.slot))
                if isinstance(latest, int) and replica.on_beacon(latest):
                    log.warning("beacon shows %s seq %d: resync", stream, latest)
                    self._start(self._resync_and_ack(replica, stream))

    def _on_cred(self, seq: int, msg: CredUpdate) -> None:
        outcome = self.cred_replica.on_update(seq, msg.key, msg.value)
        if outcome is Outcome.APPLIED:
            self.ctl.send(Ack(seq, "cred"))
            self.check_templates()
            log.info("credential %s: %s", msg.key, "removed" if msg.value is None else "installed")
        elif outcome is Outcome.GAP:
            log.warning("credential update lost before %d: resync", seq)
            self._start(self._resync_and_ack(self.cred_replica, "cred"))

    async def _resync_and_ack(self, replica: Replica, stream: str) -> None:
        try:
            await self._resync(replica, stream)
            self.ctl.send(Ack(replica.seq, stream))
            self.check_templates()
        except (TimeoutError, RpcError) as exc:
            log.info("resync: %s", exc)

    async def _cmp_fetch(self, inc: Incoming, args: dict) -> None:
        """ASR 9000 `cmp fetch`: read certificate, key and CA root from the supervisor card."""
        try:
            bundle = await self.pending.call(self.ctl, Request("cred-fetch", args), timeout=5)
        except (TimeoutError, RpcError) as exc:
            self.ctl.reply(inc, False, error=str(exc))
            return
        for key, value in bundle.items():
            self.credentials.fetched[key] = value
        log.info("cmp fetch: %s", ", ".join(f"{k} v{v['generation']}" for k, v in bundle.items()))
        self.ctl.reply(inc, True, self.credentials.summary())
        self.check_templates()

    def on_npu(self, inc: Incoming, env: Envelope) -> None:
        if isinstance(env.msg, Request) and env.msg.method == "mgmt.moved":
            log.warning("the backplane says MIO %s is active now: reconnecting",
                        env.msg.args.get("slot"))  # fmt: skip
            self._connect_supervisor()
            self.registered = False
            return
        msg = env.msg
        if isinstance(msg, Datagram | Datagrams):  # on the bus: a card started without a pipe
            self._datagrams(burst_items(msg))
        elif isinstance(msg, Request) and msg.method == "ipc.fault":
            self._ipc_fault(inc, msg.args)

    def _datagrams(self, items) -> None:
        """A burst of gateway datagrams from the NPU: answered in one burst too."""
        now, outs = self.mono.now(), []
        for local, remote, data in items:
            self.counters["npu_rx"] += 1
            got = self.gateway and self.gateway.receive(local, remote, data, now)
            if got is None:
                self.counters["npu_no_service"] += 1
            else:
                outs += got
        self._ike(outs)

    def _ipc_fault(self, inc: Incoming, args: dict) -> None:
        """`chassis fault ipc`: filter the messages between this card and the supervisor (the
        control channel both ways, the state stream in), or heal (mode "heal")."""
        mode = args.get("mode")
        try:
            if mode == "heal":
                faults = [None, None]
            else:
                seed = args.get("seed", 0)
                rate, ms = args.get("rate", 1.0), args.get("ms", 0)
                faults = [IpcFault(mode, rate, ms, f"{seed}:ctl"),
                          IpcFault(mode, rate, ms, f"{seed}:sub")]  # fmt: skip
        except ValueError as exc:
            self.npu.reply(inc, False, error=str(exc))
            return
        before = {name: ch.fault.describe() for name, ch in (("ctl", self.ctl), ("sub", self.sub))
                  if ch.fault is not None}  # fmt: skip
        self.ctl.fault, self.sub.fault = faults
        log.warning("ipc fault: %s", mode if mode == "heal" else faults[0].describe())
        self.npu.reply(inc, True, {"pid": os.getpid(), "mode": mode, "before": before})

    def _ike(self, outs: list) -> None:
        """Send what the IKE engine wants sent; count and log what happened."""
        from cards.ike.child import describe_ts
        from cards.ike.events import (
            AuthFailed,
            CheckOcsp,
            ChildEstablished,
            ChildRefused,
            Established,
            FetchCertificate,
            FetchCrl,
            IkeRekeyed,
            RevocationChecked,
            Send,
        )

        sends = [[list(o.src), list(o.dst), o.data] for o in outs if isinstance(o, Send)]
        if self.pipe is not None:
            if sends and not self.pipe.send(sends):
                self.counters["npu_tx_dropped"] += 1
        elif sends:
            self.npu.send(burst(sends))
        for out in outs:
            if isinstance(out, Send):
                continue
            self.counters[f"ike_{type(out).__name__.lower()}"] += 1
            if isinstance(out, Established):
                log.info(
                    "IKE SA up with %s (%s) from %s:%d, %s",
                    out.peer_id,
                    out.peer_cert_subject,
                    *out.peer,
                    out.suite,
                )
            elif isinstance(out, ChildEstablished):
                log.info(
                    "CHILD_SA up with %s, our SPI %s, their SPI %s, %s === %s",
                    out.suite,
                    out.our_spi.hex(),
                    out.their_spi.hex(),
                    describe_ts(out.tsi),
                    describe_ts(out.tsr),
                )
            elif isinstance(out, AuthFailed):
                log.warning("IKE_AUTH from %s:%d refused: %s", *out.peer, out.reason)
            elif isinstance(out, IkeRekeyed):
                log.info("IKE SA %s_i %s_r rekeyed: now %s_i %s_r", out.spi_i.hex(),
                         out.spi_r.hex(), out.new_spi_i.hex(), out.new_spi_r.hex())  # fmt: skip
            elif isinstance(out, FetchCertificate):
                self._spawn(self._fetch_certificate(out))
            elif isinstance(out, CheckOcsp):
                self._spawn(self._check_ocsp(out))
            elif isinstance(out, FetchCrl):
                self._spawn(self._fetch_crl(out))
            elif isinstance(out, RevocationChecked):
                if not out.ok:  # the IKE_AUTH refused for it counts as ike_authfailed too
                    self.counters["ike_refused_revoked"] += 1
                level = logging.INFO if out.ok else logging.WARNING
                verdict = "not revoked" if out.ok else "REFUSED"
                log.log(level, "revocation of %s: %s: %s", out.subject, verdict, out.reason)
            elif isinstance(out, ChildRefused):
                log.warning("CHILD_SA of IKE SA %s refused: %s", out.spi_i.hex(), out.reason)
            else:
                log.debug("ike: %s", out)

    def check_templates(self, force: bool = False) -> None:
        """Re-evaluate which crypto templates this card can serve; log and report changes."""
        self._sync_crls()
        self._sync_standby()
        self.wall.offset = float((self.replica.entries.get("clock") or {}).get("offset", 0.0))
        status = templates.readiness(self.config.get("config", {}), self.credentials)
        tree = self.config.get("config", {})
        if self.gateway is None and any(
            "bind" in block
            for ctx in tree.get("context", {}).values()
            for kind in ("wsg-service", "crypto-map")
            for block in ctx.get(kind, {}).values()
        ):
            if not self.loading_gateway:
                self.loading_gateway = True
                self._spawn(self._load_gateway())
            return  # readiness is reported once the gateway can answer
        if self.gateway is not None:
            # this card's share of the IP pools: a stream entry of its own, beside the config
            self.gateway.configure(tree, self.credentials, self.replica.entries.get("pool-share"))
        if status == self.template_status and not force:
            return
        for name, state in status.items():
            if state != self.template_status.get(name):
                level = logging.INFO if state == templates.READY else logging.WARNING
                log.log(level, "crypto template %s: %s", name, state)
        self.template_status = status
        self._report()

    async def _fetch_certificate(self, req) -> None:
        """Hash and URL: GET a peer's certificate over HTTP, at most ``max_bytes`` within
        ``timeout_s`` in all; the engine checks its SHA-1. A failure fails the IKE_AUTH."""
        data = None
        try:
            data = await asyncio.wait_for(
                http1.exchange("GET", req.url, max_bytes=req.max_bytes), req.timeout_s
            )
        except TimeoutError:
            log.warning("hash and URL: %s: no answer within %g s", req.url, req.timeout_s)
        except http1.HttpError as exc:
            log.warning("hash and URL: %s: %s", req.url, exc)
        if self.gateway is not None:
            self._ike(self.gateway.resolve(req.my_spi, req.url, data, self.mono.now()))

    async def _check_ocsp(self, req) -> None:
        """POST an OCSP request on a connection of its own, closed after the answer or when
        the template's timer runs out; the engine checks the answer (cards/pki/ocsp.py)."""
        body, error = None, None
        post = http1.exchange("POST", req.url, body=req.request, max_bytes=OCSP_MAX_BYTES,
                              content_type="application/ocsp-request")  # fmt: skip
        try:
            body = await asyncio.wait_for(post, req.timeout_s)
        except TimeoutError:
            error = f"no answer within {req.timeout_s:g} s"
        except http1.HttpError as exc:
            error = str(exc)
        if error:
            log.warning("OCSP %s: %s", req.url, error)
        if self.gateway is not None:
            outs = self.gateway.revocation_answer(req.my_spi, "ocsp", req.url, body, error,
                                                  self.mono.now())  # fmt: skip
            self._ike(outs)

    async def _fetch_crl(self, req) -> None:
        """A CRL from a certificate's CDP: the management card fetches, verifies and indexes
        it (and sends it to every card); one request per URL however many tunnels wait."""
        waiting = self.crl_fetches.get(req.url)
        if waiting is None:
            waiting = self.crl_fetches[req.url] = asyncio.ensure_future(self._ask_crl(req))
            waiting.add_done_callback(lambda _f, u=req.url: self.crl_fetches.pop(u, None))
        error = await asyncio.shield(waiting)
        if self.gateway is not None:
            outs = self.gateway.revocation_answer(req.my_spi, "crl", req.url, None, error,
                                                  self.mono.now())  # fmt: skip
            self._ike(outs)

    async def _ask_crl(self, req) -> str | None:
        try:
            entry = await self.pending.call(
                self.ctl, Request("crl-fetch", {"url": req.url, "issuer": req.issuer}),
                timeout=req.timeout_s,
            )  # fmt: skip
        except TimeoutError:
            return f"no CRL from the management card within {req.timeout_s:g} s"
        except RpcError as exc:
            return str(exc)
        self._install_crl(entry)
        return entry.get("error")

    def _install_crl(self, wire: dict, force: bool = False) -> None:
        try:
            self.crls.put(CrlEntry.from_wire(wire), force)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("CRL %s not installed: %s", wire.get("url"), exc)

    def _sync_crls(self) -> None:
        """The CRLs in the configuration stream (``crl:`` keys) into the card's CrlStore."""
        entries = self.replica.entries
        names = set()
        for key, value in entries.items():
            if key.startswith("crl:") and isinstance(value, dict):
                if value.get("name") is not None:
                    names.add(value["name"])
                held = (self.crls.by_name.get(value["name"]) if value.get("name") is not None
                        else self.crls.by_url.get(value.get("url")))  # fmt: skip
                if held is None or held.version != value.get("version"):
                    self._install_crl(value, force=True)
        for name in set(self.crls.by_name) - names:
            self.crls.remove_name(name)

    # --- session recovery -----------------------------------------------------------------
    def _sync_standby(self) -> None:
        """Checkpoint our SAs to the standby the supervisor names, while we are active."""
        standby = (self.replica.entries.get("standby") or {}).get("slot")
        wanted = standby if self.role == "active" and standby not in (None, self.slot) else None
        if wanted == self.ckpt_to:
            return
        self.ckpt_to = wanted
        if wanted is None:
            self.outbox = None
            if self.gateway is not None:
                self.gateway.disable_checkpoints()
            return
        self.outbox, self.ckpt_full = Outbox(), True  # a new standby: everything first
        if self.gateway is not None:
            self.gateway.enable_checkpoints()
        log.info("checkpointing our SAs to the standby card in slot %d", wanted)

    async def _checkpoint(self) -> None:
        outbox, gateway = self.outbox, self.gateway
        if outbox is None or gateway is None:
            return
        if not gateway.checkpointing:
            gateway.enable_checkpoints()
        gateway.checkpoint_batch(outbox, full=self.ckpt_full)
        self.ckpt_full = False
        batches = outbox.pending()
        if not batches:
            return
        try:
            answer = await self.pending.call(
                self.ctl, Request("ckpt", {"batches": batches}), timeout=CKPT_TIMEOUT_S
            )
        except (TimeoutError, RpcError) as exc:
            self.counters["ckpt_unacked"] += 1
            log.debug("checkpoints: %s", exc)
            if len(outbox.unacked) > MAX_UNACKED_BATCHES:  # the standby is not taking them:
                outbox.unacked.clear()  # one full batch replaces them when it answers again
                self.ckpt_full = True
            return
        if self.outbox is outbox:
            outbox.on_ack(int(answer.get("ack", 0)))
            self.ckpt_full = bool(answer.get("full"))
            self.counters["ckpt_batches"] += len(batches)

    def _hold(self, inc: Incoming, args: dict) -> None:
        holding = self.holdings.setdefault(int(args["from"]), Holding())
        endpoints = self.gateway.endpoints if self.gateway is not None else {}
        ack, full = holding.seq, False
        for batch in args.get("batches") or []:
            ack, full = holding.apply(batch, endpoints)
            if full:
                break
        self.counters["held_sas"] = sum(h.count() for h in self.holdings.values())
        self.ctl.reply(inc, True, {"ack": ack, "full": full})

    async def _take_over(self, inc: Incoming, slot: int) -> None:
        """Adopt a failed card's SAs, a slice per loop turn: tens of thousands of them must
        not stop our heartbeats (the supervisor would fail this card too)."""
        holding = self.holdings.pop(slot, None)
        if holding is None or self.gateway is None:
            self.ctl.reply(inc, False, error=f"no checkpoints of card {slot} here")
            return
        started = self.mono.now()
        adopted = 0
        while holding.count():
            adopted += self.gateway.take_over(holding, started, limit=RECOVERY_SLICE)
            await asyncio.sleep(0)
        log.info("took over %d IKE SAs of card %d", adopted, slot)
        self.role = "active"
        self.holdings.clear()  # an active card holds nobody's checkpoints
        self.counters["held_sas"] = 0
        sas, children = self.gateway.counts()
        self.counters["ike_sas"], self.counters["child_sas"] = sas, children  # shown at once
        self.ctl.reply(inc, True, {"sas": sas, "children": children,
                                   "took_ms": round((self.mono.now() - started) * 1e3, 1)})  # fmt: skip
        self._report()

    async def _start_syncs(self, inc: Incoming) -> None:
        sent = 0
        while self.gateway is not None and self.gateway.to_sync:
            outs = self.gateway.start_syncs(self.mono.now(), limit=RECOVERY_SLICE)
            self._ike(outs)
            sent += sum(type(o).__name__ == "Send" for o in outs)
            await asyncio.sleep(0)
        self.ctl.reply(inc, True, {"syncs": sent})

    async def _load_gateway(self) -> None:
        """Import the IKE engine (0.1-0.3 s of CPU) in a thread: the event loop keeps sending
        heartbeats meanwhile (the GIL switches every 5 ms), so a busy machine does not make
        the supervisor declare this card hung."""
        module = await asyncio.to_thread(importlib.import_module, "cards.gateway")
        cookie = (self.run.keys / "ike-cookie.secret").read_bytes()
        self.gateway = module.Gateway(self.slot, SystemRandom(), self.wall.datetime, cookie)
        self.gateway.crls = self.crls
        self.gateway.owned = set(self.owned_maps)
        self.check_templates(force=True)

    def _report(self) -> None:
        self.reported = dict(self.counters)
        self.ctl.send(CardStatus(self.template_status, dict(self.counters), self.owned_maps))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _start(self, coro) -> None:
        if self.syncing is None or self.syncing.done():
            self.syncing = asyncio.create_task(coro)
        else:
            coro.close()

    async def _tick(self) -> None:
        while True:
            self.ctl.send(Heartbeat(self.mono.now()))
            self.npu.send(Heartbeat(self.mono.now()))  # the backplane sees this card alive
            self.ctl.pump()
            quiet = self.mono.now() - self.last_supervisor
            if self.registered and quiet > self.interval * self.liveness:
                log.warning("supervisor silent for %.0f ms: registering again", quiet * 1000)
                self.registered = False
            if not self.registered:
                self._start(self._register())
            else:
                if self.gateway is not None:  # once per interval: it walks every SA
                    sas, children = self.gateway.counts()
                    self.counters["ike_sas"], self.counters["child_sas"] = sas, children
                if self.counters != self.reported:
                    self._report()
            if self.holdings and self.gateway is not None:  # restore held checkpoints, a slice
                for holding in self.holdings.values():  # each tick (not all at once)
                    holding.ready(self.gateway.endpoints, RECOVERY_SLICE)
            if self.outbox is not None and (self.ckpt_task is None or self.ckpt_task.done()):
                self.ckpt_task = asyncio.create_task(self._checkpoint())
            due = self.gateway and self.gateway.next_timer()
            if due is not None and due <= self.mono.now():
                self._ike(self.gateway.handle_timer(self.mono.now()))
            await asyncio.sleep(self.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cards.runner")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--npu-fd", type=int, help="the NPU's datagram socketpair (inherited)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.DEBUG if os.environ.get("CHASSIS_DEBUG") else logging.INFO,
        format=f"%(asctime)s slot{args.slot} %(name)s %(levelname)s %(message)s",
    )
    return_big_buffers()
    card = Card(RunDir(args.run_dir), args.slot, args.npu_fd)

    async def runner():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, card.stopping.set)
        await card.serve()

    asyncio.run(runner())
    return 0


if __name__ == "__main__":
    sys.exit(main())
