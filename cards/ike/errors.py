"""IKE error classes: each carries the NOTIFY the engine answers with (DESIGN principle 4)."""

from __future__ import annotations

import struct

from .const import NotifyType
from .payloads import IkeDecodeError


class IkeError(Exception):
    notify: NotifyType = NotifyType.INVALID_SYNTAX

    def __init__(self, reason: str = "", data: bytes = b""):
        super().__init__(reason or self.notify.name)
        self.reason = reason or self.notify.name
        self.data = data

    @classmethod
    def from_decode(cls, exc: IkeDecodeError) -> IkeError:
        err = cls(exc.reason, exc.data)
        err.notify = exc.notify
        return err


class InvalidSyntax(IkeError):
    notify = NotifyType.INVALID_SYNTAX


class NoProposalChosen(IkeError):
    notify = NotifyType.NO_PROPOSAL_CHOSEN


class InvalidKePayload(IkeError):
    notify = NotifyType.INVALID_KE_PAYLOAD

    def __init__(self, group: int):
        super().__init__(
            f"KE group differs from the selected group {group}", struct.pack("!H", group)
        )


class AuthenticationFailure(IkeError):
    notify = NotifyType.AUTHENTICATION_FAILED


class PeerRefused(IkeError):
    """The peer answered with an error notify: nothing to send back, the exchange failed."""

    def __init__(self, notify: int, reason: str = ""):
        super().__init__(reason or f"peer answered {_name(notify)}")
        self.notify = notify


class Restart(Exception):
    """The initiator must send IKE_SA_INIT again (COOKIE or INVALID_KE_PAYLOAD)."""


def _name(notify: int) -> str:
    try:
        return NotifyType(notify).name
    except ValueError:
        return f"notify {notify}"


class Suspended(Exception):
    """The request cannot be answered yet (a revocation source is being asked): the SA
    parks it, and processes it again from the start once the answers are in."""
