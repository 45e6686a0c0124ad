"""The NPU on a live chassis: real UDP datagrams to the bound gateway address reach one active
card each, retransmissions reach the same card, standby cards and keepalives get nothing."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from helpers import wait_until, write_topology
from pki_material import NOW, lab

from cards.ike.config import Credentials, IkeConfig
from cards.ike.const import ExchangeType, NotifyType
from cards.ike.engine import Endpoint
from cards.ike.events import Alive, Established, Send
from cards.ike.message import Message
from cards.spi import make_spi, slot_of_spi
from chassis.client import ChassisError
from chassis.npu import steer
from chassis.npu_io import BURST

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPO = """\
name: npu
platform: asr5500
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
  3: {type: dpc, role: standby}
"""


def ike_init(spi_i: bytes) -> bytes:
    return (
        b"\0\0\0\0"
        + spi_i
        + bytes(8)
        + bytes([33, 0x20, 34, 0x08])
        + bytes(4)
        + (28).to_bytes(4, "big")
    )


def rx(ch) -> dict[int, int]:
    rows = ch.exec("show card table")[0].data["cards"]
    return {r["slot"]: r.get("counters", {}).get("npu_rx", 0) for r in rows if r["type"] == "dpc"}


def serve_template(ch, port: int | None = None) -> int:
    """A certificate template bound to loopback `port` (a free one by default); the port."""
    if port is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    for name, data in lab().items():
        (ch.run.flash / name).write_bytes(data)
    res = ch.exec(
        "configure",
        "ca-certificate name root pem url /flash/ca.crt",
        "certificate name segw pem url /flash/gw1.crt private-key pem url /flash/gw1.key",
        "context segw", "crypto template t ikev2-dynamic",
        "authentication local certificate", "authentication remote certificate",
        "certificate name segw", "ca-certificate list ca-cert-name root", "exit",
        "wsg-service s", f"bind address 127.0.0.1 port {port} crypto-template t", "end",
    )  # fmt: skip
    assert not any(r.error for r in res), [r.output for r in res if r.error]
    return port


def settled(ch) -> dict[int, int]:
    """Counters once datagrams still in flight have landed (they do not change for 0.5 s)."""

    last, since = rx(ch), time.monotonic()
    deadline = since + 10
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = rx(ch)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            return now
    raise AssertionError("the NPU counters never settled")


def test_datagrams_are_steered_to_active_cards(chassis_factory, tmp_path):
    (tmp_path / "t.yaml").write_text(TOPO)
    ch = chassis_factory(tmp_path / "t.yaml")
    port = serve_template(ch)
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(12)]
    try:
        spis = [os.urandom(8) for _ in peers]

        def send_all():
            for sock, spi in zip(peers, spis, strict=True):
                sock.sendto(ike_init(spi), ("127.0.0.1", port))

        wait_until(
            lambda: send_all() or sum(rx(ch).values()) >= len(peers), 10, what="the NPU listening"
        )
        first = settled(ch)  # every card has reported what it got
        assert first[3] == 0  # the standby card takes no new SAs
        assert first[1] > 0 and first[2] > 0  # spread over both active cards
        before = settled(ch)
        peers[0].sendto(ike_init(spis[0]), ("127.0.0.1", port))
        peers[0].sendto(b"\xff", ("127.0.0.1", port))  # a NAT keepalive: dropped at the NPU
        wait_until(
            lambda: sum(rx(ch).values()) == sum(before.values()) + 1, 5, what="the retransmission"
        )
        after = rx(ch)
        moved = {s for s in after if after[s] != before[s]}
        assert len(moved) == 1 and moved <= {1, 2}
        status = ch.status()
        assert status["npu"]["keepalive"] >= 1
        # each card has its socketpair (datagrams go there, not on the bus) and lost nothing
        paths = status["datapath"]
        assert set(paths) == {"1", "2", "3"}, paths
        assert all(p == {"dropped": 0, "backlog": 0, "bad": 0, "closed": False}
                   for p in paths.values()), paths  # fmt: skip
    finally:
        for sock in peers:
            sock.close()


def test_a_gateway_address_taken_by_another_process_is_named(chassis_factory, tmp_path):
    """Another chassis (here: a socket of this test) holds the service's address and port:
    the NPU cannot listen, and `chassis status` and `--wait certs` say so instead of a
    gateway that silently never answers."""
    (tmp_path / "t.yaml").write_text(TOPO)
    ch = chassis_factory(tmp_path / "t.yaml")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = serve_template(ch, squatter.getsockname()[1])
        want = f"cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
        wait_until(lambda: ch.status()["npu_errors"] == [want], 10, what="the NPU's bind error")
        with pytest.raises(ChassisError, match=re.escape(f"NPU: {want}")):
            ch.wait("certs", timeout=3)
    log = (ch.run.logs / "backplane.log").read_text()
    assert want in log


ASR9000 = """\
name: npu9k
platform: asr9000
cards:
  8: {type: rsp, role: active}
  0: {type: vsm, role: active}
  1: {type: vsm, role: active}
