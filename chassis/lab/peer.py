"""What the lab's revocation peers (OCSP responder, CRL publisher) share: their warpable
wall clock, the behaviours a drill sets, and an HTTP front with a loopback /admin endpoint.

    GET  /admin     behaviours, counters, URLs (JSON)
    POST /admin     {"down": true, "slow": 2.5, "error": "...", "stale": true, "warp": S, ...}

Behaviours (the topology's ``behaviour:`` at start, /admin at run time):

    down    close every connection of the service without an answer (/admin keeps working;
            killing the process is the harder "down" a fault drill does)
    slow    seconds to wait before answering
    error   answer with an error (what kind depends on the peer; true: the peer's default)
    stale   answer with data that is out of date: thisUpdate/nextUpdate in the past (true: by
            the peer's update period, a number: nextUpdate that many seconds ago)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from chassis.ipc.rundir import atomic_write

MAX_BODY = 64 * 1024
MAX_SLOW = 600.0
STATUS_EVERY_S = 0.5


class LabClock:
    """The peer's wall clock: the system's plus the warp offset the chassis sends to every
    lab peer (`chassis fault warp`), like the lab CA's."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.offset, dt.UTC)


@dataclass
class PeerBehaviour:
    down: bool = False
    slow: float = 0.0
    error: bool | str = False
    stale: bool | float = False
    errors: tuple[str, ...] = ()  # what `error` may name; true means errors[0]
    counts: dict = field(default_factory=dict)

    SETTABLE = ("down", "slow", "error", "stale")

    @classmethod
    def from_config(cls, conf: dict | None, errors: tuple[str, ...]) -> PeerBehaviour:
        b = cls(errors=errors)
        b.update(dict(conf or {}))
        return b

    def update(self, changes: dict) -> None:
        """Check every change first, then apply them all (a bad one changes nothing)."""
        checked = {}
        for key, value in changes.items():
            if key not in self.SETTABLE:
                raise ValueError(f"unknown behaviour {key!r} (one of {', '.join(self.SETTABLE)})")
            if key == "down" and not isinstance(value, bool):
                raise ValueError("down must be true or false")
            if key == "slow":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError("slow must be a number of seconds")
                if not 0 <= value <= MAX_SLOW:
                    raise ValueError(f"slow must be between 0 and {MAX_SLOW:g} seconds")
                value = float(value)
            if key == "error" and not isinstance(value, bool) and value not in self.errors:
                raise ValueError(f"error must be true, false or one of {', '.join(self.errors)}")
            if key == "stale" and not isinstance(value, bool):
                if not isinstance(value, int | float) or value <= 0:
                    raise ValueError("stale must be true, false or seconds (> 0)")
            checked[key] = value
        for key, value in checked.items():
            setattr(self, key, value)

    @property
    def error_kind(self) -> str | None:
        """The error to answer with, or None."""
        if self.error is True:
            return self.errors[0]
        return self.error or None

    def stale_by(self, period: float) -> float | None:
        """Seconds nextUpdate lies in the past when stale, else None."""
        if self.stale is False:
            return None
        return float(period if self.stale is True else self.stale)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def report(self) -> dict:
        return {k: getattr(self, k) for k in self.SETTABLE} | {"counts": dict(self.counts)}


class Reply:
    def __init__(self, code: int, body: bytes, ctype: str = "application/octet-stream") -> None:
        self.code, self.body, self.ctype = code, body, ctype


class Peer:
    """One lab peer behind the HTTP front: the subclass serves its paths."""

    name = "peer"
    behaviour: PeerBehaviour
    clock: LabClock

    def get(self, path: str) -> Reply | None:
        return None

    def post(self, path: str, body: bytes) -> Reply | None:
        return None

    def admin(self, changes: dict) -> None:
        """Apply /admin changes other than warp (the behaviours, by default)."""
        self.behaviour.update(changes)

    def report(self) -> dict:
        return {"behaviour": self.behaviour.report(), "warp": self.clock.offset}


def make_handler(peer: Peer, log: logging.Logger):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # a connection per request, like the lab CA

        def log_message(self, fmt, *args):
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.code)
            self.send_header("Content-Type", reply.ctype)
            self.send_header("Content-Length", str(len(reply.body)))
            if reply.code == 200 and self.command == "GET":
                self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(reply.body)

        def _json(self, data: dict) -> None:
            self._send(Reply(200, json.dumps(data).encode(), "application/json"))

        def _text(self, code: int, text: str) -> None:
            self._send(Reply(code, text.encode() + b"\n", "text/plain"))

        def _serve(self, answer: Callable[[], Reply | None]) -> None:
            b = peer.behaviour
            if b.down:  # before reading the body: the client sees the connection close
                b.count("refused")
                self.close_connection = True
                self.connection.close()
                return
            if b.slow:
                time.sleep(b.slow)
            try:
                reply = answer()
            except Exception:  # one bad request must not take the peer down
                log.exception("while answering %s %s", self.command, self.path)
                reply = Reply(500, b"internal error\n", "text/plain")
            self._send(reply or Reply(404, b"not found\n", "text/plain"))

        def do_GET(self):
            if self.path == "/admin":
                self._json(peer.report())
                return
            self._serve(lambda: peer.get(self.path))

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._text(400, "missing or oversize body")
                return None
            return self.rfile.read(length)

        def do_POST(self):
            if self.path != "/admin":
                if peer.behaviour.down:
                    self._serve(lambda: None)
                    return
                body = self._body()
                if body is not None:
                    self._serve(lambda: peer.post(self.path, body))
                return
            body = self._body()
            if body is None:
                return
            try:
                changes = json.loads(body)
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                if "warp" in changes:
                    warp = changes.pop("warp")
                    if isinstance(warp, bool) or not isinstance(warp, int | float):
                        raise ValueError("warp must be a number of seconds")
                    peer.clock.offset += float(warp)
                peer.admin(changes)
            except (ValueError, TypeError) as exc:
                self._text(400, f"bad request: {exc}")
                return
            except TimeoutError as exc:
                self._text(503, str(exc))
                return
            self._json(peer.report())

    return Handler


def serve(peer: Peer, port: int, log: logging.Logger) -> ThreadingHTTPServer:
    """The peer's HTTP front on 127.0.0.1:port (0: any), serving in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(peer, log))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"{peer.name}-http", daemon=True).start()
    return server


def wait_for_ca(home: Path, stop: threading.Event | None = None, timeout: float = 60.0) -> bool:
    """The lab CA writes issuing.crt last when it creates itself: then all its files exist."""
    deadline = time.monotonic() + timeout
    while not (home / "issuing.crt").exists():
        if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def write_status(path: Path, data: dict) -> None:
    """RUN/lab/NAME/status.json: what `chassis status` shows without asking the peer."""
    atomic_write(path, json.dumps(data, sort_keys=True).encode(), sync_dir=False)
