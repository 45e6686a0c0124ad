"""OCSP client for the packet cards (RFC 6960), sans-IO.

The IKEv2 engine asks `build_request` for the DER to POST (Content-Type
application/ocsp-request) to the responder URL; the card runner does the HTTP exchange and
hands the body back to `check_response`, which never raises: the bytes come from the network,
so anything wrong with them is an OcspResult of status "error" whose reason is one log line.

No I/O, no clock, no randomness here: the wall clock (`now`, the warpable one shared with the
lab peers) and the nonce bytes are passed in. ASN.1 is cryptography's (`x509.ocsp`); only
the response signature and the signer's authority are checked here, since cryptography
parses responses but does not verify them.

Who may sign (RFC 6960 4.2.2.2): the CA that issued the certificate in question, or a
delegated responder whose certificate is included in the response, carries EKU
id-kp-OCSPSigning, was issued directly by that CA and is within its validity. A delegate
issued by any other CA (a sibling, a parent) is refused, whatever it claims.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, SignatureAlgorithmOID

CONTENT_TYPE_REQUEST = "application/ocsp-request"
CONTENT_TYPE_RESPONSE = "application/ocsp-response"

# RFC 8954 2.1: a nonce is 1 to 32 octets (responders may refuse longer ones).
NONCE_MIN, NONCE_MAX = 1, 32

_SHA1 = hashes.SHA1()
_UTC = dt.UTC

_STATUS_NAMES = {
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
    ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
    ocsp.OCSPResponseStatus.SIG_REQUIRED: "sigRequired",
    ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
}

# Signature algorithms we verify, by the key family they need. MD5 is not among them.
_RSA_PKCS1 = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA1,
        SignatureAlgorithmOID.RSA_WITH_SHA224,
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.RSA_WITH_SHA3_224,
        SignatureAlgorithmOID.RSA_WITH_SHA3_256,
        SignatureAlgorithmOID.RSA_WITH_SHA3_384,
        SignatureAlgorithmOID.RSA_WITH_SHA3_512,
    }
)
_ECDSA = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA1,
        SignatureAlgorithmOID.ECDSA_WITH_SHA224,
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_224,
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_512,
    }
)


@dataclass(frozen=True)
class OcspRequest:
    url: str
    der: bytes  # DER OCSPRequest to POST (Content-Type application/ocsp-request)
    nonce: bytes | None  # the nonce we sent (None: no nonce extension)
    serial: int
    # SHA-1 CertID fields (RFC 6960 4.1.1; SHA-1 is what every responder answers)
    issuer_name_hash: bytes
    issuer_key_hash: bytes


@dataclass(frozen=True)
class OcspResult:
    status: str  # "good" | "revoked" | "unknown" | "error"
    reason: str  # one log line naming the cause


class _Refused(Exception):
    """The response is refused; the message (without "error: ") names the cause."""


@dataclass(frozen=True)
class _Issuer:
    subject: x509.Name
    key_hash: bytes  # SHA-1 of the subjectPublicKey BIT STRING value: CertID and byKey
    public_key: object
    label: str


@functools.lru_cache(maxsize=64)
def _issuer(issuer: x509.Certificate) -> _Issuer:
    """What every call needs from the CA certificate, parsed once per distinct certificate.

    Certificates hash and compare by their DER, so a re-loaded copy of the same CA hits the
    cache and a different CA with the same name does not.
    """
    key = issuer.public_key()
    # RFC 5280 4.2.1.2 method (1) is the same hash as the CertID issuerKeyHash and the
    # ResponderID byKey (RFC 6960 4.1.1, 4.2.1): SHA-1 over the subjectPublicKey bits.
    key_hash = x509.SubjectKeyIdentifier.from_public_key(key).digest
    return _Issuer(issuer.subject, key_hash, key, _dn(issuer.subject))


def build_request(
    cert: x509.Certificate, issuer: x509.Certificate, url: str, *, nonce: bytes | None
) -> OcspRequest:
    """The OCSP request for `cert` (issued by `issuer`), one SHA-1 CertID, optional nonce.

    The nonce bytes come from the caller's random source; RFC 8954 bounds them to 1..32
    octets (ValueError otherwise: that is our caller's bug, not the network's).
    """
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, _SHA1)
    if nonce is not None:
        nonce = bytes(nonce)
        if not NONCE_MIN <= len(nonce) <= NONCE_MAX:
            raise ValueError(
                f"OCSP nonce must be {NONCE_MIN}..{NONCE_MAX} octets, not {len(nonce)}"
            )
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    request = builder.build()
    return OcspRequest(
        url=url,
        der=request.public_bytes(Encoding.DER),
        nonce=nonce,
        serial=request.serial_number,
        # Read back from the request itself: the builder hashes the certificate's issuer
        # field as encoded, which is what the responder compares.
        issuer_name_hash=request.issuer_name_hash,
        issuer_key_hash=request.issuer_key_hash,
    )


def check_response(
    request: OcspRequest,
    issuer: x509.Certificate,
    body: bytes,
    now: dt.datetime,
    *,
    require_nonce: bool,
    skew_s: float = 300.0,
    max_age_s: float = 3600.0,
) -> OcspResult:
    """Verify an OCSP response body against our request; never raises.

    "good", "revoked" and "unknown" are the responder's word about our certificate, once
    the response is successful, signed by an authorised key, about our CertID, fresh
    (within `skew_s` of `now`; without nextUpdate, thisUpdate at most `max_age_s` old) and
    carrying our nonce (required when `require_nonce`). Anything else is "error".
    """
    url = _one_line(str(getattr(request, "url", "?")))
    try:
        return _check(request, issuer, bytes(body), now, require_nonce, skew_s, max_age_s, url)
    except _Refused as exc:
        return OcspResult("error", f"error: {exc} (OCSP {url})")
    except Exception as exc:
        # Whatever the parser makes of hostile bytes (ValueError, UnsupportedAlgorithm,
        # InvalidSignature from an odd key, ...) is a refused response, never a crash.
        detail = _one_line(str(exc))[:200]
        return OcspResult(
            "error", f"error: malformed response: {type(exc).__name__}: {detail} (OCSP {url})"
        )


def _check(request, issuer, body, now, require_nonce, skew_s, max_age_s, url) -> OcspResult:
    if now.tzinfo is None:
        now = now.replace(tzinfo=_UTC)
    ca = _issuer(issuer)
    if request.issuer_key_hash != ca.key_hash:
        # Our caller's mix-up, but accepting would let this CA answer for another's certificate.
        raise _Refused(f"the request was not built for issuer {ca.label}")
    try:
        resp = ocsp.load_der_ocsp_response(body)
    except ValueError as exc:
        raise _Refused(f"malformed response: {_one_line(str(exc))[:200]}") from None
    status = resp.response_status
    if status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise _Refused(f"responder answered {_STATUS_NAMES.get(status, status.name)}")

    signer = _signer(resp, ca, issuer, now)

    single = _our_single(resp, request)

    _check_fresh(single, now, skew_s, max_age_s)

    _check_nonce(resp, request, require_nonce)

    cert_status = single.certificate_status
    if cert_status == ocsp.OCSPCertStatus.GOOD:
        return OcspResult("good", f"good by OCSP {url} (signed by {signer})")
    if cert_status == ocsp.OCSPCertStatus.REVOKED:
        when = _ts(single.revocation_time_utc)
        why = single.revocation_reason
        cause = f" ({why.value})" if why is not None else ""
        return OcspResult("revoked", f"revoked at {when}{cause} by OCSP {url}")
    return OcspResult("unknown", f"unknown to OCSP {url} (serial {request.serial:#x})")


# ---------------------------------------------------------------- signer


def _signer(resp: ocsp.OCSPResponse, ca: _Issuer, issuer: x509.Certificate, now) -> str:
    """Verify the response signature with the key of an authorised signer; its label."""
    name, key_hash = resp.responder_name, resp.responder_key_hash
    if (name is not None and name == ca.subject) or (
        key_hash is not None and key_hash == ca.key_hash
    ):
        _verify(ca.public_key, resp, ca.label)
        return ca.label

    # A delegated responder: the certificate the ResponderID names must come with the
    # response (we keep no store of responder certificates).
    certs = resp.certificates
    named = [c for c in certs if _names(c, name, key_hash)]
    if not named:
        rid = _dn(name) if name is not None else f"key hash {key_hash.hex()}"
        raise _Refused(
            f"responder {rid} is neither the issuer {ca.label} nor a certificate "
            "included in the response"
        )
    problems = []
    for cand in named:
        delegate = _delegate(cand, issuer)
        problem = delegate.problem or _validity_problem(cand, now)
        if problem is None:
            _verify(delegate.public_key, resp, delegate.label)
            return delegate.label
        problems.append(problem)
    raise _Refused(problems[0])


def _names(cert: x509.Certificate, name, key_hash) -> bool:
    if name is not None:
        return cert.subject == name
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest == key_hash


@dataclass(frozen=True)
class _Delegate:
    problem: str | None  # why it may not answer for the CA (None: it may)
    public_key: object
    label: str


@functools.lru_cache(maxsize=128)
def _delegate(cand: x509.Certificate, issuer: x509.Certificate) -> _Delegate:
    problem = _delegate_problem(cand, issuer)
    key = cand.public_key() if problem is None else None
    return _Delegate(problem, key, f"delegate {_dn(cand.subject)}")


def _delegate_problem(cand: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Why `cand` may not answer for `issuer`'s certificates (None: it may), RFC 6960 4.2.2.2.

    Cached per (delegate, CA) pair through `_delegate`: a responder sends the same
    certificate for days, and verifying its signature is the dearest step. Validity depends
    on `now`: checked on every call.

    id-pkix-ocsp-nocheck (4.2.2.2.1) on the delegate is honoured, meaning we do not check
    the delegate's revocation status; we never check it anyway, with or without the
    extension: the delegate's short life is what bounds the damage of its key leaking.
    """
    who = _dn(cand.subject)
    if cand.issuer != issuer.subject:
        return (
            f"delegated responder {who} was issued by {_dn(cand.issuer)}, "
            f"not by the certificate's issuer {_dn(issuer.subject)}"
        )
    try:
        cand.verify_directly_issued_by(issuer)
    except Exception:
        return (
            f"delegated responder {who} is not signed by the key of the certificate's "
            f"issuer {_dn(issuer.subject)}"
        )
    try:
        eku = cand.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    except x509.ExtensionNotFound:
        eku = ()
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return f"delegated responder {who} lacks extendedKeyUsage id-kp-OCSPSigning"
    return None


