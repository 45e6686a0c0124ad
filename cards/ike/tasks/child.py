"""The first CHILD_SA, piggybacked on IKE_AUTH (RFC 7296 1.2).

Child SA negotiation is not implemented yet. Choice: the responder answers the child part
with NO_PROPOSAL_CHOSEN and keeps the IKE SA, which RFC 7296 2.21.1 allows ("the IKE SA is
still created") and which is what strongSwan does when it cannot install ESP. We do not
pretend to install an SA we cannot carry traffic for. The initiator still offers a child
(an IKE_AUTH without SA/TSi/TSr is not a valid RFC 7296 request) and reports the answer.
"""

from __future__ import annotations

from ..const import NotifyType, PayloadType
from ..events import ChildRefused
from ..message import SaPayload, TsPayload
from ..proposals import child_sa_payload
from . import Ctx, Task


class ChildTask(Task):
    def __init__(self):
        self.requested = False

    def build_i(self, sa, ctx: Ctx) -> None:
        cfg = sa.config
        if cfg.child_proposal is None:
            return
        ctx.payloads += [
            child_sa_payload(cfg.child_proposal, sa.rand(4)),
            TsPayload(list(cfg.child_ts_local), PayloadType.TSi),
            TsPayload(list(cfg.child_ts_remote), PayloadType.TSr),
        ]

    def process_i(self, sa, ctx: Ctx) -> None:
        if sa.config.child_proposal is None:
            return
        if ctx.first(SaPayload) is not None:
            # A child was accepted, but installing it is the next engineer's work.
            sa.emit(ChildRefused(sa.spi_i, sa.spi_r, "accepted by peer, not installed"))
            return
        errors = ctx.errors()
        reason = _name(errors[0].type) if errors else "no SA payload in the response"
        sa.emit(ChildRefused(sa.spi_i, sa.spi_r, reason))

    def process_r(self, sa, ctx: Ctx) -> None:
        self.requested = ctx.first(SaPayload) is not None

    def build_r(self, sa, ctx: Ctx) -> None:
        if self.requested:
            ctx.add_notify(NotifyType.NO_PROPOSAL_CHOSEN)
            sa.emit(ChildRefused(sa.spi_i, sa.spi_r, "child SA negotiation not implemented"))


class ChildRefusalTask(Task):
    """CREATE_CHILD_SA on an established SA: refused with NO_ADDITIONAL_SAS (RFC 7296 1.3)."""

    def build_r(self, sa, ctx: Ctx) -> None:
        ctx.add_notify(NotifyType.NO_ADDITIONAL_SAS)


def _name(ntype: int) -> str:
    try:
        return NotifyType(ntype).name
    except ValueError:
        return f"notify {ntype}"
