"""CMP codec and protection against messages captured from OpenSSL 3.0 `openssl cmp`
(tests/vectors/cmp, see its README): decode, byte-exact re-encode, protection, and builders
that reproduce OpenSSL's bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from supervisor.pki.cmp import asn1, codec, protection
from supervisor.pki.cmp.codec import (
    CmpError,
    Header,
    PollRep,
    StatusInfo,
    accepted,
    cert_conf_body,
    cert_rep_body,
    cert_req_body,
    decode,
    encode,
    encode_message,
    error_body,
    pki_conf_body,
    poll_rep_body,
    poll_req_body,
    rejected,
    waiting,
)

VECTORS = Path(__file__).parent / "vectors" / "cmp"
PKI = VECTORS / "pki"
ALL = sorted(p.name for p in VECTORS.glob("*.der"))
SECRET = b"1234-5678"
NOW = datetime(2027, 1, 1, tzinfo=UTC)  # inside the captured certificates' validity

SIGNED = {"cr_", "kur_", "kurwrongcert_", "rr_"}


def raw(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def cert(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((PKI / name).read_bytes())


def der(name: str) -> bytes:
    return cert(name).public_bytes(serialization.Encoding.DER)


def key(name: str):
    return serialization.load_pem_private_key((PKI / name).read_bytes(), None)


def body_bytes(name: str) -> bytes:
    return asn1.children(raw(name))[1]


def is_signed(name: str) -> bool:
    return any(name.startswith(p) for p in SIGNED)


def test_all_vectors_present():
    assert len(ALL) == 44


@pytest.mark.parametrize("name", ALL)
def test_decode_reencodes_byte_exactly(name):
    msg = decode(raw(name))
    assert encode(msg) == raw(name)
    assert msg.raw == raw(name)
    assert msg.header.transaction_id is not None and len(msg.header.transaction_id) == 16
    # ProtectedPart is taken from the bytes as received
    head, body = asn1.children(raw(name))[:2]
    assert msg.protected_part == asn1.seq(head, body)


@pytest.mark.parametrize("name", [n for n in ALL if not is_signed(n)])
def test_pbm_vectors_verify_with_the_secret(name):
    msg = decode(raw(name))
    if name == "badsecret_ir.der":  # made with the secret "WRONG"
        with pytest.raises(protection.ProtectionError, match="PBM MAC mismatch"):
            protection.verify(msg, secret=SECRET)
        assert protection.verify(msg, secret=b"WRONG").method == "pbm"
        return
    assert protection.verify(msg, secret=SECRET).method == "pbm"
    with pytest.raises(protection.ProtectionError, match="PBM MAC mismatch"):
        protection.verify(msg, secret=b"1234-5679")
    with pytest.raises(protection.ProtectionError, match="no shared secret"):
        protection.verify(msg)


@pytest.mark.parametrize("name", [n for n in ALL if is_signed(n)])
def test_signed_vectors_verify_against_the_root(name):
    msg = decode(raw(name))
    v = protection.verify(msg, trust_anchor_der=der("ca.crt"), now=NOW)
    assert v.method == "signature"
    assert v.signer_der == msg.extra_certs[0]  # the signer comes first in extraCerts
    # another root: no path
    with pytest.raises(protection.ProtectionError, match="does not chain"):
        protection.verify(msg, trust_anchor_der=_other_root(), now=NOW)
    # outside the signer's validity
    with pytest.raises(protection.ProtectionError, match="not valid now"):
        protection.verify(msg, trust_anchor_der=der("ca.crt"), now=datetime(2035, 1, 1, tzinfo=UTC))


def _other_root() -> bytes:
    from datetime import timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=Probe Root CA")  # same name, other key
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(k, hashes.SHA256())
    )
    return c.public_bytes(serialization.Encoding.DER)


def test_tampered_signature_fails():
    data = bytearray(raw("cr_cp.der"))
    msg = decode(bytes(data))
    # flip one byte of the transactionID, inside the protected header
    i = data.index(msg.header.transaction_id)
    data[i] ^= 1
    with pytest.raises(protection.ProtectionError, match="bad signature"):
        protection.verify(decode(bytes(data)), trust_anchor_der=der("ca.crt"), now=NOW)


def test_unprotected_is_reported():
    msg = decode(raw("ir_pkiconf.der"))
    head, body = asn1.children(raw("ir_pkiconf.der"))[:2]
    bare = decode(asn1.seq(head, body))
    assert bare.protection is None
    with pytest.raises(protection.ProtectionError, match="unprotected"):
        protection.verify(bare, secret=SECRET)
    assert msg.body_type == "pkiconf"


# --- views --------------------------------------------------------------------------------------


def test_ir_ip_views():
    ir = decode(raw("ir_req.der"))
    assert ir.body_type == "ir"
    assert ir.header.sender.rfc4514_string() == "CN=Chassis"
    assert ir.header.recipient.rfc4514_string() == "CN=CMP_Mock_Server"
    assert ir.header.sender_kid == b"1234"
    assert ir.header.message_time.tzinfo is not None
    req = ir.requests[0]
    assert req.cert_req_id == 0 and req.subject.rfc4514_string() == "CN=Chassis"
    assert req.popo == "signature" and protection.verify_popo(req)
    rsp_spki = (
        cert("rsp.crt")
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert req.public_key_der == rsp_spki

    ip = decode(raw("ir_ip.der"))
    assert ip.header.recip_nonce == ir.header.sender_nonce
    assert ip.ca_pubs == (der("ca.crt"),) and ip.extra_certs == (der("ca.crt"),)
    (resp,) = ip.responses
    assert resp.status.name == "accepted" and resp.cert_der == der("rsp.crt")


def test_kur_old_cert_id_and_p10cr():
    kur = decode(raw("kur_req.der")).requests[0]
    rsp = cert("rsp.crt")
    assert kur.old_cert_id == (rsp.issuer, rsp.serial_number)
    assert protection.verify_popo(kur)
    p10 = decode(raw("p10cr_req.der"))
    assert x509.load_der_x509_csr(p10.csr_der).subject.rfc4514_string() == "CN=Chassis"


def test_status_error_poll_views():
    rej = decode(raw("rej_ip_rejection.der")).responses[0].status
    assert rej == StatusInfo(2, ("denied by policy",), ("badRequest",))
    err = decode(raw("err_error.der")).error
    assert err.status.fail_info == ("badRequest",) and err.error_code == 486539422
    assert err.details == ("CMP routines", "error processing message")
    assert decode(raw("poll_pollrep1.der")).poll_rep == (PollRep(0, 1),)
    assert decode(raw("poll_pollreq1.der")).poll_req == (0,)
    assert decode(raw("poll_ip_waiting.der")).responses[0].status.name == "waiting"
    assert decode(raw("implicit_ir.der")).header.implicit_confirm
    assert decode(raw("implicit_ip.der")).header.implicit_confirm
    assert not decode(raw("ir_req.der")).header.implicit_confirm
    conf = decode(raw("ir_certconf.der")).confirmations[0]
    assert conf.cert_hash == codec.cert_hash(der("rsp.crt")) and conf.status.status == 0
    genp = decode(raw("genmitav_genp.der"))
    assert genp.info[0].oid == "1.3.6.1.5.5.7.4.2"  # id-it-signKeyPairTypes


# --- builders reproduce OpenSSL's bytes -----------------------------------------------------


def test_server_bodies_match_openssl():
    rsp, ca = der("rsp.crt"), der("ca.crt")
    assert cert_rep_body("ip", [accepted(rsp)], [ca]).der == body_bytes("ir_ip.der")
    assert cert_rep_body("ip", [waiting()]).der == body_bytes("poll_ip_waiting.der")
    rej = rejected(("badRequest",), ("denied by policy",))
    assert cert_rep_body("ip", [rej]).der == body_bytes("rej_ip_rejection.der")
    assert cert_rep_body("ip", [accepted(rsp)]).der == body_bytes("poll_ip_final.der")
    assert poll_rep_body(PollRep(0, 1)).der == body_bytes("poll_pollrep1.der")
    assert pki_conf_body().der == body_bytes("ir_pkiconf.der")
    err = decode(raw("err_error.der")).error
    assert error_body(err.status, err.error_code, err.details).der == body_bytes("err_error.der")


def test_client_bodies_match_openssl():
    rsp = der("rsp.crt")
    assert cert_conf_body(rsp).der == body_bytes("ir_certconf.der")
    text = ("public key in new certificate does not match our enrollment key",)
    rejection = StatusInfo(2, text, ("incorrectData",))
    assert cert_conf_body(rsp, 0, rejection).der == body_bytes("irbadkey_certconf_rejection.der")
    assert poll_req_body(0).der == body_bytes("poll_pollreq1.der")


@pytest.mark.parametrize(
    "name,kind,kwargs",
    [
        ("ir_req.der", "ir", {"subject": x509.Name.from_rfc4514_string("CN=Chassis")}),
        ("kur_req.der", "kur", {"old_cert": cert("rsp.crt")}),
    ],
)
def test_cert_requests_match_openssl(name, kind, kwargs):
    """Everything but the (randomised ECDSA) POPO signature is OpenSSL's byte for byte."""
    theirs = decode(raw(name))
    mine = decode(encode_message(theirs.header, cert_req_body(kind, key("rsp.key"), **kwargs)))
    assert mine.requests[0].cert_req_der == theirs.requests[0].cert_req_der
    assert mine.requests[0].popo_alg == theirs.requests[0].popo_alg
    assert protection.verify_popo(mine.requests[0])


