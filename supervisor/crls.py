"""The management card's CRL cache, wired to the configuration, the cards and the CLI.

`ca-crl name` lines are fetched at once and refreshed (supervisor/pki/crl.py: CrlCache);
CRLs a card learned from a certificate's CDP are fetched when a card first asks
("crl-fetch"), then refreshed lazily (when a card asks again after their nextUpdate).
Every new verified CRL goes to every packet card on the configuration stream as a compact
index (`crl:` keys, chassis/ipc/crl_index.py), built in a worker process.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.runner import Supervisor

log = logging.getLogger("crl")
CDP_SCHEMES = ("http", "ldap", "ftp")  # taken from certificates (cards/pki/revocation.py too)


def stream_key(name: str | None, url: str) -> str:
    return f"crl:name:{name}" if name is not None else f"crl:url:{url}"


class CrlService:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self._cache = None
        self.set_at: dict[str, dict[int, int]] = {}  # stream key -> slot -> seq that carried it
        self.versions: dict[str, int] = {}

    @property
    def cache(self):
        if self._cache is None:
            from supervisor.pki import urls
            from supervisor.pki.crl import CrlCache

            pki = self.sup.certs.pki
            pki.known_hosts.touch(mode=0o600, exist_ok=True)
            fetcher = urls.Fetcher(pki.roots, pki.known_hosts)
            self._cache = CrlCache(
                fetcher.fetch,
                self.sup.workers.run,
                lambda: self.sup.wall.now(),
                self._on_update,
            )
        return self._cache

    def _issuers(self) -> list[bytes]:
        """DER of every configured CA certificate: the candidates to verify a CRL with."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        pki, out = self.sup.certs.pki, []
        for (kind, name), _entry in pki.store.entries("ca-certificate").items():
            pem = pki.store.read(kind, name, "cert.pem")
            out.append(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
        return out

    # --- configuration --------------------------------------------------------------
    def sync(self, tree: dict) -> None:
        """Make the cache follow the `ca-crl name` lines (called on every config change)."""
        wanted = tree.get("ca-crl") or {}
        have = {e.name: e for e in self.cache.entries() if e.name is not None}
        if not wanted and not have:
            return
        issuers = self._issuers() if wanted else []
        for name, conf in wanted.items():
            entry = have.get(name)
            refresh = int(conf.get("refresh-interval", 60)) * 60.0
            if entry is None or (entry.url, entry.encoding, entry.issuers, entry.refresh_s) != (
                conf["url"], conf["encoding"], issuers, refresh
            ):  # fmt: skip
                log.info("ca-crl %s: fetching %s", name, conf["url"])
                self.cache.configure(
                    name, conf["url"], conf["encoding"], issuers, refresh_s=refresh
                )
        for name in set(have) - set(wanted):
            self.cache.remove(name)
            self._send(stream_key(name, ""), None)

    def credentials_changed(self, tree: dict) -> None:
        """New CA certificates may verify a CRL that failed; a new certificate of ours may
        name a CDP: the cards check our certificate against it before sending it."""
        self.sync(tree)
        from cryptography import x509

        pki, issuers = self.sup.certs.pki, None
        for (kind, name), _entry in pki.store.entries("certificate").items():
            cert = x509.load_pem_x509_certificate(pki.store.read(kind, name, "cert.pem"))
            try:
                points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
            except x509.ExtensionNotFound:
                continue
            uris = [n.value for p in points.value for n in p.full_name or []
                    if isinstance(n, x509.UniformResourceIdentifier)]  # fmt: skip
            for url in uris:
                if url.split(":", 1)[0].lower() in CDP_SCHEMES:
                    issuers = issuers if issuers is not None else self._issuers()
                    self.sup._spawn(self.cache.need(url, issuers))

    def refetch(self, name: str) -> None:
        """`ca-crl name` entered again with the same values: fetch it now. A new or changed
        line is fetched by sync() when the configuration is published."""
        if self._cache is not None:
            self.cache.fetch_now(name)

    def restore(self, exported: list[dict]) -> None:
        """At a takeover: the CRLs the old active MIO held (supervisor/ha.py), sent on to the
        cards with their versions, before the configuration is published (so its `ca-crl`
        lines find them and nothing is fetched again before its time)."""
        for entry in self.cache.restore(exported):
            if entry.index is not None:
                self._on_update(entry)
        log.info("%d CRLs taken over from the old active MIO", len(exported))

    # --- fan-out --------------------------------------------------------------------
    def _on_update(self, entry) -> None:
        wire = self.wire(entry)
        self._send(stream_key(entry.name, entry.url), wire)

    def _send(self, key: str, wire: dict | None) -> None:
        fanout = self.sup.fanout
        for slot in self.sup.packet_slots:
            fanout.set_config(slot, key, wire)
        self.set_at[key] = {s: fanout.streams["config"][s].seq for s in self.sup.packet_slots}
        if wire is None:
            self.versions.pop(key, None)
        else:
            self.versions[key] = wire["version"]

    def wire(self, entry) -> dict:
        from supervisor.pki.crl import portable  # loaded with the cache: no cost here

        return {
            "name": entry.name,
            "url": entry.url,
            "version": entry.version,
            "meta": portable(entry.meta),
            "index": entry.index,
            "error": entry.error(self.sup.wall.now()),
        }

    # --- a card's CDP fetch -----------------------------------------------------------
    async def fetch_for_card(self, args: dict) -> dict:
        url, issuer = str(args["url"]), bytes(args["issuer"])
        entry = await self.cache.need(url, [issuer])
        return self.wire(entry)

    # --- refresh ----------------------------------------------------------------------
    async def refresh(self) -> None:
        if self._cache is not None:
            await self.cache.refresh_due()

    # --- show ca-crl ------------------------------------------------------------------
    def report(self, name: str | None) -> list[dict]:
        if self._cache is None:
            return []
        from supervisor.pki.crl import portable

        rows = []
        for e in self.cache.entries():
            if name is not None and e.name != name:
                continue
            key = stream_key(e.name, e.url)
            meta = portable(e.meta) or {}
            rows.append(
                {
                    "name": e.name,
                    "url": e.url,
                    "issuer": meta.get("issuer_text"),
                    "this_update": meta.get("this_update"),
                    "next_update": meta.get("next_update"),
                    "number": meta.get("number"),
                    "count": meta.get("count"),
                    "version": e.version,
                    "last_fetch": e.last_fetch,
                    "last_result": e.last_result,
                    "next_fetch": e.next_refresh,
                    "cards": self._held(key),
                }
            )
        return rows

    def _held(self, key: str) -> dict[int, str]:
        """Which version each packet card holds: the one sent, once the card acked it."""
        seqs, version = self.set_at.get(key, {}), self.versions.get(key)
        if version is None:
            return {}
        acked = self.sup.fanout.acked["config"]
        out = {}
        for slot, seq in seqs.items():
            if self.sup.cards.cards[slot].in_service:
                out[slot] = f"v{version}" if acked.get(slot, 0) >= seq else "pending"
        return out
