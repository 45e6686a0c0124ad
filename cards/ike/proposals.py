"""IKE SA proposal encoding and selection (RFC 7296 2.7, 3.3)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from .config import IkeProposal
from .const import ATTR_KEY_LENGTH, Integ, ProtocolId, TransformType
from .errors import NoProposalChosen
from .payloads import Proposal, SaPayload, Transform

_IKE_TYPES = {TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.DH}


def _transforms(p: IkeProposal) -> tuple[Transform, ...]:
    out = [
        Transform(TransformType.ENCR, p.encr, ((ATTR_KEY_LENGTH, p.key_bits),)),
        Transform(TransformType.PRF, p.prf),
    ]
    if p.integ != Integ.NONE:
        out.append(Transform(TransformType.INTEG, p.integ))
    out.append(Transform(TransformType.DH, p.dh))
    return tuple(out)


def ike_sa_payload(proposals: Sequence[IkeProposal], spi: bytes = b"") -> SaPayload:
    """One proposal per configured transform set, numbered from 1; ``spi`` is the new SA's
    in an IKE SA rekey (empty in IKE_SA_INIT)."""
    return SaPayload(
        [Proposal(i + 1, ProtocolId.IKE, spi, _transforms(p)) for i, p in enumerate(proposals)]
    )


def _offered(proposal: Proposal) -> dict[int, set] | None:
    """Transform type -> {(id, key length)}; None when the proposal has a type IKE lacks."""
    by_type: dict[int, set] = {}
    for t in proposal.transforms:
        if t.type not in _IKE_TYPES:
            return None  # RFC 7296 3.3.6: a proposal with an unknown type is unacceptable
        by_type.setdefault(t.type, set()).add((t.id, t.key_length))
    return by_type


def _matches(offered: dict[int, set], mine: IkeProposal) -> bool:
    integ = offered.get(TransformType.INTEG, {(Integ.NONE, None)})
    return (
        (mine.encr, mine.key_bits) in offered.get(TransformType.ENCR, set())
        and (mine.prf, None) in offered.get(TransformType.PRF, set())
        and (mine.integ, None) in integ
        and (mine.dh, None) in offered.get(TransformType.DH, set())
    )


def select(
    peer: SaPayload, mine: Sequence[IkeProposal], ke_group: int, spi: bool = False
) -> tuple[Proposal, IkeProposal]:
    """Responder: our first acceptable set (our priority order), preferring one whose group
    is the peer's KE guess so that no INVALID_KE_PAYLOAD round trip is needed. Proposals
    carry an SPI only in an IKE SA rekey (``spi``)."""
    matches = []
    for ours in mine:
        for theirs in peer.proposals:
            offered = _offered(theirs) if theirs.protocol == ProtocolId.IKE else None
            if offered is not None and bool(theirs.spi) == spi and _matches(offered, ours):
                matches.append((theirs, ours))
    if not matches:
        raise NoProposalChosen("no acceptable IKE proposal")
    theirs, ours = next(((t, o) for t, o in matches if o.dh == ke_group), matches[0])
    return Proposal(theirs.num, ProtocolId.IKE, b"", _transforms(ours)), ours


def accepted(reply: SaPayload, mine: Sequence[IkeProposal]) -> IkeProposal:
    """Initiator: the responder must pick exactly one of our sets, one transform per type."""
    if len(reply.proposals) != 1:
        raise NoProposalChosen(f"responder returned {len(reply.proposals)} proposals")
    offered = _offered(reply.proposals[0])
    if offered is None or any(len(v) != 1 for v in offered.values()):
        raise NoProposalChosen("responder returned more than one transform of a type")
    for ours in mine:
        if _matches(offered, ours) and len(offered) == len(_transforms(ours)):
            return ours
    raise NoProposalChosen("responder chose a transform set we did not offer")


@functools.lru_cache(maxsize=256)
def shared_suite(proposal: IkeProposal):
    """The proposal's Suite: one shared object per (immutable) proposal, not one per SA."""
    return proposal.suite


@functools.lru_cache(maxsize=256)
def proposal_name(proposal) -> str:
    """How an (immutable) IKE or ESP proposal is named in events and logs."""
    return str(proposal)
