"""IKE_AUTH with certificates: IDi/IDr, CERT, AUTH sign and verify (RFC 7296 2.15, RFC 7427).

The peer's chain is validated by ``cards.pki.validate_peer`` (at most ``max_chain``
certificates below a configured CA) against the injected wall clock, and its ID must be
bound to the end-entity certificate. Every refusal is an AuthenticationFailure whose reason
goes to the log while the peer only sees AUTHENTICATION_FAILED.
"""

from __future__ import annotations

import hashlib
import ipaddress

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cards.pki import ChainError, _der, chain_to_send, identity_matches, validate_peer
from cards.pki.revocation import own_revoked

from ..auth import _default_hash
from ..const import AuthMethod, CertEncoding, IdType, NotifyType, PayloadType
from ..crypto import AuthenticationFailed, sign_auth, signed_octets, verify_auth
from ..errors import AuthenticationFailure, InvalidSyntax, PeerRefused
from ..message import AuthPayload, CertPayload, IdPayload
from . import Ctx, Task, derived


class AuthTask(Task):
    def build_i(self, sa, ctx: Ctx) -> None:
        ctx.payloads += _own(sa, PayloadType.IDi)

    def process_r(self, sa, ctx: Ctx) -> None:
        _verify(sa, ctx, PayloadType.IDi)

    def build_r(self, sa, ctx: Ctx) -> None:
        ctx.payloads += _own(sa, PayloadType.IDr)
        sa.authenticated()

    def process_i(self, sa, ctx: Ctx) -> None:
        failed = ctx.notify(NotifyType.AUTHENTICATION_FAILED)
        if failed is not None:
            raise PeerRefused(NotifyType.AUTHENTICATION_FAILED, "responder refused our AUTH")
        errors = ctx.errors()
        if errors and ctx.first(AuthPayload) is None:
            raise PeerRefused(errors[0].type)  # without AUTH the whole IKE_AUTH failed
        _verify(sa, ctx, PayloadType.IDr)
        sa.authenticated()


def _own(sa, id_ptype: int) -> list:
    cfg = sa.config
    store = cfg.crl_store
    if store is not None and (store.by_url or store.by_name):  # RFC 5280: do not present a
        revoked = derived(cfg, ("own_revoked", store.generation),  # revoked certificate
                          lambda: own_revoked(cfg.credentials.cert, store, sa.wall_clock().timestamp()))  # fmt: skip
        if revoked:
            raise AuthenticationFailure(revoked)
    id_type, id_data = derived(cfg, "identity", cfg.identity)
    idp = IdPayload(id_type, id_data, id_ptype)
    ders = _chain_ders(cfg, sa.peer_certreq)
    method, hash_alg = _method(sa)
    sk_p = sa.keys.sk_pi if sa.initiator else sa.keys.sk_pr
    octets = signed_octets(sa.own_init, sa.peer_nonce, sa.suite.prf, sk_p, idp.encode())
    auth = AuthPayload(method, sign_auth(cfg.credentials.key, octets, method, hash_alg))
    certs = [CertPayload(CertEncoding.X509_SIGNATURE, der) for der in ders]
    if cfg.own_cert_url and sa.peer_http_lookup:  # Hash and URL of our certificate (3.6)
        url = cfg.own_cert_url.encode()
        certs[0] = CertPayload(CertEncoding.HASH_URL_X509, hashlib.sha1(ders[0]).digest() + url)
    return [idp, *certs, auth]


def hash_urls(payloads) -> list[tuple[str, bytes]]:
    """(URL, SHA-1) of every certificate sent as Hash and URL of X.509 (encoding 12)."""
    out = []
    for c in payloads:
        if isinstance(c, CertPayload) and c.encoding == CertEncoding.HASH_URL_X509:
            out.append((c.data[20:].decode("ascii", "replace"), bytes(c.data[:20])))
    return out


def _peer_ders(sa, ctx: Ctx) -> list[bytes]:
    """The peer's certificates in its order: X.509 as sent, Hash and URL as fetched."""
    ders = []
    for c in ctx.all(CertPayload):
        if c.encoding == CertEncoding.X509_SIGNATURE:
            ders.append(c.data)
        elif c.encoding == CertEncoding.HASH_URL_X509:
            url, digest = c.data[20:].decode("ascii", "replace"), bytes(c.data[:20])
            if not sa.config.hash_and_url:
                raise AuthenticationFailure(
                    "a Hash and URL certificate, not allowed by the template"
                )
            der = sa.fetched.get(url)
            if der is None or hashlib.sha1(der).digest() != digest:
                raise AuthenticationFailure(f"certificate at {url} not fetched or not its hash")
            ders.append(der)
    return ders


