"""The shipped default topology serves an eNodeB out of the box.

`chassis up` on topologies/default.yaml enrolls the gateway certificate from the lab CA with
CMPv2, pushes it to the DPCs and binds wsg-service segw-svc on 127.0.0.1:5500. An eNodeB with
a certificate from the same lab CA (issued here with the lab's own authority files) brings an
IKE SA and its first CHILD_SA up over real UDP and gets an inner address from enb-pool
(configuration payload); `show crypto ikev2-ikesa security-associations` shows it. The eNodeB
is this engine's initiator (strongSwan is tested against the gateway elsewhere).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import select
import socket
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import ike_attempt, wait_until

from cards.ike.config import ChildPolicy, ChildProposal, Credentials, IkeConfig, IkeProposal
from cards.ike.const import DhGroup, Encr, Integ, Prf
from cards.ike.engine import Endpoint
from cards.ike.events import ChildEstablished, Established, Send
from chassis.lab.authority import Authority

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

DEFAULT = Path(__file__).resolve().parents[1] / "topologies" / "default.yaml"
GW = ("127.0.0.1", 5500)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def enodeb(run_root: Path) -> IkeConfig:
    authority = Authority(run_root / "lab" / "ca", now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enb7.lab.example")])
    cert = authority.issue(name, key.public_key(), [x509.DNSName("enb7.lab.example")])
    return IkeConfig(
        Credentials(cert, key, (authority.issuing,)),
        (authority.root,),
        proposals=(
            IkeProposal(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_256, Integ.NONE, DhGroup.ECP_256),
        ),  # fmt: skip
        children=(ChildPolicy(proposals=(ChildProposal(Encr.AES_GCM_16, 256),)),),
        request_addresses=(4,),
    )


def test_default_topology_accepts_an_enodeb(chassis_factory):
    ch = chassis_factory(DEFAULT, timeout=60)
    wait_until(
        lambda: all(c.get("templates", {}).get("segw/segw-tmpl") == "ready"
                    for c in ch.exec("show card table")[0].data["cards"] if c["type"] == "dpc"),
        30,
        what="the DPCs serving segw-tmpl (CMP enrollment and push)",
    )  # fmt: skip
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

    try:
        handle(ep.initiate(GW, time.monotonic(), local=local))
        deadline = time.monotonic() + 15
        while not any(isinstance(e, ChildEstablished) for e in events):
            assert time.monotonic() < deadline, events
            if select.select([sock], [], [], 0.1)[0]:
                data, src = sock.recvfrom(65536)
                handle(ep.receive(data, src, local, time.monotonic()))
            handle(ep.handle_timer(time.monotonic()))
    finally:
        sock.close()
    (up,) = [e for e in events if isinstance(e, Established)]
    assert up.peer_id == "CN=segw.lab.example,O=SeGW Lab"  # ID_DER_ASN1_DN: no SAN from CMP
    (sa,) = ep.sas.values()
    (inner,) = sa.virtual_ips
    assert ipaddress.ip_address(inner) in ipaddress.ip_network("10.64.0.0/16")
    rows = wait_until(
        lambda: ch.exec("show crypto ikev2-ikesa security-associations")[0].data["sas"],
        5,
        what="the SA at the card",
    )
    (row,) = rows
    assert row["peer_id"] == "enb7.lab.example" and row["address"] == inner
    assert row["state"] == "ESTABLISHED" and row["children"] == 1
    child = ch.exec("show crypto ipsec security-associations")[0]
    (c,) = child.data["sas"]
    assert c["payload"] == "s1" and c["peer_id"] == "enb7.lab.example"
    assert c["tsi"] == inner and c["suite"] == "aes_gcm_16256" and c["lifetime_s"] > 86000
    assert int(c["spi_in"][:2], 16) == c["card"]  # our inbound SPI carries the slot
    summary = ch.exec("show crypto ipsec security-associations summary")[0].data
    assert summary["total"] == 1
    wait_until(
        lambda: {(r.get("counters") or {}).get("child_sas") for r in ch.exec("show card table")[0]
                 .data["cards"] if r["slot"] == c["card"]} == {1},
        5,
        what="the card table's child count",
    )  # fmt: skip


def test_esp_through_the_default_topology_is_echoed(chassis_factory):
    """The eNodeB's UDP through its child comes back (ipsec sink echo), and `test ipsec
    traffic` sends more toward it; the counters on both sides agree."""
    from cards.esp import EspSa, build_udp, parse_inner

    ch = chassis_factory(DEFAULT, timeout=60)
    wait_until(
        lambda: all(c.get("templates", {}).get("segw/segw-tmpl") == "ready"
                    for c in ch.exec("show card table")[0].data["cards"] if c["type"] == "dpc"),
        30,
        what="the DPCs serving segw-tmpl",
    )  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    local = sock.getsockname()
    ep = Endpoint(enodeb(ch.run.root), rand=os.urandom, wall_clock=now, local=local)
    got: list[bytes] = []
    esp: list = []

    def handle(outs) -> None:
        for o in outs:
            if isinstance(o, Send):
                sock.sendto(o.data, o.dst)
            elif isinstance(o, ChildEstablished):
                (sa,) = ep.sas.values()
                esp.append(EspSa.from_child(sa.children[o.our_spi]))

    def run(until, timeout=15):
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, (len(got), esp)
            if select.select([sock], [], [], 0.1)[0]:
                data, src = sock.recvfrom(65536)
                if data[:4] != bytes(4) and esp and data[:4] == esp[0].spi_in:
                    inner = esp[0].open(data)
                    assert inner is not None, esp[0].last_drop
                    got.append(inner)
                else:
                    handle(ep.receive(data, src, local, time.monotonic()))
            handle(ep.handle_timer(time.monotonic()))

    try:
        handle(ep.initiate(GW, time.monotonic(), local=local))
        run(lambda: bool(esp))
        (sa,) = ep.sas.values()
        inner_ip = sa.virtual_ips[0]
        for n in range(10):
            packet = esp[0].seal(build_udp(inner_ip, "10.99.0.1", 2152, 2152, b"gtp-u %d" % n),
                                 os.urandom)  # fmt: skip
            sock.sendto(packet, GW)
        run(lambda: len(got) == 10)
        version, src, dst, proto, sport, dport = parse_inner(got[0])
        assert (str(src), str(dst), sport, dport) == ("10.99.0.1", inner_ip, 2152, 2152)
        assert got[0].endswith(b"gtp-u 0")
        spi_in = esp[0].spi_out.hex()  # the gateway's inbound SPI
        res = ch.exec(f"test ipsec traffic spi {spi_in} count 5 size 64")[0]
        assert not res.error and res.data["sent"] == 5, res.output
        run(lambda: len(got) == 15)
    finally:
        sock.close()
    (c,) = ch.exec("show crypto ipsec security-associations")[0].data["sas"]
    assert c["packets_in"] == 10 and c["packets_out"] == 15 and c["delivered"] == 10
    assert esp[0].packets_in == 15 and esp[0].packets_out == 10
    bad = ch.exec(f"test ipsec traffic spi {c['card']:02x}badc0d")[0]
    assert bad.error and "no child SA with inbound SPI" in bad.output
    bad = ch.exec("test ipsec traffic spi 0badc0de")[0]
    assert bad.error and "no packet card in service in slot 11" in bad.output


def bring_up(ch, config: IkeConfig | None = None) -> list:
    """An eNodeB (from the lab CA unless ``config`` says) against ch; its Established /
    AuthFailed events."""
    wait_until(
        lambda: all(c.get("templates", {}).get("segw/segw-tmpl") == "ready"
                    for c in ch.exec("show card table")[0].data["cards"] if c["type"] == "dpc"),
        30,
        what="the DPCs serving segw-tmpl",
    )  # fmt: skip
    return ike_attempt(config or enodeb(ch.run.root), GW)


def test_a_restart_on_the_same_run_directory_still_serves(chassis_factory, tmp_path):
    """The certificate CMP enrolled comes back from the store with its chain: the gateway
    still sends the issuing CA and the eNodeB (which trusts only the root) accepts it."""
    run = tmp_path / "run"
    ch = chassis_factory(DEFAULT, run_dir=run, timeout=60)
    assert [type(e).__name__ for e in bring_up(ch)] == ["Established"]
    ch.down()
    ch = chassis_factory(DEFAULT, run_dir=run, timeout=60)
    assert [type(e).__name__ for e in bring_up(ch)] == ["Established"]


def test_a_revoked_enodeb_is_refused_through_ocsp_then_through_the_crl(chassis_factory):
    """`chassis lab revoke`: the lab's OCSP responder says revoked at once. With the responder
    down, the CRL decides: the MIO fetches the new one when the `ca-crl` line is entered again
    (a CRL published before the old one's nextUpdate is otherwise picked up at that time)."""
    ch = chassis_factory(DEFAULT, timeout=60)
    enb = enodeb(ch.run.root)
    serial = enb.credentials.cert.serial_number
    assert [type(e).__name__ for e in bring_up(ch, enb)] == ["Established"]
    assert ch.lab_revoke(serial, "keyCompromise")
    (failed,) = bring_up(ch, enb)
    assert type(failed).__name__ == "AuthFailed"
    logs = wait_until(lambda: "REFUSED: OCSP revoked" in (text := dpc_logs(ch)) and text, 5,
                      what="the DPC's verdict in its log")  # fmt: skip
    assert "keyCompromise" in logs

    ch.lab_set("ocsp", {"down": True})
    url = ch.exec("show ca-crl name lab-issuing")[0].data["items"][0]["url"]
    res = ch.exec("configure", f"ca-crl name lab-issuing der url {url}", "end")
    assert not any(r.error for r in res), [r.output for r in res]
    wait_until(
        lambda: ch.exec("show ca-crl name lab-issuing")[0].data["items"][0]["count"] == 1,
        10,
        what="the CRL listing the revoked eNodeB on the MIO",
    )
    wait_until(
        lambda: (
            set(ch.exec("show ca-crl name lab-issuing")[0].data["items"][0]["cards"].values())
            == {"v2"}
        ),
        10,
        what="the new CRL on every DPC",
    )
    (failed,) = bring_up(ch, enb)
    assert type(failed).__name__ == "AuthFailed"
    line = f"ca-crl lab-issuing: serial {serial:x} revoked"
    wait_until(lambda: line in dpc_logs(ch), 5, what="the CRL's verdict in the DPC's log")


def dpc_logs(ch) -> str:
    """The DPCs' logs (a card logs a verdict just after sending its answer)."""
    return "".join(p.read_text() for p in ch.run.logs.glob("dpc-*.log"))
