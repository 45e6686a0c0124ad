"""Revocation end to end: strongSwan eNodeBs, `openssl ocsp` as the responder, the CRL on a
real HTTP server (http.server), the chassis in between.

The template says `ocsp` and `ca-crl list ca-crl-name root-crl`. The MIO fetches the CRL,
verifies it against the configured CA, indexes it in a worker and sends the index to every
DPC; the DPC that takes IKE_AUTH verifies charon's chain and AUTH, then POSTs an OCSP
request to the responder named in the certificate's AIA and waits for it (the request is
parked). A revoked eNodeB is refused through OCSP; with the responder down, through the
CRL; a good one comes up either way.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from helpers import wait_until, write_topology
from servers import _readline, _start, _stop, _wait_tcp, free_tcp_port
from strongswan import Charon
from test_e2e_strongswan import free_udp_port, pem

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPO = """\
name: revocation
platform: asr5500
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
"""
NOW = dt.datetime.now(dt.UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(cn, key, ca_key, serial, *, ca=False, ocsp_url=None, crl_url=None):
    b = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name("Lab Root"))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    if ocsp_url:
        desc = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        b = b.add_extension(x509.AuthorityInformationAccess([desc]), critical=False)
    if crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        b = b.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return b.sign(ca_key, hashes.SHA256())


class Lab:
    """A root CA, the gateway's and two eNodeBs' certificates (one revoked), the CRL."""

    def __init__(self, home, ocsp_port: int, http_port: int) -> None:
        self.home = home
        self.keys = {
            n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "gw", "good", "bad")
        }
        ca_key = self.keys["ca"]
        self.ocsp_url = f"http://127.0.0.1:{ocsp_port}/"
        self.crl_url = f"http://127.0.0.1:{http_port}/root.crl"
        self.ca = issue("Lab Root", ca_key, ca_key, 1, ca=True)
        self.gw = issue("segw.example.net", self.keys["gw"], ca_key, 2)
        self.certs = {
            who: issue(
                f"{who}.enb.example.net",
                self.keys[who],
                ca_key,
                serial,
                ocsp_url=self.ocsp_url,
                crl_url=self.crl_url,
            )  # fmt: skip
            for who, serial in (("good", 0x1001), ("bad", 0x1002))
        }
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.subject)
            .last_update(NOW - dt.timedelta(minutes=5))
            .next_update(NOW + dt.timedelta(hours=1))
            .add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(0x1002)
                .revocation_date(NOW - dt.timedelta(minutes=10))
                .build()
            )
            .add_extension(x509.CRLNumber(1), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (home / "www").mkdir()
        (home / "www" / "root.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
        (home / "ca.crt").write_bytes(pem(self.ca))
        (home / "ca.key").write_bytes(pem(ca_key))
        stamp = (NOW - dt.timedelta(minutes=10)).strftime("%y%m%d%H%M%SZ")
        end = (NOW + dt.timedelta(days=30)).strftime("%y%m%d%H%M%SZ")
        (home / "index.txt").write_text(
            f"V\t{end}\t\t1001\tunknown\t/CN=good.enb.example.net\n"
            f"R\t{end}\t{stamp}\t1002\tunknown\t/CN=bad.enb.example.net\n"
        )


def start_ocsp(home, port: int) -> subprocess.Popen:
    """`openssl ocsp` as the responder, signing with the CA itself (INTEROP.md)."""
    proc = _start(["openssl", "ocsp", "-index", str(home / "index.txt"), "-port", str(port),
                   "-rsigner", str(home / "ca.crt"), "-rkey", str(home / "ca.key"),
                   "-CA", str(home / "ca.crt"), "-nmin", "5", "-ignore_err"])  # fmt: skip
    # Ready once it prints ACCEPT. Not a connect probe: a connection closed without a
    # request wedges `openssl ocsp` 3.0 (it never accepts another one).
    line = _readline(proc, 10)
    assert line.startswith("ACCEPT"), f"openssl ocsp did not start: {line!r}"
    return proc


def start_http(root, port: int) -> subprocess.Popen:
    proc = _start([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                   "--directory", str(root)])  # fmt: skip
    _wait_tcp(proc, port, "http.server")
    return proc


def logged(path, line: str) -> str:
    """The log once it holds ``line`` (bounded)."""
    return wait_until(lambda: line in (text := path.read_text()) and text, 5, what=line)


def charon_for(tmp_path, lab: Lab, who: str, gw_port: int) -> Charon:
    port = free_udp_port()
    charon = Charon(tmp_path / f"charon-{who}", port)
    d = charon.swanctl_dir
    (d / "x509ca" / "ca.pem").write_bytes(pem(lab.ca))
    (d / "x509" / "enb.pem").write_bytes(pem(lab.certs[who]))
    (d / "private" / "enb.pem").write_bytes(pem(lab.keys[who]))
    (d / "swanctl.conf").write_text(f"""
