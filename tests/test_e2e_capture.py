"""`chassis capture` (issue #7 item 4): the NPU's datagrams in pcapng, decrypted by tshark.

On the shipped default topology (its wsg-service moved from 5500 to a free port, not 500, so
every IKE packet carries the RFC 3948 non-ESP marker) an eNodeB (this engine's initiator, over real UDP) brings an IKE SA and
its first CHILD_SA up while the backplane captures with keys, then sends one ESP packet through
the child, which the gateway's data plane echoes back (`ipsec sink echo` in the default
topology). tshark, given nothing but the lines of the key file, must read the capture without a
malformed packet or an expert warning (IP and UDP checksums checked), see IKE_SA_INIT and
IKE_AUTH both ways, decrypt the IKE_AUTH (IDi, AUTH, IDr inside) and both ESP packets. The key
file and the capture are 0600, the key file's IKE line is the one Wireshark needs for the
eNodeB's own SA, and no key appears in any log of the run directory or in the CLI's output.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from helpers import wait_until
from test_e2e_default_topology import DEFAULT, enodeb, now
from test_e2e_strongswan import free_udp_port
from test_ike_tshark import decryption_row

from cards.ike.const import Encr, ExchangeType, PayloadType
from cards.ike.engine import Endpoint
from cards.ike.events import ChildEstablished, Send
from chassis.capture import ip_udp
from chassis.client import ChassisError

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TSHARK = "/usr/bin/tshark"
WARN = 0x00600000  # _ws.expert.severity PI_WARN
INBOUND, OUTBOUND = "0x00000001", "0x00000002"  # frame.packet_flags_direction
PROBE = b"chassis capture esp probe"
FIELDS = ["frame.protocols", "frame.packet_flags_direction", "udp.srcport", "udp.dstport",
          "isakmp.exchangetype", "isakmp.flags", "isakmp.typepayload", "esp.spi",
          "data.data", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message"]  # fmt: skip


def serving(ch) -> None:
    wait_until(
        lambda: all(c.get("templates", {}).get("segw/segw-tmpl") == "ready"
                    for c in ch.exec("show card table")[0].data["cards"] if c["type"] == "dpc"),
        30,
        what="the DPCs serving segw-tmpl (CMP enrollment and push)",
    )  # fmt: skip


def gateway(ch) -> tuple[str, int]:
    """The wsg-service's address (without_fleet gave it a free port)."""
    m = re.search(r"bind address (\S+) port (\d+)", ch.manifest["topology"]["startup_config"])
    return m.group(1), int(m.group(2))


def tunnel(ch) -> tuple[Endpoint, socket.socket, tuple]:
    """An eNodeB's IKE SA and first CHILD_SA with the gateway, over real UDP (bounded)."""
    GW = gateway(ch)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    local = sock.getsockname()
    ep = Endpoint(enodeb(ch.run.root), rand=os.urandom, wall_clock=now, local=local)
    events: list = []

    def handle(outs) -> None:
        for o in outs:
            if isinstance(o, Send):
                sock.sendto(o.data, o.dst)
            else:
                events.append(o)

    handle(ep.initiate(GW, time.monotonic(), local=local))
    deadline = time.monotonic() + 15
    while not any(isinstance(e, ChildEstablished) for e in events):
        assert time.monotonic() < deadline, events
        if select.select([sock], [], [], 0.1)[0]:
            data, src = sock.recvfrom(65536)
            handle(ep.receive(data, src, local, time.monotonic()))
        handle(ep.handle_timer(time.monotonic()))
    return ep, sock, local


def send_esp(sock: socket.socket, ep: Endpoint, gw: tuple) -> tuple[bytes, bytes]:
    """One ESP-in-UDP packet (AES-GCM-16, RFC 4106) through the eNodeB's child: inner UDP from
    its inner address. Built here, not with cards/esp.py: the test checks the key export."""
    (sa,) = ep.sas.values()
    (child,) = sa.children.values()
    assert child.suite.encr == Encr.AES_GCM_16
    key, _ = child.outbound
    inner = ip_udp((sa.virtual_ips[0], 2152), ("10.200.0.1", 2152), PROBE)  # s1: GTP-U
    pad = -(len(inner) + 2) % 4
    plain = inner + bytes(range(1, pad + 1)) + bytes([pad, 4])  # Next Header: IPv4
    head, iv = child.their_spi + struct.pack("!I", 1), os.urandom(8)
    packet = head + iv + AESGCM(key[:-4]).encrypt(key[-4:] + iv, plain, head)
    sock.sendto(packet, gw)  # ESP on a marked port: no non-ESP marker (RFC 3948)
    return child.their_spi, child.our_spi  # the SPIs of ESP to the gateway and back