@pytest.mark.parametrize("name", ["ir_req.der", "implicit_ir.der", "cr_cp.der", "rr_rp.der"])
def test_headers_match_openssl(name):
    h = decode(raw(name)).header
    alg = asn1.algorithm(h.protection_alg, h.protection_params)
    assert codec.encode_header(h, alg) == asn1.children(raw(name))[0]


def test_built_messages_protect_and_round_trip():
    import os

    rsp = der("rsp.crt")
    header = Header(
        transaction_id=os.urandom(16),
        sender_nonce=os.urandom(16),
        recip_nonce=os.urandom(16),
        sender=cert("srv.crt").subject,
        recipient=None,
        message_time=NOW,
        free_text=("hello",),
    )
    pbm = protection.PbmProtector(SECRET, b"ref", os.urandom, mac="hmac-sha256")
    signer = protection.SignatureProtector(key("srv.key"), der("srv.crt"), [der("ca.crt")])
    bodies = [
        cert_rep_body("cp", [accepted(rsp)], [der("ca.crt")]),
        cert_rep_body("kup", [waiting(), rejected(("badPOP", "badCertTemplate"), cert_req_id=1)]),
        poll_rep_body(PollRep(0, 5, ("busy",))),
        pki_conf_body(),
        error_body(StatusInfo(2, ("no",), ("systemFailure",)), 7, ("detail",)),
        cert_conf_body(None),
        codec.genm_body(codec.InfoValue("1.3.6.1.5.5.7.4.17")),
        codec.genp_body(),
        codec.p10cr_body(_csr_der()),
    ]
    for body in bodies:
        for prot in (pbm, signer):
            data = encode_message(header, body, prot)
            msg = decode(data)
            assert encode(msg) == data  # our DER is canonical
            assert msg.body_type == body.type
            v = protection.verify(msg, secret=SECRET, trust_anchor_der=der("ca.crt"), now=NOW)
            assert v.method == ("pbm" if prot is pbm else "signature")
            assert msg.header.free_text == ("hello",)
            assert msg.header.sender_kid == (
                b"ref" if prot is pbm else protection.subject_key_id(cert("srv.crt"))
            )
    kup = decode(encode_message(header, bodies[1])).responses
    assert kup[1].status.fail_info == ("badPOP", "badCertTemplate")
    assert kup[1].cert_req_id == 1 and kup[0].cert_der is None
    assert decode(encode_message(header, bodies[2])).poll_rep == (PollRep(0, 5, ("busy",)),)


def _csr_der() -> bytes:
    csr = x509.load_pem_x509_csr((PKI / "p10.csr").read_bytes())
    return csr.public_bytes(serialization.Encoding.DER)


def test_cert_request_with_sans_and_rsa_sha1():
    from cryptography.hazmat.primitives.asymmetric import rsa

    k = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    import ipaddress

    sans = [x509.DNSName("segw.example.net"), x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]
    body = cert_req_body("cr", k, subject=None, sans=sans, hash_alg="sha1")
    req = decode(encode_message(Header(), body)).requests[0]
    assert req.subject is None and req.sans == tuple(sans)
    assert req.popo_alg == "1.2.840.113549.1.1.5" and protection.verify_popo(req)
    assert b"\x01\x01\xff" in req.extensions_der  # SAN critical without a subject


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x30\x00",
        b"\x30\x03\x02\x01\x02",
        b"\x04\x00",
        raw("ir_ip.der")[:-1],
        raw("ir_ip.der") + b"\x00",
        b"\x30\x84\xff\xff\xff\xff",
    ],
)
def test_malformed_is_cmp_error(data):
    with pytest.raises(CmpError):
        decode(data)
