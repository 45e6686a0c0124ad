"""cards.pki.ocsp: the packet cards' sans-IO OCSP client (RFC 6960).

Three tiers: OpenSSL 3.0 byte vectors replayed on their fixed clock (tests/vectors/ocsp/),
responses made in memory with cryptography's OCSPResponseBuilder (and pyasn1 where the
builder cannot go: two answers, no signature), and a real `openssl ocsp` responder per
signer variant, started here on a kernel-picked port and POSTed to with httpx.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import os
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc6960

from cards.pki import ocsp as oc
from cards.pki.ocsp import OcspRequest, OcspResult, build_request, check_response

VEC = Path(__file__).parent / "vectors" / "ocsp"
URL = "http://127.0.0.1:18800/"
UTC = dt.UTC


# ---------------------------------------------------------------- vectors (fixed clock)


def _vcert(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((VEC / "pki" / name).read_bytes())


V_CA, V_GOOD, V_REVOKED, V_UNKNOWN, V_OCSP = map(
    _vcert, ["ca.crt", "good.crt", "revoked.crt", "notinindex.crt", "ocsp.crt"]
)
# thisUpdate of the vectors is 02:29:10..12Z, nextUpdate 5 minutes later.
V_NOW = dt.datetime(2026, 11, 29, 2, 30, 0, tzinfo=UTC)


def _nonce_of(der_ext_holder) -> bytes | None:
    try:
        return der_ext_holder.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def vector_request(name: str) -> OcspRequest:
    """The OcspRequest for a single-certificate request vector, as build_request makes it."""
    der = (VEC / f"{name}-req.der").read_bytes()
    req = ocsp.load_der_ocsp_request(der)
    return OcspRequest(
        URL, der, _nonce_of(req), req.serial_number, req.issuer_name_hash, req.issuer_key_hash
    )


def vector_response(name: str) -> bytes:
    return (VEC / f"{name}-resp.der").read_bytes()


@pytest.mark.parametrize(
    "name, cert",
    [
        ("openssl-good-nonce", V_GOOD),
        ("openssl-good-nononce", V_GOOD),
        ("openssl-revoked-nonce", V_REVOKED),
        ("openssl-revoked-nononce", V_REVOKED),
        ("openssl-unknown-nonce", V_UNKNOWN),
        ("openssl-unknown-nononce", V_UNKNOWN),
        ("pyca-good-nononce-sha1", V_GOOD),
    ],
)
def test_build_request_matches_openssl_byte_for_byte(name, cert):
    want = vector_request(name)
    got = build_request(cert, V_CA, URL, nonce=want.nonce)
    assert got == want


def test_request_fields_are_the_sha1_certid():
    req = build_request(V_GOOD, V_CA, URL, nonce=b"\x01" * 16)
    parsed = ocsp.load_der_ocsp_request(req.der)
    assert isinstance(parsed.hash_algorithm, hashes.SHA1)
    assert (parsed.serial_number, req.serial) == (0x1001, 0x1001)
    digest = hashes.Hash(hashes.SHA1())
    digest.update(V_CA.subject.public_bytes())
    assert req.issuer_name_hash == parsed.issuer_name_hash == digest.finalize()
    ski = x509.SubjectKeyIdentifier.from_public_key(V_CA.public_key()).digest
    assert req.issuer_key_hash == parsed.issuer_key_hash == ski
    assert _nonce_of(parsed) == req.nonce == b"\x01" * 16
    assert req.url == URL and oc.CONTENT_TYPE_REQUEST == "application/ocsp-request"
    plain = build_request(V_GOOD, V_CA, URL, nonce=None)
    assert plain.nonce is None and _nonce_of(ocsp.load_der_ocsp_request(plain.der)) is None


@pytest.mark.parametrize("bad", [b"", b"\x00" * 33])
def test_build_request_refuses_nonce_outside_rfc8954_bounds(bad):
    with pytest.raises(ValueError, match="nonce"):
        build_request(V_GOOD, V_CA, URL, nonce=bad)


@pytest.mark.parametrize(
    "name, status",
    [
        ("openssl-good-nonce", "good"),
        ("openssl-revoked-nonce", "revoked"),
        ("openssl-unknown-nonce", "unknown"),
        ("pyca-good-GET-nonce", "good"),
    ],
)
def test_vectors_with_nonce(name, status):
    result = check_response(
        vector_request(name), V_CA, vector_response(name), V_NOW, require_nonce=True
    )
    assert result.status == status, result.reason
    assert URL in result.reason and "\n" not in result.reason
    # All signed by the delegated responder (EKU OCSPSigning, nocheck), which comes along.
    assert ocsp.load_der_ocsp_response(vector_response(name)).certificates == [V_OCSP]


@pytest.mark.parametrize(
    "name, status",
    [
        ("openssl-good-nononce", "good"),
        ("openssl-revoked-nononce", "revoked"),
        ("openssl-unknown-nononce", "unknown"),
        ("pyca-good-nononce-sha1", "good"),
        ("pyca-revoked-nononce-sha1", "revoked"),
        ("pyca-unknown-nononce-sha1", "unknown"),
    ],
)
def test_vectors_without_nonce(name, status):
    req, body = vector_request(name), vector_response(name)
    result = check_response(req, V_CA, body, V_NOW, require_nonce=False)
    assert result.status == status, result.reason
    # The same answer is refused when the policy demands a nonce.
    strict = check_response(req, V_CA, body, V_NOW, require_nonce=True)
    assert strict.status == "error"
    assert strict.reason.startswith("error: nonce required but the request carried none")


def test_revoked_reason_names_time_cause_and_responder():
    result = check_response(
        vector_request("openssl-revoked-nonce"),
        V_CA,
        vector_response("openssl-revoked-nonce"),
        V_NOW,
        require_nonce=True,
    )
    assert result == OcspResult(
        "revoked", f"revoked at 2026-11-29T02:29:09Z (keyCompromise) by OCSP {URL}"
    )


def test_nonce_missing_from_response_with_require_nonce():
    # We sent a nonce; the responder's answer (to another request) carries none.
    req = build_request(V_GOOD, V_CA, URL, nonce=b"\x42" * 16)
    body = vector_response("openssl-good-nononce")
    assert check_response(req, V_CA, body, V_NOW, require_nonce=False).status == "good"
    strict = check_response(req, V_CA, body, V_NOW, require_nonce=True)
    assert strict.status == "error" and strict.reason.startswith("error: nonce missing")


def test_nonce_mismatch_is_an_error_even_when_not_required():
    req = build_request(V_GOOD, V_CA, URL, nonce=b"\x42" * 16)  # not the vector's nonce
    body = vector_response("openssl-good-nonce")
    for require in (True, False):
        result = check_response(req, V_CA, body, V_NOW, require_nonce=require)
        assert result.status == "error"
        assert result.reason.startswith("error: nonce mismatch")


def test_unasked_nonce_in_response_is_accepted():
    req = build_request(V_GOOD, V_CA, URL, nonce=None)
    body = vector_response("openssl-good-nonce")
    assert check_response(req, V_CA, body, V_NOW, require_nonce=False).status == "good"


def test_badsig_vector_is_refused():
    result = check_response(
        vector_request("openssl-good-badsig-keyid"),
        V_CA,
        vector_response("openssl-good-badsig-keyid"),
        V_NOW,
        require_nonce=True,
    )
    assert result.status == "error"
    assert result.reason.startswith("error: bad signature")


def test_malformed_request_status():
    body = vector_response("malformedRequest")
    result = check_response(
        vector_request("openssl-good-nonce"), V_CA, body, V_NOW, require_nonce=True
    )
    assert result.status == "error" and "malformedRequest" in result.reason


def test_multi_response_answers_each_certificate_separately():
    """good, revoked and unknown in one response: only our CertID's answer counts."""
    body = vector_response("openssl-multi3-nonce")
    nonce = _nonce_of(ocsp.load_der_ocsp_response(body))
    for cert, status in [(V_GOOD, "good"), (V_REVOKED, "revoked"), (V_UNKNOWN, "unknown")]:
        req = build_request(cert, V_CA, URL, nonce=nonce)
        result = check_response(req, V_CA, body, V_NOW, require_nonce=True)
        assert result.status == status, result.reason


