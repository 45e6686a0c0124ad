"""The eNodeB fleet: many simulated eNodeBs, IKEv2 initiators, in one lab process.

    python -m chassis.lab.fleet --run-dir DIR      (the backplane starts it, after the CA)

    GET  /admin      the fleet's counters (JSON; also RUN/lab/fleet/status.json, every 0.5 s,
                     which `chassis status` shows)
    POST /admin      {"pause": true | false}   stop or resume starting tunnels
                     {"reconnect": true}       delete every tunnel and bring all up again
                     {"warp": SECONDS}         move the fleet's wall clock (certificate checks)

Each eNodeB has its own key (EC P-256 made at start, or RSA-2048 from a pool cached in
RUN/lab/fleet/rsa-2048/), its own certificate issued straight from the lab CA's files
(chassis.lab.authority, from the issuing CA or the root) with the FQDN enbNNNN.lab.example, and
its own ``cards.ike`` Endpoint (an Endpoint holds one IkeConfig, and the credentials differ per
eNodeB). All of them share one UDP socket: the gateway tells them apart by SPI, and so does
the fleet, since every SPI an eNodeB allocates (IKE and ESP) carries its number in the top
two bytes.

The topology may split the fleet between the lab's CAs (`issuer: {root: 45, intermediate:
5}`, the root's first) and revoke the last eNodeBs' certificates (`revoked: N`, keyCompromise,
through the lab CA's database) before they dial: the gateway's OCSP or CRL check refuses them,
and they keep retrying with their back-off. With `wait-for-gateway` (the default) nobody dials
before the gateway answers an IKE_SA_INIT probe (one it answers without keeping state: an
unknown critical payload, every 0.25 s): the chassis enrolls its certificate and pushes it to
its cards first, and eNodeBs that dialled into the silence would have backed off for seconds.

`Fleet` is sans-IO (datagrams and ``now`` in, datagrams out, ``next_timer``/``handle_timer``),
so tests run it against an in-memory gateway; `main` does the I/O. An eNodeB waits for its
turn (``rate`` tunnels/s, at most ``half-open`` IKE_SA_INITs in flight), brings its IKE SA and
first child up in IKE_AUTH (asking for an inner IPv4 address, CP), creates its other children
with CREATE_CHILD_SA, answers the gateway's liveness checks and rekeys (the engine does), and
when its IKE SA fails or goes (AuthFailed, Deleted, retransmissions or DPD giving up) waits a
back-off (doubling from retry.initial to retry.max, with jitter) and starts again. Each child
with a flow sends ESP-in-UDP (cards.esp, no marker) at the flow's rate; what the gateway sends
back is opened and counted per flow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import ipaddress
import json
import logging
import os
import queue
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cards.esp import EspSa, build_udp
from cards.ike.config import (
    DEFAULT_CHILD_PROPOSALS,
    ChildPolicy,
    Credentials,
    IkeConfig,
    IkeProposal,
    any_ts,
)
from cards.ike.const import DhGroup, Encr, ExchangeType, Integ, Prf, TsType
from cards.ike.engine import Endpoint
from cards.ike.events import (
    AuthFailed,
    ChildDeleted,
    ChildEstablished,
    ChildRefused,
    Deleted,
    InternalError,
    Retransmit,
    Send,
)
from cards.ike.message import Message
from cards.ike.payloads import TrafficSelector, UnknownPayload
from cards.ike.states import State
from chassis.ipc.rundir import RunDir
from chassis.lab.fleet_settings import FleetSettings, Flow, parse_address
from chassis.randomness import SystemRandom

log = logging.getLogger("lab-fleet")

Addr = tuple[str, int]
MARKER = b"\0\0\0\0"  # RFC 3948 non-ESP marker: IKE on a port other than 500
FLAG_INITIATOR = 0x08
GROUPS = {14: DhGroup.MODP_2048, 19: DhGroup.ECP_256, 20: DhGroup.ECP_384, 31: DhGroup.CURVE25519}
RATE_WINDOW_S = 5.0  # tunnels/s is measured over this window
STATUS_EVERY_S = 0.5
PROBE_EVERY_S = 0.25  # IKE_SA_INIT probes while the gateway is silent (wait-for-gateway)
PROBE_PREFIX = bytes(2)  # the probes' SPIs: no eNodeB has number 0
PROBE_PAYLOAD = 255  # a payload type of the private-use range nobody knows (RFC 7296 3.2)


def fqdn(index: int) -> str:
    return f"enb{index:04d}.lab.example"


# ------------------------------------------------------------------ what each eNodeB offers
def ike_proposals(group: int) -> tuple[IkeProposal, ...]:
    """AES-GCM and AES-CBC with PRF-SHA2-256/384/512, all in the configured DH group (the
    gateway picks the one its transform set names)."""
    dh = GROUPS[group]
    out = []
    for prf, integ in (
        (Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128),
        (Prf.HMAC_SHA2_384, Integ.HMAC_SHA2_384_192),
        (Prf.HMAC_SHA2_512, Integ.HMAC_SHA2_512_256),
    ):
        out += [IkeProposal(Encr.AES_GCM_16, 256, prf, Integ.NONE, dh),
                IkeProposal(Encr.AES_GCM_16, 128, prf, Integ.NONE, dh),
                IkeProposal(Encr.AES_CBC, 256, prf, integ, dh),
                IkeProposal(Encr.AES_CBC, 128, prf, integ, dh)]  # fmt: skip
    return tuple(out)


def _v4(proto: int, low: int, high: int) -> TrafficSelector:
    return TrafficSelector(TsType.IPV4_ADDR_RANGE, proto, low, high,
                           ipaddress.IPv4Address("0.0.0.0"),
                           ipaddress.IPv4Address("255.255.255.255"))  # fmt: skip


def child_policies(settings: FleetSettings) -> tuple[ChildPolicy, ...]:
    """One payload per child: ``child1`` ... With a flow, our side is any IPv4 address (the
    gateway pins it to the inner address it gives us) of the flow's protocol, and the core
    side is the flow's protocol and port; without, everything."""
    out = []
    for k in range(settings.children):
        flow = settings.flow(k)
        if flow is None:
            local, remote = (any_ts(),), (any_ts(),)
        else:
            local = (_v4(flow.proto_number, 0, 65535),)
            remote = (_v4(flow.proto_number, flow.port, flow.port),)
        out.append(ChildPolicy(f"child{k + 1}", DEFAULT_CHILD_PROPOSALS, local, remote))
    return tuple(out)