def sent_esp(ch, sock: socket.socket, ep: Endpoint) -> tuple[bytes, bytes]:
    """send_esp, once the capture holds it and the gateway's echo (bounded)."""
    before = ch.status()["capture"]["packets"]
    spis = send_esp(sock, ep, gateway(ch))
    wait_until(lambda: ch.status()["capture"]["packets"] >= before + 2, 5,
               what="the ESP packet and its echo in the capture")  # fmt: skip
    return spis


def key_args(key_file: Path) -> list[str]:
    lines = [ln for ln in key_file.read_text().splitlines() if ln and not ln.startswith("#")]
    return [a for ln in lines for a in ("-o", ln)]


def tshark(pcap: Path, key_file: Path, GW: tuple) -> list[dict[str, list[str]]]:
    cmd = [TSHARK, "-n", "-r", str(pcap), "-d", f"udp.port=={GW[1]},udpencap",
           "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", *key_args(key_file),
           "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;", "-E", "separator=/t",
           *[a for f in FIELDS for a in ("-e", f)]]  # fmt: skip
    env = {**os.environ, "HOME": str(pcap.parent)}  # no personal Wireshark profile
    env.pop("XDG_CONFIG_HOME", None)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    return [{f: v.split(";") if v else [] for f, v in zip(FIELDS, r, strict=True)} for r in rows]


def check_capture(pcap: Path, key_file: Path, enb: tuple, spis: tuple, GW: tuple) -> list[dict]:
    frames = tshark(pcap, key_file, GW)
    assert frames
    for n, f in enumerate(frames, 1):
        assert not f["_ws.malformed"], (n, f)
        assert all(int(v) < WARN for v in f["_ws.expert.severity"]), (n, f["_ws.expert.message"])
        assert f["frame.packet_flags_direction"] in ([INBOUND], [OUTBOUND]), (n, f)
        inbound = f["frame.packet_flags_direction"] == [INBOUND]
        ports = [int(f["udp.srcport"][0]), int(f["udp.dstport"][0])]
        assert ports == ([enb[1], GW[1]] if inbound else [GW[1], enb[1]]), (n, f)
    ike = [f for f in frames if f["isakmp.exchangetype"]]
    X, P = ExchangeType, PayloadType

    def exchange(x, direction) -> list[dict]:
        return [f for f in ike if f["isakmp.exchangetype"] == [str(int(x))]
                and f["frame.packet_flags_direction"] == [direction]]  # fmt: skip

    assert (
        len(exchange(X.IKE_SA_INIT, INBOUND)) == 1 and len(exchange(X.IKE_SA_INIT, OUTBOUND)) == 1
    )
    auth_in, auth_out = exchange(X.IKE_AUTH, INBOUND), exchange(X.IKE_AUTH, OUTBOUND)
    assert auth_in and auth_out
    # decrypted: the SK payload's (or its fragments' reassembled) inner payloads are there
    seen_in = {int(t) for f in auth_in for t in f["isakmp.typepayload"]}
    seen_out = {int(t) for f in auth_out for t in f["isakmp.typepayload"]}
    assert {P.IDi, P.AUTH, P.SA, P.TSi, P.TSr} <= seen_in, seen_in
    assert {P.IDr, P.AUTH, P.SA, P.TSi, P.TSr} <= seen_out, seen_out
    esp = [f for f in frames if f["esp.spi"]]
    (probe,) = [f for f in esp if f["frame.packet_flags_direction"] == [INBOUND]]
    (echo,) = [f for f in esp if f["frame.packet_flags_direction"] == [OUTBOUND]]
    for f, spi in ((probe, spis[0]), (echo, spis[1])):
        assert int(f["esp.spi"][0], 16) == int.from_bytes(spi, "big")
        assert f["frame.protocols"][0].endswith("udpencap:esp:ip:udp:data"), f
        assert bytes.fromhex(f["data.data"][0]) == PROBE  # decrypted with the exported keys
    return frames


def key_material(ep: Endpoint) -> list[bytes]:
    (sa,) = ep.sas.values()
    k = sa.keys
    out = [k.sk_ei, k.sk_er, k.sk_ai, k.sk_ar, k.sk_d, k.sk_pi, k.sk_pr]
    for c in sa.children.values():
        out += [*c.inbound, *c.outbound]
    return [x for x in out if x]


