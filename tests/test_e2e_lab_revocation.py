"""The lab's OCSP responder and CRL publisher on a live chassis.

`chassis up` with `lab: ca, ocsp (delegated signer), crl`: the gateway enrolls its certificate
from the lab CA (CMPv2) and it names the lab's OCSP responder and CRL distribution points.
`chassis lab revoke` (through the CA's admin endpoint) flips the OCSP answer to revoked and a
new CRL lists it at once, over http, in the /usb1 file and over ldap; OpenSSL's clients check
every answer. Behaviours are set at run time (`chassis lab set`), a warp moves the peers'
clock, a killed responder refuses connections, and a restart on the same run directory keeps
the URLs that certificates already carry.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from helpers import wait_until, write_topology

from chassis import procs
from chassis.lab.authority import Authority
from chassis.lab.peer import LabClock

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

OPENSSL = shutil.which("openssl")
TIMEOUT = 30

TOPOLOGY = """\
name: revocation
platform: asr5500
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
lab:
  ca: {psk: s3cret}
  ocsp: {delegate: true, next-update-s: 600}
  crl: {next-update-s: 3600}
startup-config: |
  config
    ca-certificate name lab-root pem url ${lab.ca.root}
  end
  cmp initialize modulus 2048 cert-name segw subject-name "/O=Lab/CN=segw.example.net" ca-psk s3cret ca-root lab-root ca-url ${lab.ca.url}
