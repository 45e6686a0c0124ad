"""chassis/capture.py: the pcapng writer and the key-file lines, checked by tshark.

An in-memory eNodeB <-> SeGW exchange (test_ike_engine.Pair) goes through `Capture` as the NPU
would hand it over, and the responder's keys through `Gateway.key_table` (the cards' "ike.keys"
answer) and the key-file lines; tshark, given only those lines, must dissect every packet
without a malformed packet or an expert warning (IP and UDP checksums checked), decrypt the
IKE_AUTH (AES-CBC + HMAC and AES-GCM, IPv4 and IPv6, on 500 and on a marked port) and the ESP
packets built here with the child's keys in both directions. Bad paths, the 0600 mode, the size
limit and the buffered flushes are checked on the file itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
import stat
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from test_ike_engine import SUITES, Pair, config, gw_config
from test_ike_tshark import CASES, _csum, decryption_row

from cards.gateway import Gateway
from cards.ike.config import ChildPolicy, ChildProposal
from cards.ike.const import Encr, ExchangeType, Integ, PayloadType
from chassis import capture
from chassis.capture import Capture, CaptureError, KeyFile, checksum, ip_udp

TSHARK = "/usr/bin/tshark"
WARN = 0x00600000  # _ws.expert.severity PI_WARN
FIELDS = ["frame.protocols", "frame.packet_flags_direction", "frame.time_epoch",
          "isakmp.exchangetype", "isakmp.typepayload", "esp.spi", "data.data",
          "ip.checksum.status", "udp.checksum.status", "_ws.malformed", "_ws.expert.severity",
          "_ws.expert.message"]  # fmt: skip
CHILDREN = {
    "gcm": ChildProposal(Encr.AES_GCM_16, 256),
    "cbc": ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128),
}


def tshark(pcap: Path, args: list[str] = (), port: int = 500) -> list[dict[str, list[str]]]:
    decode_as = ["-d", f"udp.port=={port},udpencap"] if port not in (500, 4500) else []
    cmd = [TSHARK, "-n", "-r", str(pcap), *decode_as, "-o", "ip.check_checksum:TRUE",
           "-o", "udp.check_checksum:TRUE", *args, "-T", "fields", "-E", "occurrence=a",
           "-E", "aggregator=;", "-E", "separator=/t", *[a for f in FIELDS for a in ("-e", f)]]  # fmt: skip
    env = {**os.environ, "HOME": str(pcap.parent)}
    env.pop("XDG_CONFIG_HOME", None)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    frames = [{f: v.split(";") if v else [] for f, v in zip(FIELDS, r, strict=True)} for r in rows]
    for n, f in enumerate(frames, 1):
        assert not f["_ws.malformed"], (n, f)
        assert all(int(v) < WARN for v in f["_ws.expert.severity"]), (n, f["_ws.expert.message"])
        assert f["udp.checksum.status"][:1] == ["1"], (n, f)  # Good
    return frames


def key_args(path: Path) -> list[str]:
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return [a for ln in lines for a in ("-o", ln)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------- headers and blocks
def test_checksum_is_rfc1071():
    rng = random.Random(7)
    for n in [0, 1, 2, 3, 19, 20, 1500, 1501, *(rng.randrange(1, 3000) for _ in range(300))]:
        data = rng.randbytes(n)
        assert checksum(data) == _csum(data), n  # test_ike_tshark's word-by-word sum
    for data in (b"\xff\xff", b"\xff\xff" * 9, b"\x00\x01\xff\xfe"):  # sums to 0xFFFF
        assert checksum(data) == _csum(data) == 0


def test_ip_udp_refuses_mixed_families():
    with pytest.raises(ValueError, match="different address families"):
        ip_udp(("127.0.0.1", 1), ("::1", 2), b"x")


def zero_sum(payload: bytes) -> bytes:
    """payload + 2 bytes whose UDP checksum (127.0.0.1:1 -> 127.0.0.2:2) computes to 0, which
    RFC 768 sends as 0xFFFF."""
    c = ip_udp(("127.0.0.1", 1), ("127.0.0.2", 2), payload + b"\0\0")[26:28]
    packet = ip_udp(("127.0.0.1", 1), ("127.0.0.2", 2), payload + c)
    assert packet[26:28] == b"\xff\xff"
    return payload + c


def test_pcapng_is_read_by_tshark(tmp_path):
    pcap = tmp_path / "npu.pcapng"
    cap = Capture(pcap)
    sent = [
        (("198.51.100.7", 40000), ("192.0.2.1", 5500), os.urandom(101), False),
        (("192.0.2.1", 5500), ("198.51.100.7", 40000), os.urandom(64), True),
        (("2001:db8:e::7", 4501), ("2001:db8::1", 5500), os.urandom(33), False),
        (("2001:db8::1", 5500), ("2001:db8:e::7", 4501), b"", True),
        (("127.0.0.1", 1), ("127.0.0.2", 2), zero_sum(b"abcd"), True),
    ]
    for src, dst, data, outbound in sent:
        cap.record(src, dst, data, outbound)
    stats = cap.close()
    assert stats["packets"] == 5 and stats["bytes"] == pcap.stat().st_size and not stats["running"]
    assert mode(pcap) == 0o600
    # random payloads are data: without this, tshark's heuristics sometimes take one for a
    # (then malformed) RTCP packet
    frames = tshark(pcap, ["-d", "udp.port==5500,data"])
    assert len(frames) == 5
    for f, (src, _, _, outbound) in zip(frames, sent, strict=True):
        ip = "ip" if "." in src[0] else "ipv6"
        assert f["frame.protocols"][0].split(":")[:3] == ["raw", ip, "udp"], f
        assert int(f["frame.packet_flags_direction"][0], 16) == (2 if outbound else 1)
        assert abs(float(f["frame.time_epoch"][0]) - stats["started"]) < 60
        if ip == "ip":
            assert f["ip.checksum.status"] == ["1"], f


def test_bad_paths_are_refused_clearly(tmp_path):
    with pytest.raises(CaptureError, match=r"cannot write capture file .*/no/x.pcapng: No such"):
        Capture(tmp_path / "no" / "x.pcapng")
    with pytest.raises(CaptureError, match="cannot write capture file .*: Is a directory"):
        Capture(tmp_path)
    with pytest.raises(CaptureError, match=r"cannot write key file .*/no/k: No such"):
        KeyFile(tmp_path / "no" / "k")
    with pytest.raises(CaptureError, match="cannot write key file .*: Is a directory"):
        KeyFile(tmp_path)
    with pytest.raises(CaptureError, match="size limit 10 B"):
        Capture(tmp_path / "tiny.pcapng", max_bytes=10)
    assert not (tmp_path / "tiny.pcapng").exists()


def test_existing_file_is_truncated_to_0600(tmp_path):
    pcap, keys = tmp_path / "old.pcapng", tmp_path / "old.keys"
    for p in (pcap, keys):
        p.write_bytes(b"x" * 100_000)
        p.chmod(0o644)
    Capture(pcap).close()
    KeyFile(keys)
    assert mode(pcap) == 0o600 and mode(keys) == 0o600
    assert pcap.stat().st_size < 200 and tshark(pcap) == []
    assert keys.read_text() == capture.KEYS_HEADER


def test_size_limit_stops_the_capture_with_a_valid_file(tmp_path, caplog):
    pcap = tmp_path / "limited.pcapng"
    cap = Capture(pcap, max_bytes=4096)
    for i in range(100):
        cap.record(("127.0.0.1", 40000), ("127.0.0.2", 40001), bytes([i]) * 200, False)
    stats = cap.close()
    assert stats["full"] and stats["packets"] + stats["dropped"] == 100 and stats["dropped"] > 80
    assert stats["bytes"] == pcap.stat().st_size <= 4096
    assert "reached its limit of 4096 bytes" in caplog.text
    assert caplog.text.count("reached its limit") == 1  # said once
    assert len(tshark(pcap)) == stats["packets"]


def test_writes_are_buffered_and_flushed(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "FLUSH_S", 0.05)

    async def run():
        pcap = tmp_path / "buffered.pcapng"
        cap = Capture(pcap, loop=asyncio.get_running_loop())
        head = pcap.stat().st_size  # SHB and IDB are on disk at once
        cap.record(("127.0.0.1", 40000), ("127.0.0.2", 40001), b"a" * 100, False)
        assert pcap.stat().st_size == head  # buffered
        await asyncio.sleep(0.2)
        assert pcap.stat().st_size == cap.size > head  # the timer flushed it
        for _ in range(capture.FLUSH_BYTES // 1000 + 1):  # the size threshold flushes at once
            cap.record(("127.0.0.1", 40000), ("127.0.0.2", 40001), b"b" * 1000, True)
        assert pcap.stat().st_size > capture.FLUSH_BYTES
        cap.record(("127.0.0.1", 40000), ("127.0.0.2", 40001), b"c", True)
        stats = cap.close()  # close writes the rest
        assert pcap.stat().st_size == stats["bytes"]
        return stats["packets"]

    packets = asyncio.run(run())
    assert len(tshark(tmp_path / "buffered.pcapng")) == packets


def test_write_error_stops_the_capture(tmp_path):
    cap = Capture(tmp_path / "err.pcapng")
    os.close(cap.fd)
    cap.fd = os.open("/dev/full", os.O_WRONLY)  # ENOSPC on every write
    cap.record(("127.0.0.1", 40000), ("127.0.0.2", 40001), b"x", False)
    stats = cap.close()
    assert not stats["running"] and "No space left on device" in stats["error"]
    cap.record(("127.0.0.1", 40000), ("127.0.0.2", 40001), b"x", False)  # counted, not written
    assert cap.stats()["dropped"] == 2


# ---------------------------------------------------------------------- keys
def seal(key: tuple[bytes, bytes], spi: bytes, seq: int, inner: bytes, suite) -> bytes:
    """ESP (RFC 4303) around an IPv4/IPv6 packet, built here from the exported keys' owner."""
    ekey, akey = key
    nh = 4 if inner[0] >> 4 == 4 else 41
    block = 4 if suite.encr == Encr.AES_GCM_16 else 16
    pad = -(len(inner) + 2) % block
    plain = inner + bytes(range(1, pad + 1)) + bytes([pad, nh])
    head = spi + struct.pack("!I", seq)
    if suite.encr == Encr.AES_GCM_16:
        iv = os.urandom(8)
        return head + iv + AESGCM(ekey[:-4]).encrypt(ekey[-4:] + iv, plain, head)
    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(ekey), modes.CBC(iv)).encryptor()
    body = head + iv + enc.update(plain) + enc.finalize()
    return body + hmac.new(akey, body, hashlib.sha256).digest()[:16]


