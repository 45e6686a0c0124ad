"""The NPU on a live chassis: real UDP datagrams to the bound gateway address reach one active
card each, retransmissions reach the same card, standby cards and keepalives get nothing."""

from __future__ import annotations

import os
import socket
import time

import pytest
from helpers import wait_until
from pki_material import lab

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


def serve_template(ch) -> int:
    """A certificate template bound to a free loopback port; returns the port."""
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
        assert ch.status()["npu"]["keepalive"] >= 1
    finally:
        for sock in peers:
            sock.close()


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
