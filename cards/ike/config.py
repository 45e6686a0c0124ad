"""What one IKE endpoint (a crypto template on a card, or a lab eNodeB) is configured with.

Pure data: the runner builds it from the template and the credentials fanned out by the
supervisor; the engine never reads files.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509

from .const import AuthMethod, DhGroup, Encr, HashAlg, IdType, Integ, Prf, TsType
from .crypto import Suite
from .payloads import TrafficSelector


@dataclass(frozen=True)
class IkeProposal:
    """One IKE SA transform set; sent as one SA proposal (one transform of each type)."""

    encr: Encr
    key_bits: int
    prf: Prf
    integ: Integ
    dh: DhGroup

    @property
    def suite(self) -> Suite:
        return Suite(self.encr, self.key_bits, self.prf, self.integ)

    def __str__(self) -> str:
        """IANA names as strongSwan prints them: AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/ECP_256."""
        parts = [f"{Encr(self.encr).name}_{self.key_bits}", f"PRF_{Prf(self.prf).name}"]
        if self.integ != Integ.NONE:
            parts.insert(1, Integ(self.integ).name)
        return "/".join([*parts, DhGroup(self.dh).name])


def _p(encr, bits, prf, integ, dh) -> IkeProposal:
    return IkeProposal(encr, bits, prf, integ, dh)


# StarOS-like defaults, strongest first; GCM and CBC, the four groups the engine implements.
DEFAULT_PROPOSALS: tuple[IkeProposal, ...] = (
    _p(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_384, Integ.NONE, DhGroup.ECP_384),
    _p(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_256, Integ.NONE, DhGroup.ECP_256),
    _p(Encr.AES_GCM_16, 128, Prf.HMAC_SHA2_256, Integ.NONE, DhGroup.CURVE25519),
    _p(Encr.AES_CBC, 256, Prf.HMAC_SHA2_512, Integ.HMAC_SHA2_512_256, DhGroup.ECP_384),
    _p(Encr.AES_CBC, 256, Prf.HMAC_SHA2_384, Integ.HMAC_SHA2_384_192, DhGroup.ECP_384),
    _p(Encr.AES_CBC, 256, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128, DhGroup.ECP_256),
    _p(Encr.AES_CBC, 128, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128, DhGroup.MODP_2048),
    _p(Encr.AES_CBC, 256, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128, DhGroup.MODP_2048),
)


@dataclass(frozen=True)
class ChildProposal:
    """One ESP transform set (no ESN) of a child-SA payload (``ChildPolicy``)."""

    encr: Encr = Encr.AES_GCM_16
    key_bits: int = 256
    integ: Integ = Integ.NONE
    dh: int = 0  # PFS group for CREATE_CHILD_SA (0: none); IKE_AUTH children never carry KE

    def __post_init__(self):
        Suite(self.encr, self.key_bits, Prf.HMAC_SHA2_256, self.integ)  # same rules as IKE

    @property
    def encr_key_len(self) -> int:
        """Bytes of KEYMAT for the cipher; an AES-GCM key carries a 4-byte salt (RFC 4106 8.1)."""
        return Suite(self.encr, self.key_bits, Prf.HMAC_SHA2_256, self.integ).encr_key_len

    @property
    def integ_key_len(self) -> int:
        return Suite(self.encr, self.key_bits, Prf.HMAC_SHA2_256, self.integ).integ_key_len

    def __str__(self) -> str:
        """As IkeProposal: AES_GCM_16_256, AES_CBC_128/HMAC_SHA2_256_128/MODP_2048 (PFS)."""
        parts = [f"{Encr(self.encr).name}_{self.key_bits}"]
        if self.integ != Integ.NONE:
            parts.append(Integ(self.integ).name)
        if self.dh:
            parts.append(DhGroup(self.dh).name)
        return "/".join(parts)


def _c(encr, bits, integ=Integ.NONE) -> ChildProposal:
    return ChildProposal(encr, bits, integ)


# ESP transform sets a responder accepts, strongest first (the peer's order decides).
DEFAULT_CHILD_PROPOSALS: tuple[ChildProposal, ...] = (
    _c(Encr.AES_GCM_16, 256),
    _c(Encr.AES_GCM_16, 128),
    _c(Encr.AES_CBC, 256, Integ.HMAC_SHA2_256_128),
    _c(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128),
)


def any_ts(ts_type=TsType.IPV4_ADDR_RANGE) -> TrafficSelector:
    """Every address and port of one family."""
    v6 = ts_type == TsType.IPV6_ADDR_RANGE
    low, high = (
        ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") if v6 else ("0.0.0.0", "255.255.255.255")
    )
    return TrafficSelector(
        ts_type, 0, 0, 65535, ipaddress.ip_address(low), ipaddress.ip_address(high)
    )


@dataclass(frozen=True)
class ChildPolicy:
    """One child-SA payload of a crypto template or crypto map (`payload NAME match childsa`).

    ``proposals`` are the ESP transform sets, in order: an initiator offers them all, a
    responder accepts the peer's first that matches one. ``ts_local`` is our side (TSr when
    we respond, TSi when we initiate), ``ts_remote`` the peer's."""

    name: str = "default"
    proposals: tuple[ChildProposal, ...] = DEFAULT_CHILD_PROPOSALS
    ts_local: tuple[TrafficSelector, ...] = (any_ts(),)
    ts_remote: tuple[TrafficSelector, ...] = (any_ts(),)
    lifetime_s: int = 86400
    rekey: bool = False  # rekey at 90% of the lifetime (else the child is deleted at its end)

    def __post_init__(self):
        if not self.proposals:
            raise ValueError(f"payload {self.name}: no IPsec transform set")


