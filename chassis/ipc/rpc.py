"""Request/reply over any channel: correlation by request id, bounded by a timeout."""

from __future__ import annotations

import asyncio

from chassis.ipc.messages import Reply, Request
from chassis.ipc.sockets import Channel, Incoming


class RpcError(Exception):
    pass


class Pending:
    """Outstanding requests of one process; its receive loops hand replies to resolve()."""

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future] = {}

    async def call(self, channel: Channel, request, *, to=None, timeout: float = 2.0):
        """Send a Request (or any message answered by a Reply) and await the result."""
        method = request.method if isinstance(request, Request) else request.TYPE
        msg_id = channel.send(request, to=to)
        if msg_id is None:
            raise RpcError(f"{method}: peer unreachable")
        future = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = future
        try:
            reply: Reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer to {method!r} within {timeout:g} s") from None
        finally:
            self._waiting.pop(msg_id, None)
        if not reply.ok:
            raise RpcError(reply.error)
        return reply.result

    def resolve(self, incoming: Incoming) -> bool:
        """True when the message was a reply to one of our requests (late ones are dropped)."""
        msg = incoming.env.msg if incoming.env else None
        if not isinstance(msg, Reply):
            return False
        future = self._waiting.get(msg.ref)
        if future is not None and not future.done():
            future.set_result(msg)
        return True
