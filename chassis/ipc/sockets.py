"""CURVE-secured ZeroMQ sockets carrying envelopes: the only zmq user besides ipc/keys.

A Node is one process's context. Server nodes start a ZAP authenticator that admits
only the chassis's own public keys, before they bind anything. Channels wrap one
socket each and never block a send: a full or unknown peer costs a dropped message
that is counted, never a stalled loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio

from chassis.ipc import keys as keyring
from chassis.ipc.envelope import DecodeError, Envelope, decode, encode
from chassis.ipc.messages import Reply, Request

log = logging.getLogger(__name__)

ZAP_DOMAIN = "chassis"


@dataclass
class Incoming:
    peer: bytes | None
    topic: bytes | None
    env: Envelope | None
    error: DecodeError | None = None


class IpcFault:
    """What a fault does to one channel's messages; sans-IO: decide() says, the Channel acts.

    mode: "drop" (each message with probability `rate`), "delay" (each by `ms`, with
    probability `rate`), "duplicate" (each twice, with probability `rate`), "partition"
    (every message, both ways). The generator is seeded: the same seed and the same sequence
    of messages give the same decisions.
    """

    MODES = ("drop", "delay", "duplicate", "partition")

    def __init__(self, mode: str, rate: float = 1.0, ms: float = 0.0, seed=0) -> None:
        if mode not in self.MODES:
            raise ValueError(f"ipc fault mode {mode!r}: one of {', '.join(self.MODES)}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError(f"rate {rate!r}: a probability between 0 and 1")
        if isinstance(ms, bool) or not isinstance(ms, int | float) or ms < 0:
            raise ValueError(f"ms {ms!r}: milliseconds (>= 0)")
        self.mode, self.rate, self.ms, self.seed = mode, float(rate), float(ms), seed
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()

    def decide(self, direction: str) -> tuple[int, float]:
        """(copies, delay in seconds) for the next message going `direction` ("in"/"out"):
        0 copies drops it, 2 duplicates it."""
        self.counts[direction] += 1
        if self.mode == "partition":
            self.counts["dropped"] += 1
            return 0, 0.0
        if self.rng.random() >= self.rate:
            return 1, 0.0
        if self.mode == "drop":
            self.counts["dropped"] += 1
            return 0, 0.0
        if self.mode == "duplicate":
            self.counts["duplicated"] += 1
            return 2, 0.0
        self.counts["delayed"] += 1
        return 1, self.ms / 1000

    def describe(self) -> dict:
        return {"mode": self.mode, "rate": self.rate, "ms": self.ms, "seed": self.seed,
                "counts": dict(self.counts)}  # fmt: skip


class Node:
    """One process's ZeroMQ context, identity (src), epoch and key pair."""

    def __init__(
        self, keys_dir: Path, name: str, *, key_name: str | None = None, keypair=None
    ) -> None:
        self.keys_dir = Path(keys_dir)
        self.name = name
        self.epoch = 0
        self.public, self.secret = keypair or keyring.keypair(self.keys_dir, key_name or name)
        self.ctx = zmq.asyncio.Context()
        self._auth = None
        self._ids = itertools.count(1)
        self.dropped = 0
        self.channels: list[Channel] = []

    def start_auth(self, *, enforce: bool = True) -> None:
        """Start the ZAP handler; must run inside the event loop, before any bind."""
        from zmq.auth.asyncio import AsyncioAuthenticator

        self._auth = AsyncioAuthenticator(self.ctx, log=logging.getLogger("zap"))
        self._auth.start()
        if enforce:
            self._auth.configure_curve(
                domain=ZAP_DOMAIN, location=keyring.allowed_dir(self.keys_dir)
            )
        else:  # only tests use this, to show that the ZAP handler is what stops a rogue
            self._auth.configure_curve(domain=ZAP_DOMAIN, location=zmq.auth.CURVE_ALLOW_ANY)

    def next_id(self) -> int:
        return next(self._ids)

    def _socket(self, kind: int) -> zmq.Socket:
        sock = zmq.Socket(self.ctx, kind)  # a plain socket: Channel drives it from the loop
        sock.linger = 0
        sock.curve_publickey, sock.curve_secretkey = self.public, self.secret
        return sock

    def _server(self, kind: int, endpoint: str) -> zmq.Socket:
        if self._auth is None:
            raise RuntimeError("start the ZAP authenticator before binding")
        sock = self._socket(kind)
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN.encode()
        if kind == zmq.ROUTER:
            sock.router_handover = 1
            sock.router_mandatory = 1
        sock.bind(endpoint)
        return sock

    def _client(self, kind: int, endpoint: str, server_key: bytes, identity: str | None):
        sock = self._socket(kind)
        sock.curve_serverkey = server_key
        sock.reconnect_ivl = 20
        sock.reconnect_ivl_max = 200
        if identity is not None:
            sock.identity = identity.encode()
        sock.connect(endpoint)
        return sock

    def router(self, endpoint: str) -> Channel:
        return Channel(self, self._server(zmq.ROUTER, endpoint), "router")

    def publisher(self, endpoint: str) -> Channel:
        return Channel(self, self._server(zmq.PUB, endpoint), "pub")

    def dealer(self, endpoint: str, server_key: bytes, identity: str | None = None) -> Channel:
        return Channel(self, self._client(zmq.DEALER, endpoint, server_key, identity), "dealer")

    def subscriber(self, endpoint: str, server_key: bytes, topics: list[bytes]) -> Channel:
        sock = self._client(zmq.SUB, endpoint, server_key, None)
        for topic in topics:
            sock.subscribe(topic)
        return Channel(self, sock, "sub")

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        if self._auth is not None:
            self._auth.stop()
        self.ctx.destroy(linger=0)


