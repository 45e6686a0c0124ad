"""The NPU's sockets, inside the backplane: UDP in, steered to a card (over its datagram
socketpair, chassis/ipc/datapath.py); card out.

The steering itself is chassis/npu.py (sans-IO). This module owns the gateway's UDP sockets
(one per `wsg-service ... bind address`), asks `steer` which card gets each datagram and
sends the cards' answers from the address the peer talked to. `faults` (chassis/npu.py
UdpFaults) drops or delays datagrams of one card or one peer, both ways (`chassis fault udp`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable

from chassis.npu import UdpFaults, steer

log = logging.getLogger("npu")
RCVBUF = 8 << 20  # bytes per gateway socket (the kernel caps it at net.core.rmem_max)


# Datagrams read per wake-up of a socket, then handed on per card in one message.
BURST = 64
# IKE datagrams per message at most: a card handles a message in one turn of its loop (the
# path's 20 ms budget is checked between messages), and an IKE datagram may cost it
# milliseconds (a MODP-2048 IKE_SA_INIT about 5 ms of CPU, an IKE_AUTH 1-2 ms). 64 IKE_SA_INITs
# of group 14 in one message held a card's loop for 300 ms, and the supervisor failed it for
# the heartbeats it missed; 4 still took 23-30 ms of CPU, 60-80 ms on a shared CPU. ESP
# (microseconds a packet) keeps the whole burst in one message.
IKE_PER_MESSAGE = 2


class Npu:
    def __init__(
        self,
        deliver: Callable[[int, list], bool],
        ready: Callable[[], list[int]],
        new_sa: Callable[[], list[int]] | None = None,
    ):
        """`deliver(card, [[local, remote, data], ...])`: hand a burst on, False when it could
        not; `ready`: the cards whose SAs are steered to them; `new_sa`: those of them that may
        take a new IKE SA (default: the ready ones; a card cut off from the supervisor keeps
        its tunnels but takes no new one)."""
        self.deliver, self.ready = deliver, ready
        self.new_sa = new_sa or ready
        self.owners: dict[int, int] = {}  # SPI slot bits -> card (after a takeover)
        self.faults = UdpFaults()
        self.sockets: dict[tuple[str, int], socket.socket] = {}
        self.allowed: dict[
            tuple[str, int], set[int]
        ] = {}  # cards holding the service's credentials
        self.counts: Counter[str] = Counter()
        self.listen_errors: dict[tuple[str, int], str] = {}  # a gateway address it cannot bind
        # `chassis capture` (chassis/capture.py): tap(src, dst, data, outbound) sees every
        # datagram of the gateway's sockets, received (before steering) or sent
        self.tap: Callable[[tuple[str, int], tuple[str, int], bytes, bool], None] | None = None

    async def bind(self, binds: list[dict]) -> None:
        """Listen on exactly these addresses (close the others). A service on port 500 gets
        the NAT-T port 4500 of its address too (RFC 7296 2.23: peers float there)."""
        binds = [*binds, *({**b, "port": 4500} for b in binds if int(b["port"]) == 500)]
        wanted = {(b["address"], int(b["port"])) for b in binds}
        self.allowed = {(b["address"], int(b["port"])): set(b.get("slots", [])) for b in binds}
        loop = asyncio.get_running_loop()
        for local in set(self.sockets) - wanted:
            self._close(loop, local)
        self.listen_errors = {k: v for k, v in self.listen_errors.items() if k in wanted}
        for local in wanted - set(self.sockets):
            family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                # a burst of ESP must wait in the kernel, not be dropped there
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
                sock.bind(local)
            except OSError as exc:  # e.g. another chassis on the same address and port
                sock.close()
                self.listen_errors[local] = f"cannot listen on {local[0]}:{local[1]}: {exc}"
                log.error("%s", self.listen_errors[local])
                continue
            self.listen_errors.pop(local, None)
            self.sockets[local] = sock
            loop.add_reader(sock.fileno(), self._readable, local, sock)
            log.info("listening on %s:%d", *local)

    def _readable(self, local: tuple[str, int], sock: socket.socket) -> None:
        """Read what is queued (at most BURST), steer it, and hand each card its share in one
        message (IKE in messages of IKE_PER_MESSAGE): under load the path and the card pay their
        per-message cost once per burst, and a card's turn stays short."""
        ready = self.ready()
        takers = [s for s in self.new_sa() if s in self.allowed.get(local, ())]
        marked = local[1] != 500  # RFC 3948 framing whenever the gateway's port is not 500
        batches: dict[int, list] = {}  # per card: ESP, in one message
        ike: dict[int, list] = {}  # per card: IKE, IKE_PER_MESSAGE datagrams a message
        for _ in range(BURST):
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                break
            except OSError as exc:  # an ICMP error from an earlier send: not ours to keep
                log.debug("udp %s: %s", local, exc)
                continue
            remote = (addr[0], addr[1])
            if self.tap is not None:
                self.tap(remote, local, data, False)
            where = steer(
                data, remote, local[1], ready, marked=marked, new_sa=takers, owners=self.owners
            )
            self.counts[where.kind] += 1
            if where.slot is None:
                self._unsteered(where, remote)
                continue
            item = [list(local), list(remote), data]
            if self.faults.rules and not self._faulted(where.slot, remote, item):
                continue
            if where.kind == "ike":
                ike.setdefault(where.slot, []).append(item)
            else:
                batches.setdefault(where.slot, []).append(item)
        for slot, items in ike.items():
            for i in range(0, len(items), IKE_PER_MESSAGE):
                self._hand(slot, items[i : i + IKE_PER_MESSAGE])
        for slot, items in batches.items():
            self._hand(slot, items)

    def _faulted(self, slot: int | None, remote: tuple[str, int], item: list) -> bool:
        """A udp fault's verdict on a received datagram: True to pass it on now (False: it was
        dropped, or will be handed to its card later)."""
        delay = self.faults.decide(slot, remote)
        if delay is None:
            self.counts["fault_dropped"] += 1
            return False
        if delay:
            self.counts["fault_delayed"] += 1
            asyncio.get_running_loop().call_later(delay, self._hand, slot, [item])
            return False
        return True

    def _unsteered(self, where, remote: tuple[str, int]) -> None:
        """A datagram no card gets: dropped, and lost when it belongs to an existing SA (a new
        SA no card can take, a keepalive or garbage is not a loss)."""
        self.counts["dropped"] += 1
        if where.sa:
            self.counts["lost"] += 1
        if where.reason:
            log.debug("dropped %s from %s:%d: %s", where.kind, *remote, where.reason)

    def _hand(self, slot: int, items: list) -> None:
        if not self.deliver(slot, items):  # its path is gone (a dead card) or full: lost
            self.counts["dropped"] += len(items)
            self.counts["lost"] += len(items)

    def received(self, local: tuple[str, int], data: bytes, remote: tuple[str, int]) -> None:
        """One datagram, as if read from ``local`` (tests and tools)."""
        if self.tap is not None:
            self.tap(remote, local, data, False)
        ready = self.ready()
        takers = [s for s in self.new_sa() if s in self.allowed.get(local, ())]
        where = steer(
            data, remote, local[1], ready, marked=local[1] != 500, new_sa=takers, owners=self.owners
        )
        self.counts[where.kind] += 1
        item = [list(local), list(remote), data]
        if where.slot is None:
            self._unsteered(where, remote)
        elif not self.faults.rules or self._faulted(where.slot, remote, item):
            self._hand(where.slot, [item])

    def send(self, items: list, slot: int | None = None) -> None:
        """A card's burst ``[[local, remote, data], ...]`` (from card `slot`): each from the
        gateway address it names."""
        for local, remote, data in items:
            local, remote = (local[0], int(local[1])), (remote[0], int(remote[1]))
            if self.faults.rules:
                delay = self.faults.decide(slot, remote)
                if delay is None:
                    self.counts["fault_dropped"] += 1
                    continue
                if delay:
                    self.counts["fault_delayed"] += 1
                    asyncio.get_running_loop().call_later(delay, self._send, local, remote, data)
                    continue
            self._send(local, remote, data)

    def _send(self, local: tuple[str, int], remote: tuple[str, int], data: bytes) -> None:
        sock = self.sockets.get(local)
        if sock is None:
            self.counts["unroutable"] += 1
            return
        try:
            sock.sendto(data, remote)
        except OSError as exc:  # full buffer, unreachable: the peer retransmits
            self.counts["send_failed"] += 1
            log.debug("udp %s -> %s: %s", local, remote, exc)
            return
        self.counts["sent"] += 1
        if self.tap is not None:
            self.tap(local, remote, data, True)

    def _close(self, loop, local: tuple[str, int]) -> None:
        sock = self.sockets.pop(local)
        loop.remove_reader(sock.fileno())
        sock.close()

    def close(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for local in list(self.sockets):
            if loop is not None:
                self._close(loop, local)
            else:
                self.sockets.pop(local).close()