def ike_config(settings: FleetSettings, credentials: Credentials, anchors) -> IkeConfig:
    return IkeConfig(
        credentials,
        tuple(anchors),
        proposals=ike_proposals(settings.dh_group),
        children=child_policies(settings),
        request_addresses=(4,),
        mcsa_delay_s=None,  # the fleet creates the other children itself, at once
        dpd_interval_s=settings.dpd_interval or None,
        retransmit_timeout_ms=500,
        max_retransmissions=4,  # 0.5 + 1 + 2 + 4 + 8 s: a dead gateway is given up in 15.5 s
        setup_timeout_s=20.0,
        cookie_threshold=None,
    )


def credentials(authority, settings: FleetSettings, index: int, key) -> Credentials:
    """eNodeB ``index``'s certificate, from the lab CA the settings give it (``authority``: a
    chassis.lab.authority.Authority on the lab CA's files); a revoked eNodeB's is revoked
    (keyCompromise) at once, before it dials."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = fqdn(index)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SeGW Lab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])  # fmt: skip
    issuer = settings.issuer_of(index)
    cert = authority.issue(subject, key.public_key(), [x509.DNSName(name)], issuer=issuer)
    if settings.is_revoked(index):
        authority.revoke(cert.serial_number, "keyCompromise")
        log.info("%s: certificate %x (from the %s CA) revoked: keyCompromise", name,
                 cert.serial_number, issuer)  # fmt: skip
    return Credentials(cert, key, authority.intermediates(issuer))


# ------------------------------------------------------------------ inner packets
def _checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def inner_packet(src: str, dst: str, flow: Flow) -> bytes:
    """One IPv4 packet of ``flow.size`` bytes: a UDP datagram (source and destination port
    the flow's, as GTP does), or for TCP/SCTP a header carrying just the two ports."""
    if flow.proto == "udp":
        return build_udp(src, dst, flow.port, flow.port, bytes(max(0, flow.size - 28)))
    body = struct.pack("!HH", flow.port, flow.port) + bytes(max(0, flow.size - 24))
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, 64,
                         flow.proto_number, 0, s, d)  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + body


def _destination(flow: Flow, child) -> str:
    """The flow's destination when the child's core-side selectors hold it, else theirs."""
    theirs = child.tsr if child.initiator else child.tsi  # a child the gateway made: swapped
    to = ipaddress.IPv4Address(flow.to)
    for ts in theirs:
        if ts.ts_type == TsType.IPV4_ADDR_RANGE and ts.start_addr <= to <= ts.end_addr:
            return flow.to
    return str(theirs[0].start_addr) if theirs else flow.to


# ------------------------------------------------------------------ the fleet (sans-IO)
class Phase(Enum):
    PREPARING = "preparing"  # its key and certificate are being made
    QUEUED = "queued"  # waits for its turn (rate, half-open)
    INIT = "init"  # IKE_SA_INIT in flight (half-open)
    AUTH = "auth"  # IKE_AUTH in flight
    UP = "up"  # IKE SA established
    WAITING = "waiting"  # back-off after a failure or a loss


ESTABLISHING = (Phase.INIT, Phase.AUTH)


