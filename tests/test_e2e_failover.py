"""Packet-card failover with session recovery, end to end.

DPC 1 is active, DPC 2 standby. eNodeBs (cards.ike initiators over real UDP) bring tunnels
up through DPC 1, which checkpoints their SAs to DPC 2 through the MIO. `kill -9` of DPC 1:
the MIO sees the crash, DPC 2 takes the SAs over (the NPU steers DPC 1's SPI slot bits to
it), syncs Message IDs with each eNodeB (RFC 6311), and the tunnels go on: liveness, a child
rekey and ESP through the old child, without a new IKE SA.
"""

from __future__ import annotations

import datetime as dt
import os
import select
import socket
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import wait_until, write_topology
from test_e2e_crl_refresh import certificate, enodeb, pem
from test_e2e_strongswan import free_udp_port

from cards.esp import EspSa, build_udp
from cards.ike.engine import Endpoint
from cards.ike.events import Alive, ChildEstablished, Established, MidSynced, Send

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPO = """\
name: failover
platform: asr5500
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
  2: {type: dpc, role: standby}
"""


class Enodeb:
    """One eNodeB: an initiator Endpoint on its own UDP socket, pumped by the test."""

    def __init__(self, config, gateway) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local, self.gateway = self.sock.getsockname(), gateway
        self.ep = Endpoint(config, rand=os.urandom, wall_clock=lambda: dt.datetime.now(dt.UTC),
                           local=self.local)  # fmt: skip
        self.events: list = []
        self.inner: list[bytes] = []
        self.esp: EspSa | None = None

    def handle(self, outs) -> None:
        for o in outs:
            if isinstance(o, Send):
                self.sock.sendto(o.data, o.dst)
            else:
                self.events.append(o)

    def pump(self, until, timeout: float = 10.0, what: str = "the eNodeB") -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"{what}: {self.events[-5:]}"
            if select.select([self.sock], [], [], 0.05)[0]:
                data, src = self.sock.recvfrom(65536)
                if self.esp is not None and data[:4] == self.esp.spi_in:
                    inner = self.esp.open(data)
                    assert inner is not None, self.esp.last_drop
                    self.inner.append(inner)
                else:
                    self.handle(self.ep.receive(data, src, self.local, time.monotonic()))
            self.handle(self.ep.handle_timer(time.monotonic()))

    def of(self, cls) -> list:
        return [e for e in self.events if isinstance(e, cls)]

    @property
    def sa(self):
        (sa,) = self.ep.sas.values()
        return sa

    def close(self) -> None:
        self.sock.close()


def serving_chassis(chassis_factory, tmp_path, topology: str = TOPO, context_lines=(),
                    standby: int | None = 2):  # fmt: skip
    """A template bound on a free port (by default DPC 1 active, DPC 2 standby; more lines of
    context segw in ``context_lines``); (chassis, eNodeB config factory, gateway address)."""
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "gw", "enb")}
    ca = certificate("Refresh CA", keys["ca"], keys["ca"], 1, ca=True)
    gw = certificate("segw.example.net", keys["gw"], keys["ca"], 2)
    enb = certificate("enb1.example.net", keys["enb"], keys["ca"], 3)
    ch = chassis_factory(write_topology(tmp_path, topology))
    for name, data in {"ca.crt": pem(ca), "gw.crt": pem(gw), "gw.key": pem(keys["gw"])}.items():
        (ch.run.flash / name).write_bytes(data)
    port = free_udp_port()
    res = ch.exec(
        "configure",
        "ca-certificate name ca pem url /flash/ca.crt",
        "certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key",
        "context segw",
        *context_lines,
        "crypto template tmpl ikev2-dynamic",
        "authentication local certificate",
        "authentication remote certificate",
        "certificate name segw",
        "ca-certificate list ca-cert-name ca",
        "ipsec sink echo",
        "exit",
        "wsg-service svc",
        f"bind address 127.0.0.1 port {port} crypto-template tmpl",
        "end",
    )
    assert not any(r.error for r in res), [r.output for r in res if r.error]
    wait_until(lambda: ch.status().get("npu") is not None, 10, what="the NPU")
    if standby is not None:
        wait_until(lambda: cards(ch)[standby]["state"] == "standby", 10, what="the standby DPC")
    return ch, lambda: enodeb(enb, keys["enb"], ca), ("127.0.0.1", port)


def cards(ch) -> dict[int, dict]:
    return {c["slot"]: c for c in ch.exec("show card table")[0].data["cards"]
            if c["type"] == "dpc"}  # fmt: skip


