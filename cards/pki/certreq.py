"""CERTREQ payloads and the certificates the gateway sends back (IKEv2, sans-IO).

StarOS sends one CERTREQ of encoding "X.509 Certificate - Signature" whose Certification
Authority field concatenates the SHA-1 of each listed CA's SubjectPublicKeyInfo (RFC 7296
3.7), and answers a peer's CERTREQ with its own certificate plus the intermediates below
the CA the peer trusts: the peer holds that CA already, so sending it only costs bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography import x509

from . import _der
from .chain import MAX_CHAIN, ChainError, issued_by

CERT_ENCODING_X509_SIGNATURE = 4
SHA1_LEN = 20


def spki_sha1(cert: x509.Certificate) -> bytes:
    """SHA-1 of the certificate's SubjectPublicKeyInfo as encoded in its TBSCertificate.

    Taken from the certificate bytes rather than re-encoding the public key: a CA whose
    SPKI encodes parameters unusually (explicit EC curve, RSA-PSS parameters) would
    otherwise hash differently here than at the peer.
    """
    return hashlib.sha1(_der.spki_der(cert.tbs_certificate_bytes)).digest()


def certreq_data(anchors: Sequence[x509.Certificate]) -> bytes:
    """The Certification Authority field for the template's CA certificate list."""
    return b"".join(spki_sha1(anchor) for anchor in anchors)


def parse_certreq(data: bytes) -> list[bytes]:
    """The 20-byte SPKI hashes in a CERTREQ's Certification Authority field."""
    if len(data) % SHA1_LEN:
        raise ChainError(
            f"CERTREQ authority field of {len(data)} bytes is not a multiple of {SHA1_LEN}"
        )
    return [bytes(data[i : i + SHA1_LEN]) for i in range(0, len(data), SHA1_LEN)]


def chain_to_send(
    own: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    requested: Sequence[bytes],
    anchors: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    """Our certificate and the intermediates above it, up to the CA the peer knows.

    The intermediates are put in leaf-up order by following issuer links, so their
    configured order does not matter and unrelated certificates are left out. The walk
    stops before the first CA the peer named in its CERTREQ; without one (or when it names
    none of ours) we cannot tell what the peer trusts and send every intermediate. Our own
    anchor list (``anchors``) does not cut the chain: it says what we trust, not what the
    peer holds (an operator listing CA1 and CA1_1 must still send CA1_1 to a peer that
    asked only for CA1). Never a self-signed root: a peer can only trust one it holds.
    """
    stop = set(requested)
    chain = [own]
    current = own
    while True:
        nxt = next(
            (c for c in intermediates if c not in chain and issued_by(current, c)),
            None,
        )
        if nxt is None or issued_by(nxt, nxt) or spki_sha1(nxt) in stop:
            break
        chain.append(nxt)
        current = nxt
    if len(chain) > MAX_CHAIN:
        raise ChainError(f"chain of {len(chain)} certificates exceeds the maximum of {MAX_CHAIN}")
    return chain