class ENodeB:
    __slots__ = ("index", "name", "endpoint", "phase", "backoff", "child_backoff", "up_since",
                 "ever_up", "ep_due", "last_event", "check_due", "covered", "esp", "sending",
                 "reconnecting")  # fmt: skip

    def __init__(self, index: int, backoff: float) -> None:
        self.index, self.name = index, fqdn(index)
        self.endpoint: Endpoint | None = None
        self.phase = Phase.PREPARING
        self.backoff, self.child_backoff = backoff, backoff
        self.up_since: float | None = None
        self.ever_up = False
        self.ep_due: float | None = None  # the endpoint timer the heap holds for us
        self.last_event = None  # the last AuthFailed/Deleted: why the SA went
        self.check_due: float | None = None  # a pending check of the children
        self.covered = 0  # child-SA payloads covered by children (the fleet's total tracks it)
        self.esp: dict[bytes, tuple[EspSa, int]] = {}  # our inbound SPI -> (ESP SA, child no.)
        self.sending: set[int] = set()  # children whose flow is scheduled
        self.reconnecting = False  # we deleted the IKE SA to start again at once

    def established(self):
        """The IKE SA in use (the newest established one during an IKE rekey), or None."""
        if self.endpoint is None:
            return None
        up = [sa for sa in self.endpoint.sas.values() if sa.state is State.ESTABLISHED]
        return up[-1] if up else None


@dataclass
class FlowStats:
    child: int  # 1-based
    flow: Flow
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    refused: int = 0  # inner packets cards.esp would not seal (selectors, lifetime)

    def report(self) -> dict:
        return {
            "child": self.child,
            "flow": self.flow.label,
            "pps": self.flow.pps,
            "size": self.flow.size,
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "refused": self.refused,
        }


def _reason(event) -> str:
    if isinstance(event, AuthFailed):
        return "auth-failed"
    if isinstance(event, Deleted):
        text = event.reason.lower()
        return "timeout" if "retransmission" in text or "timed out" in text else "deleted"
    return "error"


