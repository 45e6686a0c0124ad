"""CRLs on the management card: verify and index (in a worker), cache, refresh, coalesced fetch.

verify_and_index() is a pure function that runs in the process pool (DESIGN.md principle 9):
bytes, the candidate issuer certificates and the wall-clock time in; the CRL's metadata and a
compact serial index (chassis.ipc.crl_index) out. The supervisor fans the index out to the
packet cards, which look serials up in it without parsing the CRL again.

CrlCache lives in the supervisor's event loop with all I/O and time injected: `fetch` (the
real one is supervisor.pki.urls.Fetcher().fetch), `run_worker` (supervisor.workers.Workers.run)
and `now` (the warpable wall clock). Two kinds of entries:

- configured (`ca-crl name NAME {der|pem} url URL`): fetched at once, then refreshed;
- learned from a certificate's CRL distribution point: fetched when first needed (`need`).

Concurrent needs of one URL share one fetch; a failed URL is not fetched again within
backoff_s; a failed refresh keeps the previous good CRL until its nextUpdate, after which
the entry is stale and Entry.error(now) says so (lookups must fail closed). Cards receive
meta["next_update"] with each index and apply the same rule with their own wall clock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from chassis.ipc import crl_index

log = logging.getLogger(__name__)

SKEW_S = 300.0  # a thisUpdate this far in the future is still accepted (clock skew)
ENCODINGS = ("der", "pem")

# CRL extensions we understand (RFC 5280 5.2); any other one marked critical refuses the CRL.
_KNOWN_CRL_EXTENSIONS = {
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.CRL_NUMBER,
    ExtensionOID.DELTA_CRL_INDICATOR,
    ExtensionOID.ISSUING_DISTRIBUTION_POINT,
    ExtensionOID.FRESHEST_CRL,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
}
_ENTRY_EXTENSION_NAMES = {
    CRLEntryExtensionOID.CERTIFICATE_ISSUER.dotted_string: "certificateIssuer",
    CRLEntryExtensionOID.CRL_REASON.dotted_string: "reasonCode",
    CRLEntryExtensionOID.INVALIDITY_DATE.dotted_string: "invalidityDate",
}
# Every critical flag that cryptography accepts is DER: BOOLEAN TRUE then the OCTET STRING.
_CRITICAL = b"\x01\x01\xff\x04"
_PEM_START = re.compile(rb"\s*-----BEGIN ")
_PEM_RE = re.compile(rb"-----BEGIN X509 CRL-----(.*?)-----END X509 CRL-----", re.S)


class CrlError(Exception):
    """A CRL was refused; str() is one line naming the cause."""


# ---------------------------------------------------------------- verify and index (worker)


def verify_and_index(body: bytes, encoding: str | None, issuers: list[bytes], now: float) -> dict:
    """Parse (DER or PEM; encoding None sniffs), find the issuer among `issuers` (DER
    certificates), verify the signature and freshness at `now` (unix seconds), refuse what we
    cannot apply (indirect, delta, partial CRLs, unknown critical extensions), and index the
    revoked serials. Raises CrlError only."""
    der = _der_of(body, encoding)
    try:
        crl = x509.load_der_x509_crl(der)
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        raise CrlError(f"not a CRL: {_one_line(exc)}") from None
    parts = _split(der)
    scope = _check_extensions(crl)
    issuer = _find_issuer(crl, issuers, der, parts)
    this_update, next_update = _check_times(crl, now)
    rows = _serial_rows(crl, der, parts["revoked"])
    _check_entry_extensions(der, parts["revoked"])
    index = crl_index.build(rows)
    number = _extension(crl, x509.CRLNumber)
    return {
        "issuer": der[parts["issuer"][0] : parts["issuer"][1]],
        "issuer_key_sha1": x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest,
        "issuer_text": issuer.subject.rfc4514_string(),
        "this_update": this_update,
        "next_update": next_update,
        "number": number.crl_number if number else None,
        "count": len(rows),
        "scope": scope,
        "index": index,
    }


def _der_of(body: bytes, encoding: str | None) -> bytes:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise CrlError(f"not a CRL: expected bytes, got {type(body).__name__}")
    body = bytes(body)
    if encoding not in (None, *ENCODINGS):
        raise CrlError(f"unknown encoding {encoding!r} (der or pem)")
    looks_pem = _PEM_START.match(body) is not None
    if encoding == "der" and looks_pem:
        raise CrlError("not a DER CRL: the file is PEM (configure it as pem)")
    if encoding == "pem" and not looks_pem:
        raise CrlError("bad PEM: no -----BEGIN line (is the file DER?)")
    if not looks_pem:
        if not body:
            raise CrlError("not a CRL: empty")
        return body
    m = _PEM_RE.search(body)
    if not m:
        raise CrlError("bad PEM: no X509 CRL block")
    try:
        der = base64.b64decode(b"".join(m.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise CrlError("bad PEM: invalid base64") from None
    if not der:
        raise CrlError("bad PEM: empty X509 CRL block")
    return der


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of element) of the DER element at pos."""
    if pos + 2 > end:
        raise CrlError("not a CRL: truncated")
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first & 0x80:
        k = first & 0x7F
        if not 0 < k <= 4 or pos + k > end:
            raise CrlError("not a CRL: bad length")
        length = int.from_bytes(buf[pos : pos + k], "big")
        pos += k
    else:
        length = first
    if pos + length > end:
        raise CrlError("not a CRL: truncated")
    return tag, pos, pos + length