"""


def test_new_sas_go_only_to_cards_holding_the_credentials(chassis_factory, tmp_path):
    """ASR 9000: only the VSM that fetched the certificate can serve the template."""
    (tmp_path / "t.yaml").write_text(ASR9000)
    ch = chassis_factory(tmp_path / "t.yaml")
    port = serve_template(ch)
    assert not ch.exec("cmp fetch current-cert segw ca-root root", card=0)[0].error

    def vsm_rx():
        rows = ch.exec("show card table")[0].data["cards"]
        return {
            r["slot"]: r.get("counters", {}).get("npu_rx", 0) for r in rows if r["type"] == "vsm"
        }

    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(12)]
    try:
        spis = [os.urandom(8) for _ in peers]

        def send_all():
            for sock, spi in zip(peers, spis, strict=True):
                sock.sendto(ike_init(spi), ("127.0.0.1", port))

        wait_until(lambda: send_all() or vsm_rx()[0] >= len(peers), 10, what="VSM 0 taking the SAs")
        time.sleep(0.5)  # let any late report from VSM 1 arrive
        assert vsm_rx()[1] == 0  # VSM 1 holds no credentials: it gets no new SA
    finally:
        for sock in peers:
            sock.close()


# Two DPCs serve the same wsg-service, no standby. Heartbeats of 200 ms x 50 keep a hung card
# "active" (in the NPU's steering table) for 10 s, longer than the flood, so the NPU really
# tries to hand it every datagram: what is checked is the send path to the cards (NOBLOCK,
# high-water mark), not the card manager's hang detection (test_e2e_chassis covers that).
HUNG = """\
name: npuhang
platform: asr5500
timers: {heartbeat-interval-ms: 200, heartbeat-liveness: 50}
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
"""
LIVE, STOPPED = 1, 2


def real_init(spi_i: bytes, src: tuple[str, int], gw: tuple[str, int]) -> bytes:
    """A full IKE_SA_INIT request (SAi1, KEi, Ni, N(NAT_D), ...) made by the cards' engine."""
    m = lab()
    own = Credentials(
        x509.load_pem_x509_certificate(m["gw1.crt"]), load_pem_private_key(m["gw1.key"], None)
    )
    cfg = IkeConfig(own, (x509.load_pem_x509_certificate(m["ca.crt"]),))
    ep = Endpoint(cfg, rand=os.urandom, wall_clock=lambda: NOW, spi_alloc=lambda: spi_i)
    (send,) = [o for o in ep.initiate(gw, 0.0, local=src) if isinstance(o, Send)]
    return send.data


def spi_for(slot: int, src: tuple[str, int], gw_port: int) -> bytes:
    """An SPIi whose new IKE_SA_INIT from `src` the NPU's rendezvous hash gives to `slot`."""
    while True:
        spi = os.urandom(8)
        if steer(ike_init(spi), src, gw_port, [LIVE, STOPPED], marked=True).slot == slot:
            return spi