def test_response_about_another_certificate_is_an_error():
    req = build_request(V_GOOD, V_CA, URL, nonce=None)
    result = check_response(
        req, V_CA, vector_response("openssl-revoked-nononce"), V_NOW, require_nonce=False
    )
    assert result.status == "error"
    assert result.reason.startswith("error: no SingleResponse matches our CertID")


@pytest.mark.parametrize("name", ["pyca-good-nonce-sha256", "pyca-revoked-nonce-sha256"])
def test_sha256_certid_does_not_match_our_sha1_request(name):
    body = vector_response(name)
    cert = V_GOOD if "good" in name else V_REVOKED
    req = build_request(cert, V_CA, URL, nonce=_nonce_of(ocsp.load_der_ocsp_response(body)))
    result = check_response(req, V_CA, body, V_NOW, require_nonce=True)
    assert result.status == "error" and "no SingleResponse" in result.reason


# (The vectors' delegate becomes valid one second before thisUpdate, so the "from the
# future" side of the window is tested on built responses below.)
@pytest.mark.parametrize(
    "now, ok",
    [
        (dt.datetime(2026, 11, 29, 2, 34, 10, tzinfo=UTC) + dt.timedelta(seconds=299), True),
        (dt.datetime(2026, 11, 29, 2, 34, 10, tzinfo=UTC) + dt.timedelta(seconds=301), False),
        (dt.datetime(2026, 11, 29, 2, 30), True),  # naive: taken as UTC
    ],
)
def test_vector_freshness_window_with_skew(now, ok):
    name = "openssl-good-nonce"
    result = check_response(
        vector_request(name), V_CA, vector_response(name), now, require_nonce=True
    )
    if ok:
        assert result.status == "good", result.reason
    else:
        assert result.status == "error" and result.reason.startswith("error: stale"), result


