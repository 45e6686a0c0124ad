"""IKE_SA_INIT: SA, KE, Nonce, NAT detection, COOKIE and INVALID_KE_PAYLOAD (RFC 7296 1.2, 2.6, 2.23)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress

from ..const import ExchangeType, HashAlg, NotifyType
from ..crypto import DiffieHellman, InvalidKeyExchange, hash_algorithms_data
from ..errors import InvalidKePayload, InvalidSyntax, NoProposalChosen, PeerRefused, Restart
from ..message import KePayload, NoncePayload, NotifyPayload, SaPayload
from ..proposals import accepted, ike_sa_payload, select
from . import Ctx, Task

NONCE_LEN = 32  # at least half the largest PRF key (SHA2-512), RFC 7296 2.10
MAX_KE_RETRIES = 2


class InitTask(Task):
    def __init__(self):
        self.group = None  # initiator: the group of the KE we send
        self.dh: DiffieHellman | None = None
        self.cookie = b""
        self.ke_retries = 0
        self.reply = None  # responder: the chosen proposal

    # ---------------------------------------------------------------- initiator
    def build_i(self, sa, ctx: Ctx) -> None:
        cfg = sa.config
        if self.group is None:
            self.group = cfg.proposals[0].dh  # guess the group of our first proposal
        if self.dh is None or self.dh.group != self.group:
            self.dh = DiffieHellman(self.group, sa.rand)
        if not sa.ni:
            sa.ni = sa.rand(NONCE_LEN)  # kept across retries: the cookie covers Ni
        if self.cookie:
            ctx.add_notify(NotifyType.COOKIE, self.cookie)  # must be first (2.6)
        ctx.payloads += [
            ike_sa_payload(cfg.proposals),
            KePayload(self.group, self.dh.public),
            NoncePayload(sa.ni),
        ]
        _add_natd(sa, ctx, bytes(8))
        if cfg.fragmentation:
            ctx.add_notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
        ctx.add_notify(
            NotifyType.SIGNATURE_HASH_ALGORITHMS, hash_algorithms_data(cfg.hash_algorithms)
        )

    def process_i(self, sa, ctx: Ctx) -> None:
        cookie = ctx.notify(NotifyType.COOKIE)
        if cookie is not None:
            if not 1 <= len(cookie.data) <= 64 or cookie.data == self.cookie:
                raise PeerRefused(NotifyType.COOKIE, "responder refused our COOKIE")
            self.cookie = bytes(cookie.data)
            raise Restart
        invalid = ctx.notify(NotifyType.INVALID_KE_PAYLOAD)
        if invalid is not None:
            group = int.from_bytes(invalid.data, "big") if len(invalid.data) == 2 else None
            if (
                group in sa.config.groups
                and group != self.group
                and self.ke_retries < MAX_KE_RETRIES
            ):
                self.group, self.ke_retries = group, self.ke_retries + 1
                raise Restart
            raise PeerRefused(NotifyType.INVALID_KE_PAYLOAD, f"responder wants group {group}")
        for err in ctx.errors():
            raise PeerRefused(err.type)
        proposal, ke, nonce = _required(ctx)
        chosen = accepted(proposal, sa.config.proposals)
        if chosen.dh != self.group or ke.group != self.group:
            raise NoProposalChosen(f"responder chose group {chosen.dh}, our KE is {self.group}")
        if ctx.msg.spi_r == bytes(8):
            raise InvalidSyntax("IKE_SA_INIT response with a zero responder SPI")
        sa.spi_r, sa.nr = ctx.msg.spi_r, nonce.data
        sa.init_response = ctx.msg.raw  # signed by the responder's AUTH
        sa.set_keys(chosen, _shared(self.dh, ke))
        _check_natd(sa, ctx)
        sa.peer_hashes = _hashes(ctx)
        sa.fragmenting = _fragmentation(sa, ctx)
        if (sa.nat_local or sa.nat_remote) and sa.local[1] == sa.peer[1] == 500:
            # RFC 7296 2.23: behind a NAT, IKE_AUTH and the rest go port 4500 to port 4500
            sa.local, sa.peer = (sa.local[0], NAT_T_PORT), (sa.peer[0], NAT_T_PORT)

    # ---------------------------------------------------------------- responder
    def process_r(self, sa, ctx: Ctx) -> None:
        proposal, ke, nonce = _required(ctx)
        self.reply, chosen = select(proposal, sa.config.proposals, ke.group)
        if ke.group != chosen.dh:
            raise InvalidKePayload(chosen.dh)
        self.dh = DiffieHellman(chosen.dh, sa.rand)
        sa.ni, sa.nr = nonce.data, sa.rand(NONCE_LEN)
        sa.init_request = ctx.msg.raw  # signed by the initiator's AUTH
        sa.set_keys(chosen, _shared(self.dh, ke))
        _check_natd(sa, ctx)
        sa.peer_hashes = _hashes(ctx)
        sa.fragmenting = _fragmentation(sa, ctx)

    def build_r(self, sa, ctx: Ctx) -> None:
        ctx.payloads += [
            SaPayload([self.reply]),
            KePayload(self.dh.group, self.dh.public),
            NoncePayload(sa.nr),
        ]
        _add_natd(sa, ctx, sa.spi_r)
        if sa.fragmenting:  # only in answer to the initiator's (RFC 7383 2.3)
            ctx.add_notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
        ctx.add_notify(
            NotifyType.SIGNATURE_HASH_ALGORITHMS, hash_algorithms_data(sa.config.hash_algorithms)
        )


def _required(ctx: Ctx) -> tuple[SaPayload, KePayload, NoncePayload]:
    found = ctx.first(SaPayload), ctx.first(KePayload), ctx.first(NoncePayload)
    if None in found:
        raise InvalidSyntax(f"{ExchangeType.IKE_SA_INIT.name} without SA, KE or Nonce")
    return found


def _shared(dh: DiffieHellman, ke: KePayload) -> bytes:
    try:
        return dh.shared(ke.data)
    except InvalidKeyExchange as exc:
        raise InvalidSyntax(str(exc)) from None


def _hashes(ctx: Ctx) -> tuple[HashAlg, ...]:
    """The peer's RFC 7427 hash list (empty: it did not announce signature authentication)."""
    n = ctx.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
    if n is None:
        return ()
    raw = [int.from_bytes(n.data[i : i + 2], "big") for i in range(0, len(n.data) - 1, 2)]
    return tuple(HashAlg(h) for h in raw if h in HashAlg._value2member_map_)


