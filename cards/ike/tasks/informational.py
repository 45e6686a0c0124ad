"""INFORMATIONAL exchanges (RFC 7296 1.4): IKE SA delete, liveness, error notices."""

from __future__ import annotations

from ..const import NotifyType, ProtocolId
from ..message import DeletePayload, NotifyPayload
from . import Ctx, Task


class InformationalResponder(Task):
    """Answers any INFORMATIONAL request; an empty one is a liveness check.

    Delete of ESP/AH SAs: there are no CHILD_SAs yet, so the answer carries no Delete
    payloads (RFC 7296 1.4.1 lets a responder answer for SAs it does not have with nothing).
    """

    def __init__(self):
        self.delete_ike = False
        self.auth_failed = False

    def process_r(self, sa, ctx: Ctx) -> None:
        self.delete_ike = any(d.protocol == ProtocolId.IKE for d in ctx.all(DeletePayload))
        self.auth_failed = ctx.notify(NotifyType.AUTHENTICATION_FAILED) is not None

    def build_r(self, sa, ctx: Ctx) -> None:
        if self.auth_failed:
            sa.fail("peer refused our authentication", auth=True)
        elif self.delete_ike:
            sa.close("deleted by peer")


class DeleteTask(Task):
    """Delete our IKE SA; the SA is gone when the peer answers (or we give up)."""

    def build_i(self, sa, ctx: Ctx) -> None:
        ctx.payloads.append(DeletePayload(ProtocolId.IKE))
        sa.deleting()

    def process_i(self, sa, ctx: Ctx) -> None:
        sa.close("deleted")


class LivenessTask(Task):
    """Dead peer detection: an empty INFORMATIONAL request (RFC 7296 2.4)."""

    def process_i(self, sa, ctx: Ctx) -> None:
        sa.alive()


class AuthFailedNotice(Task):
    """Initiator refused the responder's AUTH: tell it in a separate INFORMATIONAL (2.21.2)."""

    def build_i(self, sa, ctx: Ctx) -> None:
        ctx.payloads.append(NotifyPayload(NotifyType.AUTHENTICATION_FAILED))