connections {{
  segw {{
    version = 2
    local_addrs = 127.0.0.1
    remote_addrs = 127.0.0.1
    local_port = {port}
    remote_port = {gw_port}
    proposals = aes256gcm16-prfsha256-ecp256
    mobike = no
    local {{
      auth = pubkey
      certs = enb.pem
      id = {who}.enb.example.net
    }}
    remote {{
      auth = pubkey
      id = segw.example.net
      revocation = relaxed
    }}
    children {{
      c {{
        remote_ts = 10.0.0.0/8
        esp_proposals = aes256gcm16
      }}
    }}
  }}
}}
""")
    return charon


def attempt(tmp_path, lab: Lab, who: str, gw_port: int) -> str:
    """One charon eNodeB initiates; returns its log once it is established or refused."""
    charon = charon_for(tmp_path, lab, who, gw_port)
    charon.start()
    try:
        loaded = charon.swanctl("--load-all")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        charon.swanctl("--initiate", "--child", "c", "--timeout", "15", timeout=30)
        wait_until(
            lambda: (
                "ESTABLISHED" in charon.swanctl("--list-sas").stdout
                or "AUTHENTICATION_FAILED" in charon.log()
            ),
            20,
            what=f"charon {who} established or refused",
        )
        return charon.log()
    finally:
        charon.stop()


def test_revoked_enodebs_are_refused_through_ocsp_then_through_the_crl(chassis_factory, tmp_path):
    ocsp_port, http_port = free_tcp_port(), free_tcp_port()
    lab = Lab(tmp_path, ocsp_port, http_port)
    responder = start_ocsp(tmp_path, ocsp_port)
    web = start_http(tmp_path / "www", http_port)
    try:
        ch = chassis_factory(write_topology(tmp_path, TOPO))
        files = {"ca.crt": pem(lab.ca), "gw.crt": pem(lab.gw), "gw.key": pem(lab.keys["gw"])}
        for fname, data in files.items():
            (ch.run.flash / fname).write_bytes(data)
        gw_port = free_udp_port()
        res = ch.exec(
            "configure",
            "ca-certificate name lab-root pem url /flash/ca.crt",
            "certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key",
            f"ca-crl name root-crl der url {lab.crl_url}",
            "context segw",
            "crypto template tmpl ikev2-dynamic",
            "authentication local certificate",
            "authentication remote certificate",
            "certificate name segw",
            "ca-certificate list ca-cert-name lab-root",
            "ocsp nonce",
            "ca-crl list ca-crl-name root-crl",
            "exit",
            "wsg-service svc",
            f"bind address 127.0.0.1 port {gw_port} crypto-template tmpl",
            "end",
        )
        assert not any(r.error for r in res), [r.output for r in res if r.error]

        def shown():
            return ch.exec("show ca-crl name root-crl")[0]

        # The MIO fetched and verified the CRL; the DPC acked the version that carries it.
        wait_until(lambda: shown().data["items"][0]["cards"].get(1) == "v1", 15,
                   what="the CRL on DPC 1")  # fmt: skip
        row = shown().data["items"][0]
        assert row["count"] == 1 and row["number"] == 1 and row["last_result"] == "ok"
        assert row["issuer"] == "CN=Lab Root"
        wait_until(lambda: ch.status().get("npu") is not None, 5, what="the NPU")
        dpc_log = ch.run.logs / "dpc-1.log"

        assert "ESTABLISHED" in attempt(tmp_path, lab, "good", gw_port), dpc_log.read_text()[-3000:]
        refused = attempt(tmp_path, lab, "bad", gw_port)
        assert "AUTHENTICATION_FAILED" in refused
        verdict = "revocation of CN=bad.enb.example.net: REFUSED: OCSP revoked"
        text = logged(dpc_log, verdict)  # the card logs its verdict just after answering
        assert "revocation of CN=good.enb.example.net: not revoked: OCSP good" in text
        assert "never overridden" in text  # the CRL was consulted and logged as well

        _stop(responder)  # the responder is down: the CRL decides
        responder = None
        refused = attempt(tmp_path, lab, "bad", gw_port)
        assert "AUTHENTICATION_FAILED" in refused
        assert "ESTABLISHED" in attempt(tmp_path, lab, "good", gw_port)
        text = logged(dpc_log, "ca-crl root-crl: serial 1001 not revoked")
        assert "ca-crl root-crl: serial 1002 revoked" in text
        assert f"OCSP {lab.ocsp_url}: Connection refused" in text  # the failure is named

        # A responder that accepts the connection and never answers: the revocation timer
        # (1 s, well inside charon's first retransmission at 4 s) ends the wait, the CRL decides.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
            res = ch.exec("configure", "context segw", "crypto template tmpl ikev2-dynamic",
                          f"ocsp responder-address {url}", "revocation setup-timer 1", "end")  # fmt: skip
            assert not any(r.error for r in res), [r.output for r in res if r.error]
            time.sleep(1)  # the card rebuilds its endpoint from the new template
            assert "AUTHENTICATION_FAILED" in attempt(tmp_path, lab, "bad", gw_port)
        logged(dpc_log, f"OCSP {url}: no answer within 1 s; ca-crl root-crl: serial 1002 revoked")
    finally:
        if responder is not None:
            _stop(responder)
        _stop(web)
