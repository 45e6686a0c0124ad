"""Packet-card PKI for IKEv2 certificate authentication: CERTREQ and peer chains."""

from .certreq import certreq_data, chain_to_send, parse_certreq, spki_sha1
from .chain import (
    MAX_CHAIN,
    ChainError,
    Validated,
    identity_matches,
    revocation_urls,
    validate_peer,
)

__all__ = [
    "MAX_CHAIN",
    "ChainError",
    "Validated",
    "certreq_data",
    "chain_to_send",
    "identity_matches",
    "parse_certreq",
    "revocation_urls",
    "spki_sha1",
    "validate_peer",
]
