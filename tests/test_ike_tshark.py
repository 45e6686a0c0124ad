"""cards.ike on the wire as Wireshark sees it (issue #5): no malformed packet, our SK decrypts.

In-memory eNodeB <-> SeGW exchanges (test_ike_engine.Pair) are written to a libpcap file with
hand-built IPv4/IPv6 + UDP headers (valid checksums) and dissected by tshark, which is given
nothing but the IKE SA's own SK_ei/SK_er/SK_ai/SK_ar in its ikev2_decryption_table. tshark must
report no malformed packet and no expert warning or error (bad ICV, bad padding, bad checksum),
see the exchange types in order, and find inside the decrypted IKE_AUTH the payloads of
RFC 7296 1.2. So an independent implementation agrees that our key split (2.14), SK payload
(3.14: IV, padding, ICV; RFC 5282 for GCM with its 4-byte salt) and payload encodings are
RFC 7296's, for AES-CBC+HMAC and AES-GCM, over IPv4 and IPv6, on 500 and with the RFC 3948
non-ESP marker on a custom port. tshark is a required tool: without it the test fails.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import struct
import subprocess

import pytest
from test_ike_engine import SUITES, Pair, config, decode, gw_config

from cards.ike.const import Encr, ExchangeType, Integ, PayloadType
from cards.ike.crypto import open_sk

TSHARK = shutil.which("tshark") or "/usr/bin/tshark"
LINKTYPE_RAW = 101  # the packet starts with the IPv4 or IPv6 header
WARN = 0x00600000  # _ws.expert.severity: PI_WARN (PI_ERROR is 0x00800000)

ENCR = {Encr.AES_CBC: "AES-CBC-{bits} [RFC3602]",
        Encr.AES_GCM_16: "AES-GCM-{bits} with 16 octet ICV [RFC5282]"}  # fmt: skip
INTEG = {Integ.NONE: "NONE [RFC4306]", Integ.HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
         Integ.HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
         Integ.HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]"}  # fmt: skip

# suite, eNodeB and SeGW addresses; on 4501 <-> 5500 every IKE packet carries the non-ESP marker
CASES = {
    "aescbc256-ipv4": ("aes256-sha256-ecp256", ("198.51.100.7", 500), ("192.0.2.1", 500)),
    "aesgcm256-ipv6": ("aesgcm256-prfsha384-modp2048", ("2001:db8:e::7", 500), ("2001:db8::1", 500)),
    "aesgcm128-ipv4-marker": ("aesgcm128-prfsha256-x25519", ("198.51.100.7", 4501), ("192.0.2.1", 5500)),
    "aescbc128-ipv6-marker": ("aes128-sha512-ecp384", ("2001:db8:e::7", 4501), ("2001:db8::1", 5500)),
}  # fmt: skip


# ---------------------------------------------------------------------- pcap writer
def _csum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_udp(src, dst, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet carrying one UDP datagram, lengths and checksums filled in."""
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    n = 8 + len(payload)
    udp = struct.pack("!HHH", src[1], dst[1], n)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!xBH", 17, n)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + n, 0, 0x4000, 64, 17, 0, s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", n, 17)
        ip = struct.pack("!IHBB16s16s", 6 << 28, n, 17, 64, s.packed, d.packed)
    return ip + udp + struct.pack("!H", _csum(pseudo + udp + payload) or 0xFFFF) + payload


def write_pcap(path, sends) -> None:
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)]
    for i, s in enumerate(sends):
        pkt = ip_udp(s.src, s.dst, s.data)
        records.append(struct.pack("<IIII", 1_780_000_000 + i, 0, len(pkt), len(pkt)) + pkt)
    path.write_bytes(b"".join(records))


# ---------------------------------------------------------------------- tshark
def decryption_row(sa) -> str:
    """One ikev2_decryption_table record from an IKE SA's own exported keys."""
    p, k = sa.proposal, sa.keys
    encr = ENCR[p.encr].format(bits=p.key_bits)
    return ",".join([sa.spi_i.hex(), sa.spi_r.hex(), k.sk_ei.hex(), k.sk_er.hex(), f'"{encr}"',
                     k.sk_ai.hex(), k.sk_ar.hex(), f'"{INTEG[p.integ]}"'])  # fmt: skip