def _split(der: bytes) -> dict[str, tuple[int, int]]:
    """Spans of the parts we need straight from the DER (cryptography re-encodes them):
    the TBS (signed bytes), both signature AlgorithmIdentifiers, the issuer Name, the
    revokedCertificates contents and the signature value."""
    _, pos, end = _tlv(der, 0, len(der))
    spans: dict[str, tuple[int, int]] = {}
    _, tbs_in, tbs_end = _tlv(der, pos, end)
    spans["tbs"] = (pos, tbs_end)
    _, alg_in, alg_end = _tlv(der, tbs_end, end)
    spans["outer_alg"] = (tbs_end, alg_end)
    _, sig_in, sig_end = _tlv(der, alg_end, end)
    if sig_in >= sig_end or der[sig_in] != 0:  # else a padded copy of a good one would pass
        raise CrlError("bad signature: BIT STRING with unused bits")
    spans["signature"] = (sig_in + 1, sig_end)  # BIT STRING: skip the unused-bits octet
    p = tbs_in
    if der[p] == 0x02:  # version
        p = _tlv(der, p, tbs_end)[2]
    q = _tlv(der, p, tbs_end)[2]
    spans["inner_alg"] = (p, q)
    r = _tlv(der, q, tbs_end)[2]
    spans["issuer"] = (q, r)
    p = _tlv(der, r, tbs_end)[2]  # thisUpdate
    if p < tbs_end and der[p] in (0x17, 0x18):  # nextUpdate
        p = _tlv(der, p, tbs_end)[2]
    spans["revoked"] = (p, p)
    if p < tbs_end and der[p] == 0x30:
        _, inner, q = _tlv(der, p, tbs_end)
        spans["revoked"] = (inner, q)
    return spans