def test_response_checked_against_the_wrong_ca_is_refused():
    other = ca_cert("Other CA")
    result = check_response(
        vector_request("openssl-good-nonce"),
        other,
        vector_response("openssl-good-nonce"),
        V_NOW,
        require_nonce=True,
    )
    assert result.status == "error"
    assert "the request was not built for issuer 'CN=Other CA'" in result.reason


def test_delegate_outside_its_validity_is_refused():
    # The vectors' delegate is valid from 2026-11-29 02:29:09Z.
    name = "openssl-good-nonce"
    before = dt.datetime(2026, 11, 29, 2, 29, 0, tzinfo=UTC)
    result = check_response(
        vector_request(name), V_CA, vector_response(name), before, require_nonce=True
    )
    assert result.status == "error" and "is not valid before" in result.reason


# ---------------------------------------------------------------- in-memory PKI

NOW = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)  # the manual clock of built responses
DAY = dt.timedelta(days=1)


@functools.cache
def key(tag: str):
    if tag.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if tag.startswith("ec"):
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    cn,
    subject_key,
    issuer_cn,
    issuer_key,
    *,
    serial=None,
    ca=False,
    eku=None,
    nocheck=False,
    start=None,
    days=3650,
    aia=None,
):
    start = start or dt.datetime(2025, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer_cn))
        .public_key(subject_key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if nocheck:
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    if aia:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [x509.AccessDescription(x509.OID_OCSP, x509.UniformResourceIdentifier(aia))]
            ),
            critical=False,
        )
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


@functools.cache
def ca_cert(cn: str, tag: str | None = None) -> x509.Certificate:
    k = key(tag or f"rsa-{cn}")
    return make_cert(cn, k, cn, k, ca=True)


OCSP_EKU = [ExtendedKeyUsageOID.OCSP_SIGNING]