class Fleet:
    """Every eNodeB of the lab; ``add`` one when its credentials are ready."""

    def __init__(
        self,
        settings: FleetSettings,
        gateway: Addr,
        local: Addr,
        *,
        rand: Callable[[int], bytes],
        wall_clock,
        probe_every: float | None = None,
    ) -> None:
        """``probe_every``: hold every eNodeB back until the gateway answers an IKE_SA_INIT
        probe sent that often (None: dial at once)."""
        self.s, self.gateway, self.local = settings, tuple(gateway), tuple(local)
        self.rand, self.wall_clock = rand, wall_clock
        self.jitter = random.Random(rand(16))  # back-off and traffic phases, not key material
        self.policies = child_policies(settings)
        self.enbs = {i: ENodeB(i, settings.retry_initial) for i in range(1, settings.count + 1)}
        self.phases: Counter[Phase] = Counter({Phase.PREPARING: settings.count})
        self.queue: deque[int] = deque()
        self.to_delete: deque[int] = deque()  # a reconnect's deletes, paced like the starts
        self.timers: list[tuple[float, int, str, int, int]] = []  # (due, seq, kind, enb, child)
        self._seq = 0
        self.next_start = 0.0
        self.start_due: float | None = None
        self.paused = False
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # attempts that never came up, by reason
        self.losses: Counter[str] = Counter()  # tunnels that were up and went, by reason
        self.flows = [FlowStats(k + 1, f) for k, f in enumerate(settings.traffic)]
        self.children_up = 0
        self.ups: deque[float] = deque()
        self.first_attempt = self.first_up = self.all_up = self.children_all_up = None
        self._out: list[tuple[bytes, Addr]] = []
        self.probe_every = probe_every
        self.serving = probe_every is None  # the gateway answered (or we do not ask)
        self.probes = 0
        self.first_probe: float | None = None
        self.serving_at: float | None = None

    # ------------------------------------------------------------------ API
    def add(self, index: int, config: IkeConfig, now: float) -> list[tuple[bytes, Addr]]:
        """eNodeB ``index`` has its credentials: it queues for its first tunnel."""
        enb = self.enbs[index]
        prefix = index.to_bytes(2, "big")
        enb.endpoint = Endpoint(
            config,
            rand=self.rand,
            wall_clock=self.wall_clock,
            spi_alloc=lambda: prefix + self.rand(6),  # the fleet finds the eNodeB by these
            esp_spi_alloc=lambda: prefix + self.rand(2),
            local=self.local,
        )
        if not self.serving and self.first_probe is None:  # the first eNodeB ready: ask
            self.first_probe = now
            self._push(now, "probe")
        self._queue(enb)
        return self._flush(now)

    def receive(self, data: bytes, src: Addr, now: float) -> list[tuple[bytes, Addr]]:
        """A datagram from the gateway: IKE behind the non-ESP marker, or ESP."""
        self._out = []
        if data[:4] == MARKER and len(data) >= 4 + 28:
            flags, spi_i, spi_r = data[4 + 19], data[4:12], data[12:20]
            ours = spi_r if flags & FLAG_INITIATOR else spi_i
            enb = self.enbs.get(int.from_bytes(ours[:2], "big"))
            if ours[:2] == PROBE_PREFIX:
                self._probe_answered(now)
            elif enb is None or enb.endpoint is None:
                self.counts["ike_unknown"] += 1
            else:
                self._run(enb, enb.endpoint.receive(data, src, self.local, now), now)
        elif len(data) >= 8 and data[:4] != MARKER:
            self._esp_in(data)
        else:
            self.counts["garbage"] += 1
        return self._flush(now)

    def next_timer(self) -> float | None:
        return self.timers[0][0] if self.timers else None

    def handle_timer(self, now: float) -> list[tuple[bytes, Addr]]:
        self._out = []
        while self.timers and self.timers[0][0] <= now:
            due, _, kind, index, k = heapq.heappop(self.timers)
            enb = self.enbs.get(index)
            if kind == "start":
                if self.start_due == due:
                    self.start_due = None
            elif kind == "probe":
                self._probe(now)
            elif kind == "ep":
                if enb.ep_due == due and enb.endpoint is not None:
                    enb.ep_due = None
                    self._run(enb, enb.endpoint.handle_timer(now), now)
            elif kind == "retry":
                if enb.phase is Phase.WAITING:
                    self._queue(enb)
            elif kind == "children":
                if enb.check_due == due:
                    enb.check_due = None
                    self._create_children(enb, now)
            elif kind == "traffic":
                self._send_flow(enb, k, due, now)
        return self._flush(now)

    def pause(self, paused: bool, now: float) -> list[tuple[bytes, Addr]]:
        self.paused = paused
        self._out = []
        return self._flush(now)

    def reconnect(self, now: float) -> list[tuple[bytes, Addr]]:
        """Delete every tunnel and bring it up again (a fleet-wide restart: the ramp figures
        start over, nobody waits out a back-off). The deletes are paced like the starts."""
        self._out = []
        self.first_attempt = self.first_up = self.all_up = self.children_all_up = None
        self.ups.clear()
        self.counts["reconnects"] += 1
        for enb in self.enbs.values():
            if enb.endpoint is None:
                continue
            enb.backoff = self.s.retry_initial
            if enb.phase is Phase.UP and not enb.reconnecting:
                enb.reconnecting = True
                self.to_delete.append(enb.index)
            elif enb.phase is Phase.WAITING:
                self._queue(enb)
        return self._flush(now)

    def shutdown(self, now: float) -> list[tuple[bytes, Addr]]:
        """Delete every established IKE SA (the gateway frees their addresses at once)."""
        self._out = []
        self.paused = True
        for enb in self.enbs.values():
            sa = enb.established()
            if sa is not None:
                for o in enb.endpoint.delete(sa.my_spi, now):
                    if isinstance(o, Send):
                        self._out.append((o.data, o.dst))
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------ the gateway's answer
    def _probe(self, now: float) -> None:
        """An IKE_SA_INIT the gateway answers without keeping any state: its only payload is
        of an unknown type, marked critical, so a gateway that serves answers at once with
        UNSUPPORTED_CRITICAL_PAYLOAD (RFC 7296 2.5), before any proposal, key or certificate
        matters; one that is still booting says nothing. SPIi prefix 0: no eNodeB's."""
        if self.serving:
            return
        spi = PROBE_PREFIX + self.rand(6)
        probe = Message(spi, bytes(8), ExchangeType.IKE_SA_INIT, FLAG_INITIATOR, 0,
                        [UnknownPayload(PROBE_PAYLOAD, b"", critical=True)])  # fmt: skip
        self._out.append((MARKER + probe.encode(), self.gateway))
        self.probes += 1
        self._push(now + self.probe_every, "probe")

    def _probe_answered(self, now: float) -> None:
        if self.serving:
            return
        self.serving, self.serving_at = True, now
        log.info("the gateway answered probe %d after %.2f s: dialing", self.probes,
                 now - (self.first_probe or now))  # fmt: skip

    # ------------------------------------------------------------------ internals
    def _push(self, due: float, kind: str, index: int = 0, k: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (due, self._seq, kind, index, k))

    def _set_phase(self, enb: ENodeB, phase: Phase) -> None:
        if enb.phase is not phase:
            self.phases[enb.phase] -= 1
            self.phases[phase] += 1
            enb.phase = phase

    def _queue(self, enb: ENodeB) -> None:
        self._set_phase(enb, Phase.QUEUED)
        self.queue.append(enb.index)

    def _flush(self, now: float) -> list[tuple[bytes, Addr]]:
        self._start_due(now)
        out, self._out = self._out, []
        return out

    def _start_due(self, now: float) -> None:
        """Start queued eNodeBs: at most ``rate`` a second (a reconnect's deletes included),
        ``half-open`` INITs in flight."""
        interval = 1.0 / self.s.rate
        while (self.to_delete or self.queue) and not self.paused and self.serving:
            if not self.to_delete and self.phases[Phase.INIT] >= self.s.half_open:
                return
            if now < self.next_start:
                if self.start_due != self.next_start:
                    self.start_due = self.next_start
                    self._push(self.next_start, "start")
                return
            if self.to_delete:
                enb = self.enbs[self.to_delete.popleft()]
                sa = enb.established()
                if enb.reconnecting and sa is not None:
                    self._paced(now, interval)
                    self._run(enb, enb.endpoint.delete(sa.my_spi, now), now)
                continue
            enb = self.enbs[self.queue.popleft()]
            if enb.phase is not Phase.QUEUED:
                continue
            self._paced(now, interval)
            self.counts["attempts"] += 1
            if self.first_attempt is None:
                self.first_attempt = now
            enb.last_event = None
            self._set_phase(enb, Phase.INIT)
            self._run(enb, enb.endpoint.initiate(self.gateway, now, local=self.local), now)

    def _paced(self, now: float, interval: float) -> None:
        """One start (or delete) now; the next one ``interval`` later. Lateness of the loop
        (under 50 ms) is caught up; idle time is not saved up into a burst."""
        base = self.next_start if self.next_start >= now - 0.05 else now
        self.next_start = base + interval

    def _run(self, enb: ENodeB, outs: list, now: float) -> None:
        """One engine step's output: datagrams out, events counted, the phase followed."""
        for o in outs:
            if isinstance(o, Send):
                self._out.append((o.data, o.dst))
            elif isinstance(o, ChildEstablished):
                self._child_up(enb, o, now)
            elif isinstance(o, ChildDeleted):
                self._child_down(enb, o, now)
            elif isinstance(o, ChildRefused):
                self.counts["children_refused"] += 1
                log.info("%s: child SA refused: %s", enb.name, o.reason)
                self._check_children(enb, now + enb.child_backoff)
                enb.child_backoff = min(enb.child_backoff * 2, self.s.retry_max)
            elif isinstance(o, AuthFailed | Deleted):
                enb.last_event = o
            elif isinstance(o, Retransmit):
                self.counts["retransmissions"] += 1
            elif isinstance(o, InternalError):
                self.counts["internal_errors"] += 1
                log.warning("%s: internal error: %s", enb.name, o.reason)
        self._follow(enb, now)
        due = enb.endpoint.get_timer()
        if due is not None and due != enb.ep_due:
            enb.ep_due = due
            self._push(due, "ep", enb.index)

    def _follow(self, enb: ENodeB, now: float) -> None:
        """The eNodeB's phase from its endpoint's SAs (an IKE rekey keeps it up; the last SA
        gone is a failure or a loss), and its share of the children up."""
        sas = list(enb.endpoint.sas.values())
        if any(sa.state is State.ESTABLISHED for sa in sas):
            phase = Phase.UP
        elif any(sa.state in (State.NEW, State.WAIT_INIT_RESPONSE) for sa in sas):
            phase = Phase.INIT
        elif sas:
            phase = Phase.AUTH
        else:
            phase = None
        old = enb.phase
        sa = enb.established()
        covered = len({c.policy for c in sa.children.values()}) if sa is not None else 0
        self.children_up += covered - enb.covered
        enb.covered = covered
        wanted = self.s.expected_up * self.s.children
        if self.children_all_up is None and wanted and self.children_up >= wanted:
            self.children_all_up = now
        if phase is None:
            if enb.reconnecting:
                enb.reconnecting = False
                enb.esp.clear()
                self._queue(enb)
            elif old in ESTABLISHING or old is Phase.UP:
                self._lost(enb, old, now)
            return
        self._set_phase(enb, phase)
        if phase is Phase.UP and old is not Phase.UP:
            self._came_up(enb, now)

    def _came_up(self, enb: ENodeB, now: float) -> None:
        self.counts["established"] += 1
        if enb.ever_up:
            self.counts["re_established"] += 1
        enb.ever_up, enb.up_since = True, now
        self.ups.append(now)
        if self.first_up is None:
            self.first_up = now
        if self.all_up is None and self.phases[Phase.UP] >= self.s.expected_up:
            self.all_up = now
        self._create_children(enb, now)

    def _lost(self, enb: ENodeB, old: Phase, now: float) -> None:
        reason = _reason(enb.last_event)
        if old is Phase.UP:
            self.counts["lost"] += 1
            self.losses[reason] += 1
            if enb.up_since is not None and now - enb.up_since >= self.s.retry_max:
                enb.backoff = self.s.retry_initial  # it was stable: start the back-off afresh
        else:
            self.counts["failed"] += 1
            self.failures[reason] += 1
        delay = enb.backoff * (0.5 + self.jitter.random())
        enb.backoff = min(enb.backoff * 2, self.s.retry_max)
        log.info("%s: IKE SA %s (%s); again in %.1f s", enb.name,
                 "lost" if old is Phase.UP else "failed",
                 getattr(enb.last_event, "reason", reason), delay)  # fmt: skip
        enb.esp.clear()
        enb.up_since = None
        self._set_phase(enb, Phase.WAITING)
        self._push(now + delay, "retry", enb.index)

    def _check_children(self, enb: ENodeB, due: float) -> None:
        if enb.check_due is None or due < enb.check_due:
            enb.check_due = due
            self._push(due, "children", enb.index)

    def _create_children(self, enb: ENodeB, now: float) -> None:
        """CREATE_CHILD_SA for every payload no child covers (the engine sends them one at
        a time and skips one that got covered meanwhile, by the gateway's MCSA say)."""
        sa = enb.established()
        if sa is None:
            return
        for policy in self.policies:
            if not sa.covered(policy.name):
                self._run(enb, enb.endpoint.create_child(sa.my_spi, now, policy.name), now)

    def _child_up(self, enb: ENodeB, ev: ChildEstablished, now: float) -> None:
        self.counts["children_established"] += 1
        enb.child_backoff = self.s.retry_initial
        k = int(ev.policy[5:]) - 1 if ev.policy.startswith("child") else 0
        for sa in enb.endpoint.sas.values():
            child = sa.children.get(ev.our_spi)
            if child is not None:
                enb.esp[ev.our_spi] = (EspSa.from_child(child), k)
                break
        flow = self.s.flow(k)
        if flow is not None and flow.pps > 0 and k not in enb.sending:
            enb.sending.add(k)
            self._push(now + self.jitter.random() / flow.pps, "traffic", enb.index, k)

    def _child_down(self, enb: ENodeB, ev: ChildDeleted, now: float) -> None:
        enb.esp.pop(ev.our_spi, None)
        if not ev.reason.startswith("IKE SA"):  # the child alone went: make it again soon
            self._check_children(enb, now + self.s.retry_initial)

    def _send_flow(self, enb: ENodeB, k: int, due: float, now: float) -> None:
        flow, name = self.s.flow(k), f"child{k + 1}"
        sa = enb.established() if enb.phase is Phase.UP else None
        child = None
        if sa is not None:
            for c in sa.children.values():  # the newest child of the payload (after a rekey)
                if c.policy == name and c.our_spi in enb.esp:
                    child = c
        if child is None:
            enb.sending.discard(k)  # resumed by the next ChildEstablished of this payload
            return
        esp, _ = enb.esp[child.our_spi]
        src = sa.virtual_ips[0] if sa.virtual_ips else self.local[0]
        inner = inner_packet(src, _destination(flow, child), flow)
        packet = esp.seal(inner, self.rand)
        stats = self.flows[k]
        if packet is None:
            stats.refused += 1
        else:
            self._out.append((packet, sa.peer))
            stats.packets_sent += 1
            stats.bytes_sent += len(inner)
        nxt = due + 1.0 / flow.pps
        self._push(nxt if nxt > now - 1.0 else now + 1.0 / flow.pps, "traffic", enb.index, k)

    def _esp_in(self, data: bytes) -> None:
        enb = self.enbs.get(int.from_bytes(data[:2], "big"))
        entry = enb.esp.get(data[:4]) if enb is not None else None
        if entry is None:
            self.counts["esp_unknown_spi"] += 1
            return
        esp, k = entry
        inner = esp.open(data)
        if inner is None:
            self.counts["esp_dropped"] += 1
        elif k < len(self.flows):
            self.flows[k].packets_received += 1
            self.flows[k].bytes_received += len(inner)
        else:
            self.counts["esp_received_other"] += 1

    # ------------------------------------------------------------------ status
    def status(self, now: float) -> dict:
        while self.ups and self.ups[0] < now - RATE_WINDOW_S:
            self.ups.popleft()
        window = min(RATE_WINDOW_S, now - self.first_up) if self.first_up is not None else 0
        ramp = self.all_up - self.first_up if self.all_up is not None else None
        return {
            "configured": self.s.count,
            "gateway": _text(self.gateway),
            "up": self.phases[Phase.UP],
            "establishing": sum(self.phases[p] for p in ESTABLISHING),
            "half_open": self.phases[Phase.INIT],
            "phases": {p.value: self.phases[p] for p in Phase},
            "children_up": self.children_up,
            "children_wanted": self.s.expected_up * self.s.children,
            "expected": self.s.expected_up,  # tunnels that should come up (all but revoked)
            "revoked": [fqdn(i) for i in range(self.s.expected_up + 1, self.s.count + 1)],
            "issuers": self.s.issuer_counts(),
            "gateway_serving": self.serving,
            "probes": self.probes,
            "gateway_answered_s": _rel(self.serving_at, self.first_probe),
            "attempts": self.counts["attempts"],
            "failed": self.counts["failed"],
            "failures": dict(self.failures),
            "lost": self.counts["lost"],
            "losses": dict(self.losses),
            "re_established": self.counts["re_established"],
            "tunnels_per_s": round(len(self.ups) / window, 2) if window > 0 else 0.0,
            "first_up_s": _rel(self.first_up, self.first_attempt),
            "all_up_s": _rel(self.all_up, self.first_attempt),
            "children_all_up_s": _rel(self.children_all_up, self.first_attempt),
            "ramp_s": round(ramp, 3) if ramp is not None else None,
            "paused": self.paused,
            "counts": dict(self.counts),
            "flows": [f.report() for f in self.flows],
        }


