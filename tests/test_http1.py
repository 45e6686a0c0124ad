"""cards.http1: the card's one-connection HTTP exchange (OCSP POSTs, Hash and URL GETs)
against small asyncio servers on loopback that answer well, badly, too much or not at all."""

from __future__ import annotations

import asyncio

import pytest

from cards import http1


async def serve(answer: bytes | None, seen: list) -> tuple[asyncio.AbstractServer, int]:
    """A server that reads one request and writes ``answer`` (None: stays silent)."""

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = [int(h.split(b":")[1]) for h in head.split(b"\r\n")
                  if h.lower().startswith(b"content-length")]  # fmt: skip
        body = await reader.readexactly(length[0]) if length else b""
        seen.append((head, body))
        if answer is None:
            await asyncio.sleep(30)
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def run(answer: bytes | None, method="POST", body=b"req", max_bytes=1000, timeout=2.0):
    seen: list = []

    async def main():
        server, port = await serve(answer, seen)
        try:
            url = f"http://127.0.0.1:{port}/ocsp"
            return await asyncio.wait_for(
                http1.exchange(
                    method,
                    url,
                    body=body,
                    max_bytes=max_bytes,
                    content_type="application/ocsp-request",
                ),  # fmt: skip
                timeout,
            )
        finally:
            server.close()

    return asyncio.run(main()), seen


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_a_post_and_its_answer():
    got, seen = run(ok(b"\x30\x03\x0a\x01\x00"))
    assert got == b"\x30\x03\x0a\x01\x00"
    ((head, body),) = seen
    assert head.startswith(b"POST /ocsp HTTP/1.1\r\n") and body == b"req"
    assert b"Connection: close" in head and b"Content-Type: application/ocsp-request" in head


def test_an_answer_until_the_connection_closes():
    got, _ = run(b"HTTP/1.0 200 OK\r\n\r\nthe body")
    assert got == b"the body"


@pytest.mark.parametrize(
    "answer, reason",
    [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", "HTTP 500"),
        (ok(b"x" * 1001), "answer over 1000 bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "bad HTTP answer"),
        (b"garbage\r\n\r\n", "bad HTTP answer"),
        (b"", "bad HTTP answer"),
    ],
    ids=["status", "oversize", "truncated", "garbage", "closed"],
)
def test_bad_answers_are_named(answer, reason):
    with pytest.raises(http1.HttpError, match=reason):
        run(answer)


def test_a_silent_server_is_bounded_by_the_callers_timer():
    with pytest.raises(TimeoutError):
        run(None, timeout=0.3)


def test_refused_and_bad_urls():
    async def main(url):
        return await http1.exchange("GET", url, max_bytes=10)

    import socket

    with socket.socket() as s:  # bound, not listening: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(http1.HttpError, match="Connection refused"):
            asyncio.run(main(f"http://127.0.0.1:{port}/"))
    for url in ("https://127.0.0.1/", "ftp://x/", "http:///nohost", "http://h:99999/"):
        with pytest.raises(http1.HttpError):
            asyncio.run(main(url))
