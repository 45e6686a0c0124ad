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


def test_a_killed_dpc_s_tunnels_go_on_at_the_standby(chassis_factory, tmp_path):
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "gw", "enb")}
    ca = certificate("Refresh CA", keys["ca"], keys["ca"], 1, ca=True)
    gw = certificate("segw.example.net", keys["gw"], keys["ca"], 2)
    enb = certificate("enb1.example.net", keys["enb"], keys["ca"], 3)
    ch = chassis_factory(write_topology(tmp_path, TOPO))
    for name, data in {"ca.crt": pem(ca), "gw.crt": pem(gw), "gw.key": pem(keys["gw"])}.items():
        (ch.run.flash / name).write_bytes(data)
    port = free_udp_port()
    res = ch.exec(
        "configure",
        "ca-certificate name ca pem url /flash/ca.crt",
        "certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key",
        "context segw",
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

    def cards() -> dict[int, dict]:
        return {c["slot"]: c for c in ch.exec("show card table")[0].data["cards"]
                if c["type"] == "dpc"}  # fmt: skip

    wait_until(lambda: cards()[2]["state"] == "standby", 10, what="DPC 2 standby")
    enbs = [Enodeb(enodeb(enb, keys["enb"], ca), ("127.0.0.1", port)) for _ in range(3)]
    try:
        for e in enbs:
            e.handle(e.ep.initiate(e.gateway, time.monotonic(), local=e.local))
            e.pump(lambda e=e: e.of(ChildEstablished), what="tunnel up")
            (child,) = e.sa.children.values()
            e.esp = EspSa.from_child(child)
        # every SA on DPC 1, checkpointed to DPC 2
        assert {e.sa.spi_r[0] for e in enbs} == {1}
        wait_until(lambda: (cards()[2].get("counters") or {}).get("held_sas") == 3, 10,
                   what="DPC 2 holding the three SAs")  # fmt: skip

        killed = ch.fault({"fault": "kill", "target": "slot-1"})
        wait_until(lambda: cards()[2]["state"] == "active", 5, what="DPC 2 taking over")
        log = wait_until(lambda: "took over" in (t := (ch.run.logs / "mio-5.log").read_text())
                         and t, 5, what="the takeover in the MIO's log")  # fmt: skip
        assert "card 2 took over 3 IKE SAs (3 children)" in log
        assert killed["pid"] and cards()[1]["state"] == "failed"

        for e in enbs:  # the standby syncs Message IDs, then the tunnel goes on
            e.pump(lambda e=e: e.of(MidSynced), what="RFC 6311 sync from DPC 2")
            e.handle(e.ep.check_liveness(e.sa.spi_i, time.monotonic()))
            e.pump(lambda e=e: e.of(Alive), what="liveness answered by DPC 2")
            sa = e.sa
            packet = e.esp.seal(build_udp(sa.virtual_ips[0] if sa.virtual_ips else "10.1.1.1",
                                          "10.99.0.1", 2152, 2152, b"after failover"),
                                os.urandom)  # fmt: skip
            e.sock.sendto(packet, e.gateway)
            e.pump(lambda e=e: e.inner, what="ESP echoed by DPC 2")
            assert e.inner[0].endswith(b"after failover")
            old = next(iter(sa.children))
            e.handle(e.ep.rekey_child(sa.spi_i, old, time.monotonic()))
            e.pump(lambda e=e: len(e.of(ChildEstablished)) == 2, what="child rekey at DPC 2")
            assert len(e.of(Established)) == 1  # never a new IKE SA
    finally:
        for e in enbs:
            e.close()
