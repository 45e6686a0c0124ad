"""INFORMATIONAL exchanges (RFC 7296 1.4): IKE and CHILD_SA delete, liveness, error notices."""

from __future__ import annotations

from ..const import NotifyType, ProtocolId
from ..message import DeletePayload, NotifyPayload
from . import Ctx, Task


class InformationalResponder(Task):
    """Answers any INFORMATIONAL request; an empty one is a liveness check.

    Delete of CHILD_SAs (1.4.1, 3.11): each SPI in an ESP Delete is the sender's inbound SPI,
    i.e. our outbound one; we remove those children and answer with one Delete carrying our
    inbound SPIs of the pairs. SPIs we do not know (already deleted on our side, simultaneous
    deletes) get no answer, which 1.4.1 allows.
    """

    def __init__(self):
        self.delete_ike = False
        self.auth_failed = False
        self.child_spis: list[bytes] = []

    def process_r(self, sa, ctx: Ctx) -> None:
        deletes = ctx.all(DeletePayload)
        self.delete_ike = any(d.protocol == ProtocolId.IKE for d in deletes)
        self.auth_failed = ctx.notify(NotifyType.AUTHENTICATION_FAILED) is not None
        self.child_spis = [s for d in deletes if d.protocol == ProtocolId.ESP for s in d.spis]

    def build_r(self, sa, ctx: Ctx) -> None:
        if self.auth_failed:
            sa.fail("peer refused our authentication", auth=True)
        elif self.delete_ike:
            sa.close("deleted by peer")
        else:
            ours = []
            for spi in self.child_spis:
                child = sa.child_by_their_spi(spi)
                if child is not None:
                    sa.child_down(child.our_spi, "deleted by peer")
                    ours.append(child.our_spi)
            if ours:
                ctx.payloads.append(DeletePayload(ProtocolId.ESP, ours))


class DeleteTask(Task):
    """Delete our IKE SA; the SA is gone when the peer answers (or we give up)."""

    def build_i(self, sa, ctx: Ctx) -> None:
        ctx.payloads.append(DeletePayload(ProtocolId.IKE))
        sa.deleting()

    def process_i(self, sa, ctx: Ctx) -> None:
        sa.close("deleted")


class ChildDeleteTask(Task):
    """Delete one of our CHILD_SAs: the Delete names our inbound SPI (3.11); the child is gone
    when the peer answers (with the Delete of its half, or with nothing if it had none)."""

    def __init__(self, our_spi: bytes):
        self.our_spi = our_spi

    def build_i(self, sa, ctx: Ctx) -> None:
        ctx.payloads.append(DeletePayload(ProtocolId.ESP, [self.our_spi]))

    def process_i(self, sa, ctx: Ctx) -> None:
        sa.child_down(self.our_spi, "deleted")


class LivenessTask(Task):
    """Dead peer detection: an empty INFORMATIONAL request (RFC 7296 2.4). ``retry`` =
    (seconds between tries, tries) replaces the retransmission policy (DPD settings)."""

    def __init__(self, retry: tuple[float, int] | None = None):
        self.retry = retry

    def process_i(self, sa, ctx: Ctx) -> None:
        sa.alive()


class AuthFailedNotice(Task):
    """Initiator refused the responder's AUTH: tell it in a separate INFORMATIONAL (2.21.2)."""

    def build_i(self, sa, ctx: Ctx) -> None:
        ctx.payloads.append(NotifyPayload(NotifyType.AUTHENTICATION_FAILED))
