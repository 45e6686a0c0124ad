"""The first CHILD_SA, piggybacked on IKE_AUTH (RFC 7296 1.3, 2.9, 2.17).

Responder: the child-SA payload (``IkeConfig.children``) is chosen by the peer's selectors
(``child.choose_policy``: containment first, in configuration order, else narrowing), then the
peer's first ESP proposal that matches one of the payload's transform sets (the peer's order,
no ESN, a DH transform only as NONE); our inbound SPI comes from the endpoint's
``esp_spi_alloc`` (the card slot in its top byte) and KEYMAT = prf+(SK_d, Ni | Nr). When
nothing matches, the child part is answered with NO_PROPOSAL_CHOSEN or TS_UNACCEPTABLE and the
IKE SA is still created (2.21.1). Initiator: offers the first payload's transform sets and
selectors, then checks that the responder chose one we offered and narrowed within what we
asked; if not, the child is refused and its SPI deleted at the peer.

Nothing installs ESP here: the runner and NPU act on ChildEstablished/ChildDeleted. Further
CHILD_SAs and rekeys: ``create_child.py``.
"""

from __future__ import annotations

from ..child import (
    ChildSa,
    TsUnacceptable,
    accepted_esp,
    choose_policy,
    derive_child_keys,
    esp_offer,
    esp_sa_payload,
    pin,
    within,
)
from ..const import ExchangeType, NotifyType, PayloadType
from ..errors import NoProposalChosen
from ..events import ChildRefused
from ..message import SaPayload, TsPayload
from . import Ctx, Task
from .informational import ChildDeleteTask


class ChildTask(Task):
    def __init__(self):
        self.requested = False
        self.our_spi = b""
        self.choice = None  # responder: (peer's proposal, our suite, TSi, TSr)
        self.refusal: tuple[NotifyType, str] | None = None

    # ------------------------------------------------------------------ initiator
    def build_i(self, sa, ctx: Ctx) -> None:
        if not sa.config.children:
            return
        policy = sa.config.children[0]
        self.our_spi = sa.new_esp_spi()
        ctx.payloads += [
            esp_offer(policy.proposals, self.our_spi),
            TsPayload(list(policy.ts_local), PayloadType.TSi),
            TsPayload(list(policy.ts_remote), PayloadType.TSr),
        ]

    def process_i(self, sa, ctx: Ctx) -> None:
        if not sa.config.children:
            return
        policy = sa.config.children[0]
        reply = ctx.first(SaPayload)
        if reply is None:
            errors = ctx.errors()
            reason = _name(errors[0].type) if errors else "no SA payload in the response"
            sa.emit(ChildRefused(sa.spi_i, sa.spi_r, reason))
            return
        tsi, tsr = ctx.first(TsPayload, PayloadType.TSi), ctx.first(TsPayload, PayloadType.TSr)
        try:
            their_spi, suite = accepted_esp(reply, policy.proposals)
            if tsi is None or tsr is None:
                raise TsUnacceptable("no TSi/TSr in the response")
            if not within(tsi.selectors, policy.ts_local):
                raise TsUnacceptable("responder's TSi is not within what we asked")
            if not within(tsr.selectors, policy.ts_remote):
                raise TsUnacceptable("responder's TSr is not within what we asked")
        except (NoProposalChosen, TsUnacceptable) as exc:
            sa.emit(ChildRefused(sa.spi_i, sa.spi_r, str(exc)))
            # The responder has installed it: delete it there (the SPI it knows is ours).
            sa.pending.append((ExchangeType.INFORMATIONAL, [ChildDeleteTask(self.our_spi)]))
            return
        keys = derive_child_keys(sa.suite.prf, sa.keys.sk_d, sa.ni, sa.nr, suite)
        sa.child_up(ChildSa(self.our_spi, their_spi, suite, tuple(tsi.selectors),
                            tuple(tsr.selectors), True, keys, policy.name))  # fmt: skip

    # ------------------------------------------------------------------ responder
    def process_r(self, sa, ctx: Ctx) -> None:
        offer = ctx.first(SaPayload)
        self.requested = offer is not None
        if not self.requested:
            return
        tsi, tsr = ctx.first(TsPayload, PayloadType.TSi), ctx.first(TsPayload, PayloadType.TSr)
        if tsi is None or tsr is None:
            self.refusal = (NotifyType.TS_UNACCEPTABLE, "no TSi/TSr in the request")
            return
        if sa.no_child:  # the configuration task answered INTERNAL_ADDRESS_FAILURE
            self.refusal = (None, sa.no_child)
            return
        try:
            policy, theirs, ours, tsi_n, tsr_n = choose_policy(
                offer, tsi.selectors, tsr.selectors, sa.config.children
            )
            tsi_n = pin(tsi_n, sa.assigned)
            if not tsi_n:
                raise TsUnacceptable("TSi does not hold the address the peer was given")
            self.choice = (policy, theirs, ours, tsi_n, tsr_n)
        except NoProposalChosen as exc:
            self.refusal = (NotifyType.NO_PROPOSAL_CHOSEN, exc.reason)
        except TsUnacceptable as exc:
            self.refusal = (NotifyType.TS_UNACCEPTABLE, str(exc))

    def build_r(self, sa, ctx: Ctx) -> None:
        if not self.requested:
            return
        if self.refusal is not None:
            notify, reason = self.refusal
            if notify is not None:
                ctx.add_notify(notify)
            sa.emit(ChildRefused(sa.spi_i, sa.spi_r, reason))
            return
        policy, theirs, suite, tsi, tsr = self.choice
        self.our_spi = sa.new_esp_spi()
        keys = derive_child_keys(sa.suite.prf, sa.keys.sk_d, sa.ni, sa.nr, suite)
        ctx.payloads += [
            esp_sa_payload(suite, self.our_spi, theirs.num),
            TsPayload(list(tsi), PayloadType.TSi),
            TsPayload(list(tsr), PayloadType.TSr),
        ]
        sa.child_up(ChildSa(self.our_spi, theirs.spi, suite, tsi, tsr, False, keys, policy.name))


def _name(ntype: int) -> str:
    try:
        return NotifyType(ntype).name
    except ValueError:
        return f"notify {ntype}"
