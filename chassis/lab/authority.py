"""The lab's certificate authority: a root, an intermediate, issuance and revocation.

Everything the CMP server, the OCSP responder and the CRL publisher need to agree on
lives here, persisted under RUN/lab/ca/ (keys 0600): the CA certificates, and a
revocation database of every certificate issued. Time comes from an injected clock (the
chassis's warpable wall clock), so expiry drills move the lab along with the gateway.

Several processes open the same home (the CA server, the eNodeB fleet, the OCSP responder,
the CRL publisher): each appends to the database and ``refresh()`` reads what the others
appended. ``urls.json`` in the home (written by the backplane before any lab process
starts) names the lab's OCSP responder and CRL distribution points; every end-entity
certificate issued then carries them (AIA id-ad-ocsp, CRLDistributionPoints).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

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


ISSUERS = ("intermediate", "root")
# RFC 5280 CRLReason names a revocation may give (removeFromCRL belongs to delta CRLs only).
REASONS = tuple(r.value for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl)
URLS_FILE = "urls.json"


@dataclass
class Issued:
    serial: int
    subject: str
    not_after: str
    revoked_at: str | None = None
    reason: str | None = None
    issuer: str = "intermediate"  # which lab CA signed it (older records: the intermediate)


@dataclass(frozen=True)
class RevocationUrls:
    """Where a relying party asks about a certificate of the lab: one OCSP responder for both
    CAs, and per issuing CA its CRL distribution points (http, then ldap)."""

    ocsp: tuple[str, ...] = ()
    crl: dict = field(default_factory=dict)  # issuer ("intermediate" | "root") -> URLs

    @classmethod
    def from_dict(cls, d: dict) -> RevocationUrls:
        crl = d.get("crl") or {}
        return cls(tuple(d.get("ocsp") or ()), {k: tuple(v) for k, v in crl.items()})

    def to_dict(self) -> dict:
        return {"ocsp": list(self.ocsp), "crl": {k: list(v) for k, v in self.crl.items()}}


class Authority:
    """Root -> intermediate -> end entities. CA keys are EC P-256 (fast to make, real chains)."""

    def __init__(
        self,
        home: Path,
        now: Callable[[], dt.datetime],
        validity_days: int = 365,
        urls: RevocationUrls | None = None,
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
        self._db_at = (0, 0)  # (inode, bytes read) of issued.jsonl
        self.db: dict[int, Issued] = {}
        self.refresh()
        self.urls = urls if urls is not None else self._load_urls()

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
        ca, ca_key = self.ca(issuer)
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
        builder = self._revocation_extensions(builder, issuer)
        return self._record(builder.sign(ca_key, hashes.SHA256()), issuer)

    def issue_ocsp_signer(self, public_key, issuer: str = "intermediate", days: int | None = None):
        """A delegated OCSP signing certificate (RFC 6960 4.2.2.2): issued by the CA it answers
        for, EKU id-kp-OCSPSigning, and id-pkix-ocsp-nocheck so nobody asks about it."""
        ca, ca_key = self.ca(issuer)
        now = self.now()
        name = f"SeGW Lab OCSP Responder ({'Root' if issuer == 'root' else 'Issuing'} CA)"
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days or self.validity_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
            )
            .add_extension(x509.OCSPNoCheck(), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return self._record(cert, issuer)

    def ca(self, issuer: str = "intermediate"):
        """(certificate, private key) of one of the lab's CAs."""
        if issuer not in ISSUERS:
            raise ValueError(f"issuer {issuer!r}: root or intermediate")
        return (self.root, self.root_key) if issuer == "root" else (self.issuing, self.issuing_key)

    def _revocation_extensions(self, builder, issuer: str):
        if self.urls.ocsp:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u)
                        )
                        for u in self.urls.ocsp
                    ]
                ),
                critical=False,
            )
        crl = self.urls.crl.get(issuer)
        if crl:
            point = x509.DistributionPoint(
                [x509.UniformResourceIdentifier(u) for u in crl], None, None, None
            )
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        return builder

    def _record(self, cert: x509.Certificate, issuer: str) -> x509.Certificate:
        entry = Issued(
            cert.serial_number,
            cert.subject.rfc4514_string(),
            cert.not_valid_after_utc.isoformat(),
            issuer=issuer,
        )
        self.db[cert.serial_number] = entry
        self._append(entry)
        return cert

    def revoke(self, serial: int, reason: str = "unspecified") -> bool:
        """Revoke a certificate this CA issued (from any process: the database is read again
        first). False if it is unknown or already revoked."""
        if reason not in REASONS:
            raise ValueError(f"reason {reason!r}: one of {', '.join(REASONS)}")
        self.refresh()
        entry = self.db.get(serial)
        if entry is None or entry.revoked_at:
            return False
        entry.revoked_at, entry.reason = self.now().isoformat(), reason
        self._append(entry)
        return True

    def status(self, serial: int) -> str:
        entry = self.db.get(serial)
        return "unknown" if entry is None else ("revoked" if entry.revoked_at else "good")

    def revoked(self, issuer: str = "intermediate") -> list[Issued]:
        """Every revoked certificate of one CA, oldest revocation first."""
        out = [e for e in self.db.values() if e.revoked_at and e.issuer == issuer]
        return sorted(out, key=lambda e: (e.revoked_at, e.serial))

    @property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        return self.issuing, self.root

    def intermediates(self, issuer: str = "intermediate") -> tuple[x509.Certificate, ...]:
        """What a certificate from ``issuer`` sends above itself (never the root)."""
        return () if issuer == "root" else (self.issuing,)

    # --- the revocation database ---------------------------------------------------------
    # One JSON line per issue or revocation, appended and fsynced: the cost of a write does
    # not grow with the number of certificates. The last line about a serial wins.

    def refresh(self) -> bool:
        """Read the lines other processes appended since the last call (only whole lines: one
        being written is read next time). True if there were any."""
        path = self.home / "issued.jsonl"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        inode, done = self._db_at
        if st.st_ino != inode or st.st_size < done:  # replaced or truncated: read it all
            self.db, done = {}, 0
        if st.st_size == done:
            return False
        with open(path, "rb") as f:
            f.seek(done)
            data = f.read(st.st_size - done)
        whole = data.rfind(b"\n") + 1
        for line in data[:whole].splitlines():
            try:
                raw = json.loads(line)
                self.db[int(raw["serial"])] = Issued(**raw)
            except (ValueError, TypeError, KeyError):  # a line torn by a crash: skipped
                continue
        self._db_at = (st.st_ino, done + whole)
        return whole > 0

    def _load_urls(self) -> RevocationUrls:
        try:
            return RevocationUrls.from_dict(json.loads((self.home / URLS_FILE).read_bytes()))
        except (OSError, ValueError, TypeError, AttributeError):
            return RevocationUrls()

    def _append(self, entry: Issued) -> None:
        fd = os.open(self.home / "issued.jsonl", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            line = (json.dumps(vars(entry)) + "\n").encode()
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line torn by a crash: end it
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