MAX_CACHED_CHAINS = 32  # distinct CERTREQ contents remembered per configuration


def _chain_ders(cfg, requested: list[bytes]) -> tuple[bytes, ...]:
    """DER of our certificate and the intermediates to send after this CERTREQ.

    Building the chain verifies a signature per link and re-encodes each certificate, so
    the result is kept per configuration and CERTREQ content (the peers of one template
    send the same CERTREQ). A failure is not kept: it is raised again each time."""
    chains = derived(cfg, "chains", dict)
    key = tuple(requested)
    ders = chains.get(key)
    if ders is None:
        cred = cfg.credentials
        try:
            chain = chain_to_send(cred.cert, cred.intermediates, requested, cfg.trust_anchors)
        except ChainError as exc:
            raise AuthenticationFailure(f"own certificate chain: {exc}") from None
        if len(chains) >= MAX_CACHED_CHAINS:
            chains.clear()
        ders = chains[key] = tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
    return ders


def _method(sa):
    """Method 14 needs the peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427 4); without it an RSA
    key falls back to method 1, as strongSwan does."""
    key, cfg = sa.config.credentials.key, sa.config
    if cfg.auth_method == AuthMethod.RSA_SIG:
        return AuthMethod.RSA_SIG, None
    if not sa.peer_hashes and isinstance(key, rsa.RSAPrivateKey):
        return AuthMethod.RSA_SIG, None
    preferred = _default_hash(key)
    common = [h for h in (preferred, *cfg.hash_algorithms) if h in sa.peer_hashes]
    return AuthMethod.DIGITAL_SIGNATURE, common[0] if common else preferred


def _verify(sa, ctx: Ctx, id_ptype: int) -> None:
    cfg = sa.config
    idp = ctx.first(IdPayload, id_ptype)
    auth = ctx.first(AuthPayload)
    if idp is None or auth is None:
        raise InvalidSyntax(f"IKE_AUTH without {PayloadType(id_ptype).name} or AUTH")
    if auth.method not in cfg.accept_auth_methods:
        raise AuthenticationFailure(f"AUTH method {auth.method} not accepted")
    ders = _peer_ders(sa, ctx)
    try:
        valid = validate_peer(ders, cfg.trust_anchors, sa.wall_clock(), max_chain=cfg.max_chain)
    except ChainError as exc:
        raise AuthenticationFailure(str(exc)) from None
    if not identity_matches(valid.leaf, idp.id_type, idp.data):
        raise AuthenticationFailure(f"ID {describe_id(idp)} is not bound to the peer certificate")
    sk_p = sa.keys.sk_pr if sa.initiator else sa.keys.sk_pi
    octets = signed_octets(sa.peer_init, sa.own_nonce, sa.suite.prf, sk_p, idp.encode())
    try:
        verify_auth(valid.leaf.public_key(), auth.method, auth.data, octets, cfg.hash_algorithms)
    except (AuthenticationFailed, ValueError, TypeError) as exc:
        raise AuthenticationFailure(f"AUTH: {exc}") from None
    # Only now, with the chain verified to an anchor and the peer holding its key, may a
    # revocation source be asked (it may suspend this exchange: cards/ike/revocation.py).
    sa.check_revocation(valid)
    sa.peer_id = describe_id(idp)
    sa.peer_cert_subject = valid.leaf.subject.rfc4514_string()


def describe_id(idp: IdPayload) -> str:
    """The peer identity as logged and reported (already checked against the certificate)."""
    try:
        if idp.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return idp.data.decode("ascii", "backslashreplace")
        if idp.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return str(ipaddress.ip_address(idp.data))
        if idp.id_type == IdType.DER_ASN1_DN:
            return _der.parse_name(idp.data).rfc4514_string()
    except Exception:  # peer bytes: a name we cannot render is shown in hex
        pass
    return f"{int(idp.id_type)}:{idp.data.hex()}"
