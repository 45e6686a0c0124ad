"""The NPU's datagram path (chassis/ipc/datapath.py): a real socketpair in one event loop."""

from __future__ import annotations

import asyncio
import os

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from chassis.ipc import datapath
from chassis.ipc.datapath import DatagramPipe, decode

LOCAL, REMOTE = ["127.0.0.1", 5500], ["198.51.100.7", 40000]


def burst(n: int, size: int = 100) -> list[list]:
    return [[LOCAL, [REMOTE[0], 40000 + i], os.urandom(size)] for i in range(n)]


async def pipes():
    ours, theirs = DatagramPipe.pair()
    return ours, DatagramPipe(theirs)


async def until(cond, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_bursts_arrive_whole_and_in_order():
    async def main():
        a, b = await pipes()
        got: list[list] = []
        b.listen(got.append)
        sent = [burst(1), burst(3), burst(64)]
        for items in sent:
            assert a.send(items)
        await until(lambda: len(got) == 3)
        assert got == sent
        back: list[list] = []
        a.listen(back.append)
        assert b.send(burst(2))
        await until(lambda: len(back) == 1)
        assert len(back[0]) == 2
        a.close(), b.close()

    asyncio.run(main())


def test_a_large_burst_is_cut_into_messages_the_kernel_takes():
    async def main():
        a, b = await pipes()
        got: list[list] = []
        b.listen(got.append)
        items = burst(200, 1400) + [[LOCAL, REMOTE, os.urandom(65000)]]  # 345 KB in all
        assert a.send(items)
        await until(lambda: sum(map(len, got)) == len(items))
        assert [i for m in got for i in m] == items
        assert len(got) > 1 and all(
            sum(len(i[2]) for i in m) <= max(datapath.CHUNK, 65000) for m in got
        )
        a.close(), b.close()

    asyncio.run(main())


def test_a_full_pipe_queues_then_drops_and_counts_and_keeps_order(monkeypatch):
    monkeypatch.setattr(datapath, "BACKLOG_BYTES", 1 << 20)

    async def main():
        a, b = await pipes()
        accepted = [items for items in (burst(40, 1400) for _ in range(200)) if a.send(items)]
        assert a.backlog, "the kernel took everything"
        assert (1 << 20) - 60_000 < a.backlog_bytes <= 1 << 20
        assert a.backlog_bytes == sum(map(len, a.backlog))
        assert a.dropped == 200 - len(accepted) > 0
        got: list[list] = []
        b.listen(got.append)  # the reader catches up: the backlog is flushed, in order
        await until(lambda: len(got) == len(accepted))
        assert got == accepted and not a.backlog and a.backlog_bytes == 0
        a.close(), b.close()

    asyncio.run(main())


def test_the_other_side_gone_drops_and_counts_and_closes_the_reader():
    async def main():
        a, b = await pipes()
        b.listen(lambda items: None)
        a.close()
        await until(lambda: b.closed)  # EOF seen
        assert not b.send(burst(1)) and b.dropped == 1

    asyncio.run(main())


def test_a_message_that_is_not_a_burst_is_counted_and_the_path_goes_on():
    async def main():
        a, b = await pipes()
        got: list[list] = []

        def handler(items):
            if items[0][1][1] == 1:
                raise RuntimeError("a handler's bug")
            got.append(items)

        b.listen(handler)
        a.sock.send(b"\xc1 not msgpack")
        a.sock.send(msgpack.packb([["x"]]))
        assert a.send([[LOCAL, [REMOTE[0], 1], b"boom"]])
        assert a.send(burst(2))
        await until(lambda: len(got) == 1)
        assert b.bad == 2 and len(got[0]) == 2 and not b.closed
        a.close(), b.close()

    asyncio.run(main())


address = st.lists(st.one_of(st.text(max_size=20), st.integers(0, 65535)), min_size=2, max_size=2)


@given(st.binary(max_size=300))
def test_decode_never_raises_on_bytes(data):
    items = decode(data)
    assert items is None or all(isinstance(i[2], bytes) for i in items)


@given(
    st.lists(
        st.tuples(st.text(max_size=40), st.integers(0, 65535), st.text(max_size=40),
                  st.integers(0, 65535), st.binary(max_size=64)),
        min_size=1, max_size=8,
    )
)  # fmt: skip
def test_decode_round_trips_every_burst(rows):
    items = [[[lh, lp], [rh, rp], data] for lh, lp, rh, rp, data in rows]
    assert decode(msgpack.packb(items, use_bin_type=True)) == items


@given(st.lists(st.lists(address | st.binary(max_size=8), max_size=4), max_size=4))
def test_decode_refuses_what_is_not_address_address_bytes(items):
    valid = bool(items) and all(
        len(i) == 3 and datapath._address(i[0]) and datapath._address(i[1])
        and isinstance(i[2], bytes) for i in items
    )  # fmt: skip
    assert decode(msgpack.packb(items, use_bin_type=True)) == (items if valid else None)