@dataclass(frozen=True)
class Credentials:
    """Own certificate, its private key and the intermediates above it (any order)."""

    cert: x509.Certificate
    key: object
    intermediates: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class IkeConfig:
    credentials: Credentials
    trust_anchors: tuple[x509.Certificate, ...]  # the template's ca-certificate list
    proposals: tuple[IkeProposal, ...] = DEFAULT_PROPOSALS
    auth_method: AuthMethod = AuthMethod.DIGITAL_SIGNATURE
    # Methods accepted from the peer; add RSA_SIG (1) to accept classic RSA signatures.
    accept_auth_methods: frozenset[AuthMethod] = frozenset({AuthMethod.DIGITAL_SIGNATURE})
    hash_algorithms: tuple[HashAlg, ...] = (HashAlg.SHA2_256, HashAlg.SHA2_384, HashAlg.SHA2_512)
    local_id: tuple[IdType, bytes] | None = None  # None: derived from the certificate
    max_chain: int = 4
    retransmit_timeout_ms: int = 500
    max_retransmissions: int = 5
    setup_timeout_s: float = 30.0
    cookie_threshold: int | None = 1000  # half-open SAs before COOKIE is demanded; None: never
    # The child-SA payloads in configuration order. An initiator asks for the first one in
    # IKE_AUTH (none: an IKE SA without a child); a responder picks one by the peer's selectors.
    children: tuple[ChildPolicy, ...] = (ChildPolicy(),)
    # MCSA: child SAs per IKE SA, rekeys not counted (`max-childsa N overload-action A`);
    # "terminate" deletes an IKE SA whose peer asks for more, "ignore" just refuses.
    max_children: int = 5
    overload_action: str = "ignore"
    # Seconds after IKE_AUTH before we create children for the payloads the peer has not
    # covered itself (responder-triggered MCSA); None: never.
    mcsa_delay_s: float | None = 1.0
    ike_lifetime_s: int = 86400
    # Dead peer detection (`dpd interval N retry-interval R maximum-retry M`): an empty
    # INFORMATIONAL after N quiet seconds, retried every R seconds (no backoff) M times.
    # Hash and URL (RFC 7296 3.6, `allow-cert-enc cert-hash-url`): with ``hash_and_url`` we
    # announce HTTP_CERT_LOOKUP_SUPPORTED and accept a peer's certificate as SHA-1 + URL (the
    # runner fetches it, at most ``fetch_max_bytes`` within ``fetch_timeout_s``); we send ours
    # that way when the peer announced support and ``own_cert_url`` is set.
    hash_and_url: bool = False
    own_cert_url: str | None = None
    fetch_max_bytes: int = 16384
    fetch_timeout_s: float = 5.0
    # Inner addresses (CP): a responder serves CFG_REQUESTs from ``addresses`` (cards.pools.Pools:
    # allocate(version), release(address), reserve(address)); an initiator asks for the IP
    # versions in ``request_addresses``.
    addresses: object | None = None
    request_addresses: tuple[int, ...] = ()
    # RFC 7383: offered in IKE_SA_INIT; used for messages over fragment_size octets as an IP
    # datagram (strongSwan's default is 1280 too)
    fragmentation: bool = True
    fragment_size: int = 1280
    dpd_interval_s: float | None = None
    dpd_retry_s: float = 2.0
    dpd_max_retries: int = 3
    ike_rekey: bool = False  # `ikev2-ikesa rekey`: rekey at 90% (else deleted at the end)
    # Revocation of the peer's certificate (`ocsp [nonce]`, `ca-crl list`): the policy, and
    # the card's CRLs (shared by every endpoint, updated as the management card sends them).
    revocation: object | None = None  # cards.pki.revocation.Policy
    crl_store: object | None = None  # cards.pki.revocation.CrlStore

    def identity(self) -> tuple[IdType, bytes]:
        """Our ID payload: configured, else the certificate's first DNS SAN, else its DN."""
        if self.local_id is not None:
            return self.local_id
        cert = self.credentials.cert
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        if names:
            return IdType.FQDN, names[0].encode("ascii")
        return IdType.DER_ASN1_DN, cert.subject.public_bytes()

    @property
    def groups(self) -> tuple[DhGroup, ...]:
        return tuple(dict.fromkeys(p.dh for p in self.proposals))
