"""The real OpenSSL 3.0 CMP client (`openssl cmp`) against the project's own lab CA.

The lab CA (chassis.lab: Authority + Responder behind ca_server's HTTP handler) runs in a
thread of this process on 127.0.0.1; every `openssl` call is a bounded child process. The
checks are OpenSSL's: it verifies the lab's answers (PBM, or signatures chaining to the lab
root given with -trusted) and we check what it saved: the certificate carries the key we
asked for and chains to the lab root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chassis.lab.authority import Authority
from chassis.lab.ca_server import Clock, make_handler
from chassis.lab.cmp_responder import Behaviour, Responder

OPENSSL = shutil.which("openssl")
SECRET = "s3cret"
RECIPIENT = "/O=SeGW Lab/CN=SeGW Lab Issuing CA"
TIMEOUT = 60  # seconds, for every openssl child


class Lab:
    def __init__(self, home: Path) -> None:
        self.dir = home
        self.clock = Clock()
        self.authority = Authority(home / "ca", self.clock.now)
        self.behaviour = Behaviour()
        self.responder = Responder(
            self.authority, SECRET.encode(), self.behaviour, self.clock.now, os.urandom
        )
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0),
            make_handler(self.responder, self.behaviour, self.clock, self.authority),
        )
        self.server.daemon_threads = True
        self.url = f"127.0.0.1:{self.server.server_address[1]}/pkix/"
        for name, cert in (("root", self.authority.root), ("issuing", self.authority.issuing)):
            (home / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.root, self.issuing = home / "root.pem", home / "issuing.pem"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    assert OPENSSL, "openssl is required for the lab CA interop tests"
    lab = Lab(tmp_path_factory.mktemp("lab-ca"))
    thread = threading.Thread(target=lab.server.serve_forever, daemon=True)
    thread.start()
    yield lab
    lab.server.shutdown()
    lab.server.server_close()
    thread.join(timeout=10)


@pytest.fixture(autouse=True)
def default_behaviour(lab):
    lab.behaviour.update({k: getattr(Behaviour(), k) for k in Behaviour.SETTABLE})
    yield


def new_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def cmp(lab: Lab, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [OPENSSL, "cmp", "-config", "", "-server", lab.url, "-msg_timeout", "20", *args]
    # `openssl cmp` logs progress to stdout and errors to stderr: keep both, in order.
    return subprocess.run(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT
    )


def ir(lab: Lab, cwd: Path, key: Path, cn: str, *extra: str) -> subprocess.CompletedProcess:
    return cmp(
        lab, cwd, "-cmd", "ir", "-recipient", RECIPIENT, "-ref", "1234",
        "-secret", f"pass:{SECRET}", "-newkey", str(key), "-subject", f"/CN={cn}",
        "-trusted", str(lab.root), "-certout", "out.pem", *extra,
    )  # fmt: skip


def issued(lab: Lab, cwd: Path, key: Path, res: subprocess.CompletedProcess) -> x509.Certificate:
    """out.pem: OpenSSL succeeded, the certificate is for `key`, and it chains to the lab."""
    assert res.returncode == 0, res.stdout
    cert = x509.load_pem_x509_certificate((cwd / "out.pem").read_bytes())
    want = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == want.public_bytes(*spki)
    cert.verify_directly_issued_by(lab.authority.issuing)
    assert lab.authority.status(cert.serial_number) == "good"
    check = subprocess.run(
        [OPENSSL, "verify", "-CAfile", str(lab.root), "-untrusted", str(lab.issuing), "out.pem"],
        cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return cert


def enrolled(lab: Lab, tmp_path: Path, cn: str = "interop") -> tuple[Path, x509.Certificate]:
    key = new_key(tmp_path / "key.pem")
    cert = issued(lab, tmp_path, key, ir(lab, tmp_path, key, cn))
    (tmp_path / "out.pem").rename(tmp_path / "first.pem")
    return key, cert


def test_ir_pbm(lab, tmp_path):
    before = dict(lab.behaviour.counts)
    key = new_key(tmp_path / "key.pem")
    res = ir(lab, tmp_path, key, "interop", "-cacertsout", "capubs.pem")
    cert = issued(lab, tmp_path, key, res)
    assert cert.subject.rfc4514_string() == "CN=interop"
    assert "sending CERTCONF" in res.stdout and "received PKICONF" in res.stdout
    assert x509.load_pem_x509_certificates((tmp_path / "capubs.pem").read_bytes()) == [
        lab.authority.root
    ]
    assert lab.behaviour.counts["issued"] == before["issued"] + 1
    assert lab.behaviour.counts["confirmed"] == before["confirmed"] + 1


def test_cr_signed_with_issued_cert(lab, tmp_path):
    # No -extracerts: the lab completes the signer's path with its own issuing certificate.
    key, first = enrolled(lab, tmp_path)
    new = new_key(tmp_path / "new.pem")
    res = cmp(
        lab, tmp_path, "-cmd", "cr", "-cert", "first.pem", "-key", str(key),
        "-trusted", str(lab.root), "-newkey", str(new),
        "-subject", "/CN=interop-cr", "-certout", "out.pem",
    )  # fmt: skip
    cert = issued(lab, tmp_path, new, res)
    assert "received CP" in res.stdout
    assert cert.subject.rfc4514_string() == "CN=interop-cr"
    assert cert.serial_number != first.serial_number


def test_kur_with_new_key(lab, tmp_path):
    key, first = enrolled(lab, tmp_path, "rollover")
    new = new_key(tmp_path / "new.pem")
    res = cmp(
        lab, tmp_path, "-cmd", "kur", "-cert", "first.pem", "-key", str(key),
        "-trusted", str(lab.root), "-newkey", str(new),
        "-certout", "out.pem",
    )  # fmt: skip
    cert = issued(lab, tmp_path, new, res)
    assert "received KUP" in res.stdout
    assert cert.subject == first.subject and cert.serial_number != first.serial_number


def test_signed_answer_key_usage(lab, tmp_path):
    """A cr without -ignore_keyusage: OpenSSL checks the lab's signer certificate."""
    key, _ = enrolled(lab, tmp_path)
    new = new_key(tmp_path / "new.pem")
    res = cmp(
        lab, tmp_path, "-cmd", "cr", "-cert", "first.pem", "-key", str(key),
        "-trusted", str(lab.root), "-newkey", str(new),
        "-subject", "/CN=interop-ku", "-certout", "out.pem",
    )  # fmt: skip
    assert "missing key usage" not in res.stdout
    issued(lab, tmp_path, new, res)


