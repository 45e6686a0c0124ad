"""The CRLs a packet card holds: verified and indexed by the management card, sent over the
configuration stream (``crl:`` keys) or in answer to a CDP fetch. Light on imports: the card
runner holds a CrlStore from its start, before the IKE modules load.
"""

from __future__ import annotations

from dataclasses import dataclass

from chassis.ipc.crl_index import CrlIndex


@dataclass(frozen=True)
class CrlEntry:
    """One CRL as the card holds it: verified by the management card, indexed."""

    name: str | None  # the configured ca-crl name; None when learned from a CDP
    url: str
    version: int
    issuer: bytes  # DER of the issuer's Name
    issuer_key_sha1: bytes  # SHA-1 of the issuer's public key (the OCSP issuerKeyHash)
    this_update: float
    next_update: float | None
    count: int
    index: CrlIndex | None  # None: no good CRL (see error)
    error: str | None = None

    @classmethod
    def from_wire(cls, d: dict) -> CrlEntry:
        meta = d.get("meta") or {}
        blob = d.get("index")
        return cls(
            name=d.get("name"),
            url=str(d["url"]),
            version=int(d.get("version", 0)),
            issuer=bytes(meta.get("issuer", b"")),
            issuer_key_sha1=bytes(meta.get("issuer_key_sha1", b"")),
            this_update=float(meta.get("this_update", 0.0)),
            next_update=None if meta.get("next_update") is None else float(meta["next_update"]),
            count=int(meta.get("count", 0)),
            index=CrlIndex(blob) if blob is not None else None,
            error=d.get("error") or (None if blob is not None else "no CRL fetched yet"),
        )

    def fresh(self, now: float) -> bool:
        return self.index is not None and (self.next_update is None or now < self.next_update)


class CrlStore:
    """The card's CRLs: configured ones by name, CDP-learned ones by URL."""

    def __init__(self) -> None:
        self.by_name: dict[str, CrlEntry] = {}
        self.by_url: dict[str, CrlEntry] = {}
        self.generation = 0  # +1 per change: what was derived from the store is outdated

    def put(self, entry: CrlEntry, force: bool = False) -> None:
        """Keep ``entry`` unless a newer version is held; ``force``: the configuration stream
        says so (its versions start again at a management-card takeover)."""
        if entry.name is not None:
            old = self.by_name.get(entry.name)
            if old is None or force or entry.version >= old.version:
                self.by_name[entry.name] = entry
                self.generation += 1
        else:
            old = self.by_url.get(entry.url)
            if old is None or force or entry.version >= old.version:
                self.by_url[entry.url] = entry
                self.generation += 1

    def remove_name(self, name: str) -> None:
        if self.by_name.pop(name, None) is not None:
            self.generation += 1

    def versions(self) -> dict[str, int]:
        return {
            **{f"name:{n}": e.version for n, e in self.by_name.items()},
            **{f"url:{u}": e.version for u, e in self.by_url.items()},
        }
