"""Signature and hash algorithms used by CMP: OIDs <-> cryptography objects.

Signing: RSA PKCS#1 v1.5, ECDSA and Ed25519 keys; SHA-256 unless SHA-1 is configured (old
CAs). Verifying: additionally SHA-384/512, so whatever a CA reasonably signs with is accepted.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from supervisor.pki.cmp import asn1

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
HASH_OIDS = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
OID_OF_HASH = {v: k for k, v in HASH_OIDS.items()}

# signature OID -> (key kind, hash name or None for Ed25519)
SIGNATURES = {
    "1.2.840.113549.1.1.5": ("rsa", "sha1"),
    "1.2.840.113549.1.1.14": ("rsa", "sha224"),
    "1.2.840.113549.1.1.11": ("rsa", "sha256"),
    "1.2.840.113549.1.1.12": ("rsa", "sha384"),
    "1.2.840.113549.1.1.13": ("rsa", "sha512"),
    "1.2.840.10045.4.1": ("ec", "sha1"),
    "1.2.840.10045.4.3.1": ("ec", "sha224"),
    "1.2.840.10045.4.3.2": ("ec", "sha256"),
    "1.2.840.10045.4.3.3": ("ec", "sha384"),
    "1.2.840.10045.4.3.4": ("ec", "sha512"),
    "1.3.101.112": ("ed25519", None),
}
_SIGNATURE_OID = {v: k for k, v in SIGNATURES.items()}


def _kind(key) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ec"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def signature_algorithm(key, hash_name: str = "sha256") -> bytes:
    """The AlgorithmIdentifier DER for signing with `key` (private or public) and `hash_name`."""
    kind = _kind(key)
    if kind == "ed25519":
        return asn1.algorithm(_SIGNATURE_OID[("ed25519", None)])
    if hash_name not in ("sha1", "sha256", "sha384", "sha512"):
        raise ValueError(f"unsupported hash {hash_name!r}")
    dotted = _SIGNATURE_OID[(kind, hash_name)]
    # RFC 4055: the RSA PKCS#1 v1.5 identifiers carry NULL parameters; RFC 5758: ECDSA none.
    return asn1.algorithm(dotted, asn1.null() if kind == "rsa" else None)


def sign(key, data: bytes, hash_name: str = "sha256") -> tuple[bytes, bytes]:
    """(AlgorithmIdentifier DER, signature) of `data` with `key`."""
    alg = signature_algorithm(key, hash_name)
    kind = _kind(key)
    if kind == "ed25519":
        return alg, key.sign(data)
    if kind == "rsa":
        return alg, key.sign(data, padding.PKCS1v15(), HASHES[hash_name]())
    return alg, key.sign(data, ec.ECDSA(HASHES[hash_name]()))


def verify(public_key, alg_oid: str, data: bytes, signature: bytes) -> bool:
    """True when `signature` over `data` is good for `public_key` under `alg_oid`."""
    try:
        kind, hash_name = SIGNATURES[alg_oid]
        if _kind(public_key) != kind:
            return False
        if kind == "ed25519":
            public_key.verify(signature, data)
        elif kind == "rsa":
            public_key.verify(signature, data, padding.PKCS1v15(), HASHES[hash_name]())
        else:
            public_key.verify(signature, data, ec.ECDSA(HASHES[hash_name]()))
    except (KeyError, ValueError, InvalidSignature):
        return False
    return True


def cert_hash_name(cert) -> str:
    """The hash for certConf's certHash: the certificate's own signature digest (RFC 4210
    5.3.18); RFC 9481 says SHA-512 for Ed25519, and SHA-256 covers anything else digest-less."""
    algo = cert.signature_hash_algorithm
    if algo is None:
        return "sha512" if cert.signature_algorithm_oid.dotted_string == "1.3.101.112" else "sha256"
    if algo.name not in HASHES:
        raise ValueError(f"unsupported certificate signature hash {algo.name}")
    return algo.name


def digest(hash_name: str, data: bytes) -> bytes:
    h = hashes.Hash(HASHES[hash_name]())
    h.update(data)
    return h.finalize()