def test_polling(lab, tmp_path):
    lab.behaviour.update({"poll": 2, "check_after": 1})
    key = new_key(tmp_path / "key.pem")
    res = ir(lab, tmp_path, key, "polled")
    issued(lab, tmp_path, key, res)
    assert res.stdout.count("sending POLLREQ") == 2
    assert "checkAfter = 1 seconds" in res.stdout
    assert "received ip/cp/kup after polling" in res.stdout


def test_implicit_confirm_granted(lab, tmp_path):
    pending = len(lab.responder.pending)
    confirmed = lab.behaviour.counts["confirmed"]
    key = new_key(tmp_path / "key.pem")
    res = ir(lab, tmp_path, key, "implicit", "-implicit_confirm")
    issued(lab, tmp_path, key, res)
    assert "CERTCONF" not in res.stdout
    assert len(lab.responder.pending) == pending
    assert lab.behaviour.counts["confirmed"] == confirmed + 1


def test_implicit_confirm_refused(lab, tmp_path):
    lab.behaviour.update({"grant_implicit": False})
    key = new_key(tmp_path / "key.pem")
    res = ir(lab, tmp_path, key, "explicit", "-implicit_confirm")
    issued(lab, tmp_path, key, res)
    assert "sending CERTCONF" in res.stdout and "received PKICONF" in res.stdout


def test_rejection_is_understood(lab, tmp_path):
    lab.behaviour.update({"reject": "badCertTemplate"})
    res = ir(lab, tmp_path, new_key(tmp_path / "key.pem"), "refused")
    assert res.returncode != 0
    assert "rejection" in res.stdout and "badCertTemplate" in res.stdout, res.stdout
    assert not (tmp_path / "out.pem").exists()


def test_wrong_secret_is_refused(lab, tmp_path):
    key = new_key(tmp_path / "key.pem")
    res = cmp(
        lab, tmp_path, "-cmd", "ir", "-recipient", RECIPIENT, "-ref", "1234",
        "-secret", "pass:wrong", "-newkey", str(key), "-subject", "/CN=x",
        "-trusted", str(lab.root), "-certout", "out.pem",
    )  # fmt: skip
    assert res.returncode != 0 and not (tmp_path / "out.pem").exists()
    # The lab's refusal is PBM-protected with the lab's secret: OpenSSL cannot verify it.
    assert "wrong pbm value" in res.stdout, res.stdout
