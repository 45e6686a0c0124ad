"""Is the peer's certificate revoked? OCSP first, then the CRLs (sans-IO).

The reference's "Online Certificate Status Protocol (OCSP)" and "CRL Fetching" sections,
as the card applies them once the peer's chain is verified to a trust anchor (never
before: strongSwan's CVE-2022-40617 fetched from URLs of an unverified certificate):

- OCSP, when the template or map says ``ocsp [nonce]`` and the certificate names a
  responder (AIA id-ad-ocsp, or the configured responder address). good: accepted.
  unknown, an error, a timeout or no URL: the CRLs decide.
- revoked: the reference falls back to the CRL here too. We consult it and log both
  answers, but a revoked answer is never overridden: the peer is refused.
- CRLs: those of the template's ``ca-crl list`` that the peer's issuer signed, else the
  certificate's CDP URLs (http, ldap and ftp only; other schemes only as a configured
  ``ca-crl``), fetched by the management card when first needed.
- No source left to decide (no CRL, a stale one, a failed fetch): refused (fail closed).

A check is driven by the IKE SA (cards/ike/revocation.py): ``advance`` returns a Verdict,
or the requests (NeedOcsp, NeedCrl) the runner must answer; answers come back through
``ocsp_answer`` / ``crl_answer`` and ``timeout``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from cards.crls import CrlStore

from . import ocsp
from .chain import revocation_urls

CDP_SCHEMES = ("http", "ldap", "ftp")  # taken from a certificate; the rest only configured


@dataclass(frozen=True)
class Policy:
    """A template's or map's revocation settings."""

    ocsp: bool = False  # `ocsp`
    nonce: bool = False  # `ocsp nonce`
    responder: str | None = None  # `ocsp responder-address URL`: instead of the AIA URL
    crls: tuple[str, ...] = ()  # `ca-crl list ca-crl-name ...`
    timeout_s: float = 2.0  # per source (OCSP answer, CRL fetch): below a peer's retransmit

    @property
    def enabled(self) -> bool:
        return self.ocsp or bool(self.crls)


@dataclass(frozen=True)
class NeedOcsp:
    request: ocsp.OcspRequest


@dataclass(frozen=True)
class NeedCrl:
    url: str
    issuer: bytes  # DER of the trusted issuer certificate, to verify the CRL with


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # both answers, for the log


def key_hash(cert: x509.Certificate) -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


class RevocationCheck:
    """The revocation check of one peer certificate, across the waits it needs."""

    def __init__(
        self,
        policy: Policy,
        leaf: x509.Certificate,
        issuer: x509.Certificate,
        issuer_der: bytes,
        rand: Callable[[int], bytes],
    ) -> None:
        self.policy, self.leaf, self.issuer, self.issuer_der = policy, leaf, issuer, issuer_der
        self.rand = rand
        self.urls = revocation_urls(leaf)
        self.ocsp_request: ocsp.OcspRequest | None = None
        self.ocsp_result: ocsp.OcspResult | None = None
        self.crl_asked: dict[str, str | None] = {}  # CDP URL -> fetch error (None: fine)
        self.waiting: set[str] = set()  # "ocsp" and CRL URLs not answered yet

    # --- answers ----------------------------------------------------------------------
    def ocsp_answer(self, body: bytes | None, error: str | None, now: dt.datetime) -> None:
        if "ocsp" not in self.waiting or self.ocsp_request is None:
            return
        self.waiting.discard("ocsp")
        if body is None:
            self.ocsp_result = ocsp.OcspResult("error", f"OCSP {self.ocsp_request.url}: {error}")
            return
        result = ocsp.check_response(
            self.ocsp_request, self.issuer, body, now, require_nonce=self.policy.nonce
        )
        self.ocsp_result = ocsp.OcspResult(result.status, f"OCSP {result.reason}")

    def crl_answer(self, url: str, error: str | None) -> None:
        if url in self.waiting:
            self.waiting.discard(url)
            self.crl_asked[url] = error

    def timeout(self) -> None:
        """The setup timer ran out: what has not answered counts as an error."""
        seconds = f"no answer within {self.policy.timeout_s:g} s"
        for what in sorted(self.waiting):
            if what == "ocsp":
                self.ocsp_result = ocsp.OcspResult(
                    "error", f"OCSP {self.ocsp_request.url}: {seconds}"
                )
            else:
                self.crl_asked[what] = seconds
        self.waiting.clear()

    # --- the decision -----------------------------------------------------------------
    def advance(self, store: CrlStore, now: dt.datetime) -> Verdict | list:
        """A Verdict, or the requests to make (an empty list: still waiting for answers)."""
        if self.waiting:
            return []
        if self.policy.ocsp and self.ocsp_result is None:
            url = self.policy.responder or next(iter(self.urls["ocsp"]), None)
            if url is not None:
                nonce = self.rand(16) if self.policy.nonce else None
                self.ocsp_request = ocsp.build_request(self.leaf, self.issuer, url, nonce=nonce)
                self.waiting.add("ocsp")
                return [NeedOcsp(self.ocsp_request)]
            self.ocsp_result = ocsp.OcspResult("none", "OCSP: no responder URL in the certificate")
        first = self.ocsp_result
        if first is not None and first.status == "good":
            return Verdict(True, first.reason)
        crl = self._crl(store, now.timestamp())
        if isinstance(crl, list):
            return crl
        status, why = crl
        said = f"{first.reason}; {why}" if first is not None else why
        if first is not None and first.status == "revoked":
            return Verdict(False, f"{said} (a revoked OCSP answer is never overridden)")
        if status == "good":
            return Verdict(True, said)
        if status == "revoked":
            return Verdict(False, said)
        return Verdict(False, f"{said}: no source left to decide, refused (fail closed)")

    def _crl(self, store: CrlStore, now: float):
        """("good" | "revoked" | "absent" | "error", reason), or NeedCrl requests."""
        key = key_hash(self.issuer)
        serial = self.leaf.serial_number
        covering, problems = [], []
        for name in self.policy.crls:
            entry = store.by_name.get(name)
            if entry is None:
                problems.append(f"ca-crl {name} is not on this card")
            elif entry.index is None:
                problems.append(f"ca-crl {name}: {entry.error}")
            elif entry.issuer_key_sha1 == key:
                covering.append((f"ca-crl {name}", entry))
        if not covering:
            needs = []
            for url in self.urls["crl"]:
                if urlsplit(url).scheme.lower() not in CDP_SCHEMES:
                    problems.append(f"CDP {url}: scheme not taken from certificates")
                    continue
                entry = store.by_url.get(url)
                if url in self.crl_asked and self.crl_asked[url] is not None:
                    problems.append(f"CRL {url}: {self.crl_asked[url]}")
                elif entry is not None and entry.fresh(now) and entry.issuer_key_sha1 == key:
                    covering.append((f"CRL {url}", entry))
                elif url not in self.crl_asked:
                    needs.append(NeedCrl(url, self.issuer_der))
                elif entry is None or entry.index is None:
                    problems.append(f"CRL {url}: {entry.error if entry else 'not received'}")
                elif entry.issuer_key_sha1 != key:
                    problems.append(f"CRL {url} is not signed by the certificate's issuer")
                else:
                    problems.append(f"CRL {url} is stale")
                if covering:
                    break
            if needs and not covering:
                for need in needs:
                    self.crl_asked[need.url] = None
                    self.waiting.add(need.url)
                return needs
        for label, entry in covering:
            if not entry.fresh(now):
                problems.append(f"{label} is stale (nextUpdate passed)")
            elif serial in entry.index:
                return "revoked", f"{label}: serial {serial:x} revoked"
        if covering and not problems:
            label = ", ".join(lbl for lbl, _ in covering)
            return "good", f"{label}: serial {serial:x} not revoked"
        if problems:
            return "error", "; ".join(problems)
        return "absent", "no CRL for the certificate's issuer"


def own_revoked(cert: x509.Certificate, store: CrlStore, now: float) -> str | None:
    """Why our own certificate must not be sent (a CRL the card holds lists it), or None.
    The CRLs of its CDP come to the card when the management card installs it."""
    issuer = cert.issuer.public_bytes()
    entries = [store.by_url.get(url) for url in revocation_urls(cert)["crl"]]
    entries += [e for e in store.by_name.values() if e.issuer == issuer]
    for entry in entries:
        if entry is not None and entry.fresh(now) and entry.issuer == issuer:
            if cert.serial_number in entry.index:
                return (
                    f"our certificate (serial {cert.serial_number:x}) is revoked by CRL {entry.url}"
                )
    return None
