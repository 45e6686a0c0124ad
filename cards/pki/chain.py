"""Peer certificate-chain validation for IKEv2 certificate authentication (sans-IO).

StarOS "CA Certificate Chaining": a chain holds at most MAX_CHAIN certificates besides the
trust anchor, and the anchor may be any CA on the crypto template's `ca-certificate list`,
root or intermediate. Everything here is pure: the caller passes the CERT payload bytes,
the configured CA certificates and the (warpable) wall clock, and gets a Validated or a
ChainError whose message goes to the log while the peer sees AUTHENTICATION_FAILED.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from . import _der

MAX_CHAIN = 4

# Critical extensions this module honours (or that carry no constraint on path use). Any
# other critical extension, nameConstraints and policy constraints included, must refuse
# the chain (RFC 5280 4.2): accepting what we do not enforce would widen the CA's grant.
_HANDLED_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,  # RFC 4945 5.1.3.12: IKE does not restrict on EKU
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,  # critical when the subject is empty
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)

# IKEv2 identification types (RFC 7296 3.5).
ID_IPV4_ADDR, ID_FQDN, ID_RFC822_ADDR, ID_IPV6_ADDR, ID_DER_ASN1_DN, ID_KEY_ID = 1, 2, 3, 5, 9, 11


class ChainError(Exception):
    """A peer chain is refused; the one-line message names the cause for the log."""


@dataclass(frozen=True)
class Validated:
    leaf: x509.Certificate
    path: tuple[x509.Certificate, ...]  # leaf .. last certificate before the anchor
    anchor: x509.Certificate


def describe(cert: x509.Certificate) -> str:
    """How a certificate is named in log reasons: its subject DN."""
    return _dn(cert.subject)


def _dn(name: x509.Name) -> str:
    return f"'{_one_line(name.rfc4514_string())}'"


def _one_line(text: str) -> str:
    # Names come from the peer: escape control characters so a reason stays one log line.
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def validate_peer(
    certs: Sequence[bytes],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
    *,
    max_chain: int = MAX_CHAIN,
) -> Validated:
    """Build and verify the peer's path from its CERT payloads to a configured anchor.

    `certs` are the DER bodies of the CERT payloads; the first is the end-entity
    certificate (RFC 7296 3.6), the rest may come in any order.
    """
    try:
        return _validate(certs, anchors, now, max_chain)
    except ChainError:
        raise
    except Exception as exc:
        # The bytes come from an unauthenticated peer: whatever they make the parser
        # raise (malformed extension, unsupported key, ...) is an authentication
        # failure, never a crashed card.
        raise ChainError(
            f"malformed peer certificate: {type(exc).__name__}: {_one_line(str(exc))}"
        ) from exc


def _validate(certs, anchors, now, max_chain) -> Validated:
    if not certs:
        raise ChainError("peer sent no CERT payload")
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    parsed = []
    for index, der in enumerate(certs):
        try:
            parsed.append(x509.load_der_x509_certificate(bytes(der)))
        except ValueError as exc:
            raise ChainError(f"CERT payload {index + 1} is not an X.509 certificate") from exc
    for index, cert in enumerate(parsed):
        if cert in parsed[:index]:
            raise ChainError(f"duplicate CERT payload: {describe(cert)} sent twice")

    leaf, pool = parsed[0], parsed[1:]
    path, anchor = _build_path(leaf, pool, anchors)
    if len(path) > max_chain:
        raise ChainError(f"chain of {len(path)} certificates exceeds the maximum of {max_chain}")

    for cert in path:
        _check_validity(cert, now, "certificate")
        _check_critical(cert)
    _check_validity(anchor, now, "CA certificate")

    basic = _extension(leaf, x509.BasicConstraints)
    if basic is not None and basic.ca:
        raise ChainError(f"end-entity certificate {describe(leaf)} is a CA certificate")

    # Every certificate above the leaf, the anchor included, signed the one below it.
    for depth, issuer in enumerate([*path[1:], anchor]):
        # Intermediates between this issuer and the leaf; self-issued ones do not count
        # against pathLenConstraint (RFC 5280 6.1.4 (l)).
        below = sum(1 for c in path[1 : depth + 1] if c.subject != c.issuer)
        _check_issuer(issuer, below, is_anchor=issuer is anchor)
    return Validated(leaf=leaf, path=tuple(path), anchor=anchor)


def _build_path(leaf, pool, anchors):
    """Walk issuer links from the leaf; stop at the first certificate an anchor issued.

    Candidates are matched by name and chosen by signature (verify_directly_issued_by
    checks both), so a re-keyed CA with the same name does not derail the walk. Anchors
    are tried before the peer's certificates, so a CERT payload equal to an anchor is
    never part of the path: the certificate below it is already "issued by an anchor".
    """
    path = [leaf]
    current = leaf
    while True:
        for anchor in anchors:
            if issued_by(current, anchor):
                return path, anchor
        named = [c for c in pool if c.subject == current.issuer]
        nxt = next((c for c in named if c not in path and issued_by(current, c)), None)
        if nxt is None:
            if any(c in path for c in named):
                raise ChainError(f"certificate loop at {describe(current)}")
            named_anchor = any(a.subject == current.issuer for a in anchors)
            if named or named_anchor:
                raise ChainError(
                    f"signature of {describe(current)} does not verify with the key of "
                    f"its issuer {_dn(current.issuer)}"
                )
            raise ChainError(
                f"issuer {_dn(current.issuer)} of {describe(current)} is "
                "neither in the CERT payloads nor a configured CA certificate"
            )
        path.append(nxt)
        current = nxt


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` names and signed `cert`; the name test is cheap, so it runs first."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:
        # InvalidSignature, or an algorithm/key this build cannot verify: not the issuer.
        return False
    return True


def _check_validity(cert: x509.Certificate, now: dt.datetime, role: str) -> None:
    # The label (an RFC 4514 rendering) is built only for a refusal: most chains pass.
    if now < cert.not_valid_before_utc:
        raise ChainError(
            f"{role} {describe(cert)} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}"
        )
    if now > cert.not_valid_after_utc:
        raise ChainError(
            f"{role} {describe(cert)} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}"
        )


def _check_critical(cert: x509.Certificate) -> None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _HANDLED_CRITICAL:
            raise ChainError(
                f"certificate {describe(cert)} has unsupported critical extension "
                f"{ext.oid.dotted_string}"
            )


def _check_issuer(cert: x509.Certificate, below: int, *, is_anchor: bool) -> None:
    basic = _extension(cert, x509.BasicConstraints)
    # A configured X.509 v1 root carries no extensions at all; the operator vouched for it.
    v1_anchor = is_anchor and cert.version == x509.Version.v1
    if not v1_anchor and (basic is None or not basic.ca):
        raise ChainError(f"issuer {describe(cert)} is not a CA (basicConstraints cA not set)")
    if basic is not None and basic.path_length is not None and below > basic.path_length:
        raise ChainError(
            f"pathLenConstraint {basic.path_length} of {describe(cert)} exceeded by "
            f"{below} intermediate certificates below it"
        )
    usage = _extension(cert, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise ChainError(f"issuer {describe(cert)} keyUsage lacks keyCertSign")


def _extension(cert: x509.Certificate, kind):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _san(cert: x509.Certificate, kind) -> list:
    san = _extension(cert, x509.SubjectAlternativeName)
    return san.get_values_for_type(kind) if san is not None else []


def identity_matches(cert: x509.Certificate, id_type: int, id_data: bytes) -> bool:
    """Whether the peer's IKEv2 ID payload is bound to its certificate (RFC 4945 3.1)."""
    id_data = bytes(id_data)
    try:
        if id_type == ID_FQDN:
            fqdn = id_data.decode("ascii").lower()
            return any(name.lower() == fqdn for name in _san(cert, x509.DNSName))
        if id_type == ID_RFC822_ADDR:
            # The local part is case-sensitive, the domain is not (RFC 5321 2.4).
            local, _, domain = id_data.decode("ascii").rpartition("@")
            return any(
                name.rpartition("@")[0] == local
                and name.rpartition("@")[2].lower() == domain.lower()
                for name in _san(cert, x509.RFC822Name)
            )
        if id_type in (ID_IPV4_ADDR, ID_IPV6_ADDR):
            if len(id_data) != (4 if id_type == ID_IPV4_ADDR else 16):
                return False
            address = ipaddress.ip_address(id_data)
            return address in _san(cert, x509.IPAddress)
        if id_type == ID_DER_ASN1_DN:
            # Byte equality first; otherwise compare parsed, which tolerates a peer that
            # re-encoded a PrintableString as UTF8String.
            return id_data == cert.subject.public_bytes() or (
                _der.parse_name(id_data) == cert.subject
            )
    except (ValueError, TypeError, UnicodeDecodeError):
        return False
    return False  # ID_KEY_ID and the rest are not bound to certificates


def revocation_urls(cert: x509.Certificate) -> dict[str, list[str]]:
    """Where to ask about revocation: AIA OCSP responders and CDP full-name URIs."""
    ocsp: list[str] = []
    crl: list[str] = []
    aia = _extension(cert, x509.AuthorityInformationAccess)
    for desc in aia or []:
        location = desc.access_location
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            location, x509.UniformResourceIdentifier
        ):
            ocsp.append(location.value)
    cdp = _extension(cert, x509.CRLDistributionPoints)
    for point in cdp or []:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier):
                crl.append(name.value)
    return {"ocsp": ocsp, "crl": crl}