def tshark(pcap, sa, port: int) -> list[dict[str, list[str]]]:
    """Dissect pcap with sa's keys; port, unless 500, is decoded as RFC 3948 UDP encapsulation."""
    fields = ["frame.protocols", "isakmp.exchangetype", "isakmp.typepayload",
              "_ws.malformed", "_ws.expert.severity", "_ws.expert.message"]  # fmt: skip
    decode_as = ["-d", f"udp.port=={port},udpencap"] if port != 500 else []
    cmd = [TSHARK, "-n", "-r", str(pcap), *decode_as,
           "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
           "-o", f"uat:ikev2_decryption_table:{decryption_row(sa)}",
           "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;", "-E", "separator=/t",
           *[a for f in fields for a in ("-e", f)]]  # fmt: skip
    env = {**os.environ, "HOME": str(pcap.parent)}  # no personal Wireshark profile
    env.pop("XDG_CONFIG_HOME", None)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    return [
        {f: v.split(";") if v else [] for f, v in zip(fields, row, strict=True)} for row in rows
    ]


# ---------------------------------------------------------------------- the test
@pytest.mark.parametrize("case", CASES)
def test_tshark_dissects_and_decrypts_our_exchange(case, tmp_path):
    #  IKE_SA_INIT, IKE_AUTH (+ first CHILD_SA), INFORMATIONAL liveness, INFORMATIONAL delete
    suite, enb, gw = CASES[case]
    proposals = (SUITES[suite],)
    pair = Pair(config("enb", proposals=proposals), gw_config(proposals=proposals), enb, gw)
    pair.established()
    pair.run(pair.i.check_liveness(pair.sa("i").spi_i, pair.now))
    pair.run(pair.r.delete(pair.sa("r").spi_r, pair.now))
    assert not pair.i.sas and not pair.r.sas
    pcap = tmp_path / f"{case}.pcap"
    write_pcap(pcap, pair.wire)

    frames = tshark(pcap, pair.last_i, gw[1])

    X, P = ExchangeType, PayloadType
    assert [f["isakmp.exchangetype"] for f in frames] == [
        [str(int(x))] for x in (X.IKE_SA_INIT,) * 2 + (X.IKE_AUTH,) * 2 + (X.INFORMATIONAL,) * 4
    ]
    ip = "ip" if ipaddress.ip_address(gw[0]).version == 4 else "ipv6"
    stack = ["raw", ip, "udp", *(["udpencap"] if gw[1] != 500 else []), "isakmp"]
    for n, (f, send) in enumerate(zip(frames, pair.wire, strict=True), 1):
        assert f["frame.protocols"][0].split(":")[: len(stack)] == stack, (n, f)
        assert not f["_ws.malformed"], (n, f)
        assert all(int(v) < WARN for v in f["_ws.expert.severity"]), (n, f["_ws.expert.message"])
        # tshark's payload chain, the SK plaintext included, is the one we sent
        seen = [int(t) for t in f["isakmp.typepayload"] if int(t) not in (2, 3)]  # not SA parts
        assert seen == payload_types(pair, send), (n, f)
    auth_req, auth_resp = ({int(t) for t in f["isakmp.typepayload"]} for f in frames[2:4])
    assert {P.IDi, P.CERT, P.AUTH, P.SA, P.TSi, P.TSr} <= auth_req
    assert {P.IDr, P.CERT, P.AUTH, P.SA, P.TSi, P.TSr} <= auth_resp


def payload_types(pair, send) -> list[int]:
    """Our own view of a datagram: its payload types, then those inside its SK payload."""
    msg = decode(send)
    types = [p.ptype for p in msg.payloads]
    if types[-1:] == [PayloadType.SK]:
        sa = pair.last_i  # the initiator's IKE SA: its keys protect both directions
        inner = open_sk(msg, sa.suite, sa.keys.outbound(send.src == pair.i_addr))
        types += [p.ptype for p in inner]
    return types
