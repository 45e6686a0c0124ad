"""The shipped default topology tells the whole story, and serves an eNodeB of ours too.

`chassis up` on topologies/default.yaml starts the lab (CA with a root and an intermediate,
OCSP responder, CRL publisher), runs the boot configuration, enrolls the gateway certificate
from the lab CA with CMPv2, pushes it to the DPCs and binds wsg-service segw-svc on
127.0.0.1:5500; then the lab's 50 eNodeBs dial: 49 come up with two child SAs each (MCSA:
payloads s1 and oam) passing traffic both ways, the revoked one is refused (OCSP). The other
tests bring an eNodeB of their own (this engine's initiator; strongSwan is tested against the
gateway elsewhere) with a certificate from the same lab CA (issued here with the lab's own
authority files): it brings an IKE SA and its first CHILD_SA up over real UDP and gets an
inner address from enb-pool (configuration payload), beside the fleet's.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import select
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import ike_attempt, slot_states, wait_until

from cards.ike.config import ChildPolicy, ChildProposal, Credentials, IkeConfig, IkeProposal
from cards.ike.const import DhGroup, Encr, Integ, Prf
from cards.ike.engine import Endpoint
from cards.ike.events import ChildEstablished, Established, Send
from chassis.lab import ldap_directory
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


def fleet(ch) -> dict:
    return ch.status()["lab"]["fleet"].get("status") or {}


def first_log_time(path: Path, text: str) -> dt.datetime | None:
    """When a log line holding ``text`` was first written (the logs' asctime, local time)."""
    for line in path.read_text().splitlines() if path.exists() else ():
        if text in line:
            return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return None


def test_the_default_lab_brings_49_enodebs_up_with_two_children_and_refuses_the_revoked_one(
    chassis_factory,
):
    """The README's first command: lab -> boot configuration -> enrollment (CMP) -> fan-out ->
    fleet. 49 good eNodeBs are up with both child SAs passing traffic both ways, the revoked
    one (enb0050) is refused by OCSP at every try; the CLI's summaries say so."""
    started = time.monotonic()
    ch = chassis_factory(DEFAULT, timeout=60)
    up_s = time.monotonic() - started

    # the lab: a root and an intermediate CA, OCSP, CRLs over http (and ldap with slapd)
    lab = ch.manifest["lab"]
    assert set(lab) == {"ca", "ocsp", "crl", "fleet"}
    assert ("ldap" in lab["crl"]) == (ldap_directory.find_slapd() is not None)
    ca = Authority(ch.run.root / "lab" / "ca", now)
    assert ca.issuing.issuer == ca.root.subject != ca.issuing.subject

    # enrollment and fan-out: the CMP certificate on every DPC, segw-tmpl served
    wait_until(
        lambda: all(c.get("templates", {}).get("segw/segw-tmpl") == "ready"
                    for c in ch.exec("show card table")[0].data["cards"] if c["type"] == "dpc"),
        30,
        0.2,
        what="the DPCs serving segw-tmpl (CMP enrollment and push)",
    )  # fmt: skip
    serving_s = time.monotonic() - started

    # the fleet: 49 up with 2 children each; the rate (50/s) makes it about a second
    st = wait_until(
        lambda: (s := fleet(ch)).get("up") == 49 and s.get("children_up") == 98 and s,
        30,
        0.2,
        what="49 eNodeBs up with 2 child SAs each",
    )
    tunnels_s = time.monotonic() - started
    assert (st["configured"], st["expected"], st["children_wanted"]) == (50, 49, 98)
    assert st["revoked"] == ["enb0050.lab.example"]
    assert st["issuers"] == {"root": 45, "intermediate": 5}
    assert st["gateway_serving"] and st["probes"] >= 1  # it waited for the gateway
    assert st["lost"] == 0 and set(st["failures"]) <= {"auth-failed"}  # none dialled in vain
    assert st["all_up_s"] is not None and st["all_up_s"] < 10, st

    # what the lab CA issued: 45 from the root, 5 from the intermediate, enb0050's revoked
    ca.refresh()
    enbs = [e for e in ca.db.values() if ".lab.example" in e.subject and "enb0" in e.subject]
    assert Counter(e.issuer for e in enbs) == {"root": 45, "intermediate": 5}
    (gone,) = [e for e in enbs if e.revoked_at]
    assert "enb0050" in gone.subject and gone.issuer == "intermediate"
    assert gone.reason == "keyCompromise"

    # the revoked one: refused (OCSP, with a nonce) at each of its tries
    verdicts = wait_until(
        lambda: [line for line in dpc_logs(ch).splitlines()
                 if "CN=enb0050.lab.example" in line and "REFUSED: OCSP revoked" in line],
        10,
        0.2,
        what="the DPCs refusing enb0050",
    )  # fmt: skip
    assert all("keyCompromise" in line for line in verdicts)
    assert fleet(ch)["failures"].get("auth-failed", 0) >= 1

    # the gateway's view: 49 IKE SAs, 98 child SAs (s1 and oam each), none for enb0050
    ike = ch.exec("show crypto ikev2-ikesa security-associations summary")[0]
    assert not ike.error and ike.data["established"] == 49 and not ike.data["silent"], ike.output
    assert ike.data["per_card"]["4"] == 0  # the standby DPC holds checkpoints, not SAs
    assert "IKEv2 SAs established: 49" in ike.output
    # enb0050's tries, each refused for its revoked certificate: the cards' own counts, as
    # their last status report (every second or so) has them
    refused = wait_until(
        lambda: (r := ch.exec("show crypto ikev2-ikesa security-associations summary")[0])
        and r.data["refused"] >= 1 and r.data["refused"] == r.data["refused_revoked"] and r,
        5, 0.2, what="the cards' count of refused IKE_AUTHs",
    )  # fmt: skip
    n = refused.data["refused"]
    assert f"IKE_AUTH refused: {n} (revoked certificate: {n})" in refused.output
    ipsec = ch.exec("show crypto ipsec security-associations summary")[0]
    assert not ipsec.error and ipsec.data["total"] == 98, ipsec.output
    assert sum(ipsec.data["per_card"].values()) == 98 and ipsec.data["per_card"]["4"] == 0
    sas = ch.exec("show crypto ikev2-ikesa security-associations")[0].data["sas"]
    up = {r["peer_id"] for r in sas if r["state"] == "ESTABLISHED"}
    assert up == {f"enb{i:04d}.lab.example" for i in range(1, 50)}
    assert all(r["children"] == 2 for r in sas if r["state"] == "ESTABLISHED")

    # traffic: every child SA passes packets both ways (the gateway echoes them back)
    def flowing():
        rows = ch.exec("show crypto ipsec security-associations")[0].data["sas"]
        payloads = Counter(r["payload"] for r in rows)
        quiet = [r for r in rows if not (r.get("packets_in") and r.get("packets_out"))]
        return (rows if payloads == {"s1": 49, "oam": 49} and not quiet
                else None)  # fmt: skip

    rows = wait_until(flowing, 10, 0.5, what="traffic both ways through all 98 child SAs")
    assert {r["tsr"] for r in rows} == {"0.0.0.0/0[17/2152]", "0.0.0.0/0[17/123]"}
    s1u, oam = fleet(ch)["flows"]
    assert (s1u["flow"], oam["flow"]) == ("udp/2152", "udp/123")
    assert s1u["packets_received"] > 0 and oam["packets_received"] > 0
    assert s1u["refused"] == oam["refused"] == 0

    # the start-up order, from the logs: enrollment, then the fleet's first dial
    enrolled = min(t for t in (first_log_time(ch.run.logs / f"mio-{n}.log", "cmp ir segw: success")
                               for n in (5, 6)) if t)  # fmt: skip
    dialled = first_log_time(ch.run.logs / "lab-fleet.log", "the gateway answered probe")
    assert dialled is not None and enrolled < dialled

    # the card roles: one MIO and DPC 4 standing by
    states = slot_states(ch)
    assert sorted(states[n] for n in (5, 6)) == ["active", "standby"], states
    assert [states[n] for n in (1, 2, 3, 4)] == ["active", "active", "active", "standby"], states
    print(f"\ndefault topology: chassis up returned after {up_s:.1f} s, DPCs serving after "
          f"{serving_s:.1f} s, 49 tunnels x 2 children after {tunnels_s:.1f} s (fleet ramp "
          f"{st['all_up_s']} s from its first dial, {st['probes']} probe(s))")  # fmt: skip


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
        lambda: ours(ch.exec("show crypto ikev2-ikesa security-associations")[0].data["sas"]),
        5,
        what="the SA at the card",
    )
    (row,) = rows  # beside the lab fleet's
    assert row["peer_id"] == "enb7.lab.example" and row["address"] == inner
    assert row["state"] == "ESTABLISHED" and row["children"] >= 1  # the gateway adds oam (MCSA)
    child = ch.exec("show crypto ipsec security-associations")[0]
    (c,) = [c for c in ours(child.data["sas"]) if c["payload"] == "s1"]
    assert c["tsi"] == inner and c["suite"] == "AES_GCM_16_256" and c["lifetime_s"] > 86000
    assert c["tsr"] == "0.0.0.0/0[17/2152]"  # narrowed to the S1-U payload's selectors
    assert int(c["spi_in"][:2], 16) == c["card"]  # our inbound SPI carries the slot

    def counted():  # the summary and the card table count the same child SAs, ours among them
        summary = ch.exec("show crypto ipsec security-associations summary")[0].data
        table = ch.exec("show card table")[0].data["cards"]
        children = {str(r["slot"]): (r.get("counters") or {}).get("child_sas", 0)
                    for r in table if r["type"] == "dpc"}  # fmt: skip
        return summary["total"] >= 1 and summary["per_card"] == children

    wait_until(counted, 10, 0.2, what="the card table's child counts agreeing with the summary")


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
    (c,) = [c for c in ours(ch.exec("show crypto ipsec security-associations")[0].data["sas"])
            if c["spi_in"] == spi_in]  # fmt: skip
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
    verdict = wait_until(  # the lab fleet's revoked enb0050 is refused too: ours, by name
        lambda: [line for line in dpc_logs(ch).splitlines()
                 if "enb7.lab.example" in line and "REFUSED: OCSP revoked" in line],
        5,
        what="the DPC's verdict in its log",
    )  # fmt: skip
    assert "keyCompromise" in verdict[0]
    revoked = len(Authority(ch.run.root / "lab" / "ca", now).revoked())  # enb0050's too

    ch.lab_set("ocsp", {"down": True})
    url = ch.exec("show ca-crl name lab-issuing")[0].data["items"][0]["url"]
    res = ch.exec("configure", f"ca-crl name lab-issuing der url {url}", "end")
    assert not any(r.error for r in res), [r.output for r in res]
    wait_until(
        lambda: ch.exec("show ca-crl name lab-issuing")[0].data["items"][0]["count"] == revoked,
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


def ours(rows: list[dict]) -> list[dict]:
    """The rows of this module's eNodeB (the lab fleet's are enbNNNN.lab.example)."""
    return [r for r in rows if r.get("peer_id") == "enb7.lab.example"]


def dpc_logs(ch) -> str:
    """The DPCs' logs (a card logs a verdict just after sending its answer)."""
    return "".join(p.read_text() for p in ch.run.logs.glob("dpc-*.log"))