NAT_T_PORT = 4500


def natd_hash(spi_i: bytes, spi_r: bytes, addr: tuple[str, int]) -> bytes:
    """SHA-1(SPIi | SPIr | IP | Port)   (RFC 7296 2.23)."""
    return hashlib.sha1(spi_i + spi_r + _packed(addr[0]) + int(addr[1]).to_bytes(2, "big")).digest()


@functools.lru_cache(maxsize=4096)  # four hashes per IKE_SA_INIT, from a few addresses
def _packed(host: str) -> bytes:
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return str(host).encode()


def _fragmentation(sa, ctx: Ctx) -> bool:
    """RFC 7383 2.3: fragments are used when both sides announced support."""
    peer = ctx.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    return sa.config.fragmentation and peer


def _add_natd(sa, ctx: Ctx, spi_r: bytes) -> None:
    ctx.add_notify(NotifyType.NAT_DETECTION_SOURCE_IP, natd_hash(sa.spi_i, spi_r, sa.local))
    ctx.add_notify(NotifyType.NAT_DETECTION_DESTINATION_IP, natd_hash(sa.spi_i, spi_r, sa.peer))


def _check_natd(sa, ctx: Ctx) -> None:
    def hashes(ntype):
        return {n.data for n in ctx.all(NotifyPayload) if n.type == ntype}

    src, dst = (
        hashes(NotifyType.NAT_DETECTION_SOURCE_IP),
        hashes(NotifyType.NAT_DETECTION_DESTINATION_IP),
    )
    if not src or not dst:
        return  # the peer does not do NAT detection
    spi_r = ctx.msg.spi_r
    sa.nat_remote = natd_hash(sa.spi_i, spi_r, sa.peer) not in src
    sa.nat_local = natd_hash(sa.spi_i, spi_r, sa.local) not in dst
