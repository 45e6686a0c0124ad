"""The CMP client against the real OpenSSL 3.0 mock CA (`openssl cmp -port 0`).

The mock answers every ir/cr/kur with the fixed `-rsp_cert`, protects each answer the way the
request was protected, and accepts kur only for oldCertID = rsp_cert. The PKI is made fresh
per module (EC P-256), so the tests do not depend on the date.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import select
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from supervisor.pki.cmp import (
    Done,
    Enrollment,
    Failed,
    Protection,
    Send,
    State,
    Transaction,
    Wait,
    codec,
    protection,
)

OPENSSL = shutil.which("openssl")
SECRET = b"1234-5678"
MOCK = "/CN=CMP Mock Server"
_serial = itertools.count()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """ca -> srv (the mock's signer), rsp (the fixed issued cert), client (our signer)."""
    root = tmp_path_factory.mktemp("cmp-pki")
    now = datetime.now(UTC)
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "srv", "rsp", "client")}
    subjects = {
        "ca": "Probe Root CA",
        "srv": "CMP Mock Server",
        "rsp": "Mock Issued Cert",
        "client": "Chassis MGMT Card",
    }
    out: dict = {"dir": root}
    for n, key in keys.items():
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subjects[n]))
            .issuer_name(_name(subjects["ca"]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=n == "ca", path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        cert = builder.sign(keys["ca"], hashes.SHA256())
        (root / f"{n}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (root / f"{n}.key").write_bytes(_pem_key(key))
        out[n] = cert.public_bytes(serialization.Encoding.DER)
        out[f"{n}_key"] = _pem_key(key)
    out["fresh_key"] = _pem_key(ec.generate_private_key(ec.SECP256R1()))
    return out


class Mock:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def post(self, der: bytes) -> bytes:
        """One POST. `Connection: close`: the mock keeps a kept-alive connection for the whole
        transaction and cancels the transaction if that connection is dropped mid-way."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(
                "POST",
                "/pkix/",
                body=der,
                headers={"Content-Type": "application/pkixcmp", "Connection": "close"},
            )
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status == 200, (resp.status, self.log.read_text())
        return body


@pytest.fixture
def mock(pki):
    """mock(*args) starts an `openssl cmp` mock server with the module's PKI plus args."""
    procs: list[subprocess.Popen] = []
    d = pki["dir"]

    def start(*args: str) -> Mock:
        log = d / f"mock-{next(_serial)}-{os.getpid()}.log"
        cmd = [
            OPENSSL, "cmp", "-config", "", "-port", "0",
            "-srv_cert", str(d / "srv.crt"), "-srv_key", str(d / "srv.key"),
            "-srv_trusted", str(d / "ca.crt"), "-rsp_cert", str(d / "rsp.crt"),
            *args,
        ]  # fmt: skip
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=d)
        procs.append(proc)
        deadline, seen = time.monotonic() + 10, b""
        fd = proc.stdout.fileno()  # raw reads: a buffered readline could hide data from select
        while (left := deadline - time.monotonic()) > 0:  # warnings may come first on stdout
            ready, _, _ = select.select([fd], [], [], left)
            chunk = os.read(fd, 4096) if ready else b""
            seen += chunk
            if m := re.search(rb"ACCEPT \S*:(\d+)", seen):
                return Mock(proc, int(m.group(1)), log)
            if not chunk:
                break
        raise AssertionError(f"mock did not start: {seen!r} {log.read_text()}")

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def pbm_server(mock, *args):
    return mock("-srv_secret", "pass:" + SECRET.decode(), *args)


def enrollment(pki, **kw) -> Enrollment:
    base = dict(
        kind="ir",
        new_key_pem=pki["rsp_key"],
        subject="/CN=Chassis",
        recipient=MOCK,
        ca_root_der=pki["ca"],
    )
    return Enrollment(**{**base, **kw})


def tx_for(e: Enrollment, p: Protection) -> Transaction:
    return Transaction(e, p, rand=os.urandom, now=lambda: datetime.now(UTC))


PBM = Protection(secret=SECRET, reference=b"1234")


def run(tx: Transaction, server: Mock) -> tuple[object, list]:
    steps: list = []
    step = tx.receive(server.post(tx.start()))
    for _ in range(10):
        steps.append(step)
        if isinstance(step, Send):
            step = tx.receive(server.post(step.der))
        elif isinstance(step, Wait):
            step = tx.receive(server.post(tx.poll()))  # the mock does not enforce checkAfter
        elif isinstance(step, Failed) and step.confirm is not None:
            step = tx.receive(server.post(step.confirm))
        else:
            return step, steps
    raise AssertionError("no end")


def test_ir_pbm(pki, mock):
    server = pbm_server(mock, "-rsp_capubs", str(pki["dir"] / "ca.crt"))
    tx = tx_for(enrollment(pki), PBM)
    done, _ = run(tx, server)
    assert isinstance(done, Done), done
    assert done.cert_der == pki["rsp"] and done.confirmed
    assert done.chain == (pki["ca"],) and done.ca_pubs == (pki["ca"],)
    assert tx.sent == {"ir": 1, "certConf": 1} and tx.received == {"ip": 1, "pkiconf": 1}


def test_ir_fresh_key_is_rejected_with_certconf(pki, mock):
    server = pbm_server(mock)
    tx = tx_for(enrollment(pki, new_key_pem=pki["fresh_key"]), PBM)
    failed, steps = run(tx, server)
    assert steps[0].reason == "public key mismatch" and steps[0].confirm is not None
    assert failed == Failed("public key mismatch")
    assert tx.received == {"ip": 1, "pkiconf": 1} and tx.state is State.FAILED


def test_polling(pki, mock):
    server = pbm_server(mock, "-poll_count", "2", "-check_after", "1")
    tx = tx_for(enrollment(pki), PBM)
    done, steps = run(tx, server)
    assert isinstance(done, Done), done
    assert [s for s in steps if isinstance(s, Wait)] == [Wait(1.0), Wait(1.0)]
    assert tx.sent == {"ir": 1, "pollReq": 2, "certConf": 1}


def test_implicit_confirm_granted(pki, mock):
    server = pbm_server(mock, "-grant_implicitconf")
    tx = tx_for(enrollment(pki), PBM)
    done, _ = run(tx, server)
    assert isinstance(done, Done) and not done.confirmed
    assert tx.sent == {"ir": 1}


def test_rejection(pki, mock):
    server = pbm_server(
        mock, "-pkistatus", "2", "-failurebits", "4", "-statusstring", "denied by policy"
    )
    failed, _ = run(tx_for(enrollment(pki), PBM), server)
    assert failed == Failed("certificate request rejected", ("badRequest",), ("denied by policy",))


def test_error_message(pki, mock):
    server = pbm_server(mock, "-send_error")
    failed, _ = run(tx_for(enrollment(pki), PBM), server)
    assert failed.reason.startswith("error response (errorCode ")
    assert failed.fail_info == ("badRequest",) and failed.error_code is not None


def test_wrong_secret(pki, mock):
    server = pbm_server(mock)
    tx = tx_for(enrollment(pki), Protection(secret=b"WRONG", reference=b"1234"))
    failed, _ = run(tx, server)
    assert failed.reason.startswith("unverifiable error response: PBM MAC mismatch")
    assert "wrong pbm value" in failed.reason


def test_cr_with_signature(pki, mock):
    server = mock("-rsp_extracerts", str(pki["dir"] / "ca.crt"))
    p = Protection(cert_der=pki["client"], key_pem=pki["client_key"])
    tx = tx_for(enrollment(pki, kind="cr"), p)
    done, _ = run(tx, server)
    assert isinstance(done, Done), done
    assert done.cert_der == pki["rsp"] and tx.received == {"cp": 1, "pkiconf": 1}


def test_kur(pki, mock):
    server = mock()
    p = Protection(cert_der=pki["rsp"], key_pem=pki["rsp_key"])
    e = enrollment(pki, kind="kur", subject=None, old_cert_der=pki["rsp"])
    tx = tx_for(e, p)
    done, _ = run(tx, server)
    assert isinstance(done, Done), done
    assert tx.received == {"kup": 1, "pkiconf": 1}


def test_mock_accepts_our_hmac_sha256_pbm(pki, mock):
    """The codec directly: an ir with PBM over HMAC-SHA256 is verified by OpenSSL, and its
    (HMAC-SHA1) answer by us."""
    server = pbm_server(mock, "-grant_implicitconf")
    key = serialization.load_pem_private_key(pki["rsp_key"], None)
    header = codec.Header(
        transaction_id=os.urandom(16),
        sender_nonce=os.urandom(16),
        sender=_name("Chassis"),
        recipient=_name("CMP Mock Server"),
        message_time=datetime.now(UTC),
        general_info=(codec.IMPLICIT_CONFIRM,),
    )
    prot = protection.PbmProtector(SECRET, b"1234", os.urandom, mac="hmac-sha256")
    body = codec.cert_req_body("ir", key, subject=_name("Chassis"))
    answer = codec.decode(server.post(codec.encode_message(header, body, prot)))
    assert answer.body_type == "ip" and answer.responses[0].cert_der == pki["rsp"]
    assert protection.verify(answer, secret=SECRET).method == "pbm"
