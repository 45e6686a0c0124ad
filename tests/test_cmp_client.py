"""The CMP client transaction against an in-memory CA built from the codec's server-side
builders (the way the lab CA will use them), on a manual clock with seeded randomness."""

from __future__ import annotations

import functools
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from supervisor.pki.cmp.codec import (
    IMPLICIT_CONFIRM,
    REPLY_TO,
    Header,
    PollRep,
    StatusInfo,
    accepted,
    cert_rep_body,
    decode,
    encode_message,
    error_body,
    pki_conf_body,
    poll_rep_body,
    rejected,
    waiting,
)

T0 = datetime(2027, 1, 1, tzinfo=UTC)
SECRET = b"lab-psk"


# --- a small PKI -------------------------------------------------------------------------------


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, public_key, issuer, issuer_key, *, ca=False, sans=()):
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(days=30))
        .not_valid_after(T0 + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _key():
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def pki() -> dict:
    """Root -> issuing CA (also the CMP signer) -> the gateway's current certificate."""
    root_key, ca_key, gw_key, other_key = _key(), _key(), _key(), _key()
    root = _cert(
        _name("Test Root CA"), root_key.public_key(), _name("Test Root CA"), root_key, ca=True
    )
    ca = _cert(_name("Test Issuing CA"), ca_key.public_key(), root.subject, root_key, ca=True)
    gw = _cert(_name("segw"), gw_key.public_key(), ca.subject, ca_key)
    other_root = _cert(
        _name("Other Root"), other_key.public_key(), _name("Other Root"), other_key, ca=True
    )
    return {
        "root": root,
        "root_der": _der(root),
        "ca": ca,
        "ca_key": ca_key,
        "gw": gw,
        "gw_key": gw_key,
        "other_root_der": _der(other_root),
        "other_key": other_key,
        "new_key_pem": _pem(_key()),
        "kur_key_pem": _pem(_key()),
    }


# --- the in-memory CA --------------------------------------------------------------------------


class MiniCA:
    """Answers like a CMP CA: issues from the template (by the issuing CA), polls, confirms,
    and protects each answer the way the request was protected (as OpenSSL's mock does)."""

    def __init__(
        self,
        *,
        secret=SECRET,
        polls=0,
        check_after=2,
        grant_implicit=False,
        reject=(),
        error=False,
        wrong_key=False,
        protect=True,
        issuer=None,
        tamper=None,
        seed=1,
    ):
        self.secret, self.polls, self.check_after = secret, polls, check_after
        self.grant_implicit, self.reject, self.error = grant_implicit, reject, error
        self.wrong_key, self.protect, self.tamper = wrong_key, protect, tamper
        self.issuer = issuer  # (cert, key) issuing instead of the issuing CA
        self.rand = random.Random(seed).randbytes
        self.requests: list[codec.Message] = []
        self.responses: list[bytes] = []
        self.cert_der: bytes | None = None
        self.reply = "ip"
        self.conf_status: StatusInfo | None = None

    def handle(self, der: bytes) -> bytes:
        p = pki()
        req = decode(der)
        self.requests.append(req)
        try:
            how = protection.verify(req, secret=self.secret, trust_anchor_der=p["root_der"], now=T0)
        except protection.ProtectionError as e:
            body = error_body(StatusInfo(2, (str(e),), ("badMessageCheck",)), 1)
            return self._answer(req, body, "pbm")
        kind = req.body_type
        if self.error:
            body = error_body(StatusInfo(2, ("go away",), ("badRequest",)), 42, ("details",))
        elif kind in ("ir", "cr", "kur"):
            self.reply = REPLY_TO[kind]
            r = req.requests[0]
            assert protection.verify_popo(r)
            self.cert_der = self._issue(r)
            if self.reject:
                body = cert_rep_body(self.reply, [rejected(self.reject, ("denied",))])
            elif self.polls:
                body = cert_rep_body(self.reply, [waiting()])
            else:
                body = self._issued()
        elif kind == "pollReq":
            self.polls -= 1
            if self.polls > 0:
                body = poll_rep_body(PollRep(0, self.check_after))
            else:
                body = self._issued()
        elif kind == "certConf":
            (conf,) = req.confirmations
            assert conf.cert_hash == codec.cert_hash(self.cert_der)
            self.conf_status = conf.status
            body = pki_conf_body()
        else:
            body = error_body(StatusInfo(2, ("unexpected",), ("badRequest",)))
        return self._answer(req, body, how.method)

    def _issue(self, r: codec.CertRequest) -> bytes:
        p = pki()
        cert, key = self.issuer or (p["ca"], p["ca_key"])
        public = serialization.load_der_public_key(r.public_key_der)
        if self.wrong_key:
            public = _key().public_key()
        issued = _cert(r.subject or _name("anonymous"), public, cert.subject, key, sans=r.sans)
        return _der(issued)

    def _issued(self) -> codec.Body:
        return cert_rep_body(self.reply, [accepted(self.cert_der)], [pki()["root_der"]])

    def _answer(self, req: codec.Message, body: codec.Body, method: str) -> bytes:
        p = pki()
        implicit = (
            self.grant_implicit and req.header.implicit_confirm and body.type in ("ip", "cp", "kup")
        )
        header = Header(
            transaction_id=req.header.transaction_id,
            sender_nonce=self.rand(16),
            recip_nonce=req.header.sender_nonce,
            sender=p["ca"].subject,
            recipient=req.header.sender,
            message_time=T0,
            general_info=(IMPLICIT_CONFIRM,) if implicit else (),
        )
        if self.tamper is not None:
            header = self.tamper(header)
        if not self.protect:
            prot = None
        elif method == "pbm":
            prot = protection.PbmProtector(self.secret, None, self.rand)
        else:
            prot = protection.SignatureProtector(p["ca_key"], _der(p["ca"]), [p["root_der"]])
        der = encode_message(header, body, prot, extra_certs=[_der(p["ca"])])
        self.responses.append(der)
        return der


# --- driving a transaction ---------------------------------------------------------------------


def enrollment(**kw) -> Enrollment:
    base = dict(
        kind="ir",
        new_key_pem=pki()["new_key_pem"],
        subject="/O=Lab/CN=segw.example.net",
        sans=(("fqdn", "segw.example.net"), ("ip", "192.0.2.1")),
        recipient="CN=Test Issuing CA",
        ca_root_der=pki()["root_der"],
    )
    return Enrollment(**{**base, **kw})


def pbm(**kw) -> Protection:
    return Protection(**{"secret": SECRET, "reference": b"segw", **kw})


def signed() -> Protection:
    p = pki()
    return Protection(
        cert_der=_der(p["gw"]), key_pem=_pem(p["gw_key"]), extra_certs=(_der(p["ca"]),)
    )


def new_tx(e=None, prot=None, seed=7) -> Transaction:
    return Transaction(
        e or enrollment(), prot or pbm(), rand=random.Random(seed).randbytes, now=lambda: T0
    )


def drive(tx: Transaction, ca: MiniCA, steps: list | None = None):
    """Run to the end like the runner does; `steps` collects the intermediate steps."""
    steps = [] if steps is None else steps
    step = tx.receive(ca.handle(tx.start()))
    for _ in range(20):
        steps.append(step)
        if isinstance(step, Send):
            step = tx.receive(ca.handle(step.der))
        elif isinstance(step, Wait):
            step = tx.receive(ca.handle(tx.poll()))
        elif isinstance(step, Failed) and step.confirm is not None:
            step = tx.receive(ca.handle(step.confirm))
        else:
            return step
    raise AssertionError("transaction did not end")


def _spki(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _cert_spki(der: bytes) -> bytes:
    return (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


# --- the happy paths ---------------------------------------------------------------------------


def test_ir_ip_certconf_pkiconf():
    ca, tx = MiniCA(), new_tx()
    done = drive(tx, ca)
    p = pki()
    assert isinstance(done, Done) and done.confirmed
    assert _cert_spki(done.cert_der) == _spki(p["new_key_pem"])
    assert done.chain == (_der(p["ca"]), p["root_der"])
    assert done.ca_pubs == (p["root_der"],)
    assert tx.state is State.DONE
    assert tx.sent == {"ir": 1, "certConf": 1} and tx.received == {"ip": 1, "pkiconf": 1}
    ir = ca.requests[0]
    assert ir.header.implicit_confirm and ir.header.sender_kid == b"segw"
    assert ir.header.sender.rfc4514_string() == "CN=segw.example.net,O=Lab"
    assert ir.header.recipient.rfc4514_string() == "CN=Test Issuing CA"
    assert ir.header.message_time == T0
    assert {str(n.value) for n in ir.requests[0].sans} == {"segw.example.net", "192.0.2.1"}
    assert ca.conf_status == StatusInfo(0)
    # the certConf answers the CA's nonce and uses a fresh one
    conf = ca.requests[1]
    assert conf.header.recip_nonce == decode(ca.responses[0]).header.sender_nonce
    assert conf.header.sender_nonce != ir.header.sender_nonce
    assert not conf.header.implicit_confirm


def test_cr_signed_both_ways():
    ca, tx = MiniCA(), new_tx(enrollment(kind="cr"), signed())
    done = drive(tx, ca)
    assert isinstance(done, Done), done
    cr = ca.requests[0]
    assert cr.body_type == "cr" and cr.header.sender == pki()["gw"].subject
    assert cr.extra_certs[0] == _der(pki()["gw"])
    assert cr.header.sender_kid == protection.subject_key_id(pki()["gw"])
    assert decode(ca.responses[0]).header.protection_alg == "1.2.840.10045.4.3.2"
    assert tx.received == {"cp": 1, "pkiconf": 1}


def test_kur_with_a_new_key():
    p = pki()
    e = enrollment(
        kind="kur", subject=None, sans=(), new_key_pem=p["kur_key_pem"], old_cert_der=_der(p["gw"])
    )
    ca, tx = MiniCA(), new_tx(e, signed())
    done = drive(tx, ca)
    assert isinstance(done, Done), done
    req = ca.requests[0].requests[0]
    assert req.old_cert_id == (p["gw"].issuer, p["gw"].serial_number)
    assert req.subject == p["gw"].subject  # from the old certificate
    assert _cert_spki(done.cert_der) == _spki(p["kur_key_pem"])
    assert tx.received == {"kup": 1, "pkiconf": 1}


def test_polling_honours_check_after():
    ca, tx = MiniCA(polls=3, check_after=5), new_tx()
    steps: list = []
    done = drive(tx, ca, steps)
    assert isinstance(done, Done)
    assert [s for s in steps if isinstance(s, Wait)] == [Wait(1.0), Wait(5.0), Wait(5.0)]
    assert tx.sent == {"ir": 1, "pollReq": 3, "certConf": 1}
    assert tx.received == {"ip": 2, "pollRep": 2, "pkiconf": 1}


def test_implicit_confirm_granted():
    ca, tx = MiniCA(grant_implicit=True), new_tx()
    done = drive(tx, ca)
    assert isinstance(done, Done) and not done.confirmed
    assert "certConf" not in tx.sent and tx.state is State.DONE


def test_implicit_confirm_not_requested_is_not_taken():
    ca, tx = MiniCA(grant_implicit=True), new_tx(enrollment(implicit_confirm=False))
    done = drive(tx, ca)
    assert isinstance(done, Done) and done.confirmed
    assert not ca.requests[0].header.implicit_confirm and tx.sent["certConf"] == 1


# --- failures ----------------------------------------------------------------------------------


def test_rejection_with_fail_info():
    tx = new_tx()
    failed = drive(tx, MiniCA(reject=("badRequest", "badPOP")))
    assert failed == Failed("certificate request rejected", ("badRequest", "badPOP"), ("denied",))
    assert tx.state is State.FAILED
    assert tx.receive(b"anything") == failed  # over: the same answer again


def test_error_message():
    failed = drive(new_tx(), MiniCA(error=True))
    assert failed.reason == "error response (errorCode 42): go away; details"
    assert failed.fail_info == ("badRequest",) and failed.status_strings == ("go away",)
    assert failed.error_code == 42 and failed.error_details == ("details",)


def test_wrong_secret_is_an_unverifiable_error():
    failed = drive(new_tx(prot=pbm(secret=b"WRONG")), MiniCA())
    assert failed.reason.startswith("unverifiable error response: PBM MAC mismatch")


def test_wrong_transaction_id():
    ca = MiniCA(tamper=lambda h: replace(h, transaction_id=b"\x00" * 16))
    assert drive(new_tx(), ca) == Failed("transactionID mismatch")


def test_wrong_recip_nonce():
    ca = MiniCA(tamper=lambda h: replace(h, recip_nonce=b"\x01" * 16))
    assert drive(new_tx(), ca).reason == "recipNonce mismatch (stale or replayed response)"


def test_replayed_response_fails():
    ca, tx = MiniCA(polls=2), new_tx()
    first = tx.receive(ca.handle(tx.start()))
    assert first == Wait(1.0)
    tx.poll()
    replay = tx.receive(ca.responses[0])  # the old "waiting" ip again
    assert replay.reason == "recipNonce mismatch (stale or replayed response)"


def test_unprotected_response():
    assert drive(new_tx(), MiniCA(protect=False)) == Failed("unprotected response")


def test_unexpected_sender_of_a_signed_response():
    e = enrollment(kind="cr", recipient="/CN=Somebody Else")
    failed = drive(new_tx(e, signed()), MiniCA())
    assert failed.reason == "unexpected sender 'CN=Test Issuing CA'"


def test_sender_of_a_pbm_response_is_not_compared():
    """Like OpenSSL's mock, which answers as its own certificate's subject."""
    done = drive(new_tx(enrollment(recipient="/CN=CMP_Mock_Server")), MiniCA())
    assert isinstance(done, Done)


def test_signed_response_needs_a_root():
    failed = drive(new_tx(enrollment(kind="cr", ca_root_der=None), signed()), MiniCA())
    assert failed.reason.startswith("bad response protection: signature-protected, but no trust")


def test_signed_response_from_another_root():
    failed = drive(
        new_tx(enrollment(kind="cr", ca_root_der=pki()["other_root_der"]), signed()), MiniCA()
    )
    assert "does not chain to the trust anchor" in failed.reason


def test_public_key_mismatch_rejects_with_certconf():
    ca, tx = MiniCA(wrong_key=True), new_tx()
    steps: list = []
    failed = drive(tx, ca, steps)
    first = steps[0]
    assert first.reason == "public key mismatch" and first.confirm is not None
    assert failed == Failed("public key mismatch")  # the same, without confirm
    assert ca.conf_status.status == 2 and ca.conf_status.fail_info == ("incorrectData",)
    assert tx.state is State.FAILED and tx.received == {"ip": 1, "pkiconf": 1}


def test_certificate_from_another_root_is_rejected():
    p = pki()
    other = _cert(
        _name("Other Root"),
        p["other_key"].public_key(),
        _name("Other Root"),
        p["other_key"],
        ca=True,
    )
    ca = MiniCA(issuer=(other, p["other_key"]))
    failed = drive(new_tx(), ca)
    assert failed == Failed("issued certificate does not chain to ca-root")
    assert ca.conf_status.status == 2


def test_without_ca_root_capubs_pass_through():
    done = drive(new_tx(enrollment(ca_root_der=None)), MiniCA())
    assert done.ca_pubs == (pki()["root_der"],)
    assert done.chain == (_der(pki()["ca"]), pki()["root_der"])


def test_misuse_never_raises_from_receive():
    tx = new_tx()
    assert tx.receive(b"\x30\x00").reason.startswith("no response expected")
    with pytest.raises(RuntimeError):
        tx.poll()
    tx.start()
    with pytest.raises(RuntimeError):
        tx.start()
    assert tx.receive(b"\x30\x00").reason.startswith("malformed response:")


def test_configuration_errors():
    with pytest.raises(ValueError):
        new_tx(enrollment(kind="p10cr"))
    with pytest.raises(ValueError):
        new_tx(enrollment(kind="kur"))
    with pytest.raises(ValueError):
        new_tx(prot=Protection())


# --- journal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("after_poll", [False, True])
def test_journal_round_trip_mid_polling(after_poll):
    ca, tx = MiniCA(polls=2, check_after=3), new_tx()
    assert tx.receive(ca.handle(tx.start())) == Wait(1.0)
    if after_poll:
        tx.poll()  # in flight when the process dies: the answer is lost
    journal = json.loads(json.dumps(tx.to_journal()))
    resumed = Transaction.from_journal(journal, rand=random.Random(99).randbytes, now=lambda: T0)
    assert resumed.state is State.POLL_TIME
    assert resumed.transaction_id == tx.transaction_id and resumed.cert_req_id == 0
    assert resumed.sent == tx.sent
    step = resumed.receive(ca.handle(resumed.poll()))
    assert step == Wait(3.0)
    step = resumed.receive(ca.handle(resumed.poll()))
    assert isinstance(step, Send)
    done = resumed.receive(ca.handle(step.der))
    assert isinstance(done, Done) and done.confirmed


def test_journal_awaiting_pkiconf():
    ca, tx = MiniCA(), new_tx(enrollment(kind="cr"), signed())
    step = tx.receive(ca.handle(tx.start()))
    journal = json.loads(json.dumps(tx.to_journal()))
    resumed = Transaction.from_journal(journal, rand=random.Random(5).randbytes, now=lambda: T0)
    assert resumed.state is State.PKI_CONF
    done = resumed.receive(ca.handle(step.der))
    assert isinstance(done, Done) and _cert_spki(done.cert_der) == _spki(pki()["new_key_pem"])


# --- hostile bytes never raise -------------------------------------------------------------------


@functools.cache
def transcript() -> dict:
    """Valid responses for a fixed-seed transaction: the ip (waiting), pollRep, ip, pkiConf."""
    ca, tx = MiniCA(polls=2, seed=3), new_tx(seed=11)
    drive(tx, ca)
    return {"responses": list(ca.responses)}


def _tx_in(state_index: int) -> Transaction:
    """A fresh transaction (same seed) just before response number `state_index`."""
    ca, tx = MiniCA(polls=2, seed=3), new_tx(seed=11)
    der = tx.start()
    for _ in range(state_index):
        step = tx.receive(ca.handle(der))
        der = tx.poll() if isinstance(step, Wait) else step.der
    ca.handle(der)
    return tx


def _mutate(data: bytes, how: str, pos: int, value: int, cut: int) -> bytes:
    pos %= len(data)
    if how == "flip":
        out = bytearray(data)
        out[pos] ^= 1 << (value % 8)
        return bytes(out)
    if how == "byte":
        out = bytearray(data)
        out[pos] = value % 256
        return bytes(out)
    if how == "truncate":
        return data[: cut % len(data)]
    if how == "insert":
        return data[:pos] + bytes([value % 256]) + data[pos:]
    return data[:pos] + data[pos + 1 + cut % 8 :]  # delete


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, 3),
    how=st.sampled_from(["flip", "byte", "truncate", "insert", "delete"]),
    pos=st.integers(0, 10_000),
    value=st.integers(0, 255),
    cut=st.integers(0, 10_000),
)
def test_mutated_responses_never_raise(index, how, pos, value, cut):
    data = _mutate(transcript()["responses"][index], how, pos, value, cut)
    tx = _tx_in(index)
    step = tx.receive(data)
    assert isinstance(step, (Send, Wait, Done, Failed))
    assert tx.state is not State.START


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_raise(data):
    tx = new_tx()
    tx.start()
    step = tx.receive(data)
    assert isinstance(step, Failed) and step.reason.startswith(
        ("malformed response", "unprotected", "bad response", "unverifiable")
    )


def test_unmutated_transcript_replays():
    """The fixed seeds really reproduce the transcript the fuzzer mutates."""
    for i, data in enumerate(transcript()["responses"]):
        step = _tx_in(i).receive(data)
        assert not isinstance(step, Failed), (i, step)