@functools.cache
def pki() -> dict:
    """Our CA (RSA), its leaves, delegates of every kind, and a sibling CA's delegate."""
    ca_key, sib_key = key("rsa-ca"), key("rsa-sibling")
    ca = make_cert("OCSP Test CA", ca_key, "OCSP Test CA", ca_key, ca=True)
    sibling = make_cert("OCSP Sibling CA", sib_key, "OCSP Sibling CA", sib_key, ca=True)
    leaf_key = key("ec-leaf")
    p = {
        "ca": ca,
        "ca.key": ca_key,
        "sibling": sibling,
        "sibling.key": sib_key,
        "good": make_cert("good", leaf_key, "OCSP Test CA", ca_key, serial=0x1001, aia=URL),
        "revoked": make_cert("revoked", leaf_key, "OCSP Test CA", ca_key, serial=0x1002),
        "unknown": make_cert("unknown", leaf_key, "OCSP Test CA", ca_key, serial=0x7777),
    }
    for tag, signer_key in [("rsa-del", key("rsa-del")), ("ec-del", key("ec-del"))]:
        p[tag] = make_cert(
            f"responder {tag}", signer_key, "OCSP Test CA", ca_key, eku=OCSP_EKU, nocheck=True
        )
        p[f"{tag}.key"] = signer_key
    p["ed-del"] = make_cert("responder ed", key("ed-del"), "OCSP Test CA", ca_key, eku=OCSP_EKU)
    p["ed-del.key"] = key("ed-del")
    p["noeku"] = make_cert("responder noeku", key("ec-noeku"), "OCSP Test CA", ca_key)
    p["noeku.key"] = key("ec-noeku")
    p["wrongeku"] = make_cert(
        "responder wrongeku",
        key("ec-wrongeku"),
        "OCSP Test CA",
        ca_key,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    p["wrongeku.key"] = key("ec-wrongeku")
    p["sib-del"] = make_cert(
        "responder sibling", key("ec-sibdel"), "OCSP Sibling CA", sib_key, eku=OCSP_EKU
    )
    p["sib-del.key"] = key("ec-sibdel")
    # Names our CA as issuer, carries the EKU, but a rogue key signed it.
    p["forged"] = make_cert(
        "responder forged", key("ec-forged"), "OCSP Test CA", key("ec-rogue"), eku=OCSP_EKU
    )
    p["forged.key"] = key("ec-forged")
    p["expired-del"] = make_cert(
        "responder expired",
        key("ec-expdel"),
        "OCSP Test CA",
        ca_key,
        eku=OCSP_EKU,
        start=NOW - 10 * DAY,
        days=5,
    )
    p["expired-del.key"] = key("ec-expdel")
    return p


def respond(
    cert_name="good",
    *,
    signer="ca",
    status=ocsp.OCSPCertStatus.GOOD,
    this_update=None,
    next_update="default",
    nonce=None,
    by_key=False,
    include=None,
    revocation_time=None,
    revocation_reason=None,
    algorithm="default",
    extra_ext=None,
) -> bytes:
    p = pki()
    this_update = this_update or NOW - dt.timedelta(minutes=1)
    if next_update == "default":
        next_update = this_update + dt.timedelta(hours=1)
    if status == ocsp.OCSPCertStatus.REVOKED and revocation_time is None:
        revocation_time = NOW - DAY
    signer_cert, signer_key = p[signer], p[f"{signer}.key"]
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=p[cert_name],
        issuer=p["ca"],
        algorithm=hashes.SHA1(),
        cert_status=status,
        this_update=this_update,
        next_update=next_update,
        revocation_time=revocation_time,
        revocation_reason=revocation_reason,
    )
    encoding = ocsp.OCSPResponderEncoding.HASH if by_key else ocsp.OCSPResponderEncoding.NAME
    builder = builder.responder_id(encoding, signer_cert)
    certs = include if include is not None else ([] if signer == "ca" else [signer])
    if certs:
        builder = builder.certificates([p[c] for c in certs])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    if extra_ext is not None:
        builder = builder.add_extension(extra_ext, critical=True)
    if algorithm == "default":
        algorithm = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer_key, algorithm).public_bytes(serialization.Encoding.DER)


NONCE = bytes(range(16))


def our_request(cert_name="good", nonce=NONCE) -> OcspRequest:
    return build_request(pki()[cert_name], pki()["ca"], URL, nonce=nonce)


def check(body, cert_name="good", nonce=NONCE, now=NOW, **kw) -> OcspResult:
    kw.setdefault("require_nonce", nonce is not None)
    return check_response(our_request(cert_name, nonce), pki()["ca"], body, now, **kw)


# pyasn1 rewrites where the builder cannot go (test side only; the module uses cryptography).


def _rewrite(body: bytes, edit, signer_key=None) -> bytes:
    """Decode a response, let `edit` change its BasicOCSPResponse, re-sign tbs, re-encode."""
    outer, _ = decoder.decode(body, asn1Spec=rfc6960.OCSPResponse())
    octets = outer["responseBytes"]["response"]
    basic, _ = decoder.decode(bytes(octets), asn1Spec=rfc6960.BasicOCSPResponse())
    edit(basic)
    if signer_key is not None:
        tbs = encoder.encode(basic["tbsResponseData"])
        sig = signer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        basic["signature"] = univ.BitString.fromOctetString(sig)
    outer["responseBytes"]["response"] = univ.OctetString(encoder.encode(basic))
    return encoder.encode(outer)


@pytest.mark.parametrize("signer", ["ca", "rsa-del", "ec-del", "ed-del"])
@pytest.mark.parametrize("by_key", [False, True])
def test_authorised_signers_by_name_and_by_key(signer, by_key):
    result = check(respond(signer=signer, nonce=NONCE, by_key=by_key))
    assert result.status == "good", result.reason


def test_sha384_and_sha512_rsa_signatures_verify():
    for algorithm in (hashes.SHA384(), hashes.SHA512()):
        assert check(respond(nonce=NONCE, algorithm=algorithm)).status == "good"


def test_revoked_with_and_without_reason():
    when = dt.datetime(2030, 5, 30, 8, 0, 0, tzinfo=UTC)
    body = respond(
        "revoked",
        status=ocsp.OCSPCertStatus.REVOKED,
        revocation_time=when,
        revocation_reason=x509.ReasonFlags.ca_compromise,
        nonce=NONCE,
    )
    assert check(body, "revoked") == OcspResult(
        "revoked", f"revoked at 2030-05-30T08:00:00Z (cACompromise) by OCSP {URL}"
    )
    body = respond("revoked", status=ocsp.OCSPCertStatus.REVOKED, revocation_time=when, nonce=NONCE)
    assert check(body, "revoked") == OcspResult(
        "revoked", f"revoked at 2030-05-30T08:00:00Z by OCSP {URL}"
    )