def _extension(crl: x509.CertificateRevocationList, kind):
    try:
        return crl.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_extensions(crl: x509.CertificateRevocationList) -> str:
    """Refuse what this cache cannot apply; the CRL's scope: "all", "user" or "ca"."""
    try:
        extensions = list(crl.extensions)
    except (ValueError, x509.DuplicateExtension, UnsupportedAlgorithm) as exc:
        raise CrlError(f"bad CRL extensions: {_one_line(exc)}") from None
    scope = "all"
    for ext in extensions:
        if ext.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            raise CrlError("delta CRL (DeltaCRLIndicator) not supported")
        if ext.oid == ExtensionOID.ISSUING_DISTRIBUTION_POINT:
            idp = ext.value
            if idp.indirect_crl:
                raise CrlError("indirect CRL (IssuingDistributionPoint indirectCRL) not supported")
            if idp.only_some_reasons:
                raise CrlError("partial CRL (IssuingDistributionPoint onlySomeReasons) refused")
            if idp.only_contains_attribute_certs:
                raise CrlError("attribute-certificate CRL (onlyContainsAttributeCerts) refused")
            scope = "user" if idp.only_contains_user_certs else scope
            scope = "ca" if idp.only_contains_ca_certs else scope
        elif ext.critical and ext.oid not in _KNOWN_CRL_EXTENSIONS:
            raise CrlError(f"unknown critical CRL extension {ext.oid.dotted_string}")
    return scope


def _find_issuer(crl, issuers: list[bytes], der: bytes, parts) -> x509.Certificate:
    try:
        name = crl.issuer
        shown = name.rfc4514_string()
    except ValueError as exc:
        raise CrlError(f"bad CRL issuer name: {_one_line(exc)}") from None
    aki = _extension(crl, x509.AuthorityKeyIdentifier)
    want_key_id = aki.key_identifier if aki else None
    candidates, key_mismatch = [], False
    for blob in issuers:
        try:
            cert = x509.load_der_x509_certificate(blob)
            if cert.subject != name:
                continue
            if want_key_id is not None and _key_id(cert) != want_key_id:
                key_mismatch = True
                continue
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue  # an unusable issuer certificate cannot have signed it
        candidates.append(cert)
    if not candidates:
        why = " (no certificate with its authority key identifier)" if key_mismatch else ""
        raise CrlError(f"unknown issuer {shown!r}{why}")
    for cert in candidates:  # several: a CA key rollover under one name
        if _signed_by(crl, cert, der, parts):
            usage = _key_usage(cert)
            if usage is not None and not usage.crl_sign:
                raise CrlError(f"issuer {shown!r} may not sign CRLs (keyUsage lacks cRLSign)")
            return cert
    raise CrlError(f"bad signature (issuer {shown!r})")