def ike_auth_for(slot: int) -> bytes:
    """An IKE_AUTH request (Initiator flag set) whose SPIr names `slot`, marked: the header and
    an SK payload of 1,000 bytes, about what a peer's IKE_AUTH with its certificate weighs."""
    spi_r = make_spi(slot, os.urandom(8))
    header = bytes([46, 0x20, 35, 0x08]) + (1).to_bytes(4, "big") + (1028).to_bytes(4, "big")
    sk = bytes([35, 0]) + (1000).to_bytes(2, "big") + os.urandom(996)
    return b"\0\0\0\0" + os.urandom(8) + spi_r + header + sk


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def npu_delta(ch, before: dict, kind: str) -> int:
    return ch.status()["npu"].get(kind, 0) - before.get(kind, 0)


def test_a_hung_card_never_delays_another_cards_traffic(chassis_factory, tmp_path):
    #  eNodeBs                  NPU (backplane)             DPC 1           DPC 2 (SIGSTOP)
    #  HDR(SPIr=2..), ... x N  -->  steer: slot 2  ---- queued up to the HWM, then dropped -->X
    #  HDR, SAi1, KEi, Ni  ------>  steer: slot 1  ------------>
    #  <--------------------------  HDR, SAr1, KEr, Nr (SPIr=1..)    answered in < 1 s
    (tmp_path / "t.yaml").write_text(HUNG)
    ch = chassis_factory(tmp_path / "t.yaml")
    port = serve_template(ch)
    gw = ("127.0.0.1", port)
    prober = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    prober.bind(("127.0.0.1", 0))
    src = prober.getsockname()

    def probe(timeout: float) -> float | None:
        """A new IKE SA steered to the live card: seconds until its SA_INIT answer, or None."""
        spi = spi_for(LIVE, src, port)
        data = real_init(spi, src, gw)
        start = time.monotonic()
        prober.sendto(data, gw)
        while (left := start + timeout - time.monotonic()) > 0:
            prober.settimeout(left)
            try:
                answer = prober.recv(65535)
            except TimeoutError:
                break
            msg = Message.decode(answer[4:])
            if msg.spi_i == spi:  # not a late answer to an earlier probe
                assert msg.exchange == ExchangeType.IKE_SA_INIT and msg.is_response
                assert slot_of_spi(msg.spi_r) == LIVE
                return time.monotonic() - start
        return None

    stop_flood = threading.Event()

    def flood():
        # Paced bursts: what must fill up is the card's queue, not the backplane's UDP buffer.
        for _ in range(400):  # 40 000 datagrams at most (40 MB: far past the card's queue)
            if stop_flood.is_set():
                return
            for _ in range(100):
                flooder.sendto(ike_auth_for(STOPPED), gw)
            time.sleep(0.01)

    status = ch.status()
    pid = {s["slot"]: s["pid"] for s in status["slots"]}[STOPPED]
    backplane = status["backplane_pid"]
    flooding = threading.Thread(target=flood, daemon=True)
    try:
        wait_until(lambda: probe(0.5) is not None, 10, what="the live card answering")
        rx_before = settled(ch)
        before = ch.status()["npu"]
        rss_before = rss_kib(backplane)
        os.kill(pid, signal.SIGSTOP)
        flooding.start()
        rtts: list[float | None] = []
        deadline = time.monotonic() + 30
        while True:
            rtts.append(probe(1.0))
            steered = npu_delta(ch, before, "ike") - len(rtts)
            dropped = npu_delta(ch, before, "dropped")
            if steered >= 5000 and dropped >= 1000 and len(rtts) >= 10:
                break
            assert time.monotonic() < deadline, f"flood: {steered} steered, {dropped} dropped"
            time.sleep(0.05)
        stop_flood.set()
        flooding.join(5)
        # Every new SA for the live card was answered within 1 s while the other card hung.
        assert None not in rtts and max(rtts) < 1.0, rtts
        # The hung card's queue stopped at its bound (the datagram pipe's backlog of 4 MiB on
        # the backplane's side, plus what the socketpair holds): the rest was dropped and
        # counted, and the backplane's memory stayed bounded.
        steered = npu_delta(ch, before, "ike") - len(rtts)
        dropped = npu_delta(ch, before, "dropped")
        assert steered >= 5000 and 0 < steered - dropped <= 2000 * BURST, (steered, dropped)
        assert rss_kib(backplane) - rss_before < 32 * 1024
    finally:
        stop_flood.set()
        os.kill(pid, signal.SIGCONT)
        prober.close()
    flooding.join(5)
    flooder.close()
    # Resumed, the card gets what was queued for it and nothing else: steered = rx + dropped.
    after = settled(ch)
    assert after[STOPPED] - rx_before[STOPPED] == steered - dropped, (after, rx_before)
    assert after[LIVE] - rx_before[LIVE] == len(rtts)


