"""CHILD_SA data: ESP proposal choice, traffic selector narrowing, KEYMAT (RFC 7296 2.9, 2.17).

Pure functions and data; the exchanges that use them are in ``tasks/child.py`` (first child in
IKE_AUTH) and ``tasks/informational.py`` (child delete).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from .config import ChildPolicy, ChildProposal
from .const import ATTR_KEY_LENGTH, Encr, Integ, Prf, ProtocolId, TransformType, TsType
from .crypto import child_keymat
from .errors import NoProposalChosen
from .payloads import Proposal, SaPayload, TrafficSelector, Transform

ESP_SPI_LEN = 4
DH_NONE = 0
_ESP_TYPES = {TransformType.ENCR, TransformType.INTEG, TransformType.ESN, TransformType.DH}


class TsUnacceptable(Exception):
    """No traffic selector survives narrowing (answered with TS_UNACCEPTABLE)."""


# ------------------------------------------------------------------ keys and the SA
@dataclass(frozen=True, slots=True)  # one per CHILD_SA: no per-instance dict
class ChildKeys:
    """ESP keys per direction (i: initiator -> responder). Never shown in repr or logs."""

    encr_i: bytes = field(repr=False)
    integ_i: bytes = field(repr=False)
    encr_r: bytes = field(repr=False)
    integ_r: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "ChildKeys(<redacted>)"

    __str__ = __repr__


def derive_child_keys(
    prf: Prf, sk_d: bytes, ni: bytes, nr: bytes, suite: ChildProposal, shared: bytes = b""
) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr): initiator->responder first, encryption
    then integrity key in each direction (2.17); an AES-GCM encryption key ends with its
    4-byte salt. ``shared`` is the PFS exchange's g^ir (CREATE_CHILD_SA with KE)."""
    e, a = suite.encr_key_len, suite.integ_key_len
    km = child_keymat(prf, sk_d, ni, nr, 2 * (e + a), shared)
    return ChildKeys(km[:e], km[e : e + a], km[e + a : 2 * e + a], km[2 * e + a :])