class Channel:
    """One socket. Messages are handed to a handler straight from the loop's reader callback.

    No future per message: zmq.asyncio's machinery costs more than the rest of a round
    trip. ZMQ_FD is edge-triggered, so every wake-up drains the queue, a bounded turn at a
    time, and every send that finds messages queued schedules such a turn (a send can swallow
    the readable edge of a message that is already queued). Never a drain without bound from
    a send: a card answering a flood would answer it forever, its heartbeats waiting.
    """

    def __init__(self, node: Node, sock, kind: str) -> None:
        self.node, self.sock, self.kind = node, sock, kind
        node.channels.append(self)
        self._seq = itertools.count(1)
        self._handler = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False  # a bounded turn (_readable) is queued on the loop
        self.fault: IpcFault | None = None  # fault injection: see IpcFault
        self._held: deque[Incoming] = deque()  # duplicated incoming messages, next to hand out
        self._later: deque[tuple[float, object]] = deque()  # delayed actions, in order
        self._later_timer: asyncio.TimerHandle | None = None

    def envelope(self, msg, *, id: int | None = None, seq: int | None = None) -> Envelope:
        return Envelope(
            msg,
            id=self.node.next_id() if id is None else id,
            src=self.node.name,
            ts=time.time(),
            epoch=self.node.epoch,
            seq=next(self._seq) if seq is None else seq,
        )

    def send(
        self, msg, *, to: bytes | None = None, topic: bytes | None = None, seq=None
    ) -> int | None:
        """Send without blocking; returns the message id, or None when dropped.

        A message an IpcFault drops (or delays) counts as sent: the sender cannot tell."""
        env = self.envelope(msg, seq=seq)
        frames = [encode(env)]
        if self.kind == "router":
            frames.insert(0, to)
        elif self.kind == "pub":
            frames.insert(0, topic or b"")
        if self.fault is not None:
            copies, delay = self.fault.decide("out")
            if delay:
                self._defer(delay, lambda: self.sock.closed or self._send_frames(frames, env, to))
                return env.id
            for _ in range(copies - 1):
                self._send_frames(frames, env, to)
            if copies == 0:
                return env.id
        return env.id if self._send_frames(frames, env, to) else None

    def _send_frames(self, frames: list, env: Envelope, to) -> bool:
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except (
            zmq.ZMQError
        ) as exc:  # Again at the high-water mark, EHOSTUNREACH for an unknown peer
            self.node.dropped += 1
            log.debug("dropped %s to %r: %s", env.type, to, exc)
            return False
        finally:
            if self._handler is not None and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._schedule()
        return True

    def _defer(self, delay: float, action) -> bool:
        """Run `action` `delay` seconds from now, after every action deferred before it."""
        try:
            loop = self._loop or asyncio.get_running_loop()
        except RuntimeError:  # no loop (a blocking user): no delay
            action()
            return False
        self._later.append((loop.time() + delay, action))
        if self._later_timer is None:
            self._later_timer = loop.call_at(self._later[0][0], self._run_later)
        return True

    def _run_later(self) -> None:
        self._later_timer = None
        loop = self._loop or asyncio.get_running_loop()
        while self._later and self._later[0][0] <= loop.time():
            _, action = self._later.popleft()
            try:
                action()
            except Exception:
                log.exception("delayed message")
        if self._later:
            self._later_timer = loop.call_at(self._later[0][0], self._run_later)

    def reply(self, request: Incoming, ok: bool, result=None, error: str = "") -> None:
        self.send(Reply(request.env.id, ok, result, error), to=request.peer)

    def _parse(self, frames: list[bytes]) -> Incoming:
        peer = topic = None
        if self.kind == "router":
            if len(frames) != 2:
                return Incoming(frames[0], None, None, DecodeError(f"{len(frames)} frames"))
            peer, data = frames
        elif self.kind == "sub":
            if len(frames) != 2:
                return Incoming(None, None, None, DecodeError(f"{len(frames)} frames"))
            topic, data = frames
        else:
            if len(frames) != 1:
                return Incoming(None, None, None, DecodeError(f"{len(frames)} frames"))
            data = frames[0]
        try:
            return Incoming(peer, topic, decode(data))
        except DecodeError as exc:
            return Incoming(peer, topic, None, exc)

    def _next(self) -> Incoming | None:
        if self.fault is None and not self._held:
            try:
                return self._parse(self.sock.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                return None
        while True:  # fault injection: the queue's messages dropped, duplicated or delayed
            if self._held:
                return self._held.popleft()
            try:
                inc = self._parse(self.sock.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                return None
            if self.fault is None:
                return inc
            copies, delay = self.fault.decide("in")
            if copies == 0:
                continue
            if delay and self._handler is not None:
                self._defer(delay, lambda inc=inc: self._handler and self._handler(inc))
                continue
            if copies == 2:
                self._held.append(inc)
            return inc

    BATCH = 64  # messages handled per turn of the event loop when listening
    BUDGET_S = 0.02  # ... or fewer, once this much time is spent: timers run in between

    def listen(self, handler) -> None:
        """Call handler(incoming) for every message, from now on, inside the running loop."""
        self._handler, self._loop = handler, asyncio.get_running_loop()
        self._loop.add_reader(self.sock.getsockopt(zmq.FD), self._readable)
        self._loop.call_soon(self._readable)  # messages queued before the reader existed

    def _readable(self) -> None:
        """A bounded batch, then the rest on the next turn: under a flood of datagrams the
        loop's timers (heartbeats) still run in between. The FD is edge-triggered, so what
        is left is picked up by the rescheduled call, not by the reader."""
        self._scheduled = False
        deadline = time.monotonic() + self.BUDGET_S
        for _ in range(self.BATCH):
            if self._handler is None:  # closed by a handler
                return
            inc = self._next()
            if inc is None:
                return
            self._handler(inc)
            if time.monotonic() > deadline:  # a burst of costly messages (DH, signatures)
                break
        self._schedule()

    def _schedule(self) -> None:
        """One bounded turn on the loop's next pass, however many sends asked for it."""
        if not self._scheduled and self._handler is not None:
            self._scheduled = True
            self._loop.call_soon(self._readable)

    def pump(self) -> None:
        """Hand every queued message to the handler (also call it before checking deadlines)."""
        while (inc := self._next()) is not None:
            self._handler(inc)

    async def recv(self) -> Incoming:
        """The next message (for code that does not listen)."""
        loop = asyncio.get_running_loop()
        fd = self.sock.getsockopt(zmq.FD)
        while (inc := self._next()) is None:
            ready = loop.create_future()
            loop.add_reader(fd, lambda f=ready: f.done() or f.set_result(None))
            try:
                if not self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    await ready
            finally:
                loop.remove_reader(fd)
        return inc

    def drain(self) -> list[Incoming]:
        """Everything already queued, without waiting (for code that does not listen)."""
        out = []
        while (inc := self._next()) is not None:
            out.append(inc)
        return out

    def close(self) -> None:
        if self.sock.closed:
            return
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        self._later.clear()
        if self._handler is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.getsockopt(zmq.FD))
            self._handler = None
        self.sock.close(linger=0)


class SyncClient:
    """Blocking request/reply client for command-line tools and other people's tests."""

    def __init__(self, keys_dir: Path, key_name: str, endpoint: str, server_key: bytes) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.curve_publickey, self.sock.curve_secretkey = keyring.keypair(keys_dir, key_name)
        self.sock.curve_serverkey = server_key
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)

    def call(self, method: str, args: dict | None = None, timeout: float = 5.0):
        """Returns the Reply; raises TimeoutError when nothing answers in time."""
        env = Envelope(
            Request(method, args or {}), id=next(self._ids), src="client", ts=time.time()
        )
        self.sock.send(encode(env))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise TimeoutError(f"no answer to {method!r} within {timeout:g} s")
            reply = decode(self.sock.recv()).msg
            if isinstance(reply, Reply) and reply.ref == env.id:
                return reply

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
