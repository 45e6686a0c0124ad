"""CMP message protection (RFC 4210 5.1.3): password-based MAC and signatures.

Producing: a protector's `prepare()` gives the header's protectionAlg and a function that
protects DER(ProtectedPart); `codec.encode_message` drives it.

    PbmProtector(secret, reference, rand)   owf SHA-256, 500 iterations, HMAC-SHA1: what OpenSSL
                                            sends and RFC 4210 requires every peer to verify
    SignatureProtector(key, cert_der, ...)  RSA PKCS#1 v1.5 / ECDSA / Ed25519 with SHA-256, or
                                            SHA-1 when configured; signer certificate first in
                                            extraCerts, its subject key id as senderKID

Verifying (`verify`) accepts PBM with any of SHA-1/SHA-2 as OWF and HMAC, over the header and
body bytes as received. A signature needs a trust anchor: the signer certificate comes from
extraCerts and must chain to it. The path check is deliberately small (signatures, validity at
`now`, CA flag on intermediates; no revocation or policy): the configured ca-root is the only
anchor, so nothing else can be trusted by accident.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from pyasn1_alt_modules import rfc4211

from supervisor.pki.cmp import algs, asn1
from supervisor.pki.cmp.codec import ID_PBM, CertRequest, Message

MAC_OIDS = {
    "1.3.6.1.5.5.8.1.2": "sha1",  # hmac-sha1 (RFC 4210's MUST)
    "1.2.840.113549.2.7": "sha1",  # hmacWithSHA1
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
_MAC_OID = {"hmac-sha1": "1.3.6.1.5.5.8.1.2", "hmac-sha256": "1.2.840.113549.2.9"}
MAX_ITERATIONS = 100_000  # RFC 4210 5.1.3.1: bound the work a peer can make us do
_MAX_DEPTH = 8


class ProtectionError(Exception):
    """A message whose protection cannot be verified; the message is the one-line reason."""


# --- PBM -------------------------------------------------------------------------------------


def pbm_key(secret: bytes, salt: bytes, owf: str, iterations: int) -> bytes:
    """RFC 4210 5.1.3.1: k = OWF(secret || salt), then k = OWF(k) iterationCount-1 times."""
    key = hashlib.new(owf, secret + salt).digest()
    for _ in range(iterations - 1):
        key = hashlib.new(owf, key).digest()
    return key


class PbmProtector:
    def __init__(
        self,
        secret: bytes,
        reference: bytes | None,
        rand: Callable[[int], bytes],
        *,
        owf: str = "sha256",
        mac: str = "hmac-sha1",
        iterations: int = 500,
    ) -> None:
        if owf not in algs.OID_OF_HASH or mac not in _MAC_OID or not 1 <= iterations:
            raise ValueError("unsupported PBM parameters")
        self.secret, self.sender_kid, self.rand = secret, reference, rand
        self.owf, self.mac, self.iterations = owf, mac, iterations
        self.extra_certs: tuple[bytes, ...] = ()

    def prepare(self) -> tuple[bytes, Callable[[bytes], bytes]]:
        salt = self.rand(16)  # fresh per message, as OpenSSL does
        params = asn1.seq(
            asn1.octets(salt),
            asn1.algorithm(algs.OID_OF_HASH[self.owf]),
            asn1.integer(self.iterations),
            asn1.algorithm(_MAC_OID[self.mac]),
        )
        key = pbm_key(self.secret, salt, self.owf, self.iterations)
        mac_hash = MAC_OIDS[_MAC_OID[self.mac]]
        return asn1.algorithm(ID_PBM, params), lambda data: hmac.digest(key, data, mac_hash)


def _verify_pbm(msg: Message, secret: bytes) -> None:
    if msg.header.protection_params is None:
        raise ProtectionError("PBM without parameters")
    try:
        p = asn1.der_decode(msg.header.protection_params, rfc4211.PBMParameter())
    except asn1.CmpError as e:
        raise ProtectionError(f"bad PBM parameters: {e}") from None
    owf = algs.HASH_OIDS.get(str(p["owf"]["algorithm"]))
    mac = MAC_OIDS.get(str(p["mac"]["algorithm"]))
    iterations = int(p["iterationCount"])
    if owf is None or mac is None:
        raise ProtectionError("unsupported PBM one-way function or MAC")
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ProtectionError(f"PBM iteration count {iterations} out of range")
    key = pbm_key(secret, bytes(p["salt"]), owf, iterations)
    if not hmac.compare_digest(hmac.digest(key, msg.protected_part, mac), msg.protection or b""):
        raise ProtectionError("PBM MAC mismatch (wrong shared secret?)")


# --- signatures ------------------------------------------------------------------------------


class SignatureProtector:
    def __init__(
        self,
        key,
        cert_der: bytes,
        extra_certs: Sequence[bytes] = (),
        hash_alg: str = "sha256",
    ) -> None:
        cert = x509.load_der_x509_certificate(cert_der)
        self.key, self.hash_alg = key, hash_alg
        self.extra_certs = (cert_der, *(c for c in extra_certs if c != cert_der))
        self.sender_kid = subject_key_id(cert)
        algs.signature_algorithm(key, hash_alg)  # fail early on an unusable key or hash

    def prepare(self) -> tuple[bytes, Callable[[bytes], bytes]]:
        alg = algs.signature_algorithm(self.key, self.hash_alg)
        return alg, lambda data: algs.sign(self.key, data, self.hash_alg)[1]


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):  # extensions are parsed lazily: may be junk
        return None


@dataclass(frozen=True)
class Verified:
    method: str  # "pbm" or "signature"
    signer_der: bytes | None = None
    signer_subject: x509.Name | None = None


def verify(
    msg: Message,
    *,
    secret: bytes | None = None,
    trust_anchor_der: bytes | None = None,
    now: datetime | None = None,
    untrusted: Sequence[bytes] = (),
) -> Verified:
    """Check the protection of `msg`; ProtectionError says why it does not verify.

    `untrusted`: intermediates known locally (a CA's own issuing certificate), added to
    those the message carries in extraCerts when building the signer's path."""
    alg = msg.header.protection_alg
    if msg.protection is None or alg is None:
        raise ProtectionError("unprotected")
    if alg == ID_PBM:
        if secret is None:
            raise ProtectionError("PBM-protected, but no shared secret is configured")
        _verify_pbm(msg, secret)
        return Verified("pbm")
    if alg not in algs.SIGNATURES:
        raise ProtectionError(f"unsupported protection algorithm {alg}")
    if trust_anchor_der is None:
        raise ProtectionError("signature-protected, but no trust anchor (ca-root) is configured")
    anchor = _load(trust_anchor_der, "trust anchor")
    pool = [_load(c, "extraCerts certificate") for c in (*msg.extra_certs, *untrusted)]
    signer = _find_signer(msg, alg, [*pool, anchor])
    build_chain(signer, pool, anchor, now)
    return Verified("signature", signer.public_bytes(serialization.Encoding.DER), signer.subject)


def _load(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise ProtectionError(f"unparsable {what}") from None


def _find_signer(msg: Message, alg: str, candidates: list[x509.Certificate]) -> x509.Certificate:
    """The certificate whose key made the signature. RFC 4210 puts it first in extraCerts and
    names its subject as the sender; senderKID, when present, is its key identifier."""
    sender, kid = msg.header.sender, msg.header.sender_kid
    named = [c for c in candidates if not sender or asn1.same_name(c.subject, sender)]
    if not named:
        raise ProtectionError("no certificate in extraCerts matches the sender")
    for cert in named:
        if kid is not None and subject_key_id(cert) not in (None, kid):
            continue
        try:
            public_key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            continue
        if algs.verify(public_key, alg, msg.protected_part, msg.protection or b""):
            return cert
    raise ProtectionError("bad signature")


def _check_time(cert: x509.Certificate, now: datetime | None) -> None:
    if now is not None and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ProtectionError(f"certificate {cert.subject.rfc4514_string()} is not valid now")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def build_chain(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    anchor: x509.Certificate,
    now: datetime | None = None,
) -> tuple[x509.Certificate, ...]:
    """The issuers of `leaf` from `pool`, nearest first, ending with `anchor`; () when `leaf`
    is the anchor itself. ProtectionError when there is no such path."""
    if leaf == anchor:
        _check_time(anchor, now)
        return ()
    path: list[x509.Certificate] = []
    cert = leaf
    for _ in range(_MAX_DEPTH):
        _check_time(cert, now)
        if _issued_by(cert, anchor):
            _check_time(anchor, now)
            return (*path, anchor)
        issuer = next(
            (c for c in pool if c not in path and c != cert and _is_ca(c) and _issued_by(cert, c)),
            None,
        )
        if issuer is None:
            raise ProtectionError(
                f"{leaf.subject.rfc4514_string()} does not chain to the trust anchor"
            )
        path.append(issuer)
        cert = issuer
    raise ProtectionError("certificate chain too long")


def issuer_chain(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """Best-effort issuers of `leaf` from `pool` (no anchor to reach), nearest first."""
    path: list[x509.Certificate] = []
    cert = leaf
    for _ in range(_MAX_DEPTH):
        issuer = next(
            (c for c in pool if c not in path and c != cert and _issued_by(cert, c)), None
        )
        if issuer is None:
            break
        path.append(issuer)
        if issuer.subject == issuer.issuer:  # a root
            break
        cert = issuer
    return tuple(path)


def verify_popo(req: CertRequest) -> bool:
    """Server side: is the request's POPO a good signature by the key being certified?"""
    if req.popo != "signature" or req.public_key_der is None or req.popo_signature is None:
        return False
    try:
        key = serialization.load_der_public_key(req.public_key_der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    data = req.popo_input_der if req.popo_input_der is not None else req.cert_req_der
    return algs.verify(key, req.popo_alg or "", data, req.popo_signature)
