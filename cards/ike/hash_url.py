"""Hash and URL (RFC 7296 3.6): an IKE_AUTH whose certificates come as SHA-1 + URL waits,
parked, while the runner fetches them (FetchCertificate -> Endpoint.resolve); its copies are
dropped meanwhile. A mixin of IkeSa (cards/ike/sa.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import FetchCertificate, Out
from .message import Message
from .states import X
from .tasks.auth import hash_urls

if TYPE_CHECKING:
    from .sa import Outstanding

NO_FETCHES: frozenset[str] = frozenset()  # no fetch pending (shared, never changed)


class HashAndUrl:
    __slots__ = ()

    def _must_fetch(self, msg: Message, payloads, out: Outstanding | None = None) -> bool:
        """IKE_AUTH with certificates as Hash and URL: park it and have them fetched."""
        if msg.exchange != X.IKE_AUTH or not self.config.hash_and_url:
            return False
        wanted = [(url, digest) for url, digest in hash_urls(payloads)
                  if url not in (self.fetched or {})]  # fmt: skip
        if not wanted:
            return False
        self.fetched = self.fetched or {}
        self.parked = (msg, payloads, out)
        cfg = self.config
        for url, digest in wanted:
            self.fetched.setdefault(url, None)
            self.emit(FetchCertificate(self.my_spi, url, digest, cfg.fetch_max_bytes,
                                       cfg.fetch_timeout_s))  # fmt: skip
        self.pending_fetches = {url for url, _ in wanted}
        return True

    def resolve(self, url: str, data: bytes | None, now: float) -> list[Out]:
        """A fetch is done (``data`` None: it failed); the parked request goes on once all
        of its certificates are in. A body over the limit counts as failed."""
        return self._run(now, self._resolve, url, data)

    def _resolve(self, url: str, data: bytes | None) -> None:
        if self.parked is None or url not in self.pending_fetches:
            return
        if data is not None and len(data) > self.config.fetch_max_bytes:
            data = None
        self.fetched[url] = bytes(data) if data is not None else None
        self.pending_fetches.discard(url)
        if not self.pending_fetches:
            self.pending_fetches = NO_FETCHES
            self._resume()
