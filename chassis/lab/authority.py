"""The lab's certificate authority: a root, an intermediate, issuance and revocation.

Everything the CMP server, the OCSP responder and the CRL publisher need to agree on
lives here, persisted under RUN/lab/ca/ (keys 0600): the CA certificates, and a
revocation database of every certificate issued. Time comes from an injected clock (the
chassis's warpable wall clock), so expiry drills move the lab along with the gateway.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chassis.ipc.rundir import atomic_write


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SeGW Lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Issued:
    serial: int
    subject: str
    not_after: str
    revoked_at: str | None = None
    reason: str | None = None


class Authority:
    """Root -> intermediate -> end entities. CA keys are EC P-256 (fast to make, real chains)."""

    def __init__(
        self, home: Path, now: Callable[[], dt.datetime], validity_days: int = 365
    ) -> None:
        self.home, self.now, self.validity_days = Path(home), now, validity_days
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        if not (self.home / "issuing.crt").exists():
            self._create()
        self.root = x509.load_pem_x509_certificate((self.home / "root.crt").read_bytes())
        self.issuing = x509.load_pem_x509_certificate((self.home / "issuing.crt").read_bytes())
        self.issuing_key = serialization.load_pem_private_key(
            (self.home / "issuing.key").read_bytes(), None
        )
        self._root_key = None  # loaded when something is issued from the root itself
        self.db = self._load_db()

    # --- set-up --------------------------------------------------------------------

    def _create(self) -> None:
        now = self.now()
        root_key, issuing_key = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
        root = self._ca_cert(
            _name("SeGW Lab Root CA"), root_key, _name("SeGW Lab Root CA"), root_key, now, 1
        )
        issuing = self._ca_cert(
            _name("SeGW Lab Issuing CA"), issuing_key, root.subject, root_key, now, 0
        )
        for name, data, mode in (
            ("root.key", _pem_key(root_key), 0o600),
            ("issuing.key", _pem_key(issuing_key), 0o600),
            ("root.crt", root.public_bytes(serialization.Encoding.PEM), 0o644),
            ("issuing.crt", issuing.public_bytes(serialization.Encoding.PEM), 0o644),
        ):
            atomic_write(self.home / name, data, mode)

    @staticmethod
    def _ca_cert(subject, key, issuer, issuer_key, now, path_length):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            # digitalSignature too: the CA also signs CMP answers (RFC 9483; OpenSSL checks it).
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(issuer_key, hashes.SHA256())
        )

    # --- issuance ----------------------------------------------------------------------

    @property
    def root_key(self):
        if self._root_key is None:
            self._root_key = serialization.load_pem_private_key(
                (self.home / "root.key").read_bytes(), None
            )
        return self._root_key

    def issue(
        self,
        subject: x509.Name,
        public_key,
        sans: list[x509.GeneralName] = (),
        days: int | None = None,
        issuer: str = "intermediate",
    ):
        """An end-entity certificate from the issuing CA (``issuer="intermediate"``) or, for
        peers that chain straight to the trust anchor, from the root (``issuer="root"``)."""
        if issuer not in ("root", "intermediate"):
            raise ValueError(f"issuer {issuer!r}: root or intermediate")
        ca, ca_key = (
            (self.root, self.root_key) if issuer == "root" else (self.issuing, self.issuing_key)
        )
        now = self.now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days or self.validity_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        entry = Issued(
            cert.serial_number, cert.subject.rfc4514_string(), cert.not_valid_after_utc.isoformat()
        )
        self.db[cert.serial_number] = entry
        self._append(entry)
        return cert

    def revoke(self, serial: int, reason: str = "unspecified") -> bool:
        entry = self.db.get(serial)
        if entry is None or entry.revoked_at:
            return False
        entry.revoked_at, entry.reason = self.now().isoformat(), reason
        self._append(entry)
        return True

    def status(self, serial: int) -> str:
        entry = self.db.get(serial)
        return "unknown" if entry is None else ("revoked" if entry.revoked_at else "good")

    @property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        return self.issuing, self.root

    def intermediates(self, issuer: str = "intermediate") -> tuple[x509.Certificate, ...]:
        """What a certificate from ``issuer`` sends above itself (never the root)."""
        return () if issuer == "root" else (self.issuing,)

    # --- the revocation database ---------------------------------------------------------
    # One JSON line per issue or revocation, appended and fsynced: the cost of a write does
    # not grow with the number of certificates. The last line about a serial wins.

    def _load_db(self) -> dict[int, Issued]:
        db: dict[int, Issued] = {}
        try:
            lines = (self.home / "issued.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return db
        for line in lines:
            try:
                raw = json.loads(line)
            except ValueError:  # a line torn by a crash: everything before it stands
                continue
            db[int(raw["serial"])] = Issued(**raw)
        return db

    def _append(self, entry: Issued) -> None:
        fd = os.open(self.home / "issued.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(vars(entry)) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