def test_unknown_status():
    result = check(respond("unknown", status=ocsp.OCSPCertStatus.UNKNOWN, nonce=NONCE), "unknown")
    assert result.status == "unknown" and "0x7777" in result.reason


@pytest.mark.parametrize(
    "signer, why",
    [
        ("noeku", "lacks extendedKeyUsage id-kp-OCSPSigning"),
        ("wrongeku", "lacks extendedKeyUsage id-kp-OCSPSigning"),
        ("sib-del", "was issued by 'CN=OCSP Sibling CA', not by the certificate's issuer"),
        ("forged", "is not signed by the key of the certificate's issuer"),
        ("expired-del", "expired at"),
    ],
)
def test_unauthorised_delegates_are_refused(signer, why):
    result = check(respond(signer=signer, nonce=NONCE))
    assert result.status == "error" and why in result.reason, result.reason


def test_delegate_must_be_included_in_the_response():
    result = check(respond(signer="rsa-del", nonce=NONCE, include=[]))
    assert result.status == "error"
    assert "neither the issuer" in result.reason and "included" in result.reason


def test_responder_id_must_name_the_signer():
    # The ResponderID names the included delegate, but the CA's key signed: the delegate's
    # key does not verify it.
    body = _rewrite(respond(signer="rsa-del", nonce=NONCE), lambda b: None, pki()["ca.key"])
    result = check(body)
    assert result.status == "error" and result.reason.startswith("error: bad signature")


def test_signed_by_a_key_that_is_not_the_issuers():
    # The ResponderID names our CA; the signature comes from the sibling CA's key.
    body = _rewrite(respond(nonce=NONCE), lambda b: None, pki()["sibling.key"])
    result = check(body)
    assert result.status == "error" and result.reason.startswith("error: bad signature")


