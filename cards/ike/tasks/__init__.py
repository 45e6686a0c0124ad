"""IKEv2 tasks, one concern each (strongSwan's sa/ikev2/tasks).

An exchange is composed of tasks. The side that sends the request calls ``build_i`` on each
task to fill the request and ``process_i`` on each when the response arrives; the side that
answers calls ``process_r`` on each, then ``build_r``. The SA's task manager (``sa.py``) owns
message IDs, encryption and retransmission; tasks only read and write payloads.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from ..const import NotifyType
from ..errors import Restart
from ..message import Message, NotifyPayload


@dataclass
class Ctx:
    """One message as tasks see it: exchange type and cleartext payloads (decrypted SK)."""

    exchange: int
    payloads: list = field(default_factory=list)
    msg: Message | None = None

    def all(self, cls, ptype: int | None = None) -> list:
        return [p for p in self.payloads if type(p) is cls and (ptype is None or p.ptype == ptype)]

    def first(self, cls, ptype: int | None = None):
        found = self.all(cls, ptype)
        return found[0] if found else None

    def notify(self, ntype: int) -> NotifyPayload | None:
        return next((n for n in self.all(NotifyPayload) if n.type == ntype), None)

    def errors(self) -> list[NotifyPayload]:
        return [n for n in self.all(NotifyPayload) if n.type < 16384]

    def add_notify(self, ntype: NotifyType, data: bytes = b"") -> None:
        self.payloads.append(NotifyPayload(ntype, data))


class Task:
    def build_i(self, sa, ctx: Ctx) -> None:
        pass

    def process_i(self, sa, ctx: Ctx) -> None:
        pass

    def process_r(self, sa, ctx: Ctx) -> None:
        pass

    def build_r(self, sa, ctx: Ctx) -> None:
        pass


# id(config) -> (weak reference to it, what was derived from it)
_DERIVED: dict[int, tuple[weakref.ref, dict]] = {}


def derived(config, key, make: Callable[[], object]):
    """``make()``, computed once per configuration object (IkeConfig is immutable): what every
    SA of an endpoint would otherwise recompute from it (own chain, CERTREQ, identity)."""
    entry = _DERIVED.get(id(config))
    if entry is None or entry[0]() is not config:
        ident = id(config)

        def forget(ref, ident=ident):
            if _DERIVED.get(ident, (None,))[0] is ref:
                del _DERIVED[ident]

        try:
            ref = weakref.ref(config, forget)
        except TypeError:  # not weakly referenceable (a stand-in config): no cache
            return make()
        entry = _DERIVED[ident] = (ref, {})
    values = entry[1]
    try:
        return values[key]
    except KeyError:
        value = values[key] = make()
        return value


def retry_with_asked_group(task, ctx: Ctx) -> None:
    """CREATE_CHILD_SA answered with INVALID_KE_PAYLOAD: retry once with the group the peer
    asked for, if ``task.offered`` holds it (RFC 7296 1.3); else the refusal stands."""
    invalid = ctx.notify(NotifyType.INVALID_KE_PAYLOAD)
    if invalid is not None and not task.ke_retried and len(invalid.data) == 2:
        group = int.from_bytes(invalid.data)
        if any(p.dh == group for p in task.offered):
            task.group, task.ke_retried = group, True
            raise Restart
