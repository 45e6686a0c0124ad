"""IKEv2 Message ID synchronisation (RFC 6311), for a card that took over IKE SAs restored
from checkpoints that may lag the wire.

Both sides announce IKEV2_MESSAGE_ID_SYNC_SUPPORTED in IKE_AUTH. The new active card (the
"cluster") then sends an INFORMATIONAL with Message ID 0 carrying IKEV2_MESSAGE_ID_SYNC:
a 4-octet nonce, M1 (the next request ID it will send, plus a margin: the checkpoint may
have missed exchanges) and P1 (the next request ID it expects). The peer answers with the
nonce, P2 = max(P1, its next request ID) and M2 = max(M1, the ID it expects next), and both
sides continue from there (5.1). The peer's side of it is ``answer_sync`` (sa.py calls it for
a Message ID 0 INFORMATIONAL once the SA is established).
"""

from __future__ import annotations

import struct

from ..const import ExchangeType, NotifyType
from ..errors import PeerRefused
from . import Ctx, Task

SYNC = struct.Struct("!4sII")  # nonce, EXPECTED_SEND_REQ_MESSAGE_ID, EXPECTED_RECV_REQ_MESSAGE_ID
MARGIN = 64  # added to our send ID: requests the lagging checkpoint may not have seen


class MidSyncSupport(Task):
    """IKE_AUTH, last: announce support (our SAs may be taken over by a standby card) and
    note the peer's."""

    def build_i(self, sa, ctx: Ctx) -> None:
        if ctx.exchange == ExchangeType.IKE_AUTH:
            ctx.add_notify(NotifyType.IKEV2_MESSAGE_ID_SYNC_SUPPORTED)

    build_r = build_i

    def process_i(self, sa, ctx: Ctx) -> None:
        if ctx.exchange == ExchangeType.IKE_AUTH:
            sa.mid_sync = ctx.notify(NotifyType.IKEV2_MESSAGE_ID_SYNC_SUPPORTED) is not None

    process_r = process_i


class MidSyncTask(Task):
    mid_zero = True  # sent with Message ID 0, outside the window (RFC 6311 4.2)

    def __init__(self) -> None:
        self.nonce = b""

    def build_i(self, sa, ctx: Ctx) -> None:
        self.nonce = sa.rand(4)
        ctx.add_notify(NotifyType.IKEV2_MESSAGE_ID_SYNC,
                       SYNC.pack(self.nonce, sa.send_mid + MARGIN, sa.recv_mid))  # fmt: skip

    def process_i(self, sa, ctx: Ctx) -> None:
        notify = ctx.notify(NotifyType.IKEV2_MESSAGE_ID_SYNC)
        if notify is None or len(notify.data) != SYNC.size:
            raise PeerRefused(
                NotifyType.INVALID_SYNTAX, "Message ID sync answered without its notify"
            )
        nonce, p2, m2 = SYNC.unpack(notify.data)
        if nonce != self.nonce:
            raise PeerRefused(
                NotifyType.INVALID_SYNTAX, "Message ID sync answered with another nonce"
            )
        sa.send_mid, sa.recv_mid = max(m2, sa.send_mid + MARGIN), p2
        sa.mid_grace = p2 - 1  # a request of the peer's in flight at the takeover
        sa.mid_synced(p2, m2)


def answer_sync(sa, data: bytes) -> bytes | None:
    """The peer's side (5.1): the notify data to answer with, or None to drop the request."""
    if len(data) != SYNC.size:
        return None
    nonce, m1, p1 = SYNC.unpack(data)
    # 5.1: M1 lower than what we expect, or not above an earlier sync's: stale or replayed
    if m1 < sa.recv_mid or m1 <= sa.mid_sync_seen:
        return None
    sa.mid_sync_seen = m1
    m2 = m1  # max(M1, our expected next request ID): M1 is not lower
    p2 = max(p1, sa.send_mid)  # send_mid already counts a request of ours in flight
    sa.recv_mid, sa.send_mid = m2, p2
    return SYNC.pack(nonce, p2, m2)
