"""One HTTP/1.1 exchange on a connection of its own (h11 over asyncio streams), for the card's
Hash and URL fetches (GET) and OCSP requests (POST).

Why not httpx here: a client per request (the OCSP rule: one TCP connection per request,
closed after the answer) would build a TLS context each time, milliseconds of card CPU per
tunnel; these URLs are plain http (RFC 7296 3.6, RFC 6960 A.1), and h11 does the protocol.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit

import h11


class HttpError(Exception):
    """The exchange failed; the message names why (for the log and the engine)."""


async def exchange(method: str, url: str, *, body: bytes = b"", content_type: str | None = None,
                   max_bytes: int) -> bytes:  # fmt: skip
    """The response body of ``method url`` (status 200 only), at most ``max_bytes``. The
    caller bounds the time (asyncio.wait_for); the connection is closed either way."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise HttpError(f"only http:// URLs, not {url!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise HttpError(f"bad port in {url!r}") from exc
    host = parts.hostname
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = f"[{host}]" if ":" in host else host
    headers = [("Host", f"{authority}:{port}" if parts.port else authority),
               ("Connection", "close"), ("Content-Length", str(len(body)))]  # fmt: skip
    if content_type:
        headers.append(("Content-Type", content_type))
    conn = h11.Connection(h11.CLIENT)
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise HttpError(_reason(exc)) from None
    try:
        writer.write(conn.send(h11.Request(method=method, target=target, headers=headers)))
        if body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return await _read(conn, reader, max_bytes)
    except h11.ProtocolError as exc:
        raise HttpError(f"bad HTTP answer: {exc}") from None
    except OSError as exc:
        raise HttpError(_reason(exc)) from None
    finally:
        writer.close()


def _reason(exc: OSError) -> str:
    # asyncio words a refused connect "Connect call failed (...)": say what the errno says
    return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__


async def _read(conn: h11.Connection, reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    out, status = bytearray(), None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            if status != 200:
                raise HttpError(f"HTTP {status}")
        elif isinstance(event, h11.Data):
            out += event.data
            if len(out) > max_bytes:
                raise HttpError(f"answer over {max_bytes} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return bytes(out)
        elif isinstance(event, h11.ConnectionClosed):
            raise HttpError("connection closed before the answer ended")
