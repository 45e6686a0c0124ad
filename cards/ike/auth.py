"""AUTH payload data (RFC 7296 2.15, RFC 7427 digital signatures)."""

from __future__ import annotations

import hmac
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .const import AuthMethod, HashAlg, NotifyType, Prf
from .prf import prf

_HASHES = {
    HashAlg.SHA2_256: hashes.SHA256,
    HashAlg.SHA2_384: hashes.SHA384,
    HashAlg.SHA2_512: hashes.SHA512,
}

# DER AlgorithmIdentifiers from RFC 7427 appendix A. RSA ones carry NULL parameters.
_RSA_ALGID = {
    HashAlg.SHA2_256: bytes.fromhex("300d06092a864886f70d01010b0500"),
    HashAlg.SHA2_384: bytes.fromhex("300d06092a864886f70d01010c0500"),
    HashAlg.SHA2_512: bytes.fromhex("300d06092a864886f70d01010d0500"),
}
_ECDSA_ALGID = {
    HashAlg.SHA2_256: bytes.fromhex("300a06082a8648ce3d040302"),
    HashAlg.SHA2_384: bytes.fromhex("300a06082a8648ce3d040303"),
    HashAlg.SHA2_512: bytes.fromhex("300a06082a8648ce3d040304"),
}
_ALGID_LOOKUP = {v: ("rsa", h) for h, v in _RSA_ALGID.items()} | {
    v: ("ecdsa", h) for h, v in _ECDSA_ALGID.items()
}
_KEY_PAD = b"Key Pad for IKEv2"


class AuthenticationFailed(Exception):
    """The peer's AUTH payload does not verify; answer AUTHENTICATION_FAILED."""

    notify = NotifyType.AUTHENTICATION_FAILED


def signed_octets(
    real_message: bytes, peer_nonce: bytes, prf_alg: Prf, sk_p: bytes, id_body: bytes
) -> bytes:
    """RealMessage | Nonce | prf(SK_p, IDx')   (RFC 7296 2.15).

    Initiator: its IKE_SA_INIT request, Nr, SK_pi, IDi'. Responder: its IKE_SA_INIT
    response, Ni, SK_pr, IDr'. ``id_body`` is ``IdPayload.encode()`` (no generic header)."""
    return real_message + peer_nonce + prf(prf_alg, sk_p, id_body)


def psk_auth(prf_alg: Prf, psk: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <signed octets>)."""
    return prf(prf_alg, prf(prf_alg, psk, _KEY_PAD), octets)


def verify_psk_auth(prf_alg: Prf, psk: bytes, octets: bytes, auth_data: bytes) -> None:
    if not hmac.compare_digest(psk_auth(prf_alg, psk, octets), auth_data):
        raise AuthenticationFailed("shared-key AUTH mismatch")


def hash_algorithms_data(algs) -> bytes:
    """Notify data for SIGNATURE_HASH_ALGORITHMS (RFC 7427 4)."""
    return b"".join(struct.pack("!H", a) for a in algs)


def _default_hash(key) -> HashAlg:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {256: HashAlg.SHA2_256, 384: HashAlg.SHA2_384}.get(
            key.curve.key_size, HashAlg.SHA2_512
        )
    return HashAlg.SHA2_256


def sign_auth(private_key, octets: bytes, method: AuthMethod = AuthMethod.DIGITAL_SIGNATURE,
              hash_alg: HashAlg | None = None) -> bytes:  # fmt: skip
    """AUTH payload data for RSA_SIG (PKCS#1 v1.5 SHA-1) or DIGITAL_SIGNATURE (RFC 7427)."""
    if method == AuthMethod.RSA_SIG:
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("AUTH method 1 needs an RSA key")
        return private_key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
    if method != AuthMethod.DIGITAL_SIGNATURE:
        raise ValueError(f"cannot sign with AUTH method {method}")
    h = HashAlg(hash_alg or _default_hash(private_key))
    if isinstance(private_key, rsa.RSAPrivateKey):
        algid = _RSA_ALGID[h]
        sig = private_key.sign(octets, padding.PKCS1v15(), _HASHES[h]())
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        algid = _ECDSA_ALGID[h]
        sig = private_key.sign(octets, ec.ECDSA(_HASHES[h]()))  # DER Ecdsa-Sig-Value
    else:
        raise ValueError(f"unsupported key type {type(private_key).__name__}")
    return bytes([len(algid)]) + algid + sig


def parse_signature_auth(auth_data: bytes) -> tuple[str, HashAlg, bytes]:
    """Split RFC 7427 AUTH data into (key kind 'rsa'/'ecdsa', hash, signature)."""
    if not auth_data:
        raise AuthenticationFailed("empty AUTH data")
    n = auth_data[0]
    algid = auth_data[1 : 1 + n]
    if len(algid) != n or algid not in _ALGID_LOOKUP:
        raise AuthenticationFailed(f"unsupported signature AlgorithmIdentifier {algid.hex()}")
    kind, h = _ALGID_LOOKUP[algid]
    return kind, h, auth_data[1 + n :]


def verify_auth(public_key, method: AuthMethod, auth_data: bytes, octets: bytes,
                allowed_hashes=None) -> HashAlg | None:  # fmt: skip
    """Raise AuthenticationFailed unless ``auth_data`` signs ``octets`` with ``public_key``.

    Returns the RFC 7427 hash used (None for method 1) so that policy can be checked."""
    try:
        if method == AuthMethod.RSA_SIG:
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise AuthenticationFailed("AUTH method 1 with a non-RSA certificate")
            public_key.verify(auth_data, octets, padding.PKCS1v15(), hashes.SHA1())
            return None
        if method != AuthMethod.DIGITAL_SIGNATURE:
            raise AuthenticationFailed(f"AUTH method {method} is not a signature method")
        kind, h, sig = parse_signature_auth(auth_data)
        if allowed_hashes is not None and h not in allowed_hashes:
            raise AuthenticationFailed(f"hash {h.name} not allowed")
        if kind == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(sig, octets, padding.PKCS1v15(), _HASHES[h]())
        elif kind == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(sig, octets, ec.ECDSA(_HASHES[h]()))
        else:
            raise AuthenticationFailed(f"{kind} signature with a {type(public_key).__name__}")
        return h
    except InvalidSignature:
        raise AuthenticationFailed("signature does not verify") from None
