"""The lab's OCSP responder and CRL publisher, in this process, checked by real clients.

The OCSP responder (chassis.lab.ocsp_responder behind ocsp_server's HTTP front) and the CRL
publisher (chassis.lab.crl_publisher behind crl_server, with its own slapd) serve a lab CA in
a temporary directory on 127.0.0.1. OpenSSL's client (`openssl ocsp`, `openssl crl`) checks
what they publish, cryptography reads the fields, ldap3 reads the directory. Every openssl call
is a bounded child process.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import shutil
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from helpers import wait_until

from chassis import topology
from chassis.backplane import lab_endpoints, revocation_urls, write_revocation_urls
from chassis.cli import certificate_serial
from chassis.ipc.rundir import RunDir
from chassis.lab import ldap_directory
from chassis.lab.authority import Authority
from chassis.lab.ca_server import make_handler
from chassis.lab.cmp_responder import Behaviour, Responder
from chassis.lab.crl_publisher import CrlPublisher, crl_behaviour
from chassis.lab.crl_server import CrlPeer
from chassis.lab.ocsp_responder import OcspResponder, ocsp_behaviour
from chassis.lab.ocsp_server import OcspPeer
from chassis.lab.peer import LabClock, serve

OPENSSL = shutil.which("openssl")
TIMEOUT = 30  # seconds, for every child process and HTTP call
log = logging.getLogger("test-lab-revocation")
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Lab:
    """A lab CA on disk, with PEM files for openssl, and certificates it issued."""

    def __init__(self, home: Path) -> None:
        self.dir = home
        self.clock = LabClock()
        self.ca = Authority(home / "ca", self.clock.now)
        self.lock = threading.Lock()
        self.issuing = self.write("issuing.pem", self.ca.issuing)
        self.root = self.write("root.pem", self.ca.root)
        self.chain = home / "chain.pem"  # trust store for openssl: both lab CAs
        self.chain.write_bytes(self.root.read_bytes() + self.issuing.read_bytes())

    def write(self, file: str, cert: x509.Certificate) -> Path:
        path = self.dir / file
        path.write_bytes(cert.public_bytes(PEM))
        return path

    def issue(self, cn: str, issuer: str = "intermediate") -> tuple[x509.Certificate, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.ca.issue(name(cn), key.public_key(), issuer=issuer)
        return cert, self.write(f"{cn}.pem", cert)

    def stranger(self, cn: str) -> tuple[x509.Certificate, Path]:
        """Signed with the issuing CA's key but never recorded: the CA does not know it."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = self.clock.now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(self.ca.issuing.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self.ca.issuing_key, hashes.SHA256())
        )
        return cert, self.write(f"{cn}.pem", cert)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    assert OPENSSL, "openssl is required for the lab revocation tests"
    return Lab(tmp_path_factory.mktemp("lab"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """An openssl command; stdout and stderr together, in order."""
    return subprocess.run(
        [OPENSSL, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip


# ------------------------------------------------------------------------- OCSP


class OcspServer:
    def __init__(self, lab: Lab, **settings) -> None:
        # its own Authority on the lab's files, as in its own process
        self.responder = OcspResponder(Authority(lab.dir / "ca", lab.clock.now), lab.clock.now,
                                       **settings)  # fmt: skip
        self.peer = OcspPeer(self.responder, lab.clock)
        self.http = serve(self.peer, 0, log)
        self.port = self.http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/ocsp"
        self.admin = f"http://127.0.0.1:{self.port}/admin"

    def set(self, **changes) -> dict:
        resp = httpx.post(self.admin, json=changes, timeout=TIMEOUT, trust_env=False)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def responder(lab):
    server = OcspServer(lab)
    yield server
    server.close()


@pytest.fixture
def delegated(lab):
    server = OcspServer(lab, delegate=True)
    yield server
    server.close()


def openssl_ocsp(lab: Lab, server: OcspServer, cert: Path, *extra: str, issuer=None):
    return run(
        "ocsp", "-issuer", str(issuer or lab.issuing), "-cert", str(cert), "-url", server.url,
        "-CAfile", str(lab.chain), "-timeout", "20", *extra,
    )  # fmt: skip


def ask(server: OcspServer, cert, issuer, nonce: bytes | None = None) -> ocsp.OCSPResponse:
    """A request from cryptography, POSTed; the parsed response. `cert` may be a serial
    number, asked of `issuer`."""
    if isinstance(cert, int):
        name_hash, key_hash = server.responder._issuer_hashes(
            "root" if issuer == server.responder.ca.root else "intermediate", hashes.SHA1()
        )
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            name_hash, key_hash, cert, hashes.SHA1()
        )
    else:
        builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    resp = httpx.post(
        server.url, content=builder.build().public_bytes(DER), timeout=TIMEOUT, trust_env=False,
        headers={"Content-Type": "application/ocsp-request"},
    )  # fmt: skip
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(resp.content)


def verify_signature(resp: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    """cryptography parses but does not verify OCSP responses (INTEROP.md): do it here."""
    signer.public_key().verify(
        resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm)
    )


def test_openssl_sees_good_revoked_and_unknown(lab, responder):
    _, good = lab.issue("ocsp-good")
    revoked, revoked_pem = lab.issue("ocsp-revoked")
    _, stranger = lab.stranger("ocsp-stranger")
    res = openssl_ocsp(lab, responder, good)
    assert res.returncode == 0 and "Response verify OK" in res.stdout, res.stdout
    assert f"{good}: good" in res.stdout
    assert lab.ca.revoke(revoked.serial_number, "keyCompromise")
    res = openssl_ocsp(lab, responder, revoked_pem)
    assert "Response verify OK" in res.stdout and f"{revoked_pem}: revoked" in res.stdout
    assert "Reason: keyCompromise" in res.stdout and "Revocation Time:" in res.stdout
    res = openssl_ocsp(lab, responder, stranger)
    assert "Response verify OK" in res.stdout and f"{stranger}: unknown" in res.stdout
    counts = responder.set()["behaviour"]["counts"]
    assert counts["good"] == 1 and counts["revoked"] == 1 and counts["unknown"] == 1


def test_cryptography_reads_the_answer_fields_and_the_nonce_comes_back(lab, responder):
    cert, _ = lab.issue("ocsp-fields")
    before = lab.clock.now().replace(microsecond=0)
    resp = ask(responder, cert, lab.ca.issuing, nonce=b"0123456789abcdef")
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert resp.serial_number == cert.serial_number
    assert before <= resp.this_update_utc <= lab.clock.now()
    assert resp.next_update_utc - resp.this_update_utc == dt.timedelta(seconds=300)
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == (
        b"0123456789abcdef"
    )
    assert (
        resp.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(lab.ca.issuing.public_key()).digest
    )
    verify_signature(resp, lab.ca.issuing)
    lab.ca.revoke(cert.serial_number, "superseded")
    resp = ask(responder, cert, lab.ca.issuing)
    assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason == x509.ReasonFlags.superseded
    assert abs(resp.revocation_time_utc - lab.clock.now()) < dt.timedelta(seconds=5)
    with pytest.raises(x509.ExtensionNotFound):  # no nonce asked, none sent
        resp.extensions.get_extension_for_class(x509.OCSPNonce)


def test_nonce_false_ignores_the_nonce(lab):
    server = OcspServer(lab, nonce=False, next_update_s=60)
    try:
        cert, pem = lab.issue("ocsp-nonce")
        resp = ask(server, cert, lab.ca.issuing, nonce=b"0123456789abcdef")
        with pytest.raises(x509.ExtensionNotFound):
            resp.extensions.get_extension_for_class(x509.OCSPNonce)
        assert resp.next_update_utc - resp.this_update_utc == dt.timedelta(seconds=60)
        res = openssl_ocsp(lab, server, pem)  # OpenSSL notices the missing nonce
        assert "WARNING: no nonce in response" in res.stdout and f"{pem}: good" in res.stdout
    finally:
        server.close()


def test_a_revocation_by_another_process_shows_at_once(lab, responder):
    cert, pem = lab.issue("ocsp-elsewhere")
    assert openssl_ocsp(lab, responder, pem).stdout.count(": good") == 1
    other = Authority(lab.dir / "ca", lab.clock.now)  # what the CA process does
    assert other.revoke(cert.serial_number, "cessationOfOperation")
    res = openssl_ocsp(lab, responder, pem)
    assert f"{pem}: revoked" in res.stdout and "Reason: cessationOfOperation" in res.stdout


def test_certificates_from_the_root_are_answered_and_signed_by_the_root(lab, responder):
    cert, pem = lab.issue("ocsp-from-root", issuer="root")
    res = openssl_ocsp(lab, responder, pem, issuer=lab.root)
    assert "Response verify OK" in res.stdout and f"{pem}: good" in res.stdout
    verify_signature(ask(responder, cert, lab.ca.root), lab.ca.root)
    # the same serial asked of the issuing CA is not one of its certificates
    asked = ask(responder, cert.serial_number, lab.ca.issuing)
    assert asked.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    # the issuing CA's own certificate, asked of the root
    issuing = ask(responder, lab.ca.issuing, lab.ca.root)
    assert issuing.certificate_status == ocsp.OCSPCertStatus.GOOD


def test_a_foreign_issuer_is_unauthorized(lab, responder, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    now = lab.clock.now()
    foreign = (
        x509.CertificateBuilder().subject_name(name("foreign")).issuer_name(name("foreign"))
        .public_key(key.public_key()).serial_number(7)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    resp = ask(responder, foreign, foreign)
    assert resp.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_delegated_responder_is_verified_by_openssl(lab, delegated):
    cert, pem = lab.issue("ocsp-delegated")
    res = openssl_ocsp(lab, delegated, pem, "-resp_text")
    assert res.returncode == 0 and "Response verify OK" in res.stdout, res.stdout
    assert f"{pem}: good" in res.stdout
    assert "SeGW Lab OCSP Responder (Issuing CA)" in res.stdout
    resp = ask(delegated, cert, lab.ca.issuing)
    (signer,) = resp.certificates
    assert signer.issuer == lab.ca.issuing.subject
    signer.verify_directly_issued_by(lab.ca.issuing)
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    verify_signature(resp, signer)
    assert (
        resp.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(signer.public_key()).digest
    )
    lab.ca.revoke(cert.serial_number, "affiliationChanged")
    res = openssl_ocsp(lab, delegated, pem)
    assert "Response verify OK" in res.stdout and f"{pem}: revoked" in res.stdout
    # the root's delegate for the root's certificates
    _, from_root = lab.issue("ocsp-delegated-root", issuer="root")
    res = openssl_ocsp(lab, delegated, from_root, "-resp_text", issuer=lab.root)
    assert "Response verify OK" in res.stdout and "OCSP Responder (Root CA)" in res.stdout


def test_delegate_is_renewed_before_it_expires(lab):
    clock = LabClock()
    authority = Authority(lab.dir / "ca", clock.now, validity_days=2)
    responder = OcspResponder(authority, clock.now, delegate=True)
    first, _ = responder.signer("intermediate")
    assert responder.signer("intermediate")[0] == first
    clock.offset += 1.5 * 86400  # within a day of its end
    second, _ = responder.signer("intermediate")
    assert second != first and second.not_valid_after_utc > first.not_valid_after_utc


def test_get_with_base64_in_the_path(lab, responder):
    cert, _ = lab.issue("ocsp-get")
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, lab.ca.issuing, hashes.SHA256()).build()
    b64 = base64.b64encode(req.public_bytes(DER)).decode()
    url = f"{responder.url}/{b64.replace('/', '%2F').replace('+', '%2B')}"
    resp = httpx.get(url, timeout=TIMEOUT, trust_env=False)
    parsed = ocsp.load_der_ocsp_response(resp.content)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.hash_algorithm.name == "sha256"  # answered under the request's hash
    bad = httpx.get(f"{responder.url}/!!!", timeout=TIMEOUT, trust_env=False)
    assert ocsp.load_der_ocsp_response(bad.content).response_status == (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


def test_garbage_is_a_malformed_request(responder):
    resp = httpx.post(responder.url, content=b"\x30\x03\x02\x01\x00", timeout=TIMEOUT,
                      trust_env=False)  # fmt: skip
    status = ocsp.load_der_ocsp_response(resp.content).response_status
    assert status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert httpx.post(responder.url.replace("/ocsp", "/nope"), content=b"x", timeout=TIMEOUT,
                      trust_env=False).status_code == 404  # fmt: skip


@pytest.mark.parametrize(
    "error,expect",
    [
        (True, "Responder Error: internalerror (2)"),
        ("tryLater", "Responder Error: trylater (3)"),
        ("sigRequired", "Responder Error: sigrequired (5)"),
        ("unauthorized", "Responder Error: unauthorized (6)"),
        ("bad-signature", "Response Verify Failure"),
    ],
)
def test_error_behaviours(lab, responder, error, expect):
    _, pem = lab.issue(f"ocsp-error-{error}")
    assert responder.set(error=error)["behaviour"]["error"] == error
    res = openssl_ocsp(lab, responder, pem)
    assert res.returncode != 0 and expect in res.stdout, res.stdout
    responder.set(error=False)
    assert openssl_ocsp(lab, responder, pem).returncode == 0


def test_down_closes_connections_and_admin_still_answers(lab, responder):
    _, pem = lab.issue("ocsp-down")
    responder.set(down=True)
    res = openssl_ocsp(lab, responder, pem)
    assert res.returncode != 0 and "Error querying OCSP responder" in res.stdout, res.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.post(responder.url, content=b"x", timeout=TIMEOUT, trust_env=False)
    report = responder.set(down=False)
    assert report["behaviour"]["counts"]["refused"] == 2
    assert openssl_ocsp(lab, responder, pem).returncode == 0


def test_slow_delays_the_answer(lab, responder):
    cert, _ = lab.issue("ocsp-slow")
    responder.set(slow=0.6)
    started = time.monotonic()
    assert ask(responder, cert, lab.ca.issuing).certificate_status == ocsp.OCSPCertStatus.GOOD
    assert time.monotonic() - started >= 0.6


def test_stale_answers_are_out_of_date(lab, responder):
    cert, pem = lab.issue("ocsp-stale")
    responder.set(stale=True)
    resp = ask(responder, cert, lab.ca.issuing)
    now = lab.clock.now()
    assert resp.next_update_utc <= now - dt.timedelta(seconds=299)
    assert resp.next_update_utc - resp.this_update_utc == dt.timedelta(seconds=300)
    res = openssl_ocsp(lab, responder, pem)
    assert "WARNING: Status times invalid." in res.stdout and "status expired" in res.stdout
    responder.set(stale=3600)
    answer = ask(responder, cert, lab.ca.issuing)
    assert answer.next_update_utc <= lab.clock.now() - dt.timedelta(hours=1)  # after the ask


def test_warp_moves_this_update(lab, responder):
    cert, _ = lab.issue("ocsp-warp")
    responder.set(warp=86400)
    try:
        resp = ask(responder, cert, lab.ca.issuing)
        assert resp.this_update_utc - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)
    finally:
        responder.set(warp=-86400)


def test_bad_admin_changes_are_refused_whole(responder):
    for body in ({"slow": -1}, {"error": "nope"}, {"down": "yes"}, {"frobnicate": 1},
                 {"down": True, "stale": 0}, {"warp": "soon"}):  # fmt: skip
        resp = httpx.post(responder.admin, json=body, timeout=TIMEOUT, trust_env=False)
        assert resp.status_code == 400 and "bad request" in resp.text
    assert responder.set()["behaviour"]["down"] is False


def test_behaviour_from_the_topology():
    b = ocsp_behaviour({"slow": 2, "error": "tryLater", "stale": True, "down": False})
    assert (b.slow, b.error_kind, b.stale_by(300), b.down) == (2.0, "tryLater", 300.0, False)
    assert crl_behaviour({"error": True}).error_kind == "http-500"
    with pytest.raises(ValueError):
        crl_behaviour({"error": "tryLater"})


# ------------------------------------------------------------------------- CRL


class CrlServer:
    """The publisher's process minus the process: its main loop in a thread of ours."""

    def __init__(self, lab: Lab, home: Path, *, ldap: bool = False, **settings) -> None:
        self.usb = home.parent / "usb1"  # what the gateway calls /usb1
        own = Authority(lab.dir / "ca", lab.clock.now)  # as in its own process
        publisher = CrlPublisher(
            own, lab.clock.now, home, mirrors=[self.usb / "lab-crl"], **settings
        )
        slapd = ldap_directory.Slapd(home / "ldap", free_port()) if ldap else None
        self.peer = CrlPeer(publisher, lab.clock, ldap=slapd)
        self.peer.prepare()
        self.thread = threading.Thread(target=self.peer.run, daemon=True)
        self.thread.start()
        self.http: ThreadingHTTPServer = serve(self.peer, 0, log)
        base = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.url, self.admin = f"{base}/crl/issuing.crl", f"{base}/admin"
        self.home = home

    def get(self, path: str = "/crl/issuing.crl") -> httpx.Response:
        return httpx.get(self.url.replace("/crl/issuing.crl", path), timeout=TIMEOUT,
                         trust_env=False)  # fmt: skip

    def crl(self, path: str = "/crl/issuing.crl") -> x509.CertificateRevocationList:
        resp = self.get(path)
        assert resp.status_code == 200, resp.text
        if path.endswith(".pem"):
            return x509.load_pem_x509_crl(resp.content)
        return x509.load_der_x509_crl(resp.content)

    def set(self, **changes) -> dict:
        resp = httpx.post(self.admin, json=changes, timeout=TIMEOUT, trust_env=False)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.peer.stop.set()
        self.thread.join(TIMEOUT)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def publisher(lab, tmp_path):
    server = CrlServer(lab, tmp_path / "crl")
    yield server
    server.close()


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def openssl_crl(lab: Lab, path: Path, *extra: str) -> subprocess.CompletedProcess:
    form = "PEM" if path.suffix == ".pem" else "DER"
    return run("crl", "-inform", form, "-in", str(path), "-CAfile", str(lab.chain), "-noout",
               *extra)  # fmt: skip


def test_openssl_verifies_the_crl_over_http_and_a_revocation_shows_at_once(
    lab, publisher, tmp_path
):
    cert, _ = lab.issue("crl-revoked")
    first = publisher.crl()
    assert first.issuer == lab.ca.issuing.subject and first.is_signature_valid(
        lab.ca.issuing.public_key()
    )
    (tmp_path / "first.crl").write_bytes(publisher.get().content)
    res = openssl_crl(lab, tmp_path / "first.crl")
    assert res.returncode == 0 and "verify OK" in res.stdout, res.stdout
    assert first.get_revoked_certificate_by_serial_number(cert.serial_number) is None
    assert first.next_update_utc - first.last_update_utc == dt.timedelta(seconds=3600)
    Authority(lab.dir / "ca", lab.clock.now).revoke(cert.serial_number, "keyCompromise")
    second = publisher.crl()  # the very next fetch: no waiting for a timer
    entry = second.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None and number(second) > number(first)
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    pem = tmp_path / "second.pem"
    pem.write_bytes(publisher.get("/crl/issuing.pem").content)
    res = openssl_crl(lab, pem, "-text")
    assert res.returncode == 0 and "verify OK" in res.stdout and "Key Compromise" in res.stdout
    assert format(cert.serial_number, "X") in res.stdout.replace(":", "").upper()


def test_unspecified_reason_is_left_out_and_root_crl_lists_root_certificates(
    lab, publisher, tmp_path
):
    cert, _ = lab.issue("crl-root-issued", issuer="root")
    lab.ca.revoke(cert.serial_number)
    root_crl = publisher.crl("/crl/root.crl")
    assert root_crl.issuer == lab.ca.root.subject
    assert root_crl.is_signature_valid(lab.ca.root.public_key())
    entry = root_crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None and len(entry.extensions) == 0  # RFC 5280 5.3.1
    issuing = publisher.crl()
    assert issuing.get_revoked_certificate_by_serial_number(cert.serial_number) is None
    (tmp_path / "root.crl").write_bytes(publisher.get("/crl/root.crl").content)
    assert openssl_crl(lab, tmp_path / "root.crl").returncode == 0


def test_files_are_written_and_crl_numbers_survive_a_restart(lab, publisher, tmp_path):
    home = publisher.home
    crl = x509.load_der_x509_crl((home / "issuing.crl").read_bytes())
    usb = publisher.usb / "lab-crl"
    assert (usb / "issuing.crl").read_bytes() == (home / "issuing.crl").read_bytes()
    assert x509.load_pem_x509_crl((usb / "root.pem").read_bytes()).issuer == (lab.ca.root.subject)
    assert openssl_crl(lab, home / "issuing.pem").returncode == 0
    last = number(publisher.crl())
    assert last >= number(crl)
    again = CrlPublisher(lab.ca, lab.clock.now, home)
    assert number(x509.load_der_x509_crl(again.publish()["issuing"].der)) == last + 1


def test_an_issuance_alone_publishes_nothing_new(lab, publisher):
    first = number(publisher.crl())
    lab.issue("crl-just-issued")
    time.sleep(0.3)  # three turns of the publisher's loop
    assert number(publisher.crl()) == first
    publisher.set(publish=True)
    assert number(publisher.crl()) == first + 1


def test_crl_error_behaviours(lab, publisher, tmp_path):
    publisher.set(error="http-500")
    assert publisher.get().status_code == 500
    publisher.set(error="corrupt")
    corrupt = tmp_path / "corrupt.crl"
    corrupt.write_bytes(publisher.get().content)
    res = openssl_crl(lab, corrupt)
    assert res.returncode != 0 and "verify OK" not in res.stdout
    assert (publisher.home / "issuing.crl").read_bytes() == corrupt.read_bytes()  # everywhere
    publisher.set(error="bad-signature")
    spoiled = tmp_path / "spoiled.crl"
    spoiled.write_bytes(publisher.get().content)
    res = openssl_crl(lab, spoiled)
    assert "verify failure" in res.stdout, res.stdout
    assert not x509.load_der_x509_crl(spoiled.read_bytes()).is_signature_valid(
        lab.ca.issuing.public_key()
    )
    publisher.set(error=False)
    good = tmp_path / "good.crl"
    good.write_bytes(publisher.get().content)
    assert openssl_crl(lab, good).returncode == 0


def test_crl_stale_down_and_slow(lab, publisher):
    publisher.set(stale=True)
    crl = publisher.crl()
    assert crl.next_update_utc < lab.clock.now() - dt.timedelta(seconds=3599)
    publisher.set(stale=False)
    assert publisher.crl().next_update_utc > lab.clock.now()
    publisher.set(down=True)
    with pytest.raises(httpx.HTTPError):
        publisher.get()
    publisher.set(down=False, slow=0.5)
    started = time.monotonic()
    assert publisher.get().status_code == 200 and time.monotonic() - started >= 0.5


def test_a_warp_past_half_the_period_publishes_a_new_crl(lab, tmp_path):
    server = CrlServer(lab, tmp_path / "crl", next_update_s=120)
    try:
        first = server.crl()
        server.set(warp=61)
        wait_until(lambda: number(server.crl()) > number(first), 5, what="a new CRL after warp")
        assert server.crl().last_update_utc >= first.last_update_utc + dt.timedelta(seconds=61)
    finally:
        lab.clock.offset -= 61
        server.close()


def test_ldap_carries_the_crl_and_its_updates(lab, tmp_path):
    assert ldap_directory.find_slapd(), "slapd is required (apt-get install slapd)"
    server = CrlServer(lab, tmp_path / "crl", ldap=True)
    try:
        port = server.peer.ldap.port
        assert server.set()["ldap"] == f"running on 127.0.0.1:{port}"
        assert ldap_crl(port, "issuing") == server.get().content
        assert ldap_crl(port, "root") == server.get("/crl/root.crl").content
        cert, _ = lab.issue("ldap-revoked")
        lab.ca.revoke(cert.serial_number, "keyCompromise")
        wait_until(
            lambda: x509.load_der_x509_crl(ldap_crl(port, "issuing"))
            .get_revoked_certificate_by_serial_number(cert.serial_number),
            5, what="the revocation in the directory",
        )  # fmt: skip
        # ldapsearch, OpenLDAP's own client, reads the same bytes
        ldapsearch = shutil.which("ldapsearch")
        assert ldapsearch, "ldapsearch is missing: apt-get install ldap-utils"
        out = subprocess.run(
            [ldapsearch, "-x", "-LLL", "-H", f"ldap://127.0.0.1:{port}", "-b",
             "cn=issuing,o=lab", "-s", "base", "certificateRevocationList;binary"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert out.returncode == 0 and "certificateRevocationList;binary::" in out.stdout
        # down stops slapd (refused), up brings it back with the current CRL
        server.set(down=True)
        with pytest.raises(ldap3.core.exceptions.LDAPException):
            ldap_crl(port, "issuing")
        server.set(down=False)
        assert ldap_crl(port, "issuing") == server.get().content
    finally:
        server.close()
    assert server.peer.ldap.proc is None  # stopped with the publisher


def ldap_crl(port: int, entry: str) -> bytes:
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE, connect_timeout=5)
    conn = ldap3.Connection(server, auto_bind=True, receive_timeout=10)
    try:
        conn.search(ldap_directory.dn(entry), "(objectClass=*)", ldap3.BASE,
                    attributes=[ldap_directory.ATTRIBUTE])  # fmt: skip
        return conn.response[0]["raw_attributes"][ldap_directory.ATTRIBUTE][0]
    finally:
        conn.unbind()


def test_the_gateways_fetcher_reads_every_publication(lab, tmp_path):
    """supervisor.pki.urls fetches CRLs for the gateway: http, ldap and the file under /usb1."""
    import asyncio

    from supervisor.pki import urls

    server = CrlServer(lab, tmp_path / "crl", ldap=True)
    try:
        fetcher = urls.Fetcher({"/usb1": server.usb}, tmp_path / "known_hosts")
        want = server.get().content
        for url in (server.url, ldap_directory.url(server.peer.ldap.port, "issuing"),
                    "file:/usb1/lab-crl/issuing.crl"):  # fmt: skip
            got = asyncio.run(fetcher.fetch(url, limit=urls.CRL_LIMIT, timeout=10))
            assert got == want, url
    finally:
        server.close()


# ------------------------------------------------------------------------- the CA side


def test_authority_refresh_reads_what_others_appended(tmp_path):
    clock = LabClock()
    one = Authority(tmp_path / "ca", clock.now)
    two = Authority(tmp_path / "ca", clock.now)
    cert = one.issue(name("shared"), ec.generate_private_key(ec.SECP256R1()).public_key())
    assert two.status(cert.serial_number) == "unknown"
    assert two.refresh() and two.status(cert.serial_number) == "good"
    assert not two.refresh()  # nothing new
    with open(tmp_path / "ca" / "issued.jsonl", "ab") as f:
        f.write(b'{"serial": 5, "subj')  # a line being written: read once whole
    assert not two.refresh()
    assert two.revoke(cert.serial_number, "superseded")  # a revocation in "another process"
    assert one.status(cert.serial_number) == "good"
    one.refresh()
    assert one.status(cert.serial_number) == "revoked"
    assert one.db[cert.serial_number].reason == "superseded"
    with pytest.raises(ValueError, match="reason 'removeFromCRL'"):
        one.revoke(cert.serial_number, "removeFromCRL")
    assert not one.revoke(cert.serial_number, "keyCompromise")  # already revoked
    assert not one.revoke(12345)  # never issued


def test_certificates_name_the_lab_urls_from_urls_json(tmp_path):
    """RUN/lab/ca/urls.json (written by the backplane) reaches every process that issues:
    the CA server, and the eNodeB fleet, which opens the Authority just like this."""
    topo = topology.loads(
        "name: t\ncards:\n  5: {type: mio, role: active}\n  1: {type: dpc}\n"
        "lab:\n  ca: {}\n  ocsp: {}\n  crl: {ldap: false}\n"
    )
    run_dir = RunDir(tmp_path / "run")
    endpoints = lab_endpoints(topo)
    write_revocation_urls(run_dir, endpoints)
    authority = Authority(run_dir.root / "lab" / "ca", LabClock().now)
    key = ec.generate_private_key(ec.SECP256R1())
    for issuer, crl_url in (("intermediate", endpoints["crl"]["url"]),
                            ("root", endpoints["crl"]["root"])):  # fmt: skip
        cert = authority.issue(name("enb0001.lab.example"), key.public_key(), issuer=issuer)
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [(d.access_method, d.access_location.value) for d in aia] == [
            (AuthorityInformationAccessOID.OCSP, endpoints["ocsp"]["url"])
        ]
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert [n.value for n in cdp[0].full_name] == [crl_url]
    assert endpoints["crl"]["ldap_error"].startswith("off in the topology")
    # without revocation peers, no URLs
    write_revocation_urls(run_dir, {"ca": endpoints["ca"]})
    plain = Authority(run_dir.root / "lab" / "ca", LabClock().now)
    cert = plain.issue(name("plain"), key.public_key())
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)


def test_manifest_urls_fill_the_startup_config_placeholders(tmp_path):
    from supervisor.runner import lab_placeholders

    topo = topology.loads(
        "name: t\ncards:\n  5: {type: mio, role: active}\n  1: {type: dpc}\n"
        "lab:\n  ca: {}\n  ocsp: {}\n  crl: {}\n"
    )
    lab = lab_endpoints(topo)
    text = lab_placeholders(
        "${lab.ocsp.url} ${lab.crl.url} ${lab.crl.pem} ${lab.crl.file} ${lab.crl.ldap}", lab
    )
    ocsp_url, crl_url, pem_url, file_url, ldap_url = text.split()
    assert ocsp_url.startswith("http://127.0.0.1:") and ocsp_url.endswith("/ocsp")
    assert crl_url.endswith("/crl/issuing.crl") and pem_url.endswith("/crl/issuing.pem")
    assert file_url == "file:/usb1/lab-crl/issuing.crl"
    assert ldap_url.startswith("ldap://127.0.0.1:") and ldap_url.endswith(
        "/cn=issuing,o=lab?certificateRevocationList;binary"
    )
    from supervisor.pki import urls  # the gateway's URL parser takes every one of them

    for url in (ocsp_url, crl_url, pem_url, file_url, ldap_url):
        urls.parse(url)
    assert revocation_urls(lab)["crl"]["intermediate"] == [crl_url, ldap_url]
    # a restart on the same run directory keeps the revocation peers' ports when free
    again = lab_endpoints(topo, lab)
    assert again["ocsp"]["url"] == lab["ocsp"]["url"] and again["crl"] == lab["crl"]


def test_ca_admin_revokes_by_serial(lab):
    behaviour = Behaviour()
    responder = Responder(lab.ca, b"s3cret", behaviour, lab.clock.now, lambda n: bytes(n))
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 make_handler(responder, behaviour, lab.clock, lab.ca))  # fmt: skip
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/admin/revoke"
    try:
        other = Authority(lab.dir / "ca", lab.clock.now)  # the fleet issues in its own process
        cert = other.issue(name("ca-admin"), ec.generate_private_key(ec.SECP256R1()).public_key())
        body = {"serial": format(cert.serial_number, "X"), "reason": "keyCompromise"}
        resp = httpx.post(url, json=body, timeout=TIMEOUT, trust_env=False)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["changed"] and answer["reason"] == "keyCompromise"
        assert answer["serial"] == format(cert.serial_number, "X")
        assert answer["subject"] == "CN=ca-admin"
        again = httpx.post(url, json=body, timeout=TIMEOUT, trust_env=False).json()
        assert again["changed"] is False and again["revoked_at"] == answer["revoked_at"]
        unknown = httpx.post(url, json={"serial": "ABCDEF"}, timeout=TIMEOUT, trust_env=False)
        assert unknown.status_code == 404 and "not issued by the lab CA" in unknown.text
        bad = httpx.post(url, json={"serial": body["serial"], "reason": "tired"},
                         timeout=TIMEOUT, trust_env=False)  # fmt: skip
        assert bad.status_code == 400 and "reason 'tired'" in bad.text
        other.refresh()
        assert other.status(cert.serial_number) == "revoked"
    finally:
        server.shutdown()
        server.server_close()


def test_cli_serial_argument(tmp_path, lab):
    assert certificate_serial("16:DF:81") == (0x16DF81, None)
    assert certificate_serial("0x0a1b") == (0x0A1B, None)
    cert, pem = lab.issue("cli-serial")
    assert certificate_serial(str(pem)) == (cert.serial_number, "CN=cli-serial")
    der = tmp_path / "c.der"
    der.write_bytes(cert.public_bytes(DER))
    assert certificate_serial(str(der))[0] == cert.serial_number
    import click

    for bad in ("xyz", "", "0x"):
        with pytest.raises(click.BadParameter):
            certificate_serial(bad)


# ------------------------------------------------------------------------- topology


TOPO = "name: t\ncards:\n  5: {type: mio, role: active}\n  1: {type: dpc}\nlab:\n"


def problems(text: str) -> list[str]:
    with pytest.raises(topology.TopologyError) as err:
        topology.loads(text)
    return [f"{p.line}:{p.field}: {p.message}" for p in err.value.problems]


def test_topology_keys_are_validated():
    topo = topology.loads(TOPO + "  ca: {}\n  ocsp:\n  crl: {next-update-s: 60, ldap: false}\n")
    assert topo.lab["ocsp"] is None and topo.lab["crl"]["next-update-s"] == 60
    topology.loads(
        TOPO + "  ca: {}\n  ocsp: {delegate: true, next-update-s: 30, nonce: false,\n"
        "         behaviour: {down: false, slow: 1.5, error: tryLater, stale: 600}}\n"
        "  crl: {behaviour: {error: corrupt, stale: true}}\n"
    )
    found = problems(
        TOPO + "  ca: {}\n  ocsp: {delegat: true, behaviour: {error: corrupt}}\n"
        "  crl: {next-update-s: 0, behaviour: {slow: 700, stale: 0}}\n"
    )
    assert found == [
        "7:lab.ocsp.delegat: unknown key (did you mean 'delegate'?)",
        "7:lab.ocsp.behaviour.error: must be one of False, True, internalError, tryLater, "
        "sigRequired, unauthorized, malformedRequest, bad-signature, not 'corrupt'",
        "8:lab.crl.next-update-s: 0 is less than or equal to the minimum of 0",
        "8:lab.crl.behaviour.slow: 700 is greater than the maximum of 600",
        "8:lab.crl.behaviour.stale: 0 is less than or equal to the minimum of 0",
    ]


def test_revocation_peers_need_the_ca():
    assert problems(TOPO + "  ocsp: {}\n  crl: {}\n") == [
        "6:lab.ocsp: the OCSP responder answers for the lab CA: add lab.ca too",
        "7:lab.crl: the CRL publisher answers for the lab CA: add lab.ca too",
    ]


def test_status_json_round_trip_of_reports(lab, responder):
    report = responder.set(slow=0.1)
    assert json.loads(json.dumps(report))["behaviour"]["slow"] == 0.1
    assert report["signer"] == "ca" and report["next_update_s"] == 300