@dataclass(slots=True)  # a card holds tens of thousands: no per-instance dict
class ChildSa:
    """One CHILD_SA (ESP, tunnel mode) of an IKE SA."""

    our_spi: bytes  # inbound: the peer sends ESP with it (the NPU steers by its top byte)
    their_spi: bytes  # outbound
    suite: ChildProposal
    tsi: tuple[TrafficSelector, ...]
    tsr: tuple[TrafficSelector, ...]
    initiator: bool  # we initiated the exchange that created it
    keys: ChildKeys = field(repr=False)
    policy: str = ""  # the child-SA payload it was made for
    # Timers (the SA's monotonic clock) and, while a rekey collision may happen, the nonces
    # of the exchange that made it (RFC 7296 2.8.1); not checkpointed.
    rekey_at: float | None = field(default=None, compare=False)
    expire_at: float | None = field(default=None, compare=False)
    nonces: tuple = field(default=(), repr=False, compare=False)

    @property
    def outbound(self) -> tuple[bytes, bytes]:
        """(encryption key, integrity key) for what we send."""
        k = self.keys
        return (k.encr_i, k.integ_i) if self.initiator else (k.encr_r, k.integ_r)

    @property
    def inbound(self) -> tuple[bytes, bytes]:
        k = self.keys
        return (k.encr_r, k.integ_r) if self.initiator else (k.encr_i, k.integ_i)

    def to_dict(self) -> dict:
        k = self.keys
        return {
            "our_spi": self.our_spi.hex(),
            "their_spi": self.their_spi.hex(),
            "suite": [int(self.suite.encr), self.suite.key_bits, int(self.suite.integ)],
            "tsi": [_ts_to_list(t) for t in self.tsi],
            "tsr": [_ts_to_list(t) for t in self.tsr],
            "initiator": self.initiator,
            "keys": [k.encr_i.hex(), k.integ_i.hex(), k.encr_r.hex(), k.integ_r.hex()],
            "policy": self.policy,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChildSa:
        encr, bits, integ = d["suite"]
        return cls(
            bytes.fromhex(d["our_spi"]),
            bytes.fromhex(d["their_spi"]),
            ChildProposal(Encr(encr), int(bits), Integ(integ)),
            tuple(_ts_from_list(t) for t in d["tsi"]),
            tuple(_ts_from_list(t) for t in d["tsr"]),
            bool(d["initiator"]),
            ChildKeys(*(bytes.fromhex(x) for x in d["keys"])),
            str(d.get("policy", "")),
        )


def _ts_to_list(t: TrafficSelector) -> list:
    return [int(t.ts_type), t.ip_proto, t.start_port, t.end_port, str(t.start_addr),
            str(t.end_addr)]  # fmt: skip


def _ts_from_list(v: list) -> TrafficSelector:
    ts_type, proto, sport, eport, start, end = v
    return TrafficSelector(TsType(ts_type), int(proto), int(sport), int(eport),
                           ipaddress.ip_address(start), ipaddress.ip_address(end))  # fmt: skip


# ------------------------------------------------------------------ proposals (3.3)
def _transforms(p: ChildProposal, pfs: bool = False) -> tuple[Transform, ...]:
    out = [Transform(TransformType.ENCR, p.encr, ((ATTR_KEY_LENGTH, p.key_bits),))]
    if p.integ != Integ.NONE:
        out.append(Transform(TransformType.INTEG, p.integ))
    if pfs and p.dh:
        out.append(Transform(TransformType.DH, p.dh))
    out.append(Transform(TransformType.ESN, 0))
    return tuple(out)


def esp_sa_payload(p: ChildProposal, spi: bytes, num: int = 1, pfs: bool = False) -> SaPayload:
    return SaPayload([Proposal(num, ProtocolId.ESP, spi, _transforms(p, pfs))])


def esp_offer(proposals: Sequence[ChildProposal], spi: bytes, pfs: bool = False) -> SaPayload:
    """Initiator: every transform set of the payload, numbered from 1, one SPI; with ``pfs``
    (CREATE_CHILD_SA) each carries its DH group."""
    return SaPayload(
        [Proposal(n, ProtocolId.ESP, spi, _transforms(p, pfs)) for n, p in enumerate(proposals, 1)]
    )


def _offered(proposal: Proposal, pfs: bool = False) -> dict[int, set] | None:
    """Transform type -> {(id, key length)} of an ESP proposal; None if unusable.

    No ESN transform means no ESN; no DH transform means no PFS (NONE). In IKE_AUTH (``pfs``
    false) a DH transform must allow NONE, since IKE_AUTH carries no KE (RFC 7296 1.2), and is
    left out of the answer."""
    if proposal.protocol != ProtocolId.ESP or len(proposal.spi) != ESP_SPI_LEN:
        return None
    by_type: dict[int, set] = {}
    for t in proposal.transforms:
        if t.type not in _ESP_TYPES:
            return None  # RFC 7296 3.3.6: a proposal with an unknown type is unacceptable
        by_type.setdefault(t.type, set()).add((t.id, t.key_length))
    dh = by_type.pop(TransformType.DH, {(DH_NONE, None)})
    if pfs:
        by_type[TransformType.DH] = dh
    elif (DH_NONE, None) not in dh:
        return None
    by_type.setdefault(TransformType.ESN, {(0, None)})
    return by_type


def _matches(offered: dict[int, set], mine: ChildProposal, pfs: bool = False) -> bool:
    integ = offered.get(TransformType.INTEG, {(Integ.NONE, None)})
    return (
        (mine.encr, mine.key_bits) in offered.get(TransformType.ENCR, set())
        and (mine.integ, None) in integ
        and (0, None) in offered[TransformType.ESN]
        and (not pfs or (mine.dh, None) in offered[TransformType.DH])
    )


def select_esp(
    peer: SaPayload, mine: Sequence[ChildProposal], pfs: bool = False
) -> tuple[Proposal, ChildProposal]:
    """Responder: the peer's first ESP proposal one of ours matches (the peer's order). With
    ``pfs`` (CREATE_CHILD_SA) the DH group must match too (none: the peer offers NONE)."""
    for theirs in peer.proposals:
        offered = _offered(theirs, pfs)
        if offered is None:
            continue
        for ours in mine:
            if _matches(offered, ours, pfs):
                return theirs, ours
    raise NoProposalChosen("no acceptable ESP proposal")


def accepted_esp(
    reply: SaPayload, offered: Sequence[ChildProposal], pfs: bool = False
) -> tuple[bytes, ChildProposal]:
    """Initiator: the responder's SPI and choice, which must be the transform set we offered
    under the proposal number it returned (RFC 7296 3.3.1)."""
    if len(reply.proposals) != 1:
        raise NoProposalChosen(f"responder returned {len(reply.proposals)} ESP proposals")
    chosen = reply.proposals[0]
    got = _offered(chosen, pfs)
    if got is None or any(len(v) != 1 for v in got.values()):
        raise NoProposalChosen("responder returned an invalid ESP proposal")
    mine = offered[chosen.num - 1] if 1 <= chosen.num <= len(offered) else None
    if mine is None or not _matches(got, mine, pfs):
        raise NoProposalChosen("responder chose an ESP transform set we did not offer")
    return chosen.spi, mine


# ------------------------------------------------------------------ traffic selectors (2.9)
def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    if a.ts_type != b.ts_type:
        return None
    if a.ip_proto and b.ip_proto and a.ip_proto != b.ip_proto:
        return None
    # compared as integers: ipaddress's ordering goes through functools.total_ordering
    start = a.start_addr if int(a.start_addr) >= int(b.start_addr) else b.start_addr
    end = a.end_addr if int(a.end_addr) <= int(b.end_addr) else b.end_addr
    sport, eport = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if int(start) > int(end) or sport > eport:
        return None
    ts = TrafficSelector(a.ts_type, a.ip_proto or b.ip_proto, sport, eport, start, end)
    # one of the two when it is all of it: a child then shares our configured selector (or
    # the host selector of its inner address) instead of keeping one of its own
    return b if ts == b else a if ts == a else ts


def narrow(peer: Sequence[TrafficSelector], ours: Sequence[TrafficSelector]):
    """The peer's selectors cut down to ours (pairwise intersections, in the peer's order)."""
    out: list[TrafficSelector] = []
    for p in peer:
        for o in ours:
            ts = intersect(p, o)
            if ts is not None and ts not in out:
                out.append(ts)
    narrowed = tuple(out)
    return ours if narrowed == ours else narrowed  # ours when it is all of them (shared)


def host_ts(address: str) -> TrafficSelector:
    ip = ipaddress.ip_address(address)
    kind = TsType.IPV4_ADDR_RANGE if ip.version == 4 else TsType.IPV6_ADDR_RANGE
    return TrafficSelector(kind, 0, 0, 65535, ip, ip)


def pin(selectors: Sequence[TrafficSelector], addresses: Sequence[str]):
    """The peer's side cut down to the inner addresses it was given (CP); none: unchanged."""
    if not addresses:
        return tuple(selectors)
    return narrow(selectors, [host_ts(a) for a in addresses])


def contains(outer: Sequence[TrafficSelector], inner: Sequence[TrafficSelector]) -> bool:
    """Every selector of ``inner`` lies inside one of ``outer``."""
    return all(any(intersect(i, o) == i for o in outer) for i in inner)


def choose_policy(
    offer: SaPayload,
    tsi: Sequence[TrafficSelector],
    tsr: Sequence[TrafficSelector],
    policies: Sequence[ChildPolicy],
    pfs: bool = False,
):
    """Responder: the child-SA payload for a peer's request, in configuration order.

    A payload whose selectors contain the peer's wins; failing that, the first payload the
    peer's selectors can be narrowed to (RFC 7296 2.9). Returns (payload, the peer's
    proposal, our transform set, narrowed TSi, narrowed TSr); raises NoProposalChosen when no
    transform set matches and TsUnacceptable when no payload's selectors meet the peer's."""
    narrowed, esp_ok = None, False
    for policy in policies:
        try:
            theirs, ours = select_esp(offer, policy.proposals, pfs)
        except NoProposalChosen:
            continue
        esp_ok = True
        tsi_n, tsr_n = narrow(tsi, policy.ts_remote), narrow(tsr, policy.ts_local)
        if not tsi_n or not tsr_n:
            continue
        choice = (policy, theirs, ours, tsi_n, tsr_n)
        if contains(policy.ts_remote, tsi) and contains(policy.ts_local, tsr):
            return choice
        narrowed = narrowed or choice
    if narrowed is not None:
        return narrowed
    if not esp_ok:
        raise NoProposalChosen("no acceptable ESP proposal")
    raise TsUnacceptable("traffic selectors outside every configured child-SA payload")


def within(got: Sequence[TrafficSelector], asked: Sequence[TrafficSelector]) -> bool:
    """Initiator: every selector the responder returned lies inside one we asked for."""
    return bool(got) and all(any(intersect(g, a) == g for a in asked) for g in got)


def describe_ts(selectors: Sequence[TrafficSelector]) -> str:
    """10.0.0.0/8, 192.0.2.7[udp/500] ... as in strongSwan's logs."""
    parts = []
    for t in selectors:
        nets = list(ipaddress.summarize_address_range(t.start_addr, t.end_addr))
        addr = str(nets[0]) if len(nets) == 1 else f"{t.start_addr}..{t.end_addr}"
        if nets[0].prefixlen == nets[0].max_prefixlen and len(nets) == 1:
            addr = str(t.start_addr)
        if t.ip_proto or (t.start_port, t.end_port) != (0, 65535):
            ports = "" if (t.start_port, t.end_port) == (0, 65535) else f"/{t.start_port}"
            if t.end_port != t.start_port and ports:
                ports += f"-{t.end_port}"
            addr += f"[{t.ip_proto}{ports}]"
        parts.append(addr)
    return " ".join(parts)