@pytest.mark.parametrize("child", CHILDREN)
@pytest.mark.parametrize("case", CASES)
def test_key_lines_decrypt_ike_and_esp(case, child, tmp_path):
    suite, enb, gw = CASES[case]
    children = (ChildPolicy(proposals=(CHILDREN[child],)),)
    proposals = (SUITES[suite],)
    pair = Pair(
        config("enb", proposals=proposals, children=children),
        gw_config(proposals=proposals, children=children),
        enb,
        gw,
    ).established()
    # the gateway's side, as the card's "ike.keys" RPC reports it
    (row,) = Gateway.key_table(SimpleNamespace(endpoints={gw: pair.r}))
    keys = tmp_path / "k"
    key_file = KeyFile(keys)
    assert key_file.add([row]) and not key_file.add([row])  # a second report adds nothing
    lines = keys.read_text().splitlines()
    assert f"uat:ikev2_decryption_table:{decryption_row(pair.sa('r'))}" in lines
    assert mode(keys) == 0o600

    pcap = tmp_path / "x.pcapng"
    cap = Capture(pcap)
    for s in pair.wire:
        cap.record(s.src, s.dst, s.data, outbound=s.src == gw)
    (c,) = pair.sa("r").children.values()
    v6 = ":" in gw[0]
    inner_src, inner_dst = ("2001:db8:f::1", "2001:db8:a::1") if v6 else ("10.64.0.9", "10.0.0.1")
    marker = gw[1] not in (500,)
    for seq, (src, dst, spi, key, payload) in enumerate(
        [(enb, gw, c.our_spi, c.inbound, b"up the tunnel"),
         (gw, enb, c.their_spi, c.outbound, b"down the tunnel")], 1):  # fmt: skip
        inner = ip_udp((inner_src, 40000), (inner_dst, 40001), payload)
        esp = seal(key, spi, seq, inner, c.suite)
        port_src, port_dst = (src[1], dst[1]) if marker else (4500, 4500)  # ESP needs NAT-T
        cap.record((src[0], port_src), (dst[0], port_dst), esp, outbound=src == gw)
    cap.close()

    frames = tshark(pcap, key_args(keys), gw[1])
    X, P = ExchangeType, PayloadType
    ike = [f for f in frames if f["isakmp.exchangetype"]]
    assert [f["isakmp.exchangetype"] for f in ike[:4]] == [
        [str(int(x))] for x in (X.IKE_SA_INIT,) * 2 + (X.IKE_AUTH,) * 2
    ]
    assert {P.IDi, P.AUTH, P.SA, P.TSi, P.TSr} <= {int(t) for t in ike[2]["isakmp.typepayload"]}
    assert {P.IDr, P.AUTH, P.SA, P.TSi, P.TSr} <= {int(t) for t in ike[3]["isakmp.typepayload"]}
    esp = [f for f in frames if f["esp.spi"]]
    assert [int(f["esp.spi"][0], 16) for f in esp] == [
        int.from_bytes(c.our_spi, "big"),
        int.from_bytes(c.their_spi, "big"),
    ]
    assert [bytes.fromhex(f["data.data"][0]) for f in esp] == [b"up the tunnel", b"down the tunnel"]
