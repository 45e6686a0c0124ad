"""The lab's CRL publisher logic: a CRL per lab CA from the Authority's revocation database.

Each publication builds, for the issuing CA ("issuing") and the root ("root"), a CRL signed by
that CA (RFC 5280: CRLNumber increasing across restarts, AuthorityKeyIdentifier, thisUpdate
now, nextUpdate now plus the period, CRLReason on each entry but unspecified ones), and
writes it, DER (.crl) and PEM (.pem), into every directory it was given (atomically: a
reader sees the old file or the new one). Time comes from the lab's warpable clock.

A new CRL is due when the database grew (a revocation, from any process), when half the
period has passed since the last one, or when the clock was warped past it.

Behaviours (chassis.lab.peer.PeerBehaviour) change what is published: stale gives a CRL
whose nextUpdate has passed; error "corrupt" publishes a truncated CRL, "bad-signature" one
whose signature does not verify; error "http-500" (or true) leaves the CRL alone (the HTTP
front answers 500).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from chassis.ipc.rundir import atomic_write
from chassis.lab.authority import Authority
from chassis.lab.peer import PeerBehaviour

ERRORS = ("http-500", "corrupt", "bad-signature")  # the first is what `error: true` means
# file stem -> the Authority's name for the CA
CAS = {"issuing": "intermediate", "root": "root"}
NUMBERS = "numbers.json"


def crl_behaviour(conf: dict | None = None) -> PeerBehaviour:
    return PeerBehaviour.from_config(conf, ERRORS)


@dataclass(frozen=True)
class Published:
    name: str  # "issuing" | "root"
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    revoked: int  # entries
    der: bytes  # what is served: the CRL, or its spoiled form
    pem: bytes

    def describe(self) -> dict:
        return {
            "number": self.number,
            "this_update": self.this_update.isoformat(),
            "next_update": self.next_update.isoformat(),
            "revoked": self.revoked,
            "bytes": len(self.der),
        }


class CrlPublisher:
    def __init__(
        self,
        authority: Authority,
        now: Callable[[], dt.datetime],
        home: Path,
        *,
        next_update_s: float = 3600,
        behaviour: PeerBehaviour | None = None,
        mirrors: Iterable[Path] = (),
    ) -> None:
        self.ca, self.now, self.home = authority, now, Path(home)
        self.period = dt.timedelta(seconds=next_update_s)
        self.behaviour = behaviour or crl_behaviour()
        self.dirs = [self.home, *map(Path, mirrors)]
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.numbers = self._load_numbers()
        self.current: dict[str, Published] = {}
        self.built_at: dt.datetime | None = None
        self.listed = -1  # revocations in the database when the current CRLs were built

    def _revocations(self) -> int:
        return sum(1 for e in self.ca.db.values() if e.revoked_at)

    # --- when --------------------------------------------------------------------------

    def due(self) -> bool:
        """A new CRL is due (reads what other processes appended to the database)."""
        if self.ca.refresh() and self._revocations() != self.listed:
            return True  # a revocation (an issuance alone changes no CRL)
        if self.built_at is None:
            return True
        now = self.now()
        return now < self.built_at or now >= self.built_at + self.period / 2

    # --- what --------------------------------------------------------------------------

    def publish(self) -> dict[str, Published]:
        """Build and write a new CRL for each lab CA; returns them by name."""
        self.ca.refresh()
        self.listed = self._revocations()
        now = self.now().replace(microsecond=0)
        this_update, next_update = now, now + self.period
        stale = self.behaviour.stale_by(self.period.total_seconds())
        if stale is not None:
            next_update = now - dt.timedelta(seconds=stale)
            this_update = next_update - self.period
        out = {}
        for name, issuer in CAS.items():
            self.numbers[name] = self.numbers.get(name, 0) + 1
            crl, count = self.build(issuer, self.numbers[name], this_update, next_update)
            der = self._spoil(crl.public_bytes(serialization.Encoding.DER))
            pem = _pem(der)
            out[name] = Published(
                name, self.numbers[name], this_update, next_update, count, der, pem
            )
        self._save_numbers()  # before the files: a number is never used twice
        for published in out.values():
            for d in self.dirs:
                atomic_write(d / f"{published.name}.crl", published.der, 0o644, sync_dir=False)
                atomic_write(d / f"{published.name}.pem", published.pem, 0o644, sync_dir=False)
        self.current, self.built_at = out, self.now()
        self.behaviour.count("published")
        return out

    def build(
        self, issuer: str, number: int, this_update: dt.datetime, next_update: dt.datetime
    ) -> tuple[x509.CertificateRevocationList, int]:
        ca, key = self.ca.ca(issuer)
        revoked = []
        for entry in self.ca.revoked(issuer):
            when = dt.datetime.fromisoformat(entry.revoked_at).replace(microsecond=0)
            item = (
                x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(when)
            )
            if entry.reason and entry.reason != "unspecified":  # RFC 5280 5.3.1
                item = item.add_extension(x509.CRLReason(x509.ReasonFlags(entry.reason)), False)
            revoked.append(item.build())
        # The whole list at once: add_revoked_certificate() in a loop is quadratic.
        builder = x509.CertificateRevocationListBuilder(
            issuer_name=ca.subject,
            last_update=this_update,
            next_update=next_update,
            revoked_certificates=revoked,
        )
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        return builder.sign(key, hashes.SHA256()), len(revoked)

    def _spoil(self, der: bytes) -> bytes:
        kind = self.behaviour.error_kind
        if kind == "corrupt":
            return der[: len(der) // 2]
        if kind == "bad-signature":  # the signature value ends the CRL
            return der[:-1] + bytes([der[-1] ^ 0x01])
        return der

    # --- CRL numbers survive restarts ---------------------------------------------------

    def _load_numbers(self) -> dict[str, int]:
        try:
            raw = json.loads((self.home / NUMBERS).read_bytes())
            return {str(k): int(v) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _save_numbers(self) -> None:
        atomic_write(self.home / NUMBERS, json.dumps(self.numbers).encode(), 0o644)

    def describe(self) -> dict:
        return {name: p.describe() for name, p in self.current.items()}


def _pem(der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN X509 CRL-----\n" + b"\n".join(lines) + b"\n-----END X509 CRL-----\n"