"""


def chassis_cli(ch, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chassis", *args, "--run-dir", str(ch.run.root)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip


def gateway_certificate(ch) -> Path | None:
    data = ch.exec("show certificate name segw")[0].data
    if not data:
        return None
    url = data["items"][0]["url"]  # file:/flash/...
    return ch.run.root / url.removeprefix("file:/")


class Trust:
    def __init__(self, ch, tmp_path: Path) -> None:
        ca = ch.run.root / "lab" / "ca"
        self.issuing, self.root = ca / "issuing.crt", ca / "root.crt"
        self.chain = tmp_path / "chain.pem"
        self.chain.write_bytes(self.root.read_bytes() + self.issuing.read_bytes())
        self.ocsp = ch.manifest["lab"]["ocsp"]["url"]
        self.crl = ch.manifest["lab"]["crl"]
        self.tmp = tmp_path

    def openssl_ocsp(self, cert: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [OPENSSL, "ocsp", "-issuer", str(self.issuing), "-cert", str(cert), "-url", self.ocsp,
             "-CAfile", str(self.chain), "-timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
        )  # fmt: skip

    def http_crl(self) -> x509.CertificateRevocationList:
        der = httpx.get(self.crl["url"], timeout=TIMEOUT, trust_env=False).content
        path = self.tmp / "issuing.crl"
        path.write_bytes(der)
        res = subprocess.run(
            [OPENSSL, "crl", "-inform", "DER", "-in", str(path), "-CAfile", str(self.chain),
             "-noout"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert res.returncode == 0 and "verify OK" in res.stdout, res.stdout
        return x509.load_der_x509_crl(der)

    def ldap_crl(self) -> x509.CertificateRevocationList:
        hostport, _, rest = self.crl["ldap"].removeprefix("ldap://").partition("/")
        dn, _, attr = rest.partition("?")
        host, port = hostport.rsplit(":", 1)
        conn = ldap3.Connection(
            ldap3.Server(host, port=int(port), get_info=ldap3.NONE, connect_timeout=5),
            auto_bind=True, receive_timeout=10,
        )  # fmt: skip
        try:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[attr])
            return x509.load_der_x509_crl(conn.response[0]["raw_attributes"][attr][0])
        finally:
            conn.unbind()


def listed(crl: x509.CertificateRevocationList, serial: int) -> bool:
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


def this_update(url: str, cert: x509.Certificate, issuer: x509.Certificate) -> dt.datetime:
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    resp = httpx.post(url, content=req.public_bytes(serialization.Encoding.DER),
                      timeout=TIMEOUT, trust_env=False)  # fmt: skip
    return ocsp.load_der_ocsp_response(resp.content).this_update_utc


def test_revoke_flips_ocsp_and_lists_in_every_crl(chassis_factory, tmp_path):
    assert OPENSSL, "openssl is required"
    ch = chassis_factory(write_topology(tmp_path, TOPOLOGY))
    lab = ch.status()["lab"]
    assert set(lab) == {"ca", "ocsp", "crl"} and all(p["pid"] for p in lab.values())
    pem = wait_until(lambda: gateway_certificate(ch), 15, 0.2, what="boot-time enrolment")
    trust = Trust(ch, tmp_path)
    cert = x509.load_pem_x509_certificate(pem.read_bytes())

    # the certificate from CMP names the lab's responder and distribution points
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == [trust.ocsp]
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in cdp[0].full_name] == [trust.crl["url"], trust.crl["ldap"]]

    res = trust.openssl_ocsp(pem)
    assert "Response verify OK" in res.stdout and f"{pem}: good" in res.stdout, res.stdout
    first = trust.http_crl()
    assert not listed(first, cert.serial_number)

    out = chassis_cli(ch, "lab", "revoke", str(pem), "--reason", "keyCompromise")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"revoked: {cert.serial_number:X} (CN=segw.example.net,O=Lab)")
    assert "CRL issuing #" in out.stdout

    res = trust.openssl_ocsp(pem)
    assert "Response verify OK" in res.stdout and f"{pem}: revoked" in res.stdout, res.stdout
    assert "Reason: keyCompromise" in res.stdout
    crl = trust.http_crl()
    assert listed(crl, cert.serial_number)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    usb = x509.load_der_x509_crl((ch.run.root / "usb1" / "lab-crl" / "issuing.crl").read_bytes())
    assert listed(usb, cert.serial_number)
    assert listed(trust.ldap_crl(), cert.serial_number)

    # a certificate issued in another process (what the eNodeB fleet does): URLs, revocation
    authority = Authority(ch.run.root / "lab" / "ca", LabClock().now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enb0001.lab.example")])
    enb = authority.issue(subject, key.public_key())
    aia = enb.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == [trust.ocsp]
    enb_pem = tmp_path / "enb.pem"
    enb_pem.write_bytes(enb.public_bytes(serialization.Encoding.PEM))
    assert f"{enb_pem}: good" in trust.openssl_ocsp(enb_pem).stdout
    serial = ":".join(f"{b:02X}" for b in enb.serial_number.to_bytes(20, "big").lstrip(b"\0"))
    out = chassis_cli(ch, "lab", "revoke", serial, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["reason"] == "unspecified"
    assert f"{enb_pem}: revoked" in trust.openssl_ocsp(enb_pem).stdout
    assert listed(trust.ldap_crl(), enb.serial_number)
    again = chassis_cli(ch, "lab", "revoke", serial)
    assert again.returncode == 0 and again.stdout.startswith("already revoked")
    nope = chassis_cli(ch, "lab", "revoke", "ABCDEF")
    assert nope.returncode == 1 and "not issued by the lab CA" in nope.stderr

    # behaviours at run time, then a warp of every lab peer's clock
    out = chassis_cli(ch, "lab", "set", "ocsp", "error=tryLater")
    assert out.returncode == 0 and 'error="tryLater"' in out.stdout, out.stderr
    assert "Responder Error: trylater (3)" in trust.openssl_ocsp(pem).stdout
    assert chassis_cli(ch, "lab", "set", "ocsp", "error=false").returncode == 0
    status = chassis_cli(ch, "lab", "status")
    assert status.returncode == 0, status.stderr
    assert "signer       delegate" in status.stdout and "ldap         running on" in status.stdout
    before = this_update(trust.ocsp, enb, authority.issuing)
    warp = chassis_cli(ch, "fault", "warp", "--hours", "2")
    assert warp.returncode == 0, warp.stderr
    assert this_update(trust.ocsp, enb, authority.issuing) - before > dt.timedelta(hours=1.9)
    wait_until(lambda: trust.http_crl().last_update_utc > first.last_update_utc
               + dt.timedelta(hours=1.9), 5, 0.1, what="a CRL after the warp")  # fmt: skip

    # a killed responder is really down: connections refused
    rec = json.loads(ch.run.pids_path.read_text())["lab-ocsp"]
    assert procs.signal_verified(rec["pid"], rec["start"], signal.SIGKILL)
    wait_until(lambda: not ch.status()["lab"]["ocsp"]["pid"], 5, what="the responder's death")
    host, port = trust.ocsp.removeprefix("http://").split("/")[0].rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):  # (openssl would retry until its timeout)
        socket.create_connection((host, int(port)), timeout=5).close()


def test_a_restart_on_the_same_run_directory_keeps_the_urls(chassis_factory, tmp_path):
    run_dir = tmp_path / "run"
    topo = write_topology(tmp_path, TOPOLOGY.replace("delegate: true", "delegate: false"))
    ch = chassis_factory(topo, run_dir=run_dir)
    pem = wait_until(lambda: gateway_certificate(ch), 15, 0.2, what="boot-time enrolment")
    kept = tmp_path / "segw.pem"
    shutil.copy(pem, kept)
    before = dict(ch.manifest["lab"])
    assert chassis_cli(ch, "lab", "revoke", str(kept)).returncode == 0
    ch.down()
    ch = chassis_factory(topo, run_dir=run_dir)
    assert ch.manifest["lab"]["ocsp"] == before["ocsp"]
    assert ch.manifest["lab"]["crl"] == before["crl"]
    trust = Trust(ch, tmp_path)
    res = trust.openssl_ocsp(kept)  # the URL in the certificate answers again
    assert "Response verify OK" in res.stdout and f"{kept}: revoked" in res.stdout, res.stdout
    cert = x509.load_pem_x509_certificate(kept.read_bytes())
    assert listed(trust.http_crl(), cert.serial_number)
    status = ch.run.root / "lab" / "crl" / "status.json"  # what `chassis status` shows
    wait_until(status.exists, 5, what="the publisher's status file")
    assert json.loads(status.read_text())["crls"]["issuing"]["revoked"] == 1
