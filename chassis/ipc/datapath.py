"""The NPU's datagram path to one packet card: a socketpair, not the ZeroMQ bus.

The backplane makes the pair when it starts a card, and the card inherits its end
(`--npu-fd`). Gateway datagrams (IKE and ESP) cross it both ways; everything else (heartbeats,
requests, `mgmt.moved`) stays on the CURVE bus. On the bus a datagram paid msgpack, an
envelope, CURVE in ZeroMQ's I/O thread and a wake-up of that thread, twice per hop: about
0.1 ms of CPU per datagram on the two processes, more than the card's cryptography for it. A
socketpair is private to the two processes (nothing else can connect to it: no keys needed),
keeps message boundaries (SOCK_SEQPACKET) and costs a system call a side.

A message is one burst, msgpack of ``[[local, remote, data], ...]`` (local and remote as
``[host, port]``). A send never blocks: what the kernel cannot take now waits in a bounded
backlog, in order, flushed when the socket is writable again; beyond BACKLOG_BYTES it is
dropped and counted, as at the bus's high-water mark. A card started without a pipe (one on
another host) gets its datagrams on the bus as before.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable

import msgpack

log = logging.getLogger(__name__)

# what waits in a backlog at most: a takeover's burst of 10,000 RFC 6311 answers for a card
# still busy adopting the SAs is about 1 MB; a hung card's flood stops here
BACKLOG_BYTES = 4 << 20
CHUNK = 60_000  # datagram bytes per message: the kernel refuses one larger than its buffer
BUFFER = 1 << 20  # socket buffers asked for (the kernel caps them at [rw]mem_max)
RECV_MAX = 1 << 17  # a message is at most CHUNK plus one whole UDP datagram
READ_BATCH = 64  # messages handled per wake-up at most ...
BUDGET_S = 0.02  # ... or fewer, once this much time is spent: the loop's timers run between

Items = list[list]  # [[local, remote, data], ...]


class DatagramPipe:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)
        self.sock = sock
        self.backlog: deque[bytes] = deque()
        self.backlog_bytes = 0
        self.dropped = 0  # messages dropped: backlog full, or the other side gone
        self.bad = 0  # messages received that were not a burst of datagrams
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: Callable[[Items], None] | None = None
        self._writing = False

    @classmethod
    def pair(cls) -> tuple[DatagramPipe, socket.socket]:
        """The backplane's end, and the card's socket (inheritable: pass its fd to the card
        and close it here once the card is started)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.set_inheritable(True)
        return cls(ours), theirs

    @classmethod
    def inherited(cls, fd: int) -> DatagramPipe:
        return cls(socket.socket(fileno=fd))

    # --- sending ------------------------------------------------------------------------
    def send(self, items: Items) -> bool:
        """Hand a burst on (in as many messages as its size needs); False if any was dropped."""
        ok = True
        for chunk in _chunks(items):
            ok = self._send(msgpack.packb(chunk, use_bin_type=True)) and ok
        return ok

    def _send(self, data: bytes) -> bool:
        if self.closed:
            self.dropped += 1
            return False
        if not self.backlog:
            try:
                self.sock.send(data)
                return True
            except BlockingIOError:
                pass
            except OSError as exc:  # the other process has gone (EPIPE, ECONNRESET)
                self.dropped += 1
                log.debug("datagram pipe: %s", exc)
                return False
        if self.backlog_bytes + len(data) > BACKLOG_BYTES:
            self.dropped += 1
            return False
        self.backlog.append(data)
        self.backlog_bytes += len(data)
        if not self._writing:
            self._writing = True
            self._loop_now().add_writer(self.sock.fileno(), self._flush)
        return True

    def _flush(self) -> None:
        while self.backlog:
            try:
                self.sock.send(self.backlog[0])
            except BlockingIOError:
                return  # still full: the writer stays
            except OSError as exc:
                self.dropped += len(self.backlog)
                self.backlog.clear()
                self.backlog_bytes = 0
                log.debug("datagram pipe: %s", exc)
                break
            self.backlog_bytes -= len(self.backlog.popleft())
        self._writing = False
        self._loop_now().remove_writer(self.sock.fileno())

    # --- receiving ----------------------------------------------------------------------
    def listen(self, handler: Callable[[Items], None]) -> None:
        """Call handler(items) for every burst received, from now on, in the running loop."""
        self._handler, self._loop = handler, asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        # level-triggered: what is left after this turn wakes the loop again
        deadline = time.monotonic() + BUDGET_S
        for _ in range(READ_BATCH):
            try:
                data = self.sock.recv(RECV_MAX)
            except BlockingIOError:
                return
            except OSError as exc:
                log.debug("datagram pipe: %s", exc)
                data = b""
            if not data:  # the other side closed it
                self.close()
                return
            items = decode(data)
            if items is None:
                self.bad += 1
                log.warning("datagram pipe: a message that is not a burst of datagrams")
            elif self._handler is not None:
                try:
                    self._handler(items)
                except Exception:  # one bad burst must not stop the path
                    log.exception("while handling a burst of datagrams")
            if self.closed or time.monotonic() > deadline:
                return

    def _loop_now(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.dropped += len(self.backlog)
        self.backlog.clear()
        self.backlog_bytes = 0
        if self._loop is not None and not self._loop.is_closed():
            if self._handler is not None:
                self._loop.remove_reader(self.sock.fileno())
            if self._writing:
                self._loop.remove_writer(self.sock.fileno())
        self._handler, self._writing = None, False
        self.sock.close()


def _chunks(items: Items) -> list[Items]:
    """The burst cut where its datagram bytes would pass CHUNK (a larger datagram alone)."""
    out: list[Items] = [[]]
    size = 0
    for item in items:
        n = len(item[2])
        if out[-1] and size + n > CHUNK:
            out.append([])
            size = 0
        out[-1].append(item)
        size += n
    return out if out[0] else []


def decode(data: bytes) -> Items | None:
    """A received message's datagrams, or None when it is not a burst of them."""
    try:
        items = msgpack.unpackb(data, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(items, list) or not items:
        return None
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and _address(item[0])
            and _address(item[1])
            and isinstance(item[2], bytes)
        ):
            return None
    return items


def _address(a) -> bool:
    return (
        isinstance(a, list)
        and len(a) == 2
        and isinstance(a[0], str)
        and isinstance(a[1], int)
        and 0 <= a[1] <= 65535
    )
