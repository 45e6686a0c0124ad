"""The lab's OCSP responder logic (RFC 6960), sans-IO: one OCSPRequest in, one OCSPResponse out.

It answers for both lab CAs (the issuing CA and the root, whichever the request's issuer
hashes name) from the Authority's revocation database: good for a certificate the CA issued,
revoked with its time and reason, unknown for a serial that CA never issued; a request about
another CA is refused (unauthorized). The response is signed by the CA itself, or with
``delegate=True`` by a delegated responder certificate that CA issued (id-kp-OCSPSigning,
id-pkix-ocsp-nocheck), renewed before it expires. thisUpdate is now, nextUpdate now plus the
period; the request's nonce is echoed unless ``nonce=False``. producedAt is set by
cryptography from the system clock (it cannot be set), so it does not follow a warp.

Behaviours (chassis.lab.peer.PeerBehaviour): error answers internalError (true), tryLater,
sigRequired, unauthorized or malformedRequest, or a response with a broken signature
(bad-signature); stale puts thisUpdate and nextUpdate in the past.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from cards.pki._der import children, read_tlv
from chassis.lab.authority import ISSUERS, Authority
from chassis.lab.peer import PeerBehaviour

# What `error` may name; the first is what `error: true` means.
ERRORS = ("internalError", "tryLater", "sigRequired", "unauthorized", "malformedRequest",
          "bad-signature")  # fmt: skip
_STATUS = {
    "internalError": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    "tryLater": ocsp.OCSPResponseStatus.TRY_LATER,
    "sigRequired": ocsp.OCSPResponseStatus.SIG_REQUIRED,
    "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
    "malformedRequest": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
}
RENEW_BEFORE = dt.timedelta(days=1)  # a delegated signer is replaced this long before expiry


def ocsp_behaviour(conf: dict | None = None) -> PeerBehaviour:
    return PeerBehaviour.from_config(conf, ERRORS)


class OcspResponder:
    def __init__(
        self,
        authority: Authority,
        now: Callable[[], dt.datetime],
        *,
        next_update_s: float = 300,
        nonce: bool = True,
        delegate: bool = False,
        behaviour: PeerBehaviour | None = None,
    ) -> None:
        self.ca, self.now = authority, now
        self.period = dt.timedelta(seconds=next_update_s)
        self.nonce, self.delegate = nonce, delegate
        self.behaviour = behaviour or ocsp_behaviour()
        self.signers: dict[str, tuple[x509.Certificate, object]] = {}
        self._hashes: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    # --- who signs ---------------------------------------------------------------------

    def signer(self, issuer: str) -> tuple[x509.Certificate, object]:
        """(certificate, key) that signs answers about certificates of `issuer`."""
        if not self.delegate:
            return self.ca.ca(issuer)
        held = self.signers.get(issuer)
        if held is None or held[0].not_valid_after_utc - RENEW_BEFORE <= self.now():
            key = ec.generate_private_key(ec.SECP256R1())
            held = (self.ca.issue_ocsp_signer(key.public_key(), issuer), key)
            self.signers[issuer] = held
        return held

    def _issuer_hashes(self, issuer: str, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
        """(issuerNameHash, issuerKeyHash) of a lab CA under the request's hash algorithm."""
        cached = self._hashes.get((issuer, algorithm.name))
        if cached is None:
            ca, _ = self.ca.ca(issuer)
            cached = self._hashes[(issuer, algorithm.name)] = (
                _digest(algorithm, ca.subject.public_bytes()),
                _digest(algorithm, public_key_bits(ca)),
            )
        return cached

    def _which_ca(self, req: ocsp.OCSPRequest) -> str | None:
        for issuer in ISSUERS:
            if self._issuer_hashes(issuer, req.hash_algorithm) == (
                req.issuer_name_hash,
                req.issuer_key_hash,
            ):
                return issuer
        return None

    # --- answering ---------------------------------------------------------------------

    def handle(self, der: bytes) -> bytes:
        """DER OCSPRequest -> DER OCSPResponse (never raises on bad input)."""
        b = self.behaviour
        b.count("requests")
        kind = b.error_kind
        if kind in _STATUS:
            b.count("errors")
            return self._unsuccessful(_STATUS[kind])
        try:
            req = ocsp.load_der_ocsp_request(der)
            hash_algorithm = req.hash_algorithm
        except (ValueError, TypeError, NotImplementedError, x509.UnsupportedGeneralNameType):
            b.count("malformed")
            return self._unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        issuer = self._which_ca(req)
        if issuer is None:  # not one of ours: RFC 6960 2.3
            b.count("unauthorized")
            return self._unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        self.ca.refresh()  # the CA (another process) may have issued or revoked since
        status, revoked_at, reason = self._status(issuer, req.serial_number)
        b.count(status)
        now = self.now().replace(microsecond=0)
        this_update, next_update = now, now + self.period
        stale = b.stale_by(self.period.total_seconds())
        if stale is not None:
            next_update = now - dt.timedelta(seconds=stale)
            this_update = next_update - self.period
        cert_status = {
            "good": ocsp.OCSPCertStatus.GOOD,
            "revoked": ocsp.OCSPCertStatus.REVOKED,
            "unknown": ocsp.OCSPCertStatus.UNKNOWN,
        }[status]
        signer, key = self.signer(issuer)
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                req.issuer_name_hash,
                req.issuer_key_hash,
                req.serial_number,
                hash_algorithm,
                cert_status,
                this_update,
                next_update,
                revoked_at,
                reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
            .certificates([signer])
        )
        if self.nonce:
            try:
                nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value
            except x509.ExtensionNotFound:
                pass
            else:
                builder = builder.add_extension(x509.OCSPNonce(nonce.nonce), critical=False)
        answer = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        if kind == "bad-signature":
            b.count("errors")
            answer = _spoil_signature(answer)
        return answer

    def _status(self, issuer: str, serial: int):
        entry = self.ca.db.get(serial)
        if entry is None or entry.issuer != issuer:
            if issuer == "root" and serial == self.ca.issuing.serial_number:
                return "good", None, None  # the issuing CA's own certificate
            return "unknown", None, None
        if not entry.revoked_at:
            return "good", None, None
        when = dt.datetime.fromisoformat(entry.revoked_at).replace(microsecond=0)
        reason = x509.ReasonFlags(entry.reason or "unspecified")
        return "revoked", when, reason

    @staticmethod
    def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
            serialization.Encoding.DER
        )


def public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's bits, what issuerKeyHash covers (RFC 6960 4.1.1)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, start, end = read_tlv(spki, 0)
    (_, _, _, _), (tag, _, content, bits_end) = children(spki, start, end)[:2]
    if tag != 0x03 or spki[content] != 0:
        raise ValueError("subjectPublicKey is not a whole-byte BIT STRING")
    return spki[content + 1 : bits_end]


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _spoil_signature(answer: bytes) -> bytes:
    """The same response with one bit of its signature flipped (like `openssl ocsp -badsig`)."""
    parsed = ocsp.load_der_ocsp_response(answer)
    signature = parsed.signature
    at = answer.rfind(signature)
    if at < 0:
        return answer
    spoiled = bytes([signature[-1] ^ 0x01])
    return answer[: at + len(signature) - 1] + spoiled + answer[at + len(signature) :]
