"""Revocation waits: an IKE_AUTH whose peer certificate needs an OCSP answer or a CRL is
parked while the runner asks (CheckOcsp, FetchCrl -> Endpoint.revocation_answer), its
copies dropped, and processed again from the start once the answers are in or the setup
timer of the check runs out. The decision itself is cards/pki/revocation.py. A mixin of
IkeSa (cards/ike/sa.py).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding

from cards.pki.revocation import CrlStore, NeedOcsp, RevocationCheck, Verdict

from .errors import AuthenticationFailure, Suspended
from .events import CheckOcsp, FetchCrl, Out, RevocationChecked


class RevocationWait:
    __slots__ = ()

    def check_revocation(self, valid) -> None:
        """Called by IKE_AUTH once the peer's chain, ID and AUTH are verified: returns if
        the certificate is not revoked, raises AuthenticationFailure if it is (or nothing
        can tell), Suspended while a source is being asked."""
        policy = self.config.revocation
        if policy is None or not policy.enabled:
            return
        check = self.revocation
        if check is None or check.leaf != valid.leaf:
            issuer = valid.path[1] if len(valid.path) > 1 else valid.anchor
            check = RevocationCheck(
                policy, valid.leaf, issuer, issuer.public_bytes(Encoding.DER), self.rand
            )
            self.revocation = check
        outcome = check.advance(self.config.crl_store or CrlStore(), self.wall_clock())
        if isinstance(outcome, Verdict):
            self.revocation, self.revocation_deadline = None, None
            subject = valid.leaf.subject.rfc4514_string()
            self.emit(RevocationChecked(self.my_spi, subject, outcome.ok, outcome.reason))
            if not outcome.ok:
                raise AuthenticationFailure(
                    f"certificate revoked or unverifiable: {outcome.reason}"
                )
            return
        if outcome:  # new requests: each source gets the timer afresh
            self.revocation_deadline = self.now + policy.timeout_s
        for need in outcome:
            if isinstance(need, NeedOcsp):
                req = need.request
                self.emit(CheckOcsp(self.my_spi, req.url, req.der, policy.timeout_s))
            else:
                self.emit(FetchCrl(self.my_spi, need.url, need.issuer, policy.timeout_s))
        raise Suspended

    def revocation_answer(
        self, kind: str, url: str, body: bytes | None, error: str | None, now: float
    ) -> list[Out]:
        """An answer for the check in progress: kind "ocsp" (the response body, None with
        ``error`` when it failed) or "crl" (the CRL is on the card now, or ``error``)."""
        return self._run(now, self._revocation_answer, kind, url, body, error)

    def _revocation_answer(self, kind, url, body, error) -> None:
        check = self.revocation
        if check is None or self.parked is None:
            return
        if kind == "ocsp":
            check.ocsp_answer(body, error, self.wall_clock())
        else:
            check.crl_answer(url, error)
        if not check.waiting:
            self.revocation_deadline = None
            self._resume()

    def _revocation_timer(self, now: float) -> bool:
        """The check's timer ran out: what did not answer counts as failed, then go on."""
        if self.revocation_deadline is None or now < self.revocation_deadline:
            return False
        self.revocation_deadline = None
        if self.revocation is not None and self.parked is not None:
            self.revocation.timeout()
            self._resume()
        return True
