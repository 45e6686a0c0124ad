"""A listening channel's turns stay bounded when its handler sends (as a card answering the NPU).

A card answers every datagram burst with a send on the same channel; a send that finds more
messages queued must hand them over on a later turn of the loop, bounded like any other
(Channel.BATCH, Channel.BUDGET_S), not drain the queue there and then: under a steady flood
that drain never ended, the card sent no heartbeat for 300 ms and the supervisor failed it
(bench_fleet.py, 1 DPC at 200 tunnels/s).
"""

import asyncio
import time

import pytest

from chassis.ipc import keys as keyring
from chassis.ipc.messages import Update
from chassis.ipc.sockets import Node

COST_S = 0.004  # per message: about one IKE_AUTH on a card
FLOOD = 150  # messages queued at once: 0.6 s of work


@pytest.fixture
def keys(tmp_path):
    for name in ("mgmt", "slot-1"):
        keyring.ensure_keypair(tmp_path / "keys", name)
    return tmp_path / "keys"


async def longest_stall(keys, tmp_path) -> tuple[float, int]:
    """(the longest gap between two 10 ms ticks while the flood is handled, messages handled)"""
    server = Node(keys, "mgmt")
    server.start_auth()
    router = server.router(f"ipc://{tmp_path}/ctl")
    card = Node(keys, "card", key_name="slot-1")
    dealer = card.dealer(f"ipc://{tmp_path}/ctl", keyring.public_key(keys, "mgmt"), "slot-1")
    handled = 0

    def handler(inc) -> None:
        nonlocal handled
        handled += 1
        time.sleep(COST_S)  # the work (DH, signatures) blocks the loop
        dealer.send(Update("answer", {"n": handled}))  # and is answered on the same channel

    try:
        dealer.send(Update("hello", {}))
        peer = (await asyncio.wait_for(router.recv(), 5)).peer
        for i in range(FLOOD):
            router.send(Update("datagram", {"n": i}), to=peer)
        await asyncio.sleep(0.05)  # all of it queued at the card before it listens
        dealer.listen(handler)
        longest, last = 0.0, time.monotonic()
        deadline = last + 10
        while handled < FLOOD and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest, last = max(longest, now - last), now
        return longest, handled
    finally:
        card.close()
        server.close()


def test_a_flood_answered_on_the_same_channel_leaves_the_loop_its_timers(keys, tmp_path):
    longest, handled = asyncio.run(longest_stall(keys, tmp_path))
    assert handled == FLOOD
    # a turn is at most BUDGET_S (20 ms) plus one message; draining all of it took ~600 ms
    assert longest < 0.15, f"the loop stalled {longest * 1000:.0f} ms"
