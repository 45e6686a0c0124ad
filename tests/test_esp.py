"""cards.esp: ESP tunnel mode for a CHILD_SA (RFC 4303, RFC 4106, RFC 4868), sans-IO.

The CHILD_SAs come from a real in-memory IKE exchange (test_ike_engine.Pair): the eNodeB side
(initiator) protects 10.1.0.0/16 and 2001:db8:1::/48, the SeGW side (responder) the core,
10.200.0.0/16 and 2001:db8:c8::/48. An independent reference implementation here (AESGCM and
hmac directly) forges and reads packets, and tshark decrypts ours given nothing but the keys.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import ipaddress
import os
import random
import shutil
import struct
import subprocess

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ike_engine import Pair, config, gw_config
from test_ike_tshark import ip_udp

from cards.esp import SEQ_MAX, SEQ_SOFT, EspSa, build_udp, parse_inner
from cards.ike.child import ChildSa
from cards.ike.config import ChildPolicy, ChildProposal
from cards.ike.const import Encr, Integ, TsType
from cards.ike.payloads import TrafficSelector

SUITES = {
    "aes-gcm-128": ChildProposal(Encr.AES_GCM_16, 128),
    "aes-gcm-256": ChildProposal(Encr.AES_GCM_16, 256),
    "aes-cbc-128-sha256": ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128),
    "aes-cbc-256-sha256": ChildProposal(Encr.AES_CBC, 256, Integ.HMAC_SHA2_256_128),
    "aes-cbc-128-sha384": ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_384_192),
    "aes-cbc-256-sha512": ChildProposal(Encr.AES_CBC, 256, Integ.HMAC_SHA2_512_256),
}
HASH = {Integ.HMAC_SHA2_256_128: ("sha256", 16), Integ.HMAC_SHA2_384_192: ("sha384", 24),
        Integ.HMAC_SHA2_512_256: ("sha512", 32)}  # fmt: skip

ENB4, ENB6 = "10.1.0.0/16", "2001:db8:1::/48"
CORE4, CORE6 = "10.200.0.0/16", "2001:db8:c8::/48"
HOSTS = {4: ("10.1.2.3", "10.200.0.9"), 6: ("2001:db8:1::7", "2001:db8:c8::9")}


def ts(net: str, proto: int = 0, ports=(0, 65535)) -> TrafficSelector:
    n = ipaddress.ip_network(net)
    kind = TsType.IPV4_ADDR_RANGE if n.version == 4 else TsType.IPV6_ADDR_RANGE
    return TrafficSelector(kind, proto, ports[0], ports[1], n[0], n[-1])


@functools.cache
def children(name: str) -> tuple[ChildSa, ChildSa]:
    """(eNodeB child, SeGW child) of one IKE_AUTH exchange negotiating suite ``name``."""
    enb = config("enb", children=(ChildPolicy(proposals=(SUITES[name],),
                 ts_local=(ts(ENB4), ts(ENB6)), ts_remote=(ts(CORE4), ts(CORE6))),))  # fmt: skip
    gw = gw_config(children=(ChildPolicy(proposals=tuple(SUITES.values()),
                   ts_local=(ts(CORE4), ts(CORE6)), ts_remote=(ts("0.0.0.0/0"), ts("::/0"))),))  # fmt: skip
    pair = Pair(enb, gw).established()
    (ci,) = pair.sa("i").children.values()
    (cr,) = pair.sa("r").children.values()
    assert ci.suite == cr.suite == SUITES[name]
    return ci, cr


def esp_pair(name: str = "aes-gcm-128", **kw) -> tuple[EspSa, EspSa]:
    """Fresh (eNodeB, SeGW) EspSa of suite ``name``: counters and windows at zero."""
    ci, cr = children(name)
    return EspSa.from_child(ci, **kw), EspSa.from_child(cr, **kw)


def rng(seed: int = 0):
    return random.Random(seed).randbytes


def up(payload: bytes = b"uplink", version: int = 4, sport=40000, dport=2152) -> bytes:
    """eNodeB -> core."""
    src, dst = HOSTS[version]
    return build_udp(src, dst, sport, dport, payload)


def down(payload: bytes = b"downlink", version: int = 4, sport=2152, dport=40000) -> bytes:
    """core -> eNodeB."""
    dst, src = HOSTS[version]
    return build_udp(src, dst, sport, dport, payload)


# ---------------------------------------------------------------------- reference ESP
_FORGE_IV = rng(99)


def forge(sender: ChildSa, seq: int, payload: bytes, nh: int = 4, *, pad: int | None = None,
          padding: bytes | None = None) -> bytes:  # fmt: skip
    """An ESP packet as ``sender`` would send it, built without cards.esp: any sequence
    number, Next Header and padding, but a valid ICV."""
    encr, integ = sender.outbound
    gcm = sender.suite.encr == Encr.AES_GCM_16
    block = 4 if gcm else 16
    n = -(len(payload) + 2) % block if pad is None else pad
    padding = bytes(range(1, n + 1)) if padding is None else padding
    plain = payload + padding + bytes([n, nh])
    header = sender.their_spi + struct.pack("!I", seq)
    if gcm:
        iv = _FORGE_IV(8)
        return header + iv + AESGCM(encr[:-4]).encrypt(encr[-4:] + iv, plain, header)
    iv = _FORGE_IV(16)
    enc = Cipher(algorithms.AES(encr), modes.CBC(iv)).encryptor()
    body = header + iv + enc.update(plain) + enc.finalize()
    name, icv = HASH[sender.suite.integ]
    return body + hmac.new(integ, body, name).digest()[:icv]


def unseal(receiver: ChildSa, packet: bytes) -> tuple[int, bytes]:
    """(sequence number, padded plaintext) of an ESP packet, read without cards.esp."""
    encr, integ = receiver.inbound
    assert packet[:4] == receiver.our_spi
    (seq,) = struct.unpack("!I", packet[4:8])
    if receiver.suite.encr == Encr.AES_GCM_16:
        iv = packet[8:16]
        return seq, AESGCM(encr[:-4]).decrypt(encr[-4:] + iv, packet[16:], packet[:8])
    name, icv = HASH[receiver.suite.integ]
    body = packet[:-icv]
    assert hmac.compare_digest(hmac.new(integ, body, name).digest()[:icv], packet[-icv:])
    dec = Cipher(algorithms.AES(encr), modes.CBC(packet[8:24])).decryptor()
    return seq, dec.update(packet[24:-icv]) + dec.finalize()


def drops(sa: EspSa) -> int:
    return sum(v for k, v in sa.counters().items() if k.startswith("dropped_"))


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("name", SUITES)
def test_round_trip_both_directions(name, version):
    enb, gw = esp_pair(name)
    ci, cr = children(name)
    assert (enb.spi_out, enb.spi_in) == (gw.spi_in, gw.spi_out) == (ci.their_spi, ci.our_spi)
    gcm = SUITES[name].encr == Encr.AES_GCM_16
    iv, block = (8, 4) if gcm else (16, 16)
    icv = 16 if gcm else HASH[SUITES[name].integ][1]
    rand, data = rng(version), random.Random(name).randbytes
    sent = 0
    for size in [*range(0, 33), 200, 1372]:  # every padding length, small and full packets
        for sender, receiver, receiver_child, inner in (
            (enb, gw, cr, up(data(size), version)),
            (gw, enb, ci, down(data(size), version)),
        ):
            packet = sender.seal(inner, rand)
            assert packet is not None, sender.last_drop
            # the layout, read by the reference implementation
            assert packet[:4] == receiver.spi_in
            seq, plain = unseal(receiver_child, packet)
            assert seq == sent + 1
            pad, nh = plain[-2], plain[-1]
            assert nh == (4 if version == 4 else 41)
            assert plain == inner + bytes(range(1, pad + 1)) + bytes([pad, nh])
            assert len(plain) % block == 0 and pad < block
            assert len(packet) == 8 + iv + len(plain) + icv
            assert receiver.open(packet) == inner, receiver.last_drop
        sent += 1
    for sa in (enb, gw):
        c = sa.counters()
        assert c["packets_out"] == c["packets_in"] == sent == c["seq_out"] == c["replay_top"]
        assert drops(sa) == 0 and sa.last_drop == ""
    assert enb.counters()["bytes_out"] == gw.counters()["bytes_in"]
    assert gw.counters()["bytes_out"] == enb.counters()["bytes_in"]


def test_sequence_numbers_count_from_one_and_ivs_come_from_rand():
    enb, _ = esp_pair("aes-gcm-128")
    drawn = []

    def rand(n: int) -> bytes:
        drawn.append(os.urandom(n))
        return drawn[-1]

    packets = [enb.seal(up(), rand) for _ in range(3)]
    assert [struct.unpack("!I", p[4:8])[0] for p in packets] == [1, 2, 3]
    assert [p[8:16] for p in packets] == drawn and all(len(d) == 8 for d in drawn)


def test_our_own_packets_are_not_ours_to_open():
    enb, gw = esp_pair("aes-cbc-128-sha256")
    packet = enb.seal(up(), rng())
    assert enb.open(packet) is None and enb.counters()["dropped_spi"] == 1
    assert enb.last_drop.startswith("dropped_spi")
    assert gw.open(packet) == up()


# ---------------------------------------------------------------------- anti-replay
@pytest.mark.parametrize("name", ["aes-gcm-256", "aes-cbc-256-sha256"])
def test_replay_window(name):
    enb, gw = esp_pair(name)
    rand = rng()
    packets = [enb.seal(up(bytes([i])), rand) for i in range(200)]  # seq 1..200
    # the same packet twice
    assert gw.open(packets[0]) == up(bytes([0]))
    assert gw.open(packets[0]) is None and gw.counters()["dropped_replay"] == 1
    assert "seen before" in gw.last_drop
    # out of order within the window: accepted once each
    assert gw.open(packets[99]) == up(bytes([99]))  # seq 100: the window is 37..100
    assert gw.open(packets[50]) == up(bytes([50]))
    assert gw.open(packets[36]) == up(bytes([36]))  # seq 37: the left edge
    assert gw.open(packets[50]) is None
    # left of the window
    assert gw.open(packets[35]) is None and "left of the window" in gw.last_drop
    assert gw.open(packets[1]) is None
    assert gw.counters()["dropped_replay"] == 4
    # a jump wider than the window forgets everything behind it
    assert gw.open(packets[199]) == up(bytes([199]))
    assert gw.open(packets[135]) is None  # seq 136: 200 - 136 = 64
    assert gw.open(packets[136]) == up(bytes([136]))  # seq 137 was never seen
    assert gw.counters()["replay_top"] == 200 and gw.counters()["packets_in"] == 6


def test_replay_window_size_is_configurable():
    enb, gw = esp_pair(replay_window=32)
    packets = [enb.seal(up(), rng()) for _ in range(40)]
    assert gw.open(packets[39])  # seq 40
    assert gw.open(packets[7]) is None  # seq 8: 40 - 8 = 32 >= 32
    assert gw.open(packets[8])  # seq 9
    enb, gw = esp_pair(replay_window=0)  # anti-replay off (RFC 4303 3.4.3)
    packet = enb.seal(up(), rng())
    assert gw.open(packet) and gw.open(packet)
    with pytest.raises(ValueError):
        esp_pair(replay_window=-1)


@pytest.mark.parametrize("name", ["aes-gcm-128", "aes-cbc-128-sha384"])
def test_sequence_number_zero_and_forged_jumps(name):
    ci, cr = children(name)
    gw = EspSa.from_child(cr)
    assert gw.open(forge(ci, 0, up())) is None and "sequence number 0" in gw.last_drop
    # a far-ahead sequence number with a bad ICV must not move the window
    good = forge(ci, 10, up())
    bad = bytearray(forge(ci, 1_000_000, up()))
    bad[-1] ^= 1
    assert gw.open(bytes(bad)) is None and gw.counters()["dropped_auth"] == 1
    assert gw.counters()["replay_top"] == 0
    assert gw.open(good) == up()
    # a far-ahead genuine one does
    assert gw.open(forge(ci, SEQ_MAX, up())) == up()
    assert gw.open(good) is None and gw.counters()["replay_top"] == SEQ_MAX


# ---------------------------------------------------------------------- integrity
@pytest.mark.parametrize("name", SUITES)
def test_tampering_anywhere_is_rejected(name):
    enb, gw = esp_pair(name)
    packet = enb.seal(up(b"x" * 45), rng())
    tried = 0
    for i in range(len(packet)):
        for bit in (0, 7):
            bad = bytearray(packet)
            bad[i] ^= 1 << bit
            assert gw.open(bytes(bad)) is None, i
            tried += 1
    for n in range(len(packet)):  # every truncation
        assert gw.open(packet[:n]) is None, n
        tried += 1
    for extra in (b"\0", bytes(16), os.urandom(32)):
        assert gw.open(packet + extra) is None
        assert gw.open(packet[:8] + extra + packet[8:]) is None
        tried += 2
    c = gw.counters()
    assert drops(gw) == tried and c["packets_in"] == 0 and c["replay_top"] == 0
    assert c["dropped_auth"] > len(packet) and c["dropped_spi"] == 8  # 4 SPI bytes, 2 bits
    assert gw.open(packet) == up(b"x" * 45)  # nothing of the above moved the window


# ---------------------------------------------------------------------- trailer checks
@pytest.mark.parametrize("name", ["aes-gcm-128", "aes-cbc-256-sha512"])
def test_authentic_but_malformed_payloads(name):
    ci, cr = children(name)
    gw = EspSa.from_child(cr)
    block = 4 if "gcm" in name else 16
    inner = up(b"12345")  # 33 bytes
    pad = -(len(inner) + 2) % block
    seq = iter(range(1, 100))
    cases = {
        "dummy packet": forge(ci, next(seq), b"\0" * 30, 59),
        "Next Header 17 in tunnel mode": forge(ci, next(seq), inner, 17),
        "inner packet is not IPv6": forge(ci, next(seq), inner, 41),
        "inner packet is not IPv4": forge(ci, next(seq), b"\x45" + bytes(10), 4),
        "bad padding": forge(ci, next(seq), inner, padding=bytes(pad), pad=pad),
        "bad padding (200 octets)": forge(ci, next(seq), b"", pad=200, padding=bytes(block - 2)),
    }  # fmt: skip
    for reason, packet in cases.items():
        assert gw.open(packet) is None, reason
        assert reason in gw.last_drop, (reason, gw.last_drop)
    c = gw.counters()
    assert c["dropped_dummy"] == 1 and c["dropped_malformed"] == len(cases) - 1
    assert c["replay_top"] == len(cases)  # authentic, so the window moved
    # more padding than needed, and TFC padding after the inner packet (RFC 4303 2.7)
    extra = forge(ci, next(seq), inner, pad=pad + block, padding=bytes(range(1, pad + block + 1)))
    assert gw.open(extra) == inner
    tfc = forge(ci, next(seq), inner + bytes(block * 3))
    assert gw.open(tfc) == inner and gw.counters()["bytes_in"] == 2 * len(inner)


# ---------------------------------------------------------------------- selectors
@pytest.mark.parametrize("name", ["aes-gcm-128", "aes-cbc-128-sha256"])
def test_selectors_outbound(name):
    enb, gw = esp_pair(name)
    refused = [
        (enb, build_udp("10.2.0.1", "10.200.0.9", 1, 2, b"")),  # source outside 10.1/16
        (enb, build_udp("10.1.0.1", "10.201.0.9", 1, 2, b"")),  # destination outside the core
        (enb, build_udp("2001:db8:2::1", "2001:db8:c8::9", 1, 2, b"")),
        (enb, build_udp("2001:db8:1::1", "2001:db8:c9::9", 1, 2, b"")),
        (gw, up()),  # the wrong way round
        (gw, build_udp("10.200.0.9", "10.2.0.1", 1, 2, b"")),
        (gw, build_udp("2001:db8:c8::9", "2001:db8:2::1", 1, 2, b"")),
    ]
    for sa, inner in refused:
        assert sa.seal(inner, rng()) is None, parse_inner(inner)
        assert sa.last_drop.startswith("dropped_ts_out")
    assert enb.counters()["dropped_ts_out"] == 4 and gw.counters()["dropped_ts_out"] == 3
    for bad in (b"", b"\x45" + bytes(30), up()[:-1], up() + b"\0", b"\x60" + bytes(38)):
        assert enb.seal(bad, rng()) is None and enb.last_drop.startswith("dropped_invalid_out")
    assert enb.counters()["seq_out"] == gw.counters()["seq_out"] == 0
    assert enb.counters()["packets_out"] == 0
    # the edges of the ranges are inside
    edge = build_udp("10.1.255.255", "10.200.0.0", 1, 2, b"")
    assert gw.open(enb.seal(edge, rng())) == edge


@pytest.mark.parametrize("name", ["aes-gcm-256", "aes-cbc-256-sha256"])
def test_selectors_inbound(name):
    """A peer sending outside the CHILD_SA's selectors: decrypted, then dropped."""
    ci, cr = children(name)
    anything = (ts("0.0.0.0/0"), ts("::/0"))
    loose_enb = EspSa.from_child(dataclasses.replace(ci, tsi=anything, tsr=anything))
    loose_gw = EspSa.from_child(dataclasses.replace(cr, tsi=anything, tsr=anything))
    enb, gw = EspSa.from_child(ci), EspSa.from_child(cr)
    rand = rng()
    for src, dst in [("10.2.0.1", "10.200.0.9"), ("10.1.0.1", "10.201.0.9"),
                     ("2001:db8:2::1", "2001:db8:c8::9"), ("2001:db8:1::1", "2001:db8:c9::9"),
                     ("10.200.0.9", "10.1.0.1")]:  # fmt: skip
        inner = build_udp(src, dst, 1, 2, b"spoofed")
        assert gw.open(loose_enb.seal(inner, rand)) is None
        assert gw.last_drop.startswith("dropped_ts")
    for src, dst in [("10.201.0.9", "10.1.0.1"), ("10.200.0.9", "10.2.0.1"), HOSTS[4]]:
        assert enb.open(loose_gw.seal(build_udp(src, dst, 1, 2, b""), rand)) is None
    assert gw.counters()["dropped_ts"] == 5 and enb.counters()["dropped_ts"] == 3
    assert gw.counters()["replay_top"] == 5  # authentic traffic moves the window anyway
    assert gw.open(loose_enb.seal(up(), rand)) == up()
    assert enb.open(loose_gw.seal(down(), rand)) == down()