def assert_no_key_in_logs(run_root: Path, secrets: list[bytes], *outputs: str) -> None:
    logs = [p for p in run_root.rglob("*") if p.is_file() and (p.suffix in (".log", ".out")
            or "logs" in p.parts)]  # fmt: skip
    assert logs
    texts = [(p, p.read_bytes()) for p in logs] + [
        (f"output {i}", o.encode()) for i, o in enumerate(outputs)
    ]
    for where, data in texts:
        lowered = data.lower()
        for secret in secrets:
            assert secret not in data and secret.hex().encode() not in lowered, where


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def without_fleet(tmp_path: Path) -> Path:
    """The default topology without its eNodeB fleet: these tests count their own SAs."""
    topo = yaml.safe_load(DEFAULT.read_text())
    topo["lab"].pop("fleet", None)
    # its own port: a stray peer of an earlier test's 127.0.0.1:5500 must not land in the capture
    old = "bind address 127.0.0.1 port 5500 "
    assert old in topo["startup-config"]
    topo["startup-config"] = topo["startup-config"].replace(
        old, f"bind address 127.0.0.1 port {free_udp_port()} "
    )
    path = tmp_path / "default-without-fleet.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


def test_capture_with_keys_is_decrypted_by_tshark(chassis_factory, tmp_path):
    ch = chassis_factory(without_fleet(tmp_path), timeout=60)
    serving(ch)
    pcap, key_file = tmp_path / "segw.pcapng", tmp_path / "segw.keys"
    started = ch.capture_start(pcap, keys=key_file)
    assert started["running"] and started["path"] == str(pcap)
    assert mode(pcap) == 0o600 and mode(key_file) == 0o600
    with pytest.raises(ChassisError, match="already running to .*segw.pcapng"):
        ch.capture_start(tmp_path / "second.pcapng")
    assert not (tmp_path / "second.pcapng").exists()
    assert ch.status()["capture"]["path"] == str(pcap)

    ep, sock, enb = tunnel(ch)
    try:
        spis = sent_esp(ch, sock, ep)
    finally:
        sock.close()
    stats = ch.capture_stop()
    assert ch.status()["capture"] is None
    with pytest.raises(ChassisError, match="no capture is running"):
        ch.capture_stop()
    assert stats["packets"] >= 5 and not stats["dropped"] and stats["bytes"] == pcap.stat().st_size
    assert stats["keys"] == {"path": str(key_file), "ike_sas": 1, "esp_sas": 2}
    assert mode(pcap) == 0o600 and mode(key_file) == 0o600

    (sa,) = ep.sas.values()
    (child,) = sa.children.values()
    lines = key_file.read_text().splitlines()
    assert f"uat:ikev2_decryption_table:{decryption_row(sa)}" in lines  # test_ike_tshark's names
    esp_lines = [ln for ln in lines if ln.startswith("uat:esp_sa:")]
    assert sorted(ln.split(",")[3] for ln in esp_lines) == sorted(
        f'"0x{s.hex()}"' for s in (child.our_spi, child.their_spi)
    )
    check_capture(pcap, key_file, enb, spis, gateway(ch))
    assert_no_key_in_logs(ch.run.root, key_material(ep))


def test_capture_command_until_ctrl_c(chassis_factory, tmp_path):
    ch = chassis_factory(without_fleet(tmp_path), timeout=60)
    serving(ch)
    pcap, key_file = tmp_path / "cli.pcapng", tmp_path / "cli.keys"
    argv = [sys.executable, "-m", "chassis", "capture", str(pcap), "--keys", str(key_file),
            "--run-dir", str(ch.run.root)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ch.status()["capture"] is not None or proc.poll() is not None, 15,
                   what="the capture to start")  # fmt: skip
        assert proc.poll() is None, proc.communicate()
        ep, sock, enb = tunnel(ch)
        try:
            spis = sent_esp(ch, sock, ep)
        finally:
            sock.close()
        # the command gathers keys while it runs (every second), not only at its end
        wait_until(lambda: "uat:ikev2_decryption_table:" in key_file.read_text(), 10,
                   what="the SA's keys in the key file")  # fmt: skip
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"capturing to {pcap}, keys to {key_file} until Ctrl-C" in out
    assert f"{key_file}: keys of 1 IKE SAs, 2 ESP SAs" in out
    assert ch.status()["capture"] is None
    assert mode(pcap) == 0o600 and mode(key_file) == 0o600
    check_capture(pcap, key_file, enb, spis, gateway(ch))
    assert_no_key_in_logs(ch.run.root, key_material(ep), out, err)

    # --seconds stops by itself; a bad path is refused before anything runs
    bad = subprocess.run([*argv[:4], str(tmp_path / "no" / "such.pcapng"), "--run-dir",
                          str(ch.run.root)], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert bad.returncode == 1 and "cannot write capture file" in bad.stderr
    assert "No such file or directory" in bad.stderr
    timed = subprocess.run([*argv[:5], "--seconds", "0.5", "--run-dir", str(ch.run.root)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert timed.returncode == 0, timed.stderr
    assert "for 0.5 s" in timed.stdout and ch.status()["capture"] is None