def bring_up(config, gateway, n: int) -> list[Enodeb]:
    enbs = [Enodeb(config(), gateway) for _ in range(n)]
    for e in enbs:
        e.handle(e.ep.initiate(e.gateway, time.monotonic(), local=e.local))
        e.pump(lambda e=e: e.of(ChildEstablished), what="tunnel up")
        (child,) = e.sa.children.values()
        e.esp = EspSa.from_child(child)
    return enbs


def goes_on(e: Enodeb, text: bytes) -> None:
    """Message IDs synced by the new card, then liveness, ESP and a child rekey there."""
    e.pump(lambda: len(e.of(MidSynced)) >= 1, what="RFC 6311 sync from the new card")
    alive = len(e.of(Alive))
    e.handle(e.ep.check_liveness(e.sa.spi_i, time.monotonic()))
    e.pump(lambda: len(e.of(Alive)) > alive, what="liveness answered by the new card")
    sa, got = e.sa, len(e.inner)
    inner = build_udp(sa.virtual_ips[0] if sa.virtual_ips else "10.1.1.1", "10.99.0.1", 2152,
                      2152, text)  # fmt: skip
    e.sock.sendto(e.esp.seal(inner, os.urandom), e.gateway)
    e.pump(lambda: len(e.inner) > got, what="ESP echoed by the new card")
    assert e.inner[-1].endswith(text)
    children = len(e.of(ChildEstablished))
    e.handle(e.ep.rekey_child(sa.spi_i, next(iter(sa.children)), time.monotonic()))
    e.pump(lambda: len(e.of(ChildEstablished)) > children, what="child rekey at the new card")
    (child,) = [
        c for c in e.sa.children.values() if c.our_spi == e.of(ChildEstablished)[-1].our_spi
    ]
    e.esp = EspSa.from_child(child)
    assert len(e.of(Established)) == 1  # never a new IKE SA


def test_a_killed_dpc_s_tunnels_go_on_at_the_standby(chassis_factory, tmp_path):
    ch, config, gateway = serving_chassis(chassis_factory, tmp_path)
    enbs = bring_up(config, gateway, 3)
    try:
        assert {e.sa.spi_r[0] for e in enbs} == {1}  # every SA on DPC 1
        wait_until(lambda: (cards(ch)[2].get("counters") or {}).get("held_sas") == 3, 10,
                   what="DPC 2 holding the three SAs")  # fmt: skip
        killed = ch.fault({"fault": "kill", "target": "slot-1"})
        wait_until(lambda: cards(ch)[2]["state"] == "active", 5, what="DPC 2 taking over")
        log = wait_until(lambda: "took over" in (t := (ch.run.logs / "mio-5.log").read_text())
                         and t, 5, what="the takeover in the MIO's log")  # fmt: skip
        assert "card 2 took over 3 IKE SAs (3 children)" in log
        assert killed["pid"] and cards(ch)[1]["state"] == "failed"
        for e in enbs:
            goes_on(e, b"after failover")
        # StarOS: no automatic revert; the rebooted card is the standby now
        assert not ch.exec("card reboot 1 -noconfirm")[0].error
        wait_until(lambda: cards(ch)[1]["state"] == "standby", 10, what="DPC 1 back as standby")
    finally:
        for e in enbs:
            e.close()


def test_migrate_then_halt_move_every_tunnel_without_loss(chassis_factory, tmp_path):
    ch, config, gateway = serving_chassis(chassis_factory, tmp_path)
    enbs = bring_up(config, gateway, 2)
    try:
        session = ch.session()
        asked = session.execute("card migrate from 1 to 2")
        assert not asked.error and session.execute("yes").output.startswith(
            "Info: card 1 migrated its 2 IKE SAs to card 2; card 1 is standby"
        )
        table = cards(ch)
        assert table[1]["state"] == "standby" and table[2]["state"] == "active"
        assert "Standby" in ch.exec("show card table")[0].output
        for e in enbs:
            goes_on(e, b"after migrate")
        wait_until(lambda: (cards(ch)[1].get("counters") or {}).get("held_sas") == 2, 10,
                   what="DPC 1 holding DPC 2's SAs")  # fmt: skip
        res = ch.exec("card halt 2 -noconfirm")[0]
        assert res.output.startswith("Info: card 2 migrated its 2 IKE SAs to card 1"), res.output
        wait_until(lambda: cards(ch)[2]["state"] == "offline", 5, what="DPC 2 offline")
        for e in enbs:
            e.events = [x for x in e.events if not isinstance(x, MidSynced)]
            goes_on(e, b"after halt")
        assert ch.exec("card halt 1 -noconfirm")[0].error  # no standby left: -force only
        session.close()
    finally:
        for e in enbs:
            e.close()