def test_protocol_and_port_selectors():
    """GTP-U only towards the core (UDP 2152), as a transport-aware payload would set up."""
    ci, cr = children("aes-gcm-128")
    gtp = (ts(CORE4, 17, (2152, 2152)),)
    enb = EspSa.from_child(dataclasses.replace(ci, tsr=gtp))
    gw = EspSa.from_child(dataclasses.replace(cr, tsr=gtp))
    src, dst = HOSTS[4]
    assert gw.open(enb.seal(up(dport=2152), rng())) == up(dport=2152)
    assert enb.open(gw.seal(down(sport=2152), rng())) == down(sport=2152)
    refused = [
        up(dport=2153),
        tcp(src, dst, 40000, 2152),
        icmp(src, dst),
        fragment(up(dport=2152, payload=bytes(64)), offset=8),  # a later fragment: no ports
    ]
    for inner in refused:
        assert enb.seal(inner, rng()) is None and enb.last_drop.startswith("dropped_ts_out")
    assert gw.seal(down(sport=2153), rng()) is None
    first = fragment(up(dport=2152, payload=bytes(64)), offset=0)  # the first one has them
    assert gw.open(enb.seal(first, rng())) == first
    # ICMP type/code as the port (RFC 7296 3.13.1): echo request (8, 0) = 0x0800 only
    echo = (ts(CORE4, 1, (0x0800, 0x0800)),)
    enb = EspSa.from_child(dataclasses.replace(ci, tsr=echo))
    assert enb.seal(icmp(src, dst, 8), rng()) is not None
    assert enb.seal(icmp(src, dst, 13), rng()) is None