def _validity_problem(cert: x509.Certificate, now: dt.datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"delegated responder {_dn(cert.subject)} is not valid before {_ts(cert.not_valid_before_utc)}"
    if now > cert.not_valid_after_utc:
        return f"delegated responder {_dn(cert.subject)} expired at {_ts(cert.not_valid_after_utc)}"
    return None


def _verify(key, resp: ocsp.OCSPResponse, label: str) -> None:
    """Check the signature over tbsResponseData with `key`, for the algorithm it names."""
    oid = resp.signature_algorithm_oid
    sig, data = resp.signature, resp.tbs_response_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey) and oid in _RSA_PKCS1:
            key.verify(sig, data, padding.PKCS1v15(), resp.signature_hash_algorithm)
        elif isinstance(key, rsa.RSAPublicKey) and oid == SignatureAlgorithmOID.RSASSA_PSS:
            _verify_pss(key, sig, data)
        elif isinstance(key, ec.EllipticCurvePublicKey) and oid in _ECDSA:
            key.verify(sig, data, ec.ECDSA(resp.signature_hash_algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey) and oid == SignatureAlgorithmOID.ED25519:
            key.verify(sig, data)
        elif isinstance(key, ed448.Ed448PublicKey) and oid == SignatureAlgorithmOID.ED448:
            key.verify(sig, data)
        else:
            name = getattr(oid, "_name", "Unknown OID")
            algo = oid.dotted_string if name == "Unknown OID" else name
            raise _Refused(
                f"signature algorithm {algo} is not one we verify with the {_key_kind(key)} "
                f"key of {label}"
            )
    except _Refused:
        raise
    except Exception:
        raise _Refused(f"bad signature: response does not verify with the key of {label}") from None


# RSASSA-PSS: cryptography does not expose an OCSP response's PSS parameters, and we parse no
# ASN.1 by hand. So we try the hashes signers use, each with MGF1 over the same hash (what
# every signer does; OpenSSL's default) and the salt length recovered from the signature.
# A signature that verifies under one of them is the key holder's over tbsResponseData,
# whatever the parameters claim; a bad one costs three RSA verifications instead of one.
_PSS_HASHES = (hashes.SHA256(), hashes.SHA384(), hashes.SHA512())


def _verify_pss(key: rsa.RSAPublicKey, sig: bytes, data: bytes) -> None:
    for algorithm in _PSS_HASHES:
        pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
        try:
            key.verify(sig, data, pss, algorithm)
            return
        except InvalidSignature:
            continue
    raise InvalidSignature


def _key_kind(key) -> str:
    for kind, name in (
        (rsa.RSAPublicKey, "RSA"),
        (ec.EllipticCurvePublicKey, "EC"),
        (ed25519.Ed25519PublicKey, "Ed25519"),
        (ed448.Ed448PublicKey, "Ed448"),
    ):
        if isinstance(key, kind):
            return name
    return type(key).__name__


# ---------------------------------------------------------------- content


def _our_single(resp: ocsp.OCSPResponse, request: OcspRequest) -> ocsp.OCSPSingleResponse:
    """The one SingleResponse about our CertID; answers about other certificates are ignored."""
    matches = [s for s in resp.responses if _is_ours(s, request)]
    if not matches:
        raise _Refused(f"no SingleResponse matches our CertID (SHA-1, serial {request.serial:#x})")
    if len(matches) > 1:
        raise _Refused(f"{len(matches)} SingleResponses about serial {request.serial:#x}")
    return matches[0]


def _is_ours(single: ocsp.OCSPSingleResponse, request: OcspRequest) -> bool:
    if (
        single.serial_number != request.serial
        or single.issuer_key_hash != request.issuer_key_hash
        or single.issuer_name_hash != request.issuer_name_hash
    ):
        return False
    try:
        return isinstance(single.hash_algorithm, hashes.SHA1)
    except Exception:
        return False  # a hash algorithm cryptography does not know: not our SHA-1 CertID


def _check_fresh(single, now: dt.datetime, skew_s: float, max_age_s: float) -> None:
    skew = dt.timedelta(seconds=skew_s)
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > now + skew:
        raise _Refused(f"stale response: thisUpdate {_ts(this_update)} is in the future")
    if next_update is not None:
        if next_update < now - skew:
            raise _Refused(f"stale response: nextUpdate {_ts(next_update)} has passed")
    elif now - this_update > dt.timedelta(seconds=max_age_s):
        raise _Refused(
            f"stale response: thisUpdate {_ts(this_update)} is older than {max_age_s:g} s "
            "and there is no nextUpdate"
        )


def _check_nonce(resp: ocsp.OCSPResponse, request: OcspRequest, require_nonce: bool) -> None:
    extensions = resp.extensions
    for ext in extensions:
        if ext.critical and ext.oid != x509.OCSPNonce.oid:
            raise _Refused(f"unsupported critical response extension {ext.oid.dotted_string}")
    try:
        echoed = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        echoed = None
    if request.nonce is not None and echoed is not None:
        if echoed != request.nonce:
            raise _Refused("nonce mismatch")
    elif require_nonce:
        if request.nonce is None:
            raise _Refused("nonce required but the request carried none")
        raise _Refused("nonce missing from the response")


# ---------------------------------------------------------------- log text


def _ts(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _dn(name: x509.Name) -> str:
    return f"'{_one_line(name.rfc4514_string())}'"


def _one_line(text: str) -> str:
    # Names and URLs come from peers: escape control characters so a reason stays one line.
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
