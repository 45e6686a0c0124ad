"""While a big CRL is refreshed again and again, heartbeats and tunnel setup keep going.

A 300,000-entry CRL (11 MB) on the MIO's /flash is fetched, verified against the configured
CA, parsed and indexed in a worker process and sent to both DPCs (about 6 MB of index each)
four more times, each time a new CRL (new serials, a higher CRL number). Meanwhile eNodeBs
bring tunnels up, no card is ever declared failed, and every DPC ends holding the last
version, which refuses the eNodeB it lists. (The 1,000,000-entry figures are in
tests/benchmarks/bench_crl.py, outside the test suite.)
"""

from __future__ import annotations

import datetime as dt

import pytest
from crl_material import write_crl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import ike_attempt, wait_until, write_topology
from test_e2e_strongswan import free_udp_port

from cards.ike.config import ChildPolicy, ChildProposal, Credentials, IkeConfig, IkeProposal
from cards.ike.const import DhGroup, Encr, Integ, Prf

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPO = """\
name: crl-refresh
platform: asr5500
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
"""
ENTRIES = 300_000
NOW = dt.datetime.now(dt.UTC)


def certificate(cn: str, key, ca_key, serial: int, *, ca: bool = False) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Refresh CA")]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    return b.sign(ca_key, hashes.SHA256())


def pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def enodeb(cert, key, ca) -> IkeConfig:
    return IkeConfig(
        Credentials(cert, key, ()),
        (ca,),
        proposals=(IkeProposal(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_256, Integ.NONE,
                               DhGroup.ECP_256),),
        children=(ChildPolicy(proposals=(ChildProposal(Encr.AES_GCM_16, 256),)),),
    )  # fmt: skip


class Lab:
    """A CA, the gateway's certificate and two eNodeBs' (good, and bad: the one a CRL lists)."""

    def __init__(self) -> None:
        self.keys = {
            n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "gw", "good", "bad")
        }
        self.ca = certificate("Refresh CA", self.keys["ca"], self.keys["ca"], 1, ca=True)
        self.gw = certificate("segw.example.net", self.keys["gw"], self.keys["ca"], 2)
        self.good = certificate("good.enb.example.net", self.keys["good"], self.keys["ca"], 0x5001)
        self.bad = certificate("bad.enb.example.net", self.keys["bad"], self.keys["ca"], 0x5002)

    def enodeb(self, name: str) -> IkeConfig:
        return enodeb(getattr(self, name), self.keys[name], self.ca)

    def configure(self, ch, crl: str) -> int:
        """Put the CA and the gateway's credentials on /flash and configure a template that
        checks CRL `crl` (/flash/CRL.crl, written by the caller) on a free port; the port."""
        for name, data in {"ca.crt": pem(self.ca), "gw.crt": pem(self.gw),
                           "gw.key": pem(self.keys["gw"])}.items():  # fmt: skip
            (ch.run.flash / name).write_bytes(data)
        port = free_udp_port()
        res = ch.exec(
            "configure",
            "ca-certificate name refresh-ca pem url /flash/ca.crt",
            "certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key",
            f"ca-crl name {crl} der url /flash/{crl}.crl",
            "context segw",
            "crypto template tmpl ikev2-dynamic",
            "authentication local certificate",
            "authentication remote certificate",
            "certificate name segw",
            "ca-certificate list ca-cert-name refresh-ca",
            f"ca-crl list ca-crl-name {crl}",
            "exit",
            "wsg-service svc",
            f"bind address 127.0.0.1 port {port} crypto-template tmpl",
            "end",
        )
        assert not any(r.error for r in res), [r.output for r in res if r.error]
        return port


def test_refreshing_a_big_crl_stalls_neither_heartbeats_nor_tunnels(chassis_factory, tmp_path):
    lab = Lab()
    ca, keys, bad = lab.ca, lab.keys, lab.bad
    ch = chassis_factory(write_topology(tmp_path, TOPO))
    flash = ch.run.flash
    write_crl(flash / "big.crl", ca, keys["ca"], ENTRIES, seed=1, number=1)
    port = lab.configure(ch, "big")

    def held() -> set[str]:
        (row,) = ch.exec("show ca-crl name big")[0].data["items"]
        return set(row["cards"].values()) if len(row["cards"]) == 2 else set()

    wait_until(lambda: held() == {"v1"}, 30, what="the first CRL on both DPCs")
    wait_until(lambda: ch.status().get("npu") is not None, 5, what="the NPU")
    for version in range(2, 6):  # four refreshes, the last one revoking `bad`
        extra = (bad.serial_number,) if version == 5 else ()
        write_crl(flash / "big.crl", ca, keys["ca"], ENTRIES, seed=version, number=version,
                  extra=extra)  # fmt: skip
        res = ch.exec("configure", "ca-crl name big der url /flash/big.crl", "end")
        assert not any(r.error for r in res), [r.output for r in res if r.error]
        # tunnels come up while the MIO parses, indexes and sends the new CRL
        (event,) = ike_attempt(lab.enodeb("good"), ("127.0.0.1", port))
        assert type(event).__name__ == "Established", event
        wait_until(lambda v=version: held() == {f"v{v}"}, 30, what=f"CRL v{version} on both")

    (row,) = ch.exec("show ca-crl name big")[0].data["items"]
    assert row["count"] == ENTRIES + 1 and row["number"] == 5 and row["last_result"] == "ok"
    (refused,) = ike_attempt(lab.enodeb("bad"), ("127.0.0.1", port))
    assert type(refused).__name__ == "AuthFailed"
    cards = [c for c in ch.exec("show card table")[0].data["cards"] if c["type"] == "dpc"]
    assert [c["state"] for c in cards] == ["active", "active"], cards
    sup_log = (ch.run.logs / "mio-5.log").read_text()
    assert ": failed:" not in sup_log, sup_log[-3000:]  # the card manager's failure line