def tcp(src, dst, sport, dport) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    seg = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, 2, 65535, 0, 0)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, s.packed, d.packed) + seg


def icmp(src, dst, type_: int = 8, code: int = 0) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    msg = struct.pack("!BBHHH", type_, code, 0, 1, 1)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 1, 0, s.packed, d.packed) + msg


def fragment(packet: bytes, offset: int) -> bytes:
    """An IPv4 packet relabelled as a fragment at ``offset`` octets (More Fragments set)."""
    return packet[:6] + struct.pack("!H", 0x2000 | offset // 8) + packet[8:]


def test_parse_inner():
    assert parse_inner(up(b"abc", 4, 1, 2)) == (
        4, ipaddress.ip_address(HOSTS[4][0]), ipaddress.ip_address(HOSTS[4][1]), 17, 1, 2)  # fmt: skip
    assert parse_inner(down(b"", 6, 3, 4))[1:] == (
        ipaddress.ip_address(HOSTS[6][1]), ipaddress.ip_address(HOSTS[6][0]), 17, 3, 4)  # fmt: skip
    src, dst = HOSTS[4]
    assert parse_inner(tcp(src, dst, 5, 6))[3:] == (6, 5, 6)
    assert parse_inner(icmp(src, dst, 3, 4))[3:] == (1, 0x0304, 0x0304)
    assert parse_inner(fragment(up(bytes(64)), 8))[3:] == (17, None, None)
    # IPv6 with a hop-by-hop options header, and as a later fragment
    v6 = down(b"x" * 20, 6, 7, 8)
    hbh = bytes([17, 0]) + bytes(6)  # next header UDP, 8 octets
    plen = struct.unpack("!H", v6[4:6])[0] + 8
    with_hbh = v6[:4] + struct.pack("!HB", plen, 0) + v6[7:40] + hbh + v6[40:]
    assert parse_inner(with_hbh)[3:] == (17, 7, 8)
    frag = bytes([17, 0]) + struct.pack("!HI", 8 << 3, 1)
    later = v6[:4] + struct.pack("!HB", plen, 44) + v6[7:40] + frag + v6[40:]
    assert parse_inner(later)[3:] == (17, None, None)
    for bad in (b"", b"\x45" * 19, b"\x55" + bytes(40), up()[:-1], b"\x60" + bytes(30),
                b"\x4f" + up()[1:], with_hbh[:44]):  # fmt: skip
        assert parse_inner(bad) is None, bad


@pytest.mark.parametrize("version", [4, 6])
def test_build_udp_matches_an_independent_encoder(version):
    """test_ike_tshark's ip_udp (sum of 16-bit words) and build_udp agree byte for byte."""
    r = random.Random(version)
    for size in [0, 1, 2, 3, 100, 1371, 1372, *(r.randrange(2000) for _ in range(30))]:
        payload = r.randbytes(size)
        src, dst = HOSTS[version]
        sport, dport = r.randrange(65536), r.randrange(65536)
        assert build_udp(src, dst, sport, dport, payload) == ip_udp(
            (src, sport), (dst, dport), payload
        )
    assert build_udp("10.0.0.1", "10.0.0.2", 1, 2, bytes(64))[26:28] != b"\0\0"
    with pytest.raises(ValueError):
        build_udp("10.0.0.1", "::1", 1, 2, b"")


# ---------------------------------------------------------------------- counters, lifetimes
def test_counters():
    enb, gw = esp_pair("aes-cbc-256-sha256")
    for i in range(5):
        assert gw.open(enb.seal(up(bytes(i)), rng(i)))
    for i in range(3):
        assert enb.open(gw.seal(down(bytes(100), 6), rng(i)))
    gw.open(b"junk")
    assert gw.counters() == {
        "packets_in": 5, "bytes_in": sum(len(up(bytes(i))) for i in range(5)),
        "packets_out": 3, "bytes_out": 3 * len(down(bytes(100), 6)), "seq_out": 3,
        "replay_top": 5, "dropped_spi": 0, "dropped_auth": 0, "dropped_replay": 0,
        "dropped_malformed": 1, "dropped_ts": 0, "dropped_dummy": 0, "dropped_expired": 0,
        "dropped_ts_out": 0, "dropped_invalid_out": 0, "dropped_seq_overflow": 0,
    }  # fmt: skip
    assert gw.last_drop == "dropped_malformed: 4 bytes: too short"
    assert "keys" not in repr(gw) and enb.spi_in.hex() in repr(enb)


@pytest.mark.parametrize("name", ["aes-gcm-128", "aes-cbc-128-sha256"])
def test_lifetime_in_packets_counts_both_directions(name):
    enb, gw = esp_pair(name, lifetime_packets=10)
    rand = rng()
    for i in range(10):
        assert not enb.hard_expired
        assert enb.soft_expired == (i >= 9)  # 90% of 10 packets
        if i % 2:
            assert gw.open(enb.seal(up(), rand))
        else:
            assert enb.open(gw.seal(down(), rand))
    assert enb.soft_expired and enb.hard_expired
    c = enb.counters()
    assert c["packets_in"] + c["packets_out"] == 10
    assert enb.seal(up(), rand) is None and enb.last_drop.startswith("dropped_expired")
    assert gw.seal(down(), rand) is None  # the SeGW has counted 10 too
    ci, cr = children(name)
    assert enb.open(forge(cr, 100, down())) is None and enb.last_drop.startswith("dropped_exp")
    assert gw.counters()["dropped_expired"] == 1
    assert enb.counters()["dropped_expired"] == 2


def test_lifetime_in_bytes():
    size = len(up(bytes(72)))  # 100 bytes
    enb, gw = esp_pair(lifetime_bytes=10 * size)
    for i in range(10):
        assert enb.soft_expired == (i >= 9) and not enb.hard_expired
        assert gw.open(enb.seal(up(bytes(72)), rng(i)))
    assert enb.hard_expired and gw.hard_expired and enb.counters()["bytes_out"] == 1000
    assert enb.seal(up(), rng()) is None
    enb, gw = esp_pair(lifetime_bytes=1000, lifetime_packets=1000)
    assert gw.open(enb.seal(up(bytes(872)), rng()))  # 900 bytes: soft on bytes alone
    assert enb.soft_expired and gw.soft_expired and not enb.hard_expired
    with pytest.raises(ValueError):
        esp_pair(lifetime_bytes=0)


def test_sequence_number_overflow_needs_a_rekey():
    enb, gw = esp_pair("aes-gcm-256")
    assert not enb.soft_expired
    enb.seq_out = SEQ_SOFT  # as if 3.8 billion packets had been sent
    assert enb.soft_expired and not enb.hard_expired
    enb.seq_out = SEQ_MAX - 1
    last = enb.seal(up(), rng())
    assert struct.unpack("!I", last[4:8])[0] == SEQ_MAX and enb.hard_expired
    assert enb.seal(up(), rng()) is None  # no wrap to 0: a rekey is needed
    assert enb.last_drop.startswith("dropped_seq_overflow")
    assert enb.counters()["dropped_seq_overflow"] == 1 and enb.counters()["seq_out"] == SEQ_MAX
    assert gw.open(last) == up()


# ---------------------------------------------------------------------- property
@functools.cache
def samples(name: str) -> tuple[bytes, tuple[bytes, ...]]:
    enb, _ = esp_pair(name)
    rand = rng(7)
    inner = up(b"property" * 9)
    return inner, tuple(enb.seal(inner, rand) for _ in range(3))


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(SUITES)))
    inner, packets = samples(name)
    original = draw(st.sampled_from(packets))
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "append"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif how == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif how == "truncate":
            del data[pos:]
        elif how == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif how == "delete":
            del data[pos : pos + draw(st.integers(1, 32))]
        else:
            data += draw(st.binary(min_size=1, max_size=32))
    return name, inner, original, bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_mutated_packets_never_raise_nor_decrypt_to_something_else(case):
    name, inner, original, data = case
    _, cr = children(name)
    gw = EspSa.from_child(cr)
    out = gw.open(data)
    if data == original:
        assert out == inner
    else:
        assert out is None and drops(gw) == 1
        assert "internal error" not in gw.last_drop, gw.last_drop


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(SUITES)), st.binary(max_size=200), st.integers(0, SEQ_MAX))
def test_random_bytes_with_our_spi_never_raise(name, tail, seq):
    _, cr = children(name)
    gw = EspSa.from_child(cr)
    assert gw.open(cr.our_spi + struct.pack("!I", seq) + tail) is None
    assert drops(gw) == 1 and "internal error" not in gw.last_drop


