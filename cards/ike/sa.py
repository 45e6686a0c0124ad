"""One IKE SA: the state machine and the task manager (message IDs, retransmission, SK).

Message-ID window 1 (RFC 7296 2.3): at most one request of ours is outstanding, retransmitted
with exponential backoff until answered or given up; a repeated request from the peer is
answered from the cached response, byte for byte, without processing it again.

Split by concern: the states (states.py), the life cycle after IKE_AUTH (lifecycle.py: MCSA,
rekeys, lifetimes, DPD), Hash and URL fetches (hash_url.py) and the wire (wire.py: SK, RFC 7383
fragments, the non-ESP marker) are mixins of IkeSa; the exchanges are tasks (tasks/).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from .child import ChildSa
from .config import IkeConfig, IkeProposal
from .const import (
    DhGroup,
    Encr,
    Integ,
    NotifyType,
    Prf,
)
from .crypto import (
    IkeKeys,
    derive_ike_keys,
    skeyseed,
)
from .errors import IkeError, PeerRefused, Restart, Suspended
from .events import (
    Addr,
    Alive,
    AuthFailed,
    ChildDeleted,
    ChildEstablished,
    Deleted,
    Dropped,
    Established,
    MidSynced,
    Out,
    Rejected,
    Retransmit,
)
from .hash_url import NO_FETCHES, HashAndUrl
from .lifecycle import Lifecycle
from .message import (
    Message,
    NotifyPayload,
    SaPayload,
    SkfPayload,
)
from .proposals import proposal_name, shared_suite
from .revocation import RevocationWait
from .states import ANSWERS, SETUP_STATES, TRANSITIONS, State, Trigger, X  # noqa: F401
from .tasks import Ctx, Task
from .tasks.auth import AuthTask
from .tasks.cert_pre import CertPreTask
from .tasks.child import ChildTask
from .tasks.config import ConfigTask
from .tasks.create_child import CreateChildTask, Skip
from .tasks.informational import (
    AuthFailedNotice,
    InformationalResponder,
)
from .tasks.init import InitTask
from .tasks.mid_sync import MidSyncSupport, answer_sync
from .tasks.rekey_ike import IkeRekeyTask
from .wire import Wire

S, T = State, Trigger


@dataclass
class Outstanding:
    """Our request in flight: its tasks wait for the response; its bytes are retransmitted."""

    exchange: int
    tasks: list[Task]
    message_id: int
    data: bytes
    deadline: float
    retries: int = 0
    retry: tuple[float, int] | None = None  # (fixed interval, tries) instead of the backoff


def _digest(request: bytes) -> bytes:
    return hashlib.sha256(request).digest()


class IkeSa(Lifecycle, HashAndUrl, RevocationWait, Wire):
    # A card holds many of these (and restores them from checkpoints), so the attributes set
    # in __init__ live in slots, not in a per-instance dict (about 1.5 KB less per SA). List a
    # new attribute here: one that is not still works ("__dict__"), but brings the dict back.
    __slots__ = (
        "config", "rand", "wall_clock", "initiator", "spi_i", "spi_r", "local", "peer", "state",
        "proposal", "suite", "keys", "ni", "nr", "init_request", "init_response", "peer_hashes",
        "peer_certreq", "peer_id", "peer_cert_subject", "nat_local", "nat_remote", "send_mid",
        "recv_mid", "cached", "outstanding", "pending", "setup_deadline", "half_open_key",
        "new_ike_spi", "successors", "ike_rekeying", "rekeyed_to_theirs", "rekeyed_ours",
        "ike_rekey_at", "last_heard", "fragmenting", "reassembly", "first_fragment",
        "ike_expire_at", "children", "new_esp_spi", "_out", "_setup", "now", "mcsa_at",
        "replacing", "assigned", "virtual_ips", "no_child", "peer_http_lookup", "fetched",
        "parked", "pending_fetches", "revocation", "revocation_deadline", "mid_sync",
        "mid_sync_seen", "mid_grace",
        "__dict__",
    )  # fmt: skip

    def __init__(self, config: IkeConfig, rand: Callable[[int], bytes], *, initiator: bool,
                 spi_i: bytes, spi_r: bytes = bytes(8), local: Addr = ("0.0.0.0", 500),
                 peer: Addr = ("0.0.0.0", 500), wall_clock=None):  # fmt: skip
        self.config, self.rand, self.wall_clock = config, rand, wall_clock
        self.initiator = initiator
        self.spi_i, self.spi_r = spi_i, spi_r
        self.local, self.peer = tuple(local), tuple(peer)
        self.state = State.NEW
        self.proposal: IkeProposal | None = None
        self.suite = None
        self.keys: IkeKeys | None = None
        self.ni = self.nr = b""
        self.init_request = self.init_response = b""  # as sent, for the AUTH octets
        self.peer_hashes: tuple = ()  # peer's SIGNATURE_HASH_ALGORITHMS
        self.peer_certreq: list[bytes] | tuple = ()
        self.peer_id = self.peer_cert_subject = ""
        self.nat_local = self.nat_remote = False
        self.send_mid = 0  # next request we send
        self.recv_mid = 0  # next request we expect
        # (message ID, SHA-256 of the request, our response): answers its retransmissions
        self.cached: tuple[int, bytes, tuple[bytes, ...]] | None = None
        self.outstanding: Outstanding | None = None
        self.pending: list[tuple[int, list[Task]]] = []
        self.setup_deadline: float | None = None
        self.half_open_key = None  # the endpoint's index entry while WAIT_AUTH_REQUEST
        self.new_ike_spi: Callable[[], bytes] = lambda: rand(8)  # the endpoint's allocator
        # new SAs from rekeys, for the endpoint to index (a list while there are any)
        self.successors: list[IkeSa] | tuple = ()
        self.ike_rekeying = None  # our IKE rekey in flight
        self.rekeyed_to_theirs = None  # (new SA, nonces) when we answered the peer's rekey
        self.rekeyed_ours = None  # (new SA, nonces) once our rekey was answered
        self.ike_rekey_at: float | None = None
        self.last_heard = 0.0  # the last authenticated message from the peer (DPD)
        self.assigned: list[str] = []  # inner addresses we gave the peer (CP), until we go
        self.virtual_ips: list[str] | tuple = ()  # inner addresses the peer gave us (a list)
        self.no_child = ""  # why IKE_AUTH's CHILD_SA cannot be made (no free address)
        self.peer_http_lookup = False  # the peer takes certificates as Hash and URL
        self.fetched: dict[str, bytes | None] | None = None  # Hash and URL: url -> DER
        self.parked = None  # (request, payloads) waiting for those fetches
        self.pending_fetches: set[str] | frozenset[str] = NO_FETCHES
        self.revocation = None  # the peer certificate's revocation check (RevocationCheck)
        self.revocation_deadline: float | None = None  # when its current wait gives up
        self.mid_sync = False  # both sides announced IKEV2_MESSAGE_ID_SYNC_SUPPORTED (RFC 6311)
        self.mid_sync_seen = -1  # the highest M1 a peer's sync request carried
        self.mid_grace: int | None = None  # after our sync: the peer's in-flight request ID
        self.fragmenting = False  # both sides sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383)
        self.reassembly: dict | None = None  # the fragments of the message being received
        self.first_fragment = b""  # fragment 1 of the request just reassembled
        self.ike_expire_at: float | None = None
        self.children: dict[bytes, ChildSa] = {}  # by our (inbound) ESP SPI
        # our inbound ESP SPIs: the endpoint replaces this with its slot-aware, unique allocator
        self.new_esp_spi: Callable[[], bytes] = lambda: rand(4)
        self._out: list[Out] | None = None  # what the step being run (_run) sends and tells
        self._setup: dict[str, Task] | None = None  # the setup exchanges' tasks, until done
        self.now = 0.0  # the monotonic time of the step being run
        self.mcsa_at: float | None = None  # create the payloads the peer has not covered
        # child rekeys in progress, by our SPI of the old child: {"mine"/"theirs": new child}
        self.replacing: dict[bytes, dict] = {}

    # ------------------------------------------------------------------ role views
    @property
    def my_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def own_init(self) -> bytes:
        return self.init_request if self.initiator else self.init_response

    @property
    def peer_init(self) -> bytes:
        return self.init_response if self.initiator else self.init_request

    @property
    def own_nonce(self) -> bytes:
        return self.ni if self.initiator else self.nr

    @property
    def peer_nonce(self) -> bytes:
        return self.nr if self.initiator else self.ni

    def set_keys(self, chosen: IkeProposal, shared: bytes) -> None:
        self.proposal, self.suite = chosen, shared_suite(chosen)
        seed = skeyseed(chosen.prf, self.ni, self.nr, shared)
        self.keys = derive_ike_keys(self.suite, seed, self.ni, self.nr, self.spi_i, self.spi_r)

    # ------------------------------------------------------------------ state and events
    def fire(self, trigger: Trigger) -> None:
        new = TRANSITIONS.get((self.state, trigger))
        if new is None:
            raise RuntimeError(f"no transition from {self.state.name} on {trigger.name}")
        self.state = new

    def emit(self, event: Out) -> None:
        if self._out is not None:  # outside a step nothing would ever return it
            self._out.append(event)

    def authenticated(self) -> None:
        self.fire(T.AUTHENTICATED)
        self.setup_deadline = None
        if self.config.mcsa_delay_s is not None and len(self.config.children) > 1:
            self.mcsa_at = self.now + self.config.mcsa_delay_s
        self._ike_timers()
        self.emit(Established(self.spi_i, self.spi_r, self.peer_id, self.peer_cert_subject,
                              self.peer, proposal_name(self.proposal), self.initiator))  # fmt: skip

    def _setup_done(self) -> None:
        """IKE_AUTH is over: what only the setup exchanges needed goes (the raw IKE_SA_INIT
        messages and SK_pi/SK_pr of the AUTH octets, the peer's CERTREQ and hash algorithms,
        the certificates fetched for Hash and URL, the setup tasks with our DH private key).
        A retransmitted IKE_AUTH request is answered from ``cached``; a checkpoint carries
        SK_pi/SK_pr empty."""
        self.init_request = self.init_response = b""
        self.peer_certreq = self.peer_hashes = ()
        self.fetched = self._setup = None
        if self.keys is not None:
            self.keys = replace(self.keys, sk_pi=b"", sk_pr=b"")

    def child_up(self, child: ChildSa, rekey_of: bytes | None = None) -> None:
        policy = self.policy(child.policy)
        child.expire_at = self.now + policy.lifetime_s
        child.rekey_at = self.now + 0.9 * policy.lifetime_s if policy.rekey else None
        self.children[child.our_spi] = child
        self.emit(ChildEstablished(self.spi_i, self.spi_r, child.our_spi, child.their_spi,
                                   child.tsi, child.tsr, proposal_name(child.suite), child.policy,
                                   rekey_of or b""))  # fmt: skip

    def child_down(self, our_spi: bytes, reason: str) -> ChildSa | None:
        child = self.children.pop(our_spi, None)
        self.replacing.pop(our_spi, None)
        if child is not None:
            self.emit(ChildDeleted(self.spi_i, self.spi_r, child.our_spi, child.their_spi, reason))
        return child

    def child_by_their_spi(self, spi: bytes) -> ChildSa | None:
        return next((c for c in self.children.values() if c.their_spi == spi), None)

    def _drop_children(self, reason: str) -> None:
        """Deleting an IKE SA deletes its CHILD_SAs (RFC 7296 1.4.1)."""
        for our_spi in list(self.children):
            self.child_down(our_spi, reason)

    def deleting(self) -> None:
        self.fire(T.DELETE_SENT)

    def close(self, reason: str) -> None:
        self.fire(T.CLOSED)
        self._drop_children(f"IKE SA {reason}")
        self._release_addresses()
        self.emit(Deleted(self.spi_i, self.spi_r, reason))

    def _release_addresses(self) -> None:
        """The addresses we gave the peer go back to the pools with the IKE SA."""
        if self.config.addresses is not None:
            for address in self.assigned:
                self.config.addresses.release(address)
        self.assigned = []

    def alive(self) -> None:
        self.emit(Alive(self.spi_i, self.spi_r))

    def mid_synced(self, send_mid: int, recv_mid: int) -> None:
        self.emit(MidSynced(self.spi_i, self.spi_r, self.send_mid, self.recv_mid))

    def fail(self, reason: str, *, auth: bool = False) -> None:
        if self.state is S.DEAD:
            return
        self.fire(T.FAILED)
        self.outstanding, self.pending = None, []
        self._drop_children(f"IKE SA failed: {reason}")
        self._release_addresses()
        if auth:
            self.emit(AuthFailed(self.spi_i, self.spi_r, reason, self.peer))
        else:
            self.emit(Deleted(self.spi_i, self.spi_r, reason))

    # ------------------------------------------------------------------ driving API
    def start(self, now: float) -> list[Out]:
        """Initiator: queue IKE_SA_INIT then IKE_AUTH, and send the first."""
        self.setup_deadline = now + self.config.setup_timeout_s
        cert_pre = CertPreTask()  # one task spans both exchanges, like strongSwan's
        self.pending = [(X.IKE_SA_INIT, [InitTask(), cert_pre]),
                        (X.IKE_AUTH, [AuthTask(), cert_pre, ConfigTask(), ChildTask(),
                                     MidSyncSupport()])]  # fmt: skip
        return self._run(now, self._kick, now)

    def queue(self, exchange: int, tasks: list[Task], now: float, first: bool = False
              ) -> list[Out]:  # fmt: skip
        """Start an exchange of ours once the one in flight (if any) is answered; ``first``:
        ahead of those already waiting (RFC 6311 sync after a takeover)."""
        if self.state is not S.ESTABLISHED:
            return []
        if first:
            self.pending.insert(0, (exchange, tasks))
        else:
            self.pending.append((exchange, tasks))
        return self._run(now, self._kick, now)

    def receive(self, msg: Message, src: Addr, dst: Addr, now: float) -> list[Out]:
        if msg.is_response:
            return self._run(now, self._on_response, msg, now)
        return self._run(now, self._on_request, msg, src, dst)

    def next_timer(self) -> float | None:
        if self.state is S.DEAD:
            return None
        times = [self.setup_deadline, self.outstanding.deadline if self.outstanding else None,
                 self.mcsa_at, self.revocation_deadline]  # fmt: skip
        if self.pending and self.outstanding is None and self.state is S.ESTABLISHED:
            times.append(self.now)  # queued exchanges (handed over by a rekey): send them
        if self.state is S.ESTABLISHED:
            times += (self.ike_rekey_at, self.ike_expire_at, self._dpd_at())
            for c in self.children.values():
                times += (c.rekey_at, c.expire_at)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Out]:
        return self._run(now, self._on_timer, now)

    def _run(self, now: float, fn, *args) -> list[Out]:
        self._out, self.now = [], now
        fn(*args)
        out, self._out = self._out, None
        return out

    # ------------------------------------------------------------------ our requests
    def _kick(self, now: float) -> None:
        while self.outstanding is None and self.pending and self.state is not S.DEAD:
            self._send_next(now)

    def _send_next(self, now: float) -> None:
        exchange, tasks = self.pending.pop(0)
        ctx = Ctx(exchange)
        try:
            for task in tasks:
                task.build_i(self, ctx)
        except Skip:
            return  # nothing left to ask (a payload got covered, a child went)
        except IkeError as exc:
            self.fail(exc.reason, auth=exchange == X.IKE_AUTH)
            return
        zero = exchange == X.IKE_SA_INIT or getattr(tasks[0], "mid_zero", False)
        mid = 0 if zero else self.send_mid  # INIT retries reuse ID 0; so does RFC 6311 sync
        data = self._encode(exchange, mid, False, ctx.payloads)
        if exchange == X.IKE_SA_INIT:
            self.init_request = data[0]
            if self.state is S.NEW:
                self.fire(T.INIT_SENT)
        elif exchange == X.IKE_AUTH:
            self.fire(T.AUTH_SENT)
        if not zero or exchange == X.IKE_SA_INIT:
            self.send_mid = mid + 1
        retry = getattr(tasks[0], "retry", None) if tasks else None
        first = retry[0] if retry else self._rto(0)
        self.outstanding = Outstanding(exchange, tasks, mid, data, now + first, retry=retry)
        self._send(data, self.local, self.peer)

    def _on_response(self, msg: Message, now: float) -> None:
        out = self.outstanding
        if out is None or msg.message_id != out.message_id or msg.exchange != out.exchange:
            self.emit(Dropped(self.peer, f"unexpected response, message ID {msg.message_id}"))
            return
        payloads = self._open(msg)
        if payloads is None:
            return
        if isinstance(payloads, IkeError):
            self.fail(f"malformed response: {payloads.reason}", auth=out.exchange == X.IKE_AUTH)
            return
        self.outstanding = None
        if self._must_fetch(msg, payloads, out):
            return  # processed when the certificates are in (resolve)
        self._process_response(out, msg, payloads, now)

    def _process_response(self, out: Outstanding, msg: Message, payloads, now: float) -> None:
        try:
            for task in out.tasks:
                task.process_i(self, Ctx(out.exchange, payloads, msg))
        except Restart:
            self.pending.insert(0, (out.exchange, out.tasks))
        except Suspended:  # a revocation source is being asked: processed again later
            self.parked = (msg, payloads, out)
            return
        except IkeError as exc:
            if out.exchange == X.IKE_AUTH and not isinstance(exc, PeerRefused):
                self._notify_auth_failed()
            self.fail(exc.reason, auth=out.exchange == X.IKE_AUTH)
            return
        if out.exchange == X.IKE_AUTH:
            self._setup_done()
        self._kick(now)

    def _notify_auth_failed(self) -> None:
        """One unretransmitted INFORMATIONAL telling the responder we refused it (2.21.2)."""
        ctx = Ctx(X.INFORMATIONAL)
        AuthFailedNotice().build_i(self, ctx)
        data = self._encode(X.INFORMATIONAL, self.send_mid, False, ctx.payloads)
        self.send_mid += 1
        self._send(data, self.local, self.peer)

    def _on_timer(self, now: float) -> None:
        if self._revocation_timer(now):
            return
        if self.setup_deadline is not None and now >= self.setup_deadline:
            self.fail("IKE SA setup timed out")
            return
        if self.state is S.ESTABLISHED:
            self._lifetimes(now)
        out = self.outstanding
        if out is None or now < out.deadline:
            return
        limit = out.retry[1] if out.retry else self.config.max_retransmissions
        if out.retries >= limit:
            dpd = " (dead peer)" if out.retry else ""
            self.fail(f"no response after {out.retries} retransmissions{dpd}")
            return
        out.retries += 1
        out.deadline = now + (out.retry[0] if out.retry else self._rto(out.retries))
        self.emit(Retransmit(self.spi_i, self.spi_r, out.message_id, out.retries))
        self._send(out.data, self.local, self.peer)

    def _rto(self, retries: int) -> float:
        return self.config.retransmit_timeout_ms / 1000 * 2**retries

    # ------------------------------------------------------------------ peer's requests
    def _on_request(self, msg: Message, src: Addr, dst: Addr) -> None:
        mid, opened = msg.message_id, None
        if (  # RFC 6311 sync (outside the window), or the peer's very first request
            mid == 0
            and msg.exchange == X.INFORMATIONAL
            and self.state is S.ESTABLISHED
            and not self._is_cached_retransmission(msg)
        ):
            opened = self._open(msg)
            if opened is None or self._answer_mid_sync(msg, opened, src, dst):
                return
        if self.cached is not None and mid == self.cached[0]:
            skf = msg.payloads[-1] if msg.payloads else None
            if isinstance(skf, SkfPayload) and skf.number != 1:
                return  # RFC 7383 2.6.1: a retransmitted request is answered on its fragment 1
            if _digest(msg.raw) == self.cached[1]:  # a retransmission: the same answer
                self._send(self.cached[2], dst, src)
            else:
                self.emit(Dropped(src, f"different request reusing message ID {mid}"))
            return
        if self.parked is not None and mid == self.parked[0].message_id:
            # RFC 7296 2.1: a request still being processed (certificates being fetched) is
            # not processed twice; its copies and fragments are dropped
            self.emit(Dropped(src, f"request {mid} is still being processed"))
            return
        if mid == self.mid_grace and mid == self.recv_mid - 1:
            # RFC 6311: the peer's request in flight at the takeover, retransmitted with the
            # ID the sync moved past (strongSwan and we count it in P2); taken once
            self.recv_mid, self.mid_grace = mid, None
        elif mid == self.recv_mid:
            self.mid_grace = None
        if mid != self.recv_mid or msg.exchange not in ANSWERS.get(self.state, ()):
            self.emit(
                Dropped(src, f"request {msg.exchange} ID {mid} not expected in {self.state.name}")
            )
            return
        payloads = self._open(msg) if opened is None else opened
        if payloads is None:
            return
        if dst != self.local or src != self.peer:  # authenticated: follow the peer's port float
            self.local, self.peer = dst, src  # (equal ones stay: shared with the data plane)
        if not isinstance(payloads, IkeError) and self._must_fetch(msg, payloads):
            return
        self._answer(msg, payloads)

    def _is_cached_retransmission(self, msg: Message) -> bool:
        cached = self.cached
        return (
            cached is not None and cached[0] == msg.message_id and (_digest(msg.raw) == cached[1])
        )

    def _answer_mid_sync(self, msg: Message, payloads, src: Addr, dst: Addr) -> bool:
        """A Message ID 0 INFORMATIONAL carrying IKEV2_MESSAGE_ID_SYNC: answered (or dropped
        when unacceptable); True when it was one. The answer is cached: a retransmitted sync
        gets it again instead of counting as a replay."""
        if isinstance(payloads, IkeError):
            return False
        sync = next((p for p in payloads if isinstance(p, NotifyPayload)
                     and p.type == NotifyType.IKEV2_MESSAGE_ID_SYNC), None)  # fmt: skip
        if sync is None:
            return False
        data = answer_sync(self, sync.data) if self.mid_sync else None
        if data is None:
            self.emit(Dropped(src, "INFORMATIONAL with Message ID 0 and no acceptable sync"))
            return True
        reply = [NotifyPayload(NotifyType.IKEV2_MESSAGE_ID_SYNC, data)]
        encoded = self._encode(X.INFORMATIONAL, 0, True, reply)
        self.cached = (0, _digest(msg.raw), encoded)
        self._send(encoded, dst, src)
        self.emit(MidSynced(self.spi_i, self.spi_r, self.send_mid, self.recv_mid))
        return True

    def _resume(self) -> None:
        """Process the parked request or response again, now that what it waited for is in."""
        (msg, payloads, out), self.parked = self.parked, None
        if msg.is_response:
            self._process_response(out, msg, payloads, self.now)
        else:
            self._answer(msg, payloads)

    def _passive(self, exchange: int, payloads) -> list[Task]:
        """The responder's tasks for a request; setup tasks share state across exchanges."""
        if exchange in (X.IKE_SA_INIT, X.IKE_AUTH):
            if not self._setup:
                self._setup = {"init": InitTask(), "cert_pre": CertPreTask(),
                               "auth": AuthTask(), "config": ConfigTask(),
                               "child": ChildTask(), "mid_sync": MidSyncSupport()}  # fmt: skip
            s = self._setup
            if exchange == X.IKE_SA_INIT:
                return [s["init"], s["cert_pre"]]
            return [s["cert_pre"], s["auth"], s["config"], s["child"], s["mid_sync"]]
        if exchange == X.CREATE_CHILD_SA:
            sa_payload = next((p for p in payloads if isinstance(p, SaPayload)), None)
            ike = sa_payload and sa_payload.proposals and sa_payload.proposals[0].protocol == 1
            return [IkeRekeyTask() if ike else CreateChildTask()]
        return [InformationalResponder()]

    def _answer(self, msg: Message, payloads) -> None:
        exchange, mid = msg.exchange, msg.message_id
        error = payloads if isinstance(payloads, IkeError) else None
        reply = Ctx(exchange, [], msg)
        if error is None:
            tasks = self._passive(exchange, payloads)
            try:
                for task in tasks:
                    task.process_r(self, Ctx(exchange, payloads, msg))
                for task in tasks:
                    task.build_r(self, reply)
            except Suspended:  # a revocation source is being asked: answered later
                self.parked = (msg, payloads, None)
                return
            except IkeError as exc:
                error = exc
        if error is not None:
            reply.payloads = [NotifyPayload(error.notify, error.data)]
        # An IKE_SA_INIT refusal keeps no state, so it carries no responder SPI (2.6).
        spi_r = bytes(8) if error is not None and exchange == X.IKE_SA_INIT else None
        data = self._encode(exchange, mid, True, reply.payloads, spi_r)
        first, self.first_fragment = self.first_fragment or msg.raw, b""  # fragment 1 if any
        self.recv_mid, self.cached = mid + 1, (mid, _digest(first), data)
        self._send(data, self.local, self.peer)
        if exchange == X.IKE_AUTH:
            # IKE_AUTH is answered once, its retransmissions from the cache.
            self._setup_done()
        if error is None:
            if exchange == X.IKE_SA_INIT:
                self.init_response = data[0]
                self.fire(T.INIT_ANSWERED)
        elif exchange == X.IKE_SA_INIT:
            self.fire(T.FAILED)
            self.emit(Rejected(self.peer, error.notify, error.reason))
        elif exchange == X.IKE_AUTH:
            self.fail(error.reason, auth=True)
        self._kick(self.now)  # what answering queued (a delete after max-childsa, ...)

    # ------------------------------------------------------------------ checkpoints
    def to_checkpoint(self) -> dict:
        """Everything an established SA needs on the standby card (JSON/msgpack-able)."""
        if self.state is not S.ESTABLISHED:
            raise ValueError(f"only an established IKE SA is checkpointed, not {self.state.name}")
        p = self.proposal
        return {
            "v": 1,
            "initiator": self.initiator,
            "spi_i": self.spi_i.hex(),
            "spi_r": self.spi_r.hex(),
            "state": self.state.name,
            "proposal": [int(p.encr), p.key_bits, int(p.prf), int(p.integ), int(p.dh)],
            "keys": {k: v.hex() for k, v in asdict(self.keys).items()},
            "send_mid": self.send_mid,
            "recv_mid": self.recv_mid,
            "cached": [self.cached[0], self.cached[1].hex(), [d.hex() for d in self.cached[2]]]
            if self.cached
            else None,
            "fragmenting": self.fragmenting,
            "mid_sync": self.mid_sync,
            "local": list(self.local),
            "peer": list(self.peer),
            "peer_id": self.peer_id,
            "peer_cert_subject": self.peer_cert_subject,
            "nat": [self.nat_local, self.nat_remote],
            "assigned": list(self.assigned),
            "virtual_ips": list(self.virtual_ips),
            "children": [c.to_dict() for c in self.children.values()],
            # lifetimes left, in seconds from the SA's last step (monotonic clocks differ
            # between hosts): the SA restored elsewhere rekeys and expires when this one would
            "timers": self._timers_left(),
        }

    def _timers_left(self) -> dict:
        def left(at):
            return None if at is None else at - self.now

        return {
            "ike_rekey": left(self.ike_rekey_at),
            "ike_expire": left(self.ike_expire_at),
            "children": {
                c.our_spi.hex(): [left(c.rekey_at), left(c.expire_at)]
                for c in self.children.values()
            },  # fmt: skip
        }

    def restart_timers(self, timers: dict, now: float) -> None:
        """The lifetimes left in a checkpoint's ``timers``, counted from ``now``."""

        def at(left):
            return None if left is None else now + float(left)

        self.now = self.last_heard = now
        self.ike_rekey_at, self.ike_expire_at = (
            at(timers.get("ike_rekey")),
            at(timers.get("ike_expire")),
        )
        for spi, (rekey, expire) in (timers.get("children") or {}).items():
            child = self.children.get(bytes.fromhex(spi))
            if child is not None:
                child.rekey_at, child.expire_at = at(rekey), at(expire)

    @classmethod
    def from_checkpoint(cls, d: dict, config: IkeConfig, rand, wall_clock=None,
                        now: float | None = None) -> IkeSa:  # fmt: skip
        """``now`` (monotonic) restarts the lifetimes the checkpoint carries from there."""
        if d.get("v") != 1:
            raise ValueError(f"unknown IKE SA checkpoint version {d.get('v')}")
        sa = cls(config, rand, initiator=bool(d["initiator"]), spi_i=bytes.fromhex(d["spi_i"]),
                 spi_r=bytes.fromhex(d["spi_r"]), local=tuple(d["local"]),
                 peer=tuple(d["peer"]), wall_clock=wall_clock)  # fmt: skip
        e, bits, prf, integ, dh = d["proposal"]
        proposal = IkeProposal(Encr(e), bits, Prf(prf), Integ(integ), DhGroup(dh))
        # Restored SAs share the configured proposal object when it is one of ours.
        sa.proposal = next((p for p in config.proposals if p == proposal), proposal)
        sa.suite = shared_suite(sa.proposal)
        sa.keys = IkeKeys(**{k: bytes.fromhex(v) for k, v in d["keys"].items()})
        sa.state = State[d["state"]]
        sa.send_mid, sa.recv_mid = int(d["send_mid"]), int(d["recv_mid"])
        if d["cached"] is not None:
            mid, digest, data = d["cached"]
            data = [data] if isinstance(data, str) else data  # one datagram before fragments
            sa.cached = (int(mid), bytes.fromhex(digest), tuple(bytes.fromhex(x) for x in data))
        sa.fragmenting = bool(d.get("fragmenting", False))
        sa.mid_sync = bool(d.get("mid_sync", False))
        sa.peer_id, sa.peer_cert_subject = d["peer_id"], d["peer_cert_subject"]
        sa.nat_local, sa.nat_remote = (bool(x) for x in d["nat"])
        sa.assigned = [str(a) for a in d.get("assigned", [])]
        sa.virtual_ips = [str(a) for a in d.get("virtual_ips", [])]
        for c in d.get("children", []):  # absent in checkpoints from before CHILD_SAs
            child = ChildSa.from_dict(c)
            sa.children[child.our_spi] = child
        if now is not None and d.get("timers"):
            sa.restart_timers(d["timers"], now)
        return sa