def test_response_for_a_certificate_of_another_ca_is_ignored():
    # The sibling CA's answer about a serial that happens to equal ours.
    p = pki()
    leaf = make_cert("x", key("ec-leaf"), "OCSP Sibling CA", p["sibling.key"], serial=0x1001)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            leaf,
            p["sibling"],
            hashes.SHA1(),
            ocsp.OCSPCertStatus.REVOKED,
            NOW,
            NOW + DAY,
            NOW - DAY,
            None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.NAME, p["ca"])
    )
    body = builder.sign(p["ca.key"], hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    result = check(body, nonce=None)
    assert result.status == "error" and "no SingleResponse" in result.reason


@pytest.mark.parametrize(
    "this_update, next_update, ok",
    [
        (NOW - dt.timedelta(minutes=1), NOW + dt.timedelta(minutes=1), True),
        (NOW + dt.timedelta(seconds=290), NOW + DAY, True),  # within the skew
        (NOW + dt.timedelta(seconds=310), NOW + DAY, False),  # from the future
        (NOW - DAY, NOW - dt.timedelta(seconds=290), True),  # just past, within the skew
        (NOW - DAY, NOW - dt.timedelta(seconds=310), False),  # expired
        (NOW - dt.timedelta(minutes=59), None, True),  # no nextUpdate: max_age applies
        (NOW - dt.timedelta(minutes=61), None, False),
    ],
)
def test_freshness(this_update, next_update, ok):
    body = respond(this_update=this_update, next_update=next_update, nonce=NONCE)
    result = check(body)
    if ok:
        assert result.status == "good", result.reason
    else:
        assert result.status == "error" and result.reason.startswith("error: stale"), result


def test_skew_and_max_age_are_parameters():
    body = respond(this_update=NOW - dt.timedelta(minutes=20), next_update=None, nonce=NONCE)
    assert check(body).status == "good"
    assert check(body, max_age_s=600).status == "error"
    body = respond(this_update=NOW + dt.timedelta(seconds=30), nonce=NONCE)
    assert check(body).status == "good"
    assert check(body, skew_s=10).status == "error"


def test_stale_revoked_is_not_revoked():
    body = respond(
        "revoked",
        status=ocsp.OCSPCertStatus.REVOKED,
        this_update=NOW - 3 * DAY,
        next_update=NOW - 2 * DAY,
        nonce=NONCE,
    )
    assert check(body, "revoked").status == "error"


def test_nonce_rules_on_built_responses():
    assert check(respond(nonce=NONCE)).status == "good"
    mismatch = check(respond(nonce=b"\xff" * 16))
    assert mismatch == OcspResult("error", f"error: nonce mismatch (OCSP {URL})")
    missing = check(respond(nonce=None))
    assert missing.status == "error" and "nonce missing" in missing.reason
    assert check(respond(nonce=None), require_nonce=False).status == "good"


def test_unknown_critical_response_extension_is_refused():
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    result = check(respond(nonce=NONCE, extra_ext=ext))
    assert result.status == "error" and "1.3.6.1.4.1.55555.1" in result.reason


@pytest.mark.parametrize(
    "status, name",
    [
        (ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformedRequest"),
        (ocsp.OCSPResponseStatus.INTERNAL_ERROR, "internalError"),
        (ocsp.OCSPResponseStatus.TRY_LATER, "tryLater"),
        (ocsp.OCSPResponseStatus.SIG_REQUIRED, "sigRequired"),
        (ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized"),
    ],
)
def test_unsuccessful_response_statuses(status, name):
    body = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
    result = check(body)
    assert result == OcspResult("error", f"error: responder answered {name} (OCSP {URL})")


def test_two_answers_for_our_certid_are_refused():
    def duplicate(basic):
        responses = basic["tbsResponseData"]["responses"]
        responses.append(responses[0])

    body = _rewrite(respond(nonce=NONCE), duplicate, pki()["ca.key"])
    result = check(body)
    assert result.status == "error" and "2 SingleResponses" in result.reason


def test_resigned_rewrite_still_verifies():
    # Control for _rewrite: the identity edit, re-signed, is still good.
    assert check(_rewrite(respond(nonce=NONCE), lambda b: None, pki()["ca.key"])).status == "good"


def test_unsigned_response_is_refused():
    def unsign(basic):
        basic["signature"] = univ.BitString.fromOctetString(b"")

    result = check(_rewrite(respond(nonce=NONCE), unsign))
    assert result.status == "error" and result.reason.startswith("error: bad signature")


def test_signature_algorithm_must_fit_the_key():
    # An ECDSA signature OID over an RSA signer: refused before any verification.
    def relabel(basic):
        alg = basic["signatureAlgorithm"].clone()
        alg["algorithm"] = univ.ObjectIdentifier("1.2.840.10045.4.3.2")  # ecdsa-with-SHA256
        basic["signatureAlgorithm"] = alg

    result = check(_rewrite(respond(nonce=NONCE), relabel))
    assert result.status == "error" and "not one we verify" in result.reason


def test_md5_rsa_signature_is_not_verified():
    def relabel(basic):
        basic["signatureAlgorithm"]["algorithm"] = univ.ObjectIdentifier("1.2.840.113549.1.1.4")

    result = check(_rewrite(respond(nonce=NONCE), relabel))
    assert result.status == "error" and "not one we verify" in result.reason


# ---------------------------------------------------------------- bad input (never raises)

BASE = vector_response("openssl-good-nonce")
BASE_REQ = vector_request("openssl-good-nonce")
_parsed = ocsp.load_der_ocsp_response(BASE)
TBS = (BASE.index(_parsed.tbs_response_bytes), len(_parsed.tbs_response_bytes))
SIG = (BASE.index(_parsed.signature), len(_parsed.signature))
COVERED = [*range(TBS[0], TBS[0] + TBS[1]), *range(SIG[0], SIG[0] + SIG[1])]


def _vcheck(body: bytes) -> OcspResult:
    result = check_response(BASE_REQ, V_CA, body, V_NOW, require_nonce=True)
    assert isinstance(result, OcspResult)
    assert result.status in {"good", "revoked", "unknown", "error"}
    assert result.reason and "\n" not in result.reason
    return result


def test_base_of_the_fuzz_is_good():
    assert _vcheck(BASE).status == "good"


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x30\x00", b"\x30\x03\x0a\x01\x00", BASE[:-1]])
def test_degenerate_bodies(body):
    assert _vcheck(body).status == "error"


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(body):
    assert _vcheck(body).status == "error"


@FUZZ
@given(st.sampled_from(COVERED), st.integers(1, 255))
def test_fuzz_signature_covered_byte_never_good(pos, xor):
    body = bytearray(BASE)
    body[pos] ^= xor
    assert _vcheck(bytes(body)).status == "error"


@FUZZ
@given(st.integers(0, len(BASE) - 1), st.integers(1, 255))
def test_fuzz_any_byte_never_raises(pos, xor):
    body = bytearray(BASE)
    body[pos] ^= xor
    result = _vcheck(bytes(body))
    if pos in COVERED:
        assert result.status == "error"


@FUZZ
@given(st.integers(0, len(BASE)), st.integers(0, 64), st.binary(max_size=64))
def test_fuzz_splice_never_raises_never_good(pos, cut, insert):
    body = BASE[:pos] + insert + BASE[pos + cut :]
    result = _vcheck(body)
    if body != BASE:
        assert result.status == "error"


@FUZZ
@given(st.binary(min_size=1, max_size=32), st.booleans())
def test_fuzz_nonce_only_ours_is_good(nonce, require):
    body = respond(nonce=nonce)
    result = check(body, nonce=NONCE, require_nonce=require)
    assert result.status == ("good" if nonce == NONCE else "error")


# ---------------------------------------------------------------- sans-IO


def test_module_does_no_io_no_clock_no_randomness():
    source = Path(oc.__file__).read_text()
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Attribute):
            assert node.attr not in {"now", "utcnow", "today", "urandom", "time"}, node.attr
    assert imported <= {"__future__", "datetime", "functools", "dataclasses", "cryptography"}


def test_no_network_needed(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("cards.pki.ocsp opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    req = build_request(V_GOOD, V_CA, URL, nonce=BASE_REQ.nonce)
    assert check_response(req, V_CA, BASE, V_NOW, require_nonce=True).status == "good"


# ---------------------------------------------------------------- openssl ocsp responder


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _index_line(cert: x509.Certificate, revoked_at: dt.datetime | None = None) -> str:
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = f"{cert.serial_number:X}"
    serial = serial if len(serial) % 2 == 0 else "0" + serial
    if revoked_at is None:
        return f"V\t{expiry}\t\t{serial}\tunknown\t/CN={cert.subject.rfc4514_string()[3:]}\n"
    when = revoked_at.strftime("%y%m%d%H%M%SZ")
    return f"R\t{expiry}\t{when},keyCompromise\t{serial}\tunknown\t/CN=revoked\n"


REVOKED_AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Signer variants: certificate and key names in pki(), extra openssl ocsp options.
VARIANTS = {
    "ca": ("ca", []),
    "ca-keyid": ("ca", ["-resp_key_id"]),
    "ca-sha1": ("ca", ["-rmd", "sha1"]),  # legacy responders still sign with SHA-1
    "ca-pss": ("ca", ["-rsigopt", "rsa_padding_mode:pss", "-rsigopt", "rsa_pss_saltlen:digest"]),
    "ca-pss384": ("ca", ["-rmd", "sha384", "-rsigopt", "rsa_padding_mode:pss"]),  # salt: max
    "delegate": ("rsa-del", []),
    "delegate-ec": ("ec-del", []),
    "delegate-ed": ("ed-del", []),
    "badsig": ("rsa-del", ["-badsig"]),
    "sibling": ("sib-del", []),
    "noeku": ("noeku", []),
}


class Responders:
    """`openssl ocsp` processes, one per signer variant, started on first use.

    OpenSSL 3.0's `-port` takes no address: the responder listens on all interfaces (see
    INTEROP.md); port 0 lets the kernel pick (xdist-safe) and the ACCEPT line names it. We
    only ever connect to 127.0.0.1, and stop each process by its own pid.
    """

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, tuple[subprocess.Popen, int]] = {}
        p = pki()
        for name in ("ca", "rsa-del", "ec-del", "ed-del", "sib-del", "noeku"):
            (root / f"{name}.crt").write_bytes(_pem(p[name]))
            (root / f"{name}.key").write_bytes(_pem(p[f"{name}.key"]))
        (root / "index.txt").write_text(
            _index_line(p["good"]) + _index_line(p["revoked"], REVOKED_AT)
        )
        (root / "index.txt.attr").write_text("unique_subject = no\n")

    def port(self, variant: str) -> int:
        if variant not in self.procs:
            self.procs[variant] = self._start(variant)
        return self.procs[variant][1]

    def _start(self, variant: str) -> tuple[subprocess.Popen, int]:
        signer, extra = VARIANTS[variant]
        r = self.root
        cmd = ["openssl", "ocsp", "-index", str(r / "index.txt"), "-port", "0"]
        cmd += ["-rsigner", str(r / f"{signer}.crt"), "-rkey", str(r / f"{signer}.key")]
        cmd += ["-CA", str(r / "ca.crt"), "-nmin", "5", "-ignore_err", *extra]
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True, cwd=r
        )
        proc.log = log
        line = _readline(proc, 10)  # "ACCEPT [::]:PORT PID=N"
        if not line.startswith("ACCEPT"):
            self._stop(proc)
            log.seek(0)
            raise AssertionError(f"openssl ocsp {variant} did not start: {line!r} {log.read()!r}")
        return proc, int(line.split()[1].rsplit(":", 1)[1])

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        proc.stdout.close()
        proc.log.close()

    def close(self) -> None:
        for proc, _ in self.procs.values():
            self._stop(proc)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0].decode(errors="replace") if out else ""


@pytest.fixture(scope="module")
def responders(tmp_path_factory):
    r = Responders(tmp_path_factory.mktemp("ocsp-responder"))
    try:
        yield r
    finally:
        r.close()


def ask(responders, variant, cert_name="good", nonce=b"n" * 16, require_nonce=None):
    """POST our request to the variant's responder (one connection per request); check it."""
    port = responders.port(variant)
    url = f"http://127.0.0.1:{port}/"
    p = pki()
    req = build_request(p[cert_name], p["ca"], url, nonce=nonce)
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        reply = client.post(
            url,
            content=req.der,
            headers={"Content-Type": oc.CONTENT_TYPE_REQUEST, "Connection": "close"},
        )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == oc.CONTENT_TYPE_RESPONSE
    require = nonce is not None if require_nonce is None else require_nonce
    now = dt.datetime.now(UTC)  # openssl stamps thisUpdate with the real clock
    return (
        req,
        reply.content,
        check_response(req, p["ca"], reply.content, now, require_nonce=require),
    )


@pytest.mark.parametrize(
    "variant",
    ["ca", "ca-keyid", "ca-sha1", "ca-pss", "ca-pss384", "delegate", "delegate-ec", "delegate-ed"],
)
@pytest.mark.parametrize(
    "cert_name, status", [("good", "good"), ("revoked", "revoked"), ("unknown", "unknown")]
)
def test_openssl_responder(responders, variant, cert_name, status):
    _, body, result = ask(responders, variant, cert_name)
    assert result.status == status, result.reason
    if status == "revoked":
        assert result.reason.startswith("revoked at 2026-01-02T03:04:05Z (keyCompromise) by OCSP")


def test_openssl_responder_shapes(responders):
    """What each variant actually sent: by name or key, PSS, delegate included, nonce echo."""
    nonce = os.urandom(16)
    req, body, result = ask(responders, "ca", nonce=nonce)
    resp = ocsp.load_der_ocsp_response(body)
    assert _nonce_of(resp) == nonce and result.status == "good"
    assert resp.responder_name == pki()["ca"].subject
    assert resp.next_update_utc - resp.this_update_utc == dt.timedelta(minutes=5)
    _, body, _ = ask(responders, "ca-keyid")
    assert ocsp.load_der_ocsp_response(body).responder_key_hash == req.issuer_key_hash
    _, body, _ = ask(responders, "ca-pss")
    assert ocsp.load_der_ocsp_response(body).signature_algorithm_oid.dotted_string == (
        "1.2.840.113549.1.1.10"
    )
    _, body, _ = ask(responders, "delegate")
    assert ocsp.load_der_ocsp_response(body).certificates == [pki()["rsa-del"]]
    _, body, _ = ask(responders, "delegate-ec")
    assert ocsp.load_der_ocsp_response(body).signature_algorithm_oid._name == "ecdsa-with-SHA256"
    _, body, _ = ask(responders, "delegate-ed")
    assert ocsp.load_der_ocsp_response(body).signature_algorithm_oid._name == "ed25519"


def test_openssl_responder_without_nonce(responders):
    _, body, result = ask(responders, "delegate", nonce=None)
    assert result.status == "good" and _nonce_of(ocsp.load_der_ocsp_response(body)) is None
    _, _, strict = ask(responders, "delegate", nonce=None, require_nonce=True)
    assert strict.status == "error"


def test_openssl_badsig_refused(responders):
    _, _, result = ask(responders, "badsig")
    assert result.status == "error" and result.reason.startswith("error: bad signature")


def test_openssl_delegate_of_sibling_ca_refused(responders):
    _, _, result = ask(responders, "sibling")
    assert result.status == "error"
    assert "issued by 'CN=OCSP Sibling CA'" in result.reason


def test_openssl_delegate_without_eku_refused(responders):
    _, _, result = ask(responders, "noeku")
    assert result.status == "error" and "id-kp-OCSPSigning" in result.reason


def test_openssl_answer_to_another_request_is_refused(responders):
    # A replayed answer: right certificate, but our new request carries a new nonce.
    _, body, first = ask(responders, "ca", nonce=b"a" * 16)
    assert first.status == "good"
    again = build_request(pki()["good"], pki()["ca"], URL, nonce=b"b" * 16)
    result = check_response(again, pki()["ca"], body, dt.datetime.now(UTC), require_nonce=True)
    assert result.status == "error" and "nonce mismatch" in result.reason