# ---------------------------------------------------------------------- tshark
TSHARK = shutil.which("tshark") or "/usr/bin/tshark"
LINKTYPE_RAW = 101
WARN = 0x00600000
ENB_OUTER, GW_OUTER = ("198.51.100.7", 4500), ("192.0.2.1", 4500)
WS_ENCR = {Encr.AES_GCM_16: "AES-GCM with 16 octet ICV [RFC4106]",
           Encr.AES_CBC: "AES-CBC [RFC3602]"}  # fmt: skip
WS_INTEG = {Integ.NONE: "NULL", Integ.HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
            Integ.HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
            Integ.HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]"}  # fmt: skip


def esp_sa_row(child: ChildSa, src, dst) -> str:
    """One Wireshark 4.0 esp_sa UAT record for what ``child`` sends: protocol, source,
    destination, SPI, encryption, key (an AES-GCM key with its salt), authentication, key."""
    encr, integ = child.outbound
    fields = ["IPv4", src[0], dst[0], f"0x{child.their_spi.hex()}", WS_ENCR[child.suite.encr],
              f"0x{encr.hex()}", WS_INTEG[child.suite.integ], f"0x{integ.hex()}" if integ else ""]  # fmt: skip
    return ",".join(f'"{f}"' for f in fields)


TSHARK_CASES = [("aes-gcm-128", 4), ("aes-cbc-128-sha256", 4), ("aes-gcm-256", 6),
                ("aes-cbc-256-sha512", 6)]  # fmt: skip


