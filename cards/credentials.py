"""The certificates, private keys and CA certificates a packet card holds.

ASR 5500 DPCs receive them pushed on their credential stream; ASR 9000 VSMs hold only
what `cmp fetch` brought. Keys were validated once, on the supervisor: a card parses
them lazily, when first needed, and skips cryptography's expensive RSA checks.
"""

from __future__ import annotations

from typing import Any


class NoCredentials(Exception):
    """A card lacks what certificate authentication needs; the message says what."""


class Credentials:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}  # the credential stream's entries (a view of the replica)
        self.fetched: dict[str, Any] = {}  # ASR 9000: what `cmp fetch` brought
        self._parsed: dict[tuple, Any] = {}

    def _entry(self, kind: str, name: str) -> dict | None:
        key = f"{kind}/{name}"
        return self.fetched.get(key) or self.pushed.get(key)

    def names(self, kind: str) -> list[str]:
        prefix = f"{kind}/"
        return sorted(
            {k[len(prefix) :] for k in (*self.pushed, *self.fetched) if k.startswith(prefix)}
        )

    def require(self, name: str) -> dict:
        entry = self._entry("certificate", name)
        if entry is None or not entry.get("key_pem"):
            raise NoCredentials(
                f"no certificate {name!r} with its private key on this card"
                " (ASR 9000: run `cmp fetch current-cert` for this VSM first)"
            )
        return entry

    def private_key(self, name: str):
        entry = self.require(name)
        cache = ("key", name, entry["generation"])
        if cache not in self._parsed:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            self._parsed[cache] = load_pem_private_key(
                entry["key_pem"].encode(), None, unsafe_skip_rsa_key_validation=True
            )
        return self._parsed[cache]

    def certificate(self, kind: str, name: str):
        entry = self._entry(kind, name)
        if entry is None:
            raise NoCredentials(f"no {kind} {name!r} on this card")
        cache = (kind, name, entry["generation"])
        if cache not in self._parsed:
            from cryptography import x509

            self._parsed[cache] = x509.load_pem_x509_certificate(entry["cert_pem"].encode())
        return self._parsed[cache]

    def summary(self) -> dict:
        """Names and generations only: what the supervisor shows (never key bytes)."""
        return {k: v["generation"] for k, v in {**self.pushed, **self.fetched}.items()}
