"""Parse and check certificates and private keys given to `certificate` / `ca-certificate`.

Pure library code: bytes in, cryptography objects or a one-line `CredentialError` out. Input is
untrusted (typed on the CLI or fetched from a URL), so every failure of the underlying parser is
turned into a CredentialError that names the cause and never quotes the data itself.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InternalError, InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

PEM_LIMIT = 4095  # characters of `pem data`, from the StarOS reference
PEM_LIMIT_WITH_KEY = 8191

# What the underlying parsers raise on bad input; all of it becomes CredentialError.
_PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, InternalError, x509.InvalidVersion)

_CERT_LABELS = {"CERTIFICATE", "X509 CERTIFICATE"}
_KEY_LABELS = {"PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"}
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class CredentialError(Exception):
    """A credential was refused. `str()` is one line and never contains key material."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


# --- PEM framing -------------------------------------------------------------------------------
# Our own framing (rather than cryptography's) so errors can say which block is wrong, and so a
# PEM whose line breaks became spaces on a one-line CLI still loads: the body's whitespace is
# dropped before base64 decoding.

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")


@dataclass(frozen=True)
class _Block:
    label: str
    body: bytes  # between the BEGIN and END lines, untouched
    raw: bytes  # the whole block, BEGIN to END

    @property
    def has_headers(self) -> bool:  # RFC 1421 headers, e.g. "Proc-Type: 4,ENCRYPTED"
        return b":" in self.body

    def der(self, what: str) -> bytes:
        if self.has_headers:
            raise CredentialError(f"malformed PEM {what}: unexpected headers in {self.label} block")
        try:
            der = base64.b64decode(b"".join(self.body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise CredentialError(
                f"malformed PEM {what}: invalid base64 in {self.label} block"
            ) from None
        if not der:
            raise CredentialError(f"malformed PEM {what}: empty {self.label} block")
        return der

    def canonical(self, what: str) -> bytes:
        """The block re-wrapped at 64 columns, as cryptography's PEM reader wants it."""
        if self.has_headers:
            return self.raw  # legacy encrypted key: headers need their own lines, pass as is
        b64 = base64.b64encode(self.der(what))
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        label = self.label.encode()
        return b"\n".join(
            [b"-----BEGIN " + label + b"-----", *lines, b"-----END " + label + b"-----\n"]
        )


def _pem_blocks(data: bytes, what: str) -> list[_Block]:
    blocks, pos = [], 0
    while m := _BEGIN.search(data, pos):
        label = m.group(1).decode()
        end_line = b"-----END " + m.group(1) + b"-----"
        end = data.find(end_line, m.end())
        if end < 0:
            raise CredentialError(
                f"malformed PEM {what}: BEGIN {label} without a matching END line"
            )
        pos = end + len(end_line)
        blocks.append(_Block(label, data[m.end() : end], data[m.start() : pos]))
    return blocks


# --- certificates ------------------------------------------------------------------------------


def load_certificate(data: bytes, fmt: str) -> x509.Certificate:
    """One X.509 certificate from PEM or DER. Refuses several certificates or extra blocks."""
    if fmt not in ("pem", "der"):
        raise CredentialError(f"unknown certificate format {fmt!r} (pem or der)")
    if not data.strip():
        raise CredentialError("empty certificate data")
    if fmt == "der":
        if data.lstrip().startswith(b"-----BEGIN"):
            raise CredentialError("malformed DER certificate: the data is PEM text")
        return _parse_cert(data, "malformed DER certificate")
    blocks = _pem_blocks(data, "certificate")
    certs = [b for b in blocks if b.label in _CERT_LABELS]
    others = [b.label for b in blocks if b.label not in _CERT_LABELS]
    if not blocks:
        raise CredentialError("malformed PEM certificate: no -----BEGIN CERTIFICATE----- line")
    if not certs:
        raise CredentialError(f"not a certificate (found {others[0]} block)")
    if len(certs) > 1:
        raise CredentialError(
            f"the PEM data holds {len(certs)} certificates; configure one certificate per name"
        )
    if others:
        hint = "; give the key with private-key pem" if "PRIVATE KEY" in others[0] else ""
        raise CredentialError(f"the certificate data also holds a {others[0]} block{hint}")
    return _parse_cert(certs[0].der("certificate"), "malformed PEM certificate")


def _parse_cert(der: bytes, what: str) -> x509.Certificate:
    with warnings.catch_warnings():
        # e.g. "serial number not positive": tolerated (old CAs do it), not worth a stderr line
        warnings.simplefilter("ignore")
        return _parse_cert_fields(der, what)


def _parse_cert_fields(der: bytes, what: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
    except _PARSE_ERRORS:
        raise CredentialError(what) from None
    # cryptography decodes some fields lazily; touch them now so later use cannot fail.
    fields = {
        "subject": lambda: cert.subject.rfc4514_string(),
        "issuer": lambda: cert.issuer.rfc4514_string(),
        "serial number": lambda: cert.serial_number,
        "validity": lambda: (cert.not_valid_before_utc, cert.not_valid_after_utc),
        "extensions": lambda: cert.extensions,
    }
    for field, touch in fields.items():
        try:
            touch()
        except _PARSE_ERRORS:
            raise CredentialError(f"{what}: cannot decode its {field}") from None
    try:
        cert.public_key()
    except _PARSE_ERRORS:
        raise CredentialError("unsupported public key algorithm in the certificate") from None
    return cert


# --- private keys ------------------------------------------------------------------------------


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKeyTypes:
    """An RSA or ECDSA (P-256/384/521) private key from PEM: PKCS#8 (plain or encrypted) or the
    traditional RSA/EC forms. A password given for an unencrypted key is ignored.

    RSA consistency checks are skipped here because they are slow (principle 9): run
    `validate_key` in the process pool before the key is used.
    """
    return _load_key(data, password, validate=False)


def _load_key(data: bytes, password: bytes | None, validate: bool) -> PrivateKeyTypes:
    if not data.strip():
        raise CredentialError("empty private key data")
    blocks = _pem_blocks(data, "private key")
    keys = [b for b in blocks if b.label.endswith("PRIVATE KEY")]
    # `openssl ecparam -genkey` writes an EC PARAMETERS block before the key: harmless.
    others = [b.label for b in blocks if b not in keys and b.label != "EC PARAMETERS"]
    if not blocks:
        raise CredentialError("malformed PEM private key: no -----BEGIN PRIVATE KEY----- line")
    if not keys:
        raise CredentialError(f"not a private key (found {others[0]} block)")
    if len(keys) > 1:
        raise CredentialError(f"the PEM data holds {len(keys)} private keys; give exactly one")
    if others:
        raise CredentialError(f"the private key data also holds a {others[0]} block")
    block = keys[0]
    if block.label not in _KEY_LABELS:
        raise CredentialError(f"unsupported private key type ({block.label}; RSA or ECDSA only)")
    encrypted = block.label == "ENCRYPTED PRIVATE KEY" or (
        block.has_headers and b"ENCRYPTED" in block.body  # traditional: Proc-Type: 4,ENCRYPTED
    )
    if encrypted and password is None:
        raise CredentialError("the private key is encrypted but no password was given")
    pem = block.canonical("private key")
    try:
        key = serialization.load_pem_private_key(
            pem, password if encrypted else None, unsafe_skip_rsa_key_validation=not validate
        )
    except UnsupportedAlgorithm:
        raise CredentialError("unsupported private key type (RSA or ECDSA only)") from None
    except _PARSE_ERRORS:
        if encrypted:
            raise CredentialError("cannot decrypt the private key: wrong password") from None
        raise CredentialError(f"malformed PEM private key: not a valid {block.label}") from None
    _check_supported(key)
    return key


def _check_supported(key: PrivateKeyTypes) -> None:
    if isinstance(key, rsa.RSAPrivateKey):
        return
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVES:
        return
    name = key_name(key.public_key())
    raise CredentialError(f"unsupported private key type {name} (RSA or ECDSA P-256/384/521 only)")


def validate_key(key_pem: bytes, password: bytes | None = None) -> None:
    """Full validation of a private key. Slow for RSA: run it in the process pool.

    Loads with cryptography's RSA consistency checks on, then signs and verifies a test
    message, so a key whose parts do not belong together is refused before it signs for IKE.
    """
    _load_key(key_pem, password, validate=False)  # structure errors get their own messages
    try:
        key = _load_key(key_pem, password, validate=True)
    except CredentialError:
        raise CredentialError(
            "the private key failed validation (inconsistent RSA parameters)"
        ) from None
    msg = b"staros-segw private key self-test"
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
            key.public_key().verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
        else:
            sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
            key.public_key().verify(sig, msg, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, *_PARSE_ERRORS):
        raise CredentialError("the private key failed validation (sign/verify self-test)") from None


def check_pair(cert: x509.Certificate, key: PrivateKeyTypes, name: str | None = None) -> None:
    """Refuse a private key whose public half is not the certificate's public key."""
    if _spki(key.public_key()) != _spki(cert.public_key()):
        label = name if name is not None else cert.subject.rfc4514_string()
        raise CredentialError(
            f"private key does not match certificate {label} (the public keys differ)"
        )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- reporting ---------------------------------------------------------------------------------


def key_name(public_key: PublicKeyTypes) -> str:
    """ "RSA 2048", "ECDSA P-256", "Ed25519", ..."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVES.get(public_key.curve.name, public_key.curve.name)}"
    if isinstance(public_key, dsa.DSAPublicKey):
        return f"DSA {public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public_key).__name__


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def validity_warning(cert: x509.Certificate, now: datetime, name: str | None = None) -> str | None:
    """A warning for a certificate outside its validity period at `now` (the warpable wall
    clock). Such certificates are still accepted: the clock may be wrong, or a renewal pending.
    """
    label = name if name is not None else cert.subject.rfc4514_string()
    now = _utc(now)
    if now < cert.not_valid_before_utc:
        nb = cert.not_valid_before_utc.isoformat()
        return f"Warning: certificate {label} is not yet valid (notBefore {nb})"
    if now > cert.not_valid_after_utc:
        na = cert.not_valid_after_utc.isoformat()
        return f"Warning: certificate {label} has expired (notAfter {na})"
    return None


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def describe(cert: x509.Certificate, now: datetime, name: str | None = None) -> dict:
    """The fields `show` commands print for a certificate."""
    serial = cert.serial_number
    hex_serial = format(abs(serial), "X")
    hex_serial = ("-" if serial < 0 else "") + "0" * (len(hex_serial) % 2) + hex_serial
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": hex_serial,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": _colon_hex(cert.fingerprint(hashes.SHA256())),
        "sha1": _colon_hex(cert.fingerprint(hashes.SHA1())),
        "key": key_name(cert.public_key()),
        "is_ca": is_ca,
        "warning": validity_warning(cert, now, name),
    }


def check_pem_size(text: str, with_key: bool) -> None:
    limit = PEM_LIMIT_WITH_KEY if with_key else PEM_LIMIT
    if len(text) > limit:
        which = "with a private key" if with_key else "without a private key"
        raise CredentialError(f"PEM data is {len(text)} characters; the limit {which} is {limit}")