@pytest.mark.parametrize("name,version", TSHARK_CASES)
def test_tshark_decrypts_our_esp(name, version, tmp_path):
    ci, cr = children(name)
    enb, gw = EspSa.from_child(ci), EspSa.from_child(cr)
    payloads = [f"uplink {name} via cards.esp".encode(), f"downlink {name}".encode()]
    inners = [up(payloads[0], version, 50000, 50001), down(payloads[1], version, 50001, 50000)]
    frames = [
        ip_udp(ENB_OUTER, GW_OUTER, enb.seal(inners[0], rng(1))),
        ip_udp(GW_OUTER, ENB_OUTER, gw.seal(inners[1], rng(2))),
    ]
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)]
    for i, f in enumerate(frames):
        records.append(struct.pack("<IIII", 1_780_000_000 + i, 0, len(f), len(f)) + f)
    pcap = tmp_path / "esp.pcap"
    pcap.write_bytes(b"".join(records))

    fields = ["frame.protocols", "esp.spi", "esp.sequence", "esp.icv_good", "esp.icv_bad",
              "esp.pad_len", "data.data", "udp.checksum.status", "_ws.malformed",
              "_ws.expert.severity", "_ws.expert.message"]  # fmt: skip
    cmd = [TSHARK, "-n", "-r", str(pcap),
           "-o", "esp.enable_encryption_decode:TRUE", "-o", "esp.enable_authentication_check:TRUE",
           "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
           "-o", f"uat:esp_sa:{esp_sa_row(ci, ENB_OUTER, GW_OUTER)}",
           "-o", f"uat:esp_sa:{esp_sa_row(cr, GW_OUTER, ENB_OUTER)}",
           "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;", "-E", "separator=/t",
           *[a for f in fields for a in ("-e", f)]]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}  # no personal Wireshark profile
    env.pop("XDG_CONFIG_HOME", None)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode == 0, out.stderr
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.stdout.splitlines()]
    assert len(rows) == 2, out.stdout
    ip = "ip" if version == 4 else "ipv6"
    for row, child, payload in zip(rows, (ci, cr), payloads, strict=True):
        assert row["frame.protocols"] == f"raw:ip:udp:udpencap:esp:{ip}:udp:data", row
        assert int(row["esp.spi"], 0) == int.from_bytes(child.their_spi, "big")
        assert row["esp.sequence"] == "1"
        assert (row["esp.icv_good"], row["esp.icv_bad"]) == ("1", "0"), row
        assert bytes.fromhex(row["data.data"]) == payload  # the decrypted inner UDP payload
        assert row["udp.checksum.status"] == "1;1", row  # outer and inner: good
        assert not row["_ws.malformed"], row
        severities = [int(v) for v in row["_ws.expert.severity"].split(";") if v]
        assert all(v < WARN for v in severities), row["_ws.expert.message"]