def _key_id(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _signed_by(crl, cert: x509.Certificate, der: bytes, parts) -> bool:
    """Verify over the TBS bytes as received (is_signature_valid re-encodes the whole TBS
    first: 0.6 s for a million entries instead of the 0.07 s of hashing it)."""
    if der[slice(*parts["outer_alg"])] != der[slice(*parts["inner_alg"])]:
        return False  # RFC 5280 5.1.1.2: both AlgorithmIdentifiers must be equal
    tbs, signature = der[slice(*parts["tbs"])], der[slice(*parts["signature"])]
    try:
        key = cert.public_key()
        params = crl.signature_algorithm_parameters
        hash_alg = crl.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey):
            if not isinstance(params, padding.PKCS1v15 | padding.PSS):
                return False
            key.verify(signature, tbs, params, hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(signature, tbs, params)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if params is not None or hash_alg is not None:
                return False
            key.verify(signature, tbs)
        elif isinstance(key, dsa.DSAPublicKey):
            if params is not None or hash_alg is None:
                return False
            key.verify(signature, tbs, hash_alg)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _check_times(crl, now: float) -> tuple[float, float | None]:
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if this_update.timestamp() > now + SKEW_S:
        raise CrlError(f"not yet valid: thisUpdate {_iso(this_update)} is in the future")
    if next_update is not None and next_update.timestamp() <= now:
        raise CrlError(f"stale: nextUpdate {_iso(next_update)} passed")
    return this_update.timestamp(), next_update.timestamp() if next_update else None


def _serial_rows(crl, der: bytes, revoked: tuple[int, int]):
    """The revoked serials as an (n, 20) uint8 array, little-endian, read straight from the
    DER that cryptography has already validated: a walk over the entries' headers in Python,
    the rest in numpy (r.serial_number for a million entries costs 0.6 s, this about 0.3 s)."""
    import numpy as np  # lazily: only the worker process needs it

    starts: list[int] = []
    add = starts.append
    p, end = revoked
    while p < end:
        add(p)
        first = der[p + 1]
        if first < 0x80:
            p += 2 + first
        else:
            k = first & 0x7F
            p += 2 + k + int.from_bytes(der[p + 2 : p + 2 + k], "big")
    if p != end or len(starts) != len(crl):
        raise CrlError("bad revoked list: entries do not add up")
    if not starts:
        return np.zeros((0, crl_index.ENTRY_BYTES), dtype=np.uint8)
    buf = np.frombuffer(der, dtype=np.uint8)
    at = np.array(starts, dtype=np.int64)
    first = buf[at + 1].astype(np.int64)
    at += 2 + np.where(first < 0x80, 0, first & 0x7F)  # the entry's serial INTEGER
    length = buf[at + 1].astype(np.int64)
    if np.any(buf[at] != 0x02):
        raise CrlError("bad revoked list: entry without a serial number")
    # 21 octets at most: a sign octet 0 then 160 bits (over 127 octets: a long-form length)
    if np.any(length > crl_index.ENTRY_BYTES + 1):
        raise CrlError("revoked serial out of range: over 20 octets")
    head = buf[at + 2]
    if np.any(head & 0x80):
        raise CrlError("revoked serial out of range: negative")
    if np.any((length == crl_index.ENTRY_BYTES + 1) & (head != 0)):
        raise CrlError("revoked serial out of range: over 20 octets")
    stop = at + 2 + length
    # The 20 octets that end where each serial ends, octets before the serial zeroed.
    window = np.lib.stride_tricks.sliding_window_view(buf, crl_index.ENTRY_BYTES)
    rows = window[stop - crl_index.ENTRY_BYTES]
    rows[np.arange(crl_index.ENTRY_BYTES) < (crl_index.ENTRY_BYTES - length)[:, None]] = 0
    return np.ascontiguousarray(rows[:, ::-1])


def _check_entry_extensions(der: bytes, revoked: tuple[int, int]) -> None:
    """Refuse critical entry extensions (certificateIssuer: an indirect CRL). cryptography
    accepts only DER, where a critical flag is always 01 01 ff before the extension's OCTET
    STRING: without those 4 bytes among the entries no entry has one and the million entries
    need not be looked at. With them (or those bytes inside some value), walk the entries'
    extensions: OIDs and flags only, extension values are not ours to judge."""
    if der.find(_CRITICAL, *revoked) < 0:
        return
    p, end = revoked
    while p < end:
        _, q, entry_end = _tlv(der, p, end)
        _, serial_in, q = _tlv(der, q, entry_end)
        q = _tlv(der, q, entry_end)[2]  # revocationDate
        if q < entry_end:
            _, e, exts_end = _tlv(der, q, entry_end)
            while e < exts_end:
                _, x, ext_end = _tlv(der, e, exts_end)
                _, oid_in, oid_end = _tlv(der, x, ext_end)
                if der[oid_end : oid_end + 3] == b"\x01\x01\xff":
                    dotted = _dotted(der[oid_in:oid_end])
                    what = _ENTRY_EXTENSION_NAMES.get(dotted, dotted)
                    if dotted == CRLEntryExtensionOID.CERTIFICATE_ISSUER.dotted_string:
                        what += " (indirect CRL)"
                    serial = int.from_bytes(der[serial_in:q], "big", signed=True)
                    raise CrlError(
                        f"critical entry extension {what} on revoked serial {serial:#x} "
                        "not supported"
                    )
                e = ext_end
        p = entry_end


def _dotted(raw: bytes) -> str:
    arcs, n = [], 0
    for byte in raw:
        n = n << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(n)
            n = 0
    if not arcs:
        return "?"
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: object, width: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= width else s[:width] + "..."


# ---------------------------------------------------------------- cache (event loop)


@dataclass(eq=False)
class Entry:
    """One CRL source. `version` grows by one per new verified CRL (what cards hold)."""

    name: str | None  # None: learned from a certificate's CRL distribution point
    url: str
    encoding: str | None
    issuers: list[bytes] = field(repr=False)
    refresh_s: float
    version: int = 0
    meta: dict[str, Any] | None = None  # verify_and_index() minus "index"
    index: bytes | None = field(default=None, repr=False)
    last_fetch: float | None = None  # wall-clock time of the last attempt
    last_result: str | None = None  # "ok" or the error line; None: never fetched
    next_refresh: float = 0.0
    digest: bytes | None = field(default=None, repr=False)  # SHA-256 of the body indexed
    _inflight: asyncio.Future | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.name if self.name is not None else self.url

    def error(self, now: float) -> str | None:
        """None when the entry's CRL may be used at `now`; else why not (fail closed)."""
        if self.index is None or self.meta is None:
            return self.last_result if self.last_result not in (None, "ok") else "no CRL yet"
        nxt = self.meta.get("next_update")
        if nxt is not None and nxt <= now:
            when = _iso(dt.datetime.fromtimestamp(nxt, dt.UTC))
            last = "" if self.last_result == "ok" else f" (last fetch: {self.last_result})"
            return f"stale: nextUpdate {when} passed{last}"
        return None


class CrlCache:
    def __init__(
        self,
        fetch: Callable[..., Awaitable[bytes]],
        run_worker: Callable[..., Awaitable[Any]],
        now: Callable[[], float],
        on_update: Callable[[Entry], None],
        *,
        backoff_s: float = 30.0,
        default_refresh_s: float = 3600.0,
        fetch_timeout_s: float = 30.0,
        limit: int | None = None,
    ) -> None:
        from supervisor.pki.urls import CRL_LIMIT, FetchError  # here: workers never load urls

        self._fetch, self._run_worker = fetch, run_worker
        self._now, self._on_update = now, on_update
        self.backoff_s, self.default_refresh_s = backoff_s, default_refresh_s
        self.fetch_timeout_s = fetch_timeout_s
        self.limit = CRL_LIMIT if limit is None else limit
        self._expected = (FetchError, CrlError)
        self._entries: dict[str, Entry] = {}  # by name (configured) or URL (learned)
        self._versions: dict[str, int] = {}  # last version per key, kept across remove()
        self._tasks: set[asyncio.Task] = set()

    # -- configuration

    def configure(
        self,
        name: str,
        url: str,
        encoding: str | None,
        issuers: list[bytes],
        *,
        refresh_s: float | None = None,
    ) -> asyncio.Task | None:
        """`ca-crl name NAME {der|pem} url URL`: (re)configure and fetch at once. Returns the
        fetch task (None outside an event loop: then the next refresh_due() fetches it)."""
        if encoding not in (None, *ENCODINGS):
            raise ValueError(f"encoding must be der or pem, not {encoding!r}")
        old = self._entries.get(name)
        entry = Entry(name, url, encoding, list(issuers), refresh_s or self.default_refresh_s)
        if old is not None:
            entry.version = old.version  # versions only grow, so cards never go back
            if (old.url, old.encoding, old.issuers) == (url, encoding, entry.issuers):
                old.refresh_s = entry.refresh_s  # a new period counts from the last fetch
                if old.last_result == "ok" and old.last_fetch is not None:
                    old.next_refresh = min(old.next_refresh, old.last_fetch + old.refresh_s)
                return None
        learned = self._entries.get(url)
        if learned is not None and learned.name is None:  # configured now: one entry per URL
            del self._entries[url]
        entry.next_refresh = self._now()
        self._entries[name] = entry
        return self._spawn(entry)

    def fetch_now(self, key: str) -> asyncio.Task | None:
        """Fetch an entry again at once (the CLI line entered again); None if unknown or a
        fetch is already in flight."""
        entry = self._entries.get(key)
        return self._spawn(entry) if entry is not None else None

    def remove(self, name: str) -> Entry | None:
        """Forget a configured CRL; a fetch in flight for it is dropped when it ends."""
        return self._entries.pop(name, None)

    def entries(self) -> list[Entry]:
        """For `show ca-crl`: configured entries by name, then learned ones by URL."""
        return sorted(self._entries.values(), key=lambda e: (e.name is None, e.key))

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    # -- the standby MIO's copy (supervisor/ha.py)

    def export(self, entry: Entry, *, index: bool = True) -> dict:
        """What the standby keeps of an entry; ``index=False`` when only the fetch times
        moved (the standby keeps the index it has)."""
        out = {
            "name": entry.name, "url": entry.url, "encoding": entry.encoding,
            "issuers": list(entry.issuers), "refresh_s": entry.refresh_s,
            "version": entry.version, "meta": portable(entry.meta), "digest": entry.digest,
            "last_fetch": entry.last_fetch, "last_result": entry.last_result,
            "next_refresh": entry.next_refresh,
        }  # fmt: skip
        if index:
            out["index"] = entry.index
        return out

    def restore(self, exported: list[dict]) -> list[Entry]:
        """Take over the entries the old active MIO replicated, with their versions, so the
        cards keep what they hold and nothing is fetched before its time."""
        restored = []
        for d in exported:
            meta = d.get("meta")
            if meta is not None and meta.get("number") is not None:
                meta = {**meta, "number": int(meta["number"])}
            entry = Entry(
                d.get("name"), str(d["url"]), d.get("encoding"),
                [bytes(i) for i in d.get("issuers") or []], float(d["refresh_s"]),
                version=int(d.get("version", 0)), meta=meta, index=d.get("index"),
                last_fetch=d.get("last_fetch"), last_result=d.get("last_result"),
                next_refresh=float(d.get("next_refresh") or 0.0), digest=d.get("digest"),
            )  # fmt: skip
            self._entries[entry.key] = entry
            self._versions[entry.key] = max(entry.version, self._versions.get(entry.key, 0))
            restored.append(entry)
        return restored

    # -- CDP-learned CRLs

    def lookup_url(self, url: str) -> Entry | None:
        for entry in self.entries():
            if entry.url == url:
                return entry
        return None

    async def need(self, url: str, issuers: list[bytes]) -> Entry:
        """The entry for a CRL distribution point URL, fetched now if it has no usable CRL.
        Concurrent calls share one fetch; a URL that failed within backoff_s is not fetched
        again (the cached failure comes back at once). Check entry.error(now) on return."""
        entry = self.lookup_url(url)
        if entry is None:
            entry = Entry(None, url, None, list(issuers), self.default_refresh_s)
            self._entries[url] = entry
        elif entry.name is None:
            new = [i for i in issuers if i not in entry.issuers]
            if new:  # another CA's certificate names the same URL
                entry.issuers += new
                if entry.index is None:
                    entry.next_refresh = min(entry.next_refresh, self._now())
        if entry._inflight is None:
            if entry.error(self._now()) is None:
                return entry
            if entry.last_fetch is not None and entry.next_refresh > self._now():
                return entry  # failed recently: back off
            self._spawn(entry)
        await asyncio.shield(entry._inflight)
        return entry

    # -- refresh

    def due(self, now: float) -> list[Entry]:
        """Entries whose refresh time has come and that are not being fetched."""
        return [e for e in self.entries() if e._inflight is None and e.next_refresh <= now]

    def next_wakeup(self) -> float | None:
        """The earliest next_refresh (wall clock) of the entries not being fetched."""
        times = [e.next_refresh for e in self._entries.values() if e._inflight is None]
        return min(times, default=None)

    async def refresh_due(self) -> list[Entry]:
        """Fetch every due entry (concurrently); returns them when all have finished."""
        entries = self.due(self._now())
        for entry in entries:
            self._spawn(entry)
        await asyncio.gather(*(asyncio.shield(e._inflight) for e in entries if e._inflight))
        return entries

    async def run(self, *, poll_s: float = 5.0) -> None:
        """Refresh forever (a runner task). Sleeps until the next due entry, at most poll_s
        at a time, so a wall-clock warp or a newly configured entry is seen soon."""
        while True:
            await self.refresh_due()
            wake = self.next_wakeup()
            delay = poll_s if wake is None else min(poll_s, max(wake - self._now(), 0.0))
            await asyncio.sleep(max(delay, 0.05))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one fetch

    def _spawn(self, entry: Entry) -> asyncio.Task | None:
        if entry._inflight is not None:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        task = loop.create_task(self._update(entry))
        entry._inflight = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _update(self, entry: Entry) -> None:
        try:
            result = await self._attempt(entry)
        finally:
            entry._inflight = None
        now = self._now()
        entry.last_fetch, entry.last_result = now, result
        if result == "ok":
            nxt = entry.meta.get("next_update") if entry.meta else None
            entry.next_refresh = now + entry.refresh_s
            if nxt is not None and nxt > now:
                entry.next_refresh = min(entry.next_refresh, nxt)
            elif nxt is not None:  # the server still has a CRL past its nextUpdate
                entry.next_refresh = now + self.backoff_s
        else:
            entry.next_refresh = now + self.backoff_s
            log.warning("CRL %s: %s", entry.key, result)

    async def _attempt(self, entry: Entry) -> str:
        """Fetch, verify and install; "ok" or the error line. The previous CRL stays on error."""
        try:
            body = await self._fetch(entry.url, limit=self.limit, timeout=self.fetch_timeout_s)
            digest = hashlib.sha256(body).digest()
            if digest == entry.digest:
                if entry.meta and (entry.meta["next_update"] or float("inf")) <= self._now():
                    when = _iso(dt.datetime.fromtimestamp(entry.meta["next_update"], dt.UTC))
                    return f"stale: nextUpdate {when} passed (no newer CRL published)"
                return "ok"  # unchanged: no worker, no new version
            meta = await self._run_worker(
                verify_and_index, body, entry.encoding, list(entry.issuers), self._now()
            )
        except self._expected as exc:
            return _one_line(exc)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a worker crash (BrokenProcessPool ...) or a bug
            log.exception("CRL %s: unexpected error", entry.key)
            return _one_line(f"internal error: {type(exc).__name__}: {exc}")
        if self._entries.get(entry.key) is not entry:
            return "removed"
        older = _older(meta, entry.meta)
        if older:
            return older
        index = meta.pop("index")
        entry.meta, entry.index, entry.digest = meta, index, digest
        entry.version = max(entry.version, self._versions.get(entry.key, 0)) + 1
        self._versions[entry.key] = entry.version
        log.info(
            "CRL %s: version %d, %d revoked, number %s",
            entry.key,
            entry.version,
            meta["count"],
            meta["number"],
        )
        try:
            self._on_update(entry)
        except Exception:
            log.exception("CRL %s: on_update failed", entry.key)
        return "ok"


INT64_MAX = 2**63 - 1


def portable(meta: dict | None) -> dict | None:
    """``meta`` fit for msgpack: a CRL number may be up to 20 octets (RFC 5280 5.2.3), too
    big for msgpack's integers, so a big one travels as its decimal text."""
    if meta is None or meta.get("number") is None or meta["number"] <= INT64_MAX:
        return meta
    return {**meta, "number": str(meta["number"])}


def _older(new: dict, old: dict | None) -> str | None:
    """Why `new` must not replace `old` (a replayed older CRL), or None."""
    if old is None or new["issuer"] != old["issuer"]:
        return None
    if new["number"] is not None and old["number"] is not None:
        if new["number"] < old["number"]:
            return f"older CRL refused: number {new['number']} < cached {old['number']}"
        return None
    if new["this_update"] < old["this_update"]:
        return "older CRL refused: thisUpdate before the cached CRL's"
    return None
