"""cards.ike: IKE fragmentation (RFC 7383) in both directions, in-memory pairs.

    HDR, SAi1, KEi, Ni, N(IKEV2_FRAGMENTATION_SUPPORTED)  -->
    <--  HDR, SAr1, KEr, Nr, [CERTREQ], N(IKEV2_FRAGMENTATION_SUPPORTED)
    HDR, SKF{IDi, CERT, CERT, ...} (fragment 1 of n) ... HDR, SKF{...} (n of n)  -->
    <--  HDR, SKF{IDr, CERT, CERT, AUTH, ...} (1 of m) ... (m of m)
RSA-2048 certificates with an intermediate make IKE_AUTH larger than 1280 octets.
"""

from __future__ import annotations

import pytest
from test_ike_engine import ENB, GW, Pair, config, decode, gw_config, no_internal_errors, pki

from cards.ike.const import ExchangeType, NotifyType, PayloadType
from cards.ike.events import Established
from cards.ike.message import NotifyPayload, SkfPayload, SkPayload

GW6, ENB6 = ("2001:db8::1", 500), ("2001:db8::7", 500)


def frag_pair(enb_frag=True, gw_frag=True, size=1280, addrs=(ENB, GW)) -> Pair:
    enb = config("enb", (pki()["inter"],), fragmentation=enb_frag, fragment_size=size)
    gw = gw_config(fragmentation=gw_frag, fragment_size=size)
    return Pair(enb, gw, enb_addr=addrs[0], gw_addr=addrs[1])


def by_exchange(pair: Pair, exchange: int) -> list:
    return [s for s in pair.wire if decode(s).exchange == exchange]


@pytest.mark.parametrize("addrs", [(ENB, GW), (ENB6, GW6)], ids=["ipv4", "ipv6"])
def test_ike_auth_fragmented_both_ways(addrs):
    pair = frag_pair(addrs=addrs).established()
    init = by_exchange(pair, ExchangeType.IKE_SA_INIT)
    for s in init:
        assert NotifyType.IKEV2_FRAGMENTATION_SUPPORTED in [
            n.type for n in decode(s).payloads if isinstance(n, NotifyPayload)]  # fmt: skip
    auth = by_exchange(pair, ExchangeType.IKE_AUTH)
    requests = [s for s in auth if s.dst == pair.r_addr]
    responses = [s for s in auth if s.dst == pair.i_addr]
    assert len(requests) >= 2 and len(responses) >= 2
    ip_udp = 48 if ":" in addrs[1][0] else 28
    for s in auth:
        msg = decode(s)
        (skf,) = msg.payloads
        assert isinstance(skf, SkfPayload) and len(s.data) + ip_udp <= 1280
    firsts = [decode(s).payloads[0] for s in requests]
    assert [f.number for f in firsts] == list(range(1, len(requests) + 1))
    assert firsts[0].first_inner == PayloadType.IDi and all(f.first_inner == 0 for f in firsts[1:])
    assert pair.of("i", Established) and pair.of("r", Established)
    no_internal_errors(pair)


def test_no_fragments_unless_both_sides_support_them():
    for enb, gw in ((True, False), (False, True)):
        pair = frag_pair(enb, gw).established()
        auth = by_exchange(pair, ExchangeType.IKE_AUTH)
        assert len(auth) == 2 and all(isinstance(decode(s).payloads[-1], SkPayload) for s in auth)
        assert pair.sa("r").fragmenting is pair.sa("i").fragmenting is False


def test_fragments_out_of_order_and_duplicated():
    pair = frag_pair()
    held: list = []

    def hold_requests(send):  # keep the eNodeB's IKE_AUTH fragments back
        if send.dst == pair.r_addr and decode(send).exchange == ExchangeType.IKE_AUTH:
            held.append(send)
            return True
        return False

    pair.run(pair.start(), drop=hold_requests)
    assert len(held) >= 2 and not pair.of("r", Established)
    for s in [held[-1], held[-1], *reversed(held[:-1])]:  # last first, one twice
        pair.run([s])
    assert pair.of("r", Established) and pair.of("i", Established)
    assert len(pair.of("r", Established)) == 1  # processed once
    no_internal_errors(pair)


def test_a_lost_response_fragment_is_retransmitted_on_the_first_request_fragment():
    pair = frag_pair()
    lost = []

    def lose_one_response_fragment(send):
        msg = decode(send)
        if send.dst == pair.i_addr and msg.exchange == ExchangeType.IKE_AUTH and not lost:
            lost.append(send)
            return True
        return False

    pair.run(pair.start(), drop=lose_one_response_fragment)
    assert lost and not pair.of("i", Established) and pair.of("r", Established)
    auth = by_exchange(pair, ExchangeType.IKE_AUTH)
    response_fragments = len(lost) + sum(1 for s in auth if s.dst == pair.i_addr)
    # the eNodeB retransmits all of its fragments; the gateway answers its fragment 1 only,
    # with every fragment of the cached response
    resent = pair.timers("i")
    assert len(resent) >= 2
    answers = [a for s in resent for a in pair.deliver(s)]
    assert len(answers) == response_fragments and all(a.dst == pair.i_addr for a in answers)
    pair.run(answers)
    assert pair.of("i", Established) and len(pair.of("r", Established)) == 1
    no_internal_errors(pair)


def test_a_tampered_fragment_is_dropped_and_the_message_completes_with_a_good_copy():
    pair = frag_pair()
    held: list = []
    pair.run(pair.start(), drop=lambda s: (s.dst == pair.r_addr
                                           and decode(s).exchange == ExchangeType.IKE_AUTH
                                           and not held.append(s)))  # fmt: skip
    bad = type(held[0])(held[0].data[:-1] + bytes([held[0].data[-1] ^ 1]), held[0].src, held[0].dst)
    pair.run([bad, *held[1:]])
    assert not pair.of("r", Established)  # fragment 1 failed its ICV and was not kept
    pair.run([held[0]])
    assert pair.of("r", Established)
