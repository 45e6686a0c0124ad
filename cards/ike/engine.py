"""The IKEv2 endpoint: many IKE SAs keyed by our SPI, sans-IO (DESIGN principle 1).

Datagrams and the monotonic ``now`` (seconds) go in; ``Send`` and events come out. The
runner calls ``get_timer()`` and ``handle_timer(now)``; randomness (``rand``), our IKE SPIs
(``spi_alloc``) and inbound ESP SPIs (``esp_spi_alloc``; the chassis puts the card slot in the
top byte of both) and the warpable wall clock used for certificate validity (``wall_clock``)
are injected. No peer input raises: malformed
datagrams are dropped or answered as RFC 7296 says, and a bug becomes an InternalError event.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import struct
from collections.abc import Callable

from .config import IkeConfig
from .const import FLAG_INITIATOR, FLAG_RESPONSE, ExchangeType, NotifyType
from .events import (
    Addr,
    ChildDeleted,
    ChildEstablished,
    Dropped,
    InternalError,
    Out,
    Rejected,
    Send,
)
from .message import (
    HEADER_LEN,
    IkeDecodeError,
    Message,
    NoncePayload,
    NotifyPayload,
    add_non_esp_marker,
    strip_non_esp_marker,
)
from .sa import IkeSa, State
from .tasks.create_child import CreateChildTask
from .tasks.informational import ChildDeleteTask, DeleteTask, LivenessTask
from .tasks.mid_sync import MidSyncTask
from .tasks.rekey_ike import IkeRekeyTask

ZERO_SPI = bytes(8)


class Endpoint:
    def __init__(self, config: IkeConfig, *, rand: Callable[[int], bytes], wall_clock,
                 spi_alloc: Callable[[], bytes] | None = None, cookie_secret: bytes | None = None,
                 local: Addr = ("0.0.0.0", 500),
                 esp_spi_alloc: Callable[[], bytes] | None = None):  # fmt: skip
        self.config, self.rand, self.wall_clock = config, rand, wall_clock
        self.spi_alloc = spi_alloc or (lambda: rand(8))
        self.esp_spi_alloc = esp_spi_alloc or (lambda: rand(4))
        self.esp_spis: set[bytes] = set()  # our inbound ESP SPIs in use, over all IKE SAs
        self.cookie_secret = cookie_secret if cookie_secret is not None else rand(32)
        self.local = local
        self.sas: dict[bytes, IkeSa] = {}  # by our SPI
        self.timers: list[tuple[float, int, bytes]] = []  # heap of (due, seq, our SPI)
        self._seq = 0
        self.changed: set[bytes] | None = None  # SAs changed since take_changes (when tracked)
        self.half_open: dict[tuple[Addr, bytes], bytes] = {}  # (peer, SPIi) -> our SPIr
        # The allocators every SA of ours calls, bound once (a bound method per SA is 64 B)
        self._spi_fn, self._esp_spi_fn = self._new_spi, self._new_esp_spi

    # ------------------------------------------------------------------ API
    def receive(self, datagram: bytes, src: Addr, dst: Addr, now: float) -> list[Out]:
        try:
            dst = tuple(dst)
            if dst == self.local:
                dst = self.local  # the SAs keep our address: one tuple for all of them
            return self._receive(bytes(datagram), tuple(src), dst, now)
        except Exception as exc:  # a bug must not take the card down with it
            return [InternalError(f"{type(exc).__name__}: {exc}")]

    def initiate(self, peer: Addr, now: float, local: Addr | None = None) -> list[Out]:
        sa = IkeSa(self.config, self.rand, initiator=True, spi_i=self._new_spi(),
                   local=local or self.local, peer=peer, wall_clock=self.wall_clock)  # fmt: skip
        sa.new_esp_spi, sa.new_ike_spi = self._esp_spi_fn, self._spi_fn
        self.sas[sa.spi_i] = sa
        return self._guard(sa, sa.start, now)

    def delete(self, spi: bytes, now: float) -> list[Out]:
        """Delete the IKE SA whose SPI (ours) is ``spi`` with an INFORMATIONAL exchange."""
        sa = self.sas.get(spi)
        return (
            self._guard(sa, sa.queue, ExchangeType.INFORMATIONAL, [DeleteTask()], now) if sa else []
        )

    def delete_child(self, spi: bytes, esp_spi: bytes, now: float) -> list[Out]:
        """Delete the CHILD_SA whose inbound ESP SPI is ``esp_spi`` of the IKE SA ``spi``."""
        sa = self.sas.get(spi)
        if sa is None or esp_spi not in sa.children:
            return []
        return self._guard(sa, sa.queue, ExchangeType.INFORMATIONAL,
                           [ChildDeleteTask(esp_spi)], now)  # fmt: skip

    def create_child(self, spi: bytes, now: float, policy: str | None = None) -> list[Out]:
        """A new CHILD_SA for the payload ``policy`` (the first one if None) of IKE SA ``spi``;
        nothing is sent if a child already covers it or max-childsa is reached."""
        sa = self.sas.get(spi)
        if sa is None:
            return []
        task = CreateChildTask(sa.policy(policy or ""))
        return self._guard(sa, sa.queue, ExchangeType.CREATE_CHILD_SA, [task], now)

    def rekey_child(self, spi: bytes, esp_spi: bytes, now: float) -> list[Out]:
        """Rekey the CHILD_SA whose inbound ESP SPI is ``esp_spi``; the old one is deleted."""
        sa = self.sas.get(spi)
        if sa is None or esp_spi not in sa.children:
            return []
        task = CreateChildTask(rekey=esp_spi)
        return self._guard(sa, sa.queue, ExchangeType.CREATE_CHILD_SA, [task], now)

    def rekey_ike(self, spi: bytes, now: float) -> list[Out]:
        """Replace the IKE SA ``spi`` by a new one (new SPIs and keys); children move along."""
        sa = self.sas.get(spi)
        if sa is None or sa.ike_rekeying is not None:
            return []
        return self._guard(sa, sa.queue, ExchangeType.CREATE_CHILD_SA, [IkeRekeyTask()], now)

    def resolve(self, spi: bytes, url: str, data: bytes | None, now: float) -> list[Out]:
        """The runner fetched a certificate a FetchCertificate event asked for (None: failed)."""
        sa = self.sas.get(spi)
        return self._guard(sa, sa.resolve, url, data, now) if sa else []

    def revocation_answer(self, spi: bytes, kind: str, url: str, body: bytes | None,
                          error: str | None, now: float) -> list[Out]:  # fmt: skip
        """An answer to a CheckOcsp ("ocsp": the body) or FetchCrl ("crl") event."""
        sa = self.sas.get(spi)
        return self._guard(sa, sa.revocation_answer, kind, url, body, error, now) if sa else []

    def sync_message_ids(self, spi: bytes, now: float) -> list[Out]:
        """After a takeover from checkpoints: agree on Message IDs with the peer (RFC 6311)
        before any other request of ours, when the peer announced support."""
        sa = self.sas.get(spi)
        if sa is None or not sa.mid_sync or sa.state is not State.ESTABLISHED:
            return []
        return self._guard(sa, sa.queue, ExchangeType.INFORMATIONAL, [MidSyncTask()], now,
                           True)  # fmt: skip

    def check_liveness(self, spi: bytes, now: float) -> list[Out]:
        sa = self.sas.get(spi)
        return (
            self._guard(sa, sa.queue, ExchangeType.INFORMATIONAL, [LivenessTask()], now)
            if sa
            else []
        )

    def get_timer(self) -> float | None:
        """The earliest SA timer, from a heap (a card holds tens of thousands of SAs: no scan).
        Entries are pushed after every SA step; outdated ones are dropped when they surface."""
        heap = self.timers
        while heap:
            due, _, spi = heap[0]
            sa = self.sas.get(spi)
            if sa is not None and sa.next_timer() == due:
                return due
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> list[Out]:
        out: list[Out] = []
        while (due := self.get_timer()) is not None and due <= now:
            _, _, spi = heapq.heappop(self.timers)
            sa = self.sas[spi]
            out += self._guard(sa, sa.handle_timer, now)
        return out

    def _schedule(self, sa: IkeSa) -> None:
        due = sa.next_timer()
        if due is not None:
            self._seq += 1
            heapq.heappush(self.timers, (due, self._seq, sa.my_spi))
        if len(self.timers) > 4 * len(self.sas) + 64:  # too many outdated entries: rebuild
            self.timers = [(t, i, spi) for i, (spi, sa) in enumerate(self.sas.items())
                           if (t := sa.next_timer()) is not None]  # fmt: skip
            heapq.heapify(self.timers)

    def export_sa(self, spi: bytes) -> dict:
        return self.sas[spi].to_checkpoint()

    def import_sa(self, checkpoint: dict, now: float | None = None) -> IkeSa:
        """An SA from its checkpoint; with ``now``, its lifetimes go on from there."""
        sa = IkeSa.from_checkpoint(checkpoint, self.config, self.rand, self.wall_clock, now)
        return self.adopt(sa)

    def reconfigure(self, config: IkeConfig) -> None:
        """New settings for this endpoint (a renewed certificate, an edited template): every
        SA stays up and follows them from its next step; its inner addresses stay taken."""
        self.config = config
        for sa in self.sas.values():
            sa.config = config
            if config.addresses is not None:
                for address in sa.assigned:
                    config.addresses.reserve(address)

    def adopt(self, sa: IkeSa) -> IkeSa:
        """Serve an IKE SA restored elsewhere (a standby card's, cards/recovery.py)."""
        sa.config, sa.rand, sa.wall_clock = self.config, self.rand, self.wall_clock
        sa.new_esp_spi, sa.new_ike_spi = self._esp_spi_fn, self._spi_fn
        self.sas[sa.my_spi] = sa
        self.esp_spis.update(sa.children)
        self._schedule(sa)
        if self.config.addresses is not None:  # its inner addresses are taken again
            for address in sa.assigned:
                self.config.addresses.reserve(address)
        return sa

    # ------------------------------------------------------------------ dispatch
    def _receive(self, data: bytes, src: Addr, dst: Addr, now: float) -> list[Out]:
        if 500 not in (src[1], dst[1]):
            marked, data = strip_non_esp_marker(data)
            if not marked:
                return [Dropped(src, "no non-ESP marker on the NAT-T port (ESP or keepalive)")]
        if len(data) < HEADER_LEN:
            return [Dropped(src, "shorter than an IKE header")]
        spi_i, spi_r, _, version, exchange, flags, mid = struct.unpack_from("!8s8sBBBBI", data)
        response, from_initiator = bool(flags & FLAG_RESPONSE), bool(flags & FLAG_INITIATOR)
        if version >> 4 != 2:
            if version >> 4 > 2 and not response:  # RFC 7296 2.5: say which version we speak
                return [self._notice(data, NotifyType.INVALID_MAJOR_VERSION, b"", src, dst)]
            return [Dropped(src, f"IKE major version {version >> 4}")]
        try:
            msg = Message.decode(data)
        except IkeDecodeError as exc:
            unsupported = exc.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
            if unsupported and exchange == ExchangeType.IKE_SA_INIT and not response:
                return [self._notice(data, exc.notify, exc.data, src, dst)]
            return [Dropped(src, f"malformed: {exc.reason}")]
        if from_initiator and exchange == ExchangeType.IKE_SA_INIT and not response:
            return self._init_request(msg, src, dst, now)
        sa = self.sas.get(spi_r if from_initiator else spi_i)
        if sa is None or sa.initiator == from_initiator:
            if not response and exchange != ExchangeType.IKE_SA_INIT:  # RFC 7296 2.21.4
                return [self._notice(data, NotifyType.INVALID_IKE_SPI, b"", src, dst)]
            return [Dropped(src, "unknown IKE SPI")]
        return self._guard(sa, sa.receive, msg, src, dst, now)

    def _init_request(self, msg: Message, src: Addr, dst: Addr, now: float) -> list[Out]:
        if msg.spi_r != ZERO_SPI or msg.message_id != 0:
            return [Dropped(src, "IKE_SA_INIT request with a responder SPI or message ID")]
        known = self.sas.get(self.half_open.get((src, msg.spi_i), b""))
        if known is not None:  # a retransmission: the SA answers from its cache
            return self._guard(known, known.receive, msg, src, dst, now)
        threshold = self.config.cookie_threshold
        if threshold is not None and len(self.half_open) >= threshold:
            nonce = msg.first(NoncePayload)
            if nonce is None:
                return [Dropped(src, "IKE_SA_INIT without a nonce")]
            want = self._cookie(nonce.data, src, msg.spi_i)
            got = msg.notify(NotifyType.COOKIE)
            if got is None or not hmac.compare_digest(got.data, want):
                reason = "half-open SAs over the cookie threshold"
                return [self._notice(msg.raw, NotifyType.COOKIE, want, src, dst),
                        Rejected(src, NotifyType.COOKIE, reason)]  # fmt: skip
        sa = IkeSa(self.config, self.rand, initiator=False, spi_i=msg.spi_i,
                   spi_r=self._new_spi(), local=dst, peer=src, wall_clock=self.wall_clock)  # fmt: skip
        sa.new_esp_spi, sa.new_ike_spi = self._esp_spi_fn, self._spi_fn
        sa.setup_deadline = now + self.config.setup_timeout_s
        self.sas[sa.spi_r] = sa
        out = self._guard(sa, sa.receive, msg, src, dst, now)
        if sa.state is State.WAIT_AUTH_REQUEST:
            sa.half_open_key = (src, msg.spi_i)
            self.half_open[sa.half_open_key] = sa.spi_r
        return out

    def _guard(self, sa: IkeSa, fn, *args) -> list[Out]:
        """Run one SA step, then forget it if it died or index it if it is no longer half-open."""
        try:
            out = fn(*args)
        except Exception as exc:  # a bug: kill the one SA, keep the card
            sa.state = State.DEAD
            out = [InternalError(f"{type(exc).__name__}: {exc}")]
        for o in out:  # keep the index of our inbound ESP SPIs in step with the children
            if isinstance(o, ChildEstablished):
                self.esp_spis.add(o.our_spi)
            elif isinstance(o, ChildDeleted):
                self.esp_spis.discard(o.our_spi)
        if sa.half_open_key is not None and sa.state is not State.WAIT_AUTH_REQUEST:
            self.half_open.pop(sa.half_open_key, None)
            sa.half_open_key = None
        new_sas = sa.successors or ()
        if sa.successors:  # an IKE SA rekey made a new SA
            for new in sa.successors:
                self.sas[new.my_spi] = new
                self._schedule(new)
            sa.successors = ()
        if sa.state is State.DEAD:
            self.sas.pop(sa.my_spi, None)
            self.esp_spis.difference_update(sa.children)
        else:
            self._schedule(sa)
        if self.changed is not None and (sa.state is State.ESTABLISHED or sa.state is State.DEAD):
            self.changed.add(sa.my_spi)  # for the standby card's checkpoints
            self.changed.update(s.my_spi for s in new_sas)
        return out

    def track_changes(self, on: bool = True) -> None:
        """Record which SAs each step changed (take_changes), for checkpoint streaming."""
        self.changed = set() if on else None

    def take_changes(self) -> tuple[list[dict], list[bytes]]:
        """Checkpoints of the established SAs changed since the last call, and the SPIs of
        those gone (deleted, failed, rekeyed away)."""
        changed, self.changed = self.changed or set(), set()
        upserts, gone = [], []
        for spi in changed:
            sa = self.sas.get(spi)
            if sa is not None and sa.state is State.ESTABLISHED:
                upserts.append(sa.to_checkpoint())
            elif sa is None or sa.state is State.DEAD:
                gone.append(spi)
        return upserts, gone

    def checkpoints(self) -> list[dict]:
        """Every established SA (a standby card that joins takes them all first)."""
        return [sa.to_checkpoint() for sa in self.sas.values() if sa.state is State.ESTABLISHED]

    # ------------------------------------------------------------------ helpers
    def _new_spi(self) -> bytes:
        for _ in range(16):
            spi = bytes(self.spi_alloc())
            if len(spi) == 8 and spi != ZERO_SPI and spi not in self.sas:
                return spi
        raise RuntimeError("SPI allocator keeps returning used or invalid SPIs")

    def _new_esp_spi(self) -> bytes:
        """Our inbound ESP SPI: 4 bytes, unused, not 0-255 (reserved, RFC 4303 2.1)."""
        for _ in range(16):
            spi = bytes(self.esp_spi_alloc())
            if len(spi) == 4 and int.from_bytes(spi) > 255 and spi not in self.esp_spis:
                return spi
        raise RuntimeError("ESP SPI allocator keeps returning used or invalid SPIs")

    def _cookie(self, ni: bytes, src: Addr, spi_i: bytes) -> bytes:
        """<VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>)   (RFC 7296 2.6)."""
        digest = hashlib.sha256(ni + src[0].encode() + spi_i + self.cookie_secret).digest()
        return b"\x00" + digest

    def _notice(self, request: bytes, notify: int, data: bytes, src: Addr, dst: Addr) -> Send:
        """An unprotected answer outside any SA, SPIs and message ID copied (2.21.4)."""
        spi_i, spi_r, _, _, exchange, flags, mid = struct.unpack_from("!8s8sBBBBI", request)
        if notify == NotifyType.INVALID_IKE_SPI:
            exchange = ExchangeType.INFORMATIONAL
        if exchange == ExchangeType.IKE_SA_INIT:
            spi_r = ZERO_SPI
        out_flags = FLAG_RESPONSE | (0 if flags & FLAG_INITIATOR else FLAG_INITIATOR)
        msg = Message(spi_i, spi_r, exchange, out_flags, mid, [NotifyPayload(notify, data)])
        raw = msg.encode()
        if 500 not in (src[1], dst[1]):
            raw = add_non_esp_marker(raw)
        return Send(raw, dst, src)
