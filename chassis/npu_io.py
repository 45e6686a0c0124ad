"""The NPU's sockets, inside the backplane: UDP in, steered to a card over the bus; card out.

The steering itself is chassis/npu.py (sans-IO). This module owns the gateway's UDP sockets
(one per `wsg-service ... bind address`), asks `steer` which card gets each datagram and
sends the cards' answers from the address the peer talked to.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from chassis.ipc.messages import Datagram
from chassis.npu import steer

log = logging.getLogger("npu")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, npu: Npu, local: tuple[str, int]) -> None:
        self.npu, self.local = npu, local

    def datagram_received(self, data: bytes, addr) -> None:
        self.npu.received(self.local, data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp %s: %s", self.local, exc)


class Npu:
    def __init__(
        self, deliver: Callable[[int, Datagram], bool], ready: Callable[[], list[int]]
    ) -> None:
        self.deliver, self.ready = deliver, ready
        self.transports: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self.allowed: dict[
            tuple[str, int], set[int]
        ] = {}  # cards holding the service's credentials
        self.counts: Counter[str] = Counter()

    async def bind(self, binds: list[dict]) -> None:
        """Listen on exactly these addresses (close the others). A service on port 500 gets
        the NAT-T port 4500 of its address too (RFC 7296 2.23: peers float there)."""
        binds = [*binds, *({**b, "port": 4500} for b in binds if int(b["port"]) == 500)]
        wanted = {(b["address"], int(b["port"])) for b in binds}
        self.allowed = {(b["address"], int(b["port"])): set(b.get("slots", [])) for b in binds}
        for local in set(self.transports) - wanted:
            self.transports.pop(local).close()
        loop = asyncio.get_running_loop()
        for local in wanted - set(self.transports):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda local=local: _Protocol(self, local), local_addr=local
                )
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", *local, exc)
                continue
            self.transports[local] = transport
            log.info("listening on %s:%d", *local)

    def received(self, local: tuple[str, int], data: bytes, remote: tuple[str, int]) -> None:
        # Marked framing whenever the gateway's port is not 500 (RFC 3948; INTEROP.md).
        ready = self.ready()
        takers = [s for s in ready if s in self.allowed.get(local, ())]
        where = steer(data, remote, local[1], ready, marked=local[1] != 500, new_sa=takers)
        self.counts[where.kind] += 1
        if where.slot is None:
            self.counts["dropped"] += 1
            if where.reason:
                log.debug("dropped %s from %s:%d: %s", where.kind, *remote, where.reason)
            return
        if not self.deliver(where.slot, Datagram(list(local), list(remote), data)):
            self.counts["dropped"] += 1

    def send(self, msg: Datagram) -> None:
        transport = self.transports.get((msg.local[0], int(msg.local[1])))
        if transport is None:
            self.counts["unroutable"] += 1
            return
        transport.sendto(msg.data, (msg.remote[0], int(msg.remote[1])))
        self.counts["sent"] += 1

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()
        self.transports.clear()