def _rel(t: float | None, origin: float | None) -> float | None:
    return None if t is None or origin is None else round(t - origin, 3)


def _text(addr: Addr) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


# ------------------------------------------------------------------ the process (I/O)
class WallClock:
    """The fleet's wall clock (certificate validity), warpable like the lab CA's."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.offset, dt.UTC)


def open_socket(gateway: Addr) -> tuple[socket.socket, Addr]:
    """One UDP socket for every eNodeB, bound to the address that routes to the gateway."""
    family = socket.AF_INET6 if ":" in gateway[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(gateway)
        source = probe.getsockname()[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock, sock.getsockname()[:2]


def wait_for_ca(home: Path, stop: threading.Event, timeout: float = 60.0) -> bool:
    """The lab CA writes issuing.crt last when it creates itself: then all its files exist."""
    deadline = time.monotonic() + timeout
    while not (home / "issuing.crt").exists():
        if stop.is_set() or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class FleetProcess:
    def __init__(self, run: RunDir) -> None:
        manifest = run.manifest()
        topo = manifest["topology"]
        lab = topo.get("lab") or {}
        self.run, self.ours = run, manifest["lab"]["fleet"]
        self.settings = FleetSettings.from_config(lab["fleet"], topo.get("startup_config", ""))
        self.validity = int((lab.get("ca") or {}).get("validity-days", 365))
        self.home = run.root / "lab" / "fleet"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "status.json").unlink(missing_ok=True)  # a previous run's
        self.clock = WallClock()
        self.gateway = parse_address(self.ours["gateway"])
        self.sock, self.local = open_socket(self.gateway)
        probe = PROBE_EVERY_S if self.settings.wait_for_gateway else None
        self.fleet = Fleet(self.settings, self.gateway, self.local, rand=SystemRandom(),
                           wall_clock=self.clock.now, probe_every=probe)  # fmt: skip
        self.stop = threading.Event()
        self.ready: queue.Queue = queue.Queue()  # (index, IkeConfig) from the credentials thread
        self.commands: queue.Queue = queue.Queue()  # from the admin API
        self.prepared = 0
        self.snapshot: dict = {}
        self.send_errors = 0
        self.executor = None  # RSA key generation (a process pool), while it runs

    # --- credentials (a thread: RSA keys come from a process pool) ----------------
    def prepare(self) -> None:
        try:
            self._prepare()
        except Exception:
            log.exception("preparing the eNodeB credentials failed")

    def _prepare(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        from chassis.lab.authority import Authority

        ca_home = self.run.root / "lab" / "ca"
        if not wait_for_ca(ca_home, self.stop):
            log.error("no lab CA in %s: the eNodeBs have no certificates", ca_home)
            return
        authority = Authority(ca_home, self.clock.now, self.validity)
        s = self.settings
        executor = None
        if s.key == "rsa-2048":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from chassis.lab.keypool import KeyPool

            pool = KeyPool(self.home / "rsa-2048")
            executor = ProcessPoolExecutor(
                max_workers=max(1, min(4, os.cpu_count() or 1)),
                mp_context=multiprocessing.get_context("forkserver"),
            )
            self.executor = executor
            keys = pool.keys(s.count, executor)
        else:
            keys = ((i, ec.generate_private_key(ec.SECP256R1())) for i in range(1, s.count + 1))
        started = time.monotonic()
        try:
            for index, key in keys:
                if self.stop.is_set():
                    break
                creds = credentials(authority, s, index, key)
                self.ready.put((index, ike_config(s, creds, (authority.root,))))
        finally:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        log.info("credentials for %d eNodeBs (%s, from %s) in %.2f s", s.count, s.key,
                 ", ".join(f"the {ca} CA: {n}" for ca, n in s.issuer_counts().items()),
                 time.monotonic() - started)  # fmt: skip

    # --- the loop -------------------------------------------------------------------
    def send(self, out: list[tuple[bytes, Addr]]) -> None:
        for data, dst in out:
            try:
                self.sock.sendto(data, dst)
            except OSError:  # a full buffer, an ICMP error reported late: UDP may lose it
                self.send_errors += 1

    def step(self) -> None:
        now = time.monotonic()
        while True:
            try:
                index, config = self.ready.get_nowait()
            except queue.Empty:
                break
            self.prepared += 1
            self.send(self.fleet.add(index, config, now))
        while True:
            try:
                command, value = self.commands.get_nowait()
            except queue.Empty:
                break
            if command == "pause":
                self.send(self.fleet.pause(bool(value), now))
            elif command == "reconnect":
                self.send(self.fleet.reconnect(now))
        self.send(self.fleet.handle_timer(now))
        for _ in range(512):
            try:
                data, src = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ECONNREFUSED from an earlier send: nothing to read
                continue
            self.send(self.fleet.receive(data, src[:2], time.monotonic()))

    def publish(self) -> None:
        status = self.fleet.status(time.monotonic())
        status.update(
            pid=os.getpid(),
            updated=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            local=_text(self.local),
            key=self.settings.key,
            issuer=self.settings.issuer,
            dh_group=self.settings.dh_group,
            rate=self.settings.rate,
            half_open_limit=self.settings.half_open,
            prepared=self.prepared,
            send_errors=self.send_errors,
        )
        self.snapshot = status
        # replaced atomically, not fsynced: it is a view, and an fsync would stall the loop
        tmp = self.home / ".status.json.tmp"
        tmp.write_bytes(json.dumps(status).encode())
        os.replace(tmp, self.home / "status.json")

    def serve(self) -> None:
        port = int(self.ours["admin"].split(":")[2].split("/")[0])
        server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="admin", daemon=True).start()
        threading.Thread(target=self.prepare, name="credentials", daemon=True).start()
        log.info("fleet of %d eNodeBs to %s from %s; admin %s", self.settings.count,
                 self.ours["gateway"], _text(self.local), self.ours["admin"])  # fmt: skip
        next_status = 0.0
        try:
            while not self.stop.is_set():
                self.step()
                now = time.monotonic()
                if now >= next_status:
                    self.publish()
                    next_status = now + STATUS_EVERY_S
                due = self.fleet.next_timer()
                wait = min(max(due - now, 0.0), 0.05) if due is not None else 0.05
                if not self.ready.empty() or not self.commands.empty():
                    wait = 0.0
                select.select([self.sock], [], [], wait)
        finally:
            self.send(self.fleet.shutdown(time.monotonic()))
            self.publish()
            if self.executor is not None:
                self.executor.shutdown(wait=False, cancel_futures=True)
            server.shutdown()
            self.sock.close()
            log.info("fleet stopped")


def make_handler(proc: FleetProcess):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, fmt, *args):
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/admin":
                self._send(200, json.dumps(proc.snapshot).encode())
            else:
                self._send(404, b"not found\n", "text/plain")

        def do_POST(self):
            if self.path != "/admin":
                self._send(404, b"not found\n", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if not 0 < length <= 65536:
                    raise ValueError("missing or oversize body")
                changes = json.loads(self.rfile.read(length))
                if not isinstance(changes, dict) or set(changes) - {"pause", "warp", "reconnect"}:
                    raise ValueError("the fleet takes pause (bool), reconnect (true), warp (s)")
                if "warp" in changes:
                    proc.clock.offset += float(changes["warp"])
                if "pause" in changes:
                    if not isinstance(changes["pause"], bool):
                        raise ValueError("pause must be true or false")
                    proc.commands.put(("pause", changes["pause"]))
                if changes.get("reconnect") is True:
                    proc.commands.put(("reconnect", True))
            except (ValueError, TypeError) as exc:
                self._send(400, f"bad request: {exc}\n".encode(), "text/plain")
                return
            self._send(200, json.dumps({"ok": True, "warp": proc.clock.offset}).encode())

    return Handler


def own_session() -> None:
    """The eNodeBs are the world outside the chassis: a session of their own. The backplane
    starts the chassis in one session, and with the kernel's autogroups (the default) the
    scheduler shares the CPUs between sessions first: in the chassis's session the fleet, busy
    with every eNodeB's DH and signatures, took the cards' share whenever another session used
    a CPU, and a card handling 4 IKE_SA_INITs (23 ms of CPU) waited 360-700 ms for it, missed
    its heartbeats and was failed. Still the backplane's child (it dies with it)."""
    try:
        os.setsid()
    except OSError:  # already a session or process-group leader (started by hand)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chassis.lab.fleet")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.DEBUG if os.environ.get("CHASSIS_DEBUG") else logging.INFO,
        format="%(asctime)s lab-fleet %(levelname)s %(message)s",
    )
    own_session()
    proc = FleetProcess(RunDir(args.run_dir))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: proc.stop.set())
    proc.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