def test_a_half_open_flood_gets_cookies_and_spares_established_sas(chassis_factory, tmp_path):
    #  one eNodeB's IKE SA is up; then 3,000 IKE_SA_INITs with fresh SPIs arrive in 3 s
    #  <-- HDR, SAr1, KEr, Nr ...          (until a card holds 1,000 half-open SAs)
    #  <-- HDR(A,0), N(COOKIE)             (every one after that)
    #  the established SA still answers its liveness check meanwhile
    ch = chassis_factory(write_topology(tmp_path, HUNG))
    gw = ("127.0.0.1", serve_template(ch))
    m = lab()
    own = Credentials(
        x509.load_pem_x509_certificate(m["gw1.crt"]), load_pem_private_key(m["gw1.key"], None)
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    local = sock.getsockname()
    cfg = IkeConfig(own, (x509.load_pem_x509_certificate(m["ca.crt"]),))
    enb = Endpoint(cfg, rand=os.urandom, wall_clock=lambda: NOW, local=local)
    events: list = []

    def pump(outs, until, timeout):
        for o in outs:
            (sock.sendto(o.data, o.dst) if isinstance(o, Send) else events.append(o))
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            sock.settimeout(0.05)
            try:
                data, src = sock.recvfrom(65536)
                outs = enb.receive(data, src, local, time.monotonic())
            except TimeoutError:  # our retransmissions (a request may be dropped in the flood)
                outs = enb.handle_timer(time.monotonic())
            for o in outs:
                (sock.sendto(o.data, o.dst) if isinstance(o, Send) else events.append(o))
        return until()

    try:
        wait_until(lambda: ch.status().get("npu") is not None, 5, what="the NPU")
        time.sleep(0.3)
        up = pump(enb.initiate(gw, time.monotonic(), local), lambda: any(
            isinstance(e, Established) for e in events), 15)  # fmt: skip
        assert up, events
        (sa,) = enb.sas.values()
        template = real_init(os.urandom(8), local, gw)  # marked: 4 zero bytes, then the header
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        flood.bind(("127.0.0.1", 0))
        flood.setblocking(False)

        def burst(n):  # 1,000/s: what two cards can take in (beyond, the NPU drops)
            for i in range(n):
                flood.sendto(template[:4] + os.urandom(8) + template[12:], gw)
                if i % 100 == 99:
                    time.sleep(0.1)

        burst(1500)  # past the threshold on both cards, and they are still busy with it
        alive = pump(enb.check_liveness(sa.spi_i, time.monotonic()),
                     lambda: any(isinstance(e, Alive) for e in events), 10)  # fmt: skip
        assert alive, "the established SA did not answer during the flood"
        burst(1500)
        answers, cookies, deadline = 0, 0, time.monotonic() + 30
        while time.monotonic() < deadline and answers < 3000:
            try:
                data = flood.recv(65536)
            except BlockingIOError:
                time.sleep(0.02)
                continue
            answers += 1
            msg = Message.decode(data[4:])
            cookies += any(getattr(p, "type", None) == NotifyType.COOKIE for p in msg.payloads)
        flood.close()
    finally:
        sock.close()
    # Nearly every request answered (a busy machine may lose a few in socket buffers), by a
    # response while a card holds fewer than 1,000 half-open SAs, else by a COOKIE demand.
    assert answers >= 2900, answers
    assert 0 < answers - cookies <= 2000 and cookies >= answers - 2000
    # and the established SA is still there, at the card
    rows = ch.exec("show crypto ikev2-ikesa security-associations")[0].data["sas"]
    assert sum(r["state"] == "ESTABLISHED" for r in rows) == 1
