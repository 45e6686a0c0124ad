"""NPU steering: new IKE SAs spread stably over the ready cards; known SPIs go to their owner."""

import os
import socket
import time

from hypothesis import given
from hypothesis import strategies as st

from cards.spi import make_spi
from chassis.npu import steer
from chassis.npu_io import IKE_PER_MESSAGE, Npu


def ike(spi_i: bytes, spi_r: bytes = bytes(8), flags: int = 0x08) -> bytes:
    return spi_i + spi_r + bytes([33, 0x20, 34, flags]) + bytes(4) + (28).to_bytes(4, "big")


def test_new_sas_are_spread_and_retransmissions_stay():
    ready = [1, 2, 3]
    seen = set()
    for i in range(60):
        spi_i = os.urandom(8)
        first = steer(ike(spi_i), ("10.0.0.1", 1000 + i), 500, ready, marked=False)
        assert first.kind == "ike" and first.slot in ready
        again = steer(ike(spi_i), ("10.0.0.1", 1000 + i), 500, ready, marked=False)
        assert again.slot == first.slot  # a retransmission or a COOKIE retry: same card
        seen.add(first.slot)
    assert seen == set(ready)


def test_known_spis_go_to_the_owner_in_both_directions():
    ours = make_spi(2, os.urandom(8))
    as_responder = steer(
        ike(os.urandom(8), ours, flags=0x08), ("10.0.0.1", 500), 500, [1, 2], False
    )
    assert as_responder.slot == 2
    as_initiator = steer(
        ike(ours, os.urandom(8), flags=0x20), ("10.0.0.1", 500), 500, [1, 2], False
    )
    assert as_initiator.slot == 2
    gone = steer(
        ike(os.urandom(8), make_spi(3, os.urandom(8))), ("10.0.0.1", 500), 500, [1, 2], False
    )
    assert gone.slot is None and "slot 3" in gone.reason


def test_port_4500_framing_keepalives_and_esp():
    assert steer(b"\xff", ("10.0.0.1", 4500), 4500, [1], True).kind == "keepalive"
    marked = b"\0\0\0\0" + ike(os.urandom(8))
    assert steer(marked, ("10.0.0.1", 4500), 4500, [1], True).slot == 1
    esp = make_spi(1, os.urandom(4)) + (1).to_bytes(4, "big") + os.urandom(40)
    assert steer(esp, ("10.0.0.1", 4500), 4500, [1], True).kind == "esp"
    assert steer(esp, ("10.0.0.1", 4500), 4500, [1], True).slot == 1


def test_a_card_leaving_moves_only_its_own_new_sas():
    keys = [(os.urandom(8), ("10.0.0.9", 500 + i)) for i in range(200)]
    before = {k: steer(ike(k[0]), k[1], 500, [1, 2, 3], False).slot for k in keys}
    after = {k: steer(ike(k[0]), k[1], 500, [1, 3], False).slot for k in keys}
    assert all(after[k] == before[k] for k in keys if before[k] != 2)


@given(st.binary(max_size=80), st.booleans())
def test_any_datagram_gets_an_answer_never_an_exception(data, marked):
    result = steer(data, ("127.0.0.1", 4500), 4500, [1, 2], marked)
    assert result.slot in (None, 1, 2)
    assert (result.slot is None) == (result.kind in ("keepalive", "garbage") or bool(result.reason))


def test_new_sas_only_to_cards_that_can_serve_but_known_spis_stay():
    for _ in range(30):
        where = steer(ike(os.urandom(8)), ("10.0.0.1", 500), 500, [1, 2, 3], False, new_sa=[2])
        assert where.slot == 2
    assert steer(ike(os.urandom(8)), ("10.0.0.1", 500), 500, [1, 2], False, new_sa=[]).slot is None
    owned = make_spi(1, os.urandom(8))  # card 1 keeps the SAs it has, credentials or not
    assert (
        steer(ike(os.urandom(8), owned), ("10.0.0.1", 500), 500, [1, 2], False, new_sa=[2]).slot
        == 1
    )


def test_a_burst_goes_to_a_card_as_one_message_of_esp_and_small_messages_of_ike():
    """ESP costs a card microseconds a packet: a burst is one message. IKE may cost it
    milliseconds a datagram (a MODP-2048 key pair): at most IKE_PER_MESSAGE in a message, so
    the card's loop turns (and heartbeats) between them."""
    got: list = []
    npu = Npu(lambda slot, msg: got.append((slot, msg)) or True, lambda: [1])
    gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        gateway.bind(("127.0.0.1", 0))
        gateway.setblocking(False)
        local = gateway.getsockname()
        npu.allowed[local] = {1}
        inits = 2 * IKE_PER_MESSAGE + 1
        for _ in range(inits):
            peer.sendto(b"\0\0\0\0" + ike(os.urandom(8)), local)
        for seq in range(10):
            esp = make_spi(1, os.urandom(4)) + (seq + 1).to_bytes(4, "big") + os.urandom(40)
            peer.sendto(esp, local)
        time.sleep(0.05)
        npu._readable(local, gateway)
    finally:
        gateway.close()
        peer.close()
    sizes = [len(items) for _, items in got]
    kinds = [items[0][2][:4] == bytes(4) for _, items in got]
    assert {slot for slot, _ in got} == {1} and sum(sizes) == inits + 10
    assert [s for s, k in zip(sizes, kinds, strict=True) if k] == [IKE_PER_MESSAGE] * 2 + [1]
    assert [s for s, k in zip(sizes, kinds, strict=True) if not k] == [10]
    assert len(got[-2][1]) == 1  # the odd IKE datagram alone


def test_datagrams_of_established_sas_that_reach_no_card_are_lost_new_sas_refused_are_not():
    """`lost` (the drills' datagrams_lost): an established SA's datagram the NPU could not hand
    on, for want of a card owning its SPI or of a path to the card it chose; a new SA no card
    can take, a keepalive or garbage is dropped without being a loss."""
    delivered: list = []
    up = {1: True, 2: True}
    npu = Npu(lambda slot, msg: up[slot] and (delivered.append(slot) or True), lambda: [1, 2],
              lambda: [])  # fmt: skip
    local, peer = ("127.0.0.1", 4500), ("10.0.0.1", 4500)
    npu.allowed[local] = {1, 2}
    npu.received(local, b"\0\0\0\0" + ike(os.urandom(8)), peer)  # a new SA: nobody takes it
    npu.received(local, b"\xff", peer)  # a keepalive
    npu.received(local, b"\0\0", peer)  # garbage
    assert npu.counts["dropped"] == 3 and npu.counts["lost"] == 0
    esp = make_spi(3, os.urandom(4)) + (1).to_bytes(4, "big") + os.urandom(40)
    npu.received(local, esp, peer)  # no card owns slot 3
    npu.received(local, b"\0\0\0\0" + ike(os.urandom(8), make_spi(3, os.urandom(8))), peer)
    assert npu.counts["dropped"] == 5 and npu.counts["lost"] == 2
    up[2] = False  # card 2's path is gone (its process died): steered to it, never delivered
    npu.received(local, make_spi(2, os.urandom(4)) + (1).to_bytes(4, "big") + bytes(40), peer)
    npu.received(local, make_spi(1, os.urandom(4)) + (1).to_bytes(4, "big") + bytes(40), peer)
    assert npu.counts["dropped"] == 6 and npu.counts["lost"] == 3 and delivered == [1]
    sa = steer(esp, peer, 4500, [3], True)
    assert sa.sa and sa.slot == 3 and not steer(ike(os.urandom(8)), peer, 500, [1], False).sa
