"""The management card's PKI: certificate store, fetching, key checks and generation.

The CLI commands (supervisor/pki/commands.py) call this; it does the I/O. Slow work
(private-key validation, RSA key generation) goes to the process pool. Heavy modules
(cryptography, the URL clients) load on first use so that a supervisor starts fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from supervisor.cli import CommandFailure
from supervisor.pki.store import Store
from supervisor.workers import Workers

DEFAULT_LOCATION = "/flash/cert-store"
DEVICES = {"/flash": "flash", "/usb1": "usb1", "/hd-raid": "hd-raid"}
_PEM_BODY = re.compile(r"(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)", re.S)


def normalize_pem(text: str) -> bytes:
    """PEM typed on one CLI line: `\\n` escapes or plain spaces stand for line breaks."""
    text = text.replace("\\n", "\n")

    def rebuild(m: re.Match) -> str:
        head, body, tail = m.groups()
        lines = body.strip().split("\n")
        headers = [ln.strip() for ln in lines if ":" in ln]  # e.g. Proc-Type: 4,ENCRYPTED
        b64 = "".join("".join(ln.split()) for ln in lines if ":" not in ln)
        wrapped = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        return "\n".join([head, *headers, *([""] if headers else []), *wrapped, tail])

    return (_PEM_BODY.sub(rebuild, text).strip() + "\n").encode()


@dataclass
class Prepared:
    """A certificate (and key) fetched, parsed and checked, ready to be stored."""

    files: dict[str, bytes]
    info: dict
    warnings: list[str] = field(default_factory=list)


class PkiService:
    def __init__(self, root: Path, keys_dir: Path, workers: Workers, now: Callable[[], datetime]):
        self.roots = {dev: Path(root) / folder for dev, folder in DEVICES.items()}
        for path in self.roots.values():
            path.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.roots, DEFAULT_LOCATION)
        self.keys_dir, self.workers, self.now = Path(keys_dir), workers, now
        self.known_hosts = Path(root) / "known_hosts"
        self._fetcher = self._cipher = None
        self._pushed: tuple[dict, dict] | None = None  # (index snapshot, credentials)

    # --- helpers for commands ------------------------------------------------

    @property
    def cipher(self):
        if self._cipher is None:
            from supervisor.pki.cipher import ConfigCipher

            self._cipher = ConfigCipher.load_or_create(self.keys_dir / "config.key")
        return self._cipher

    async def fetch(self, url: str, limit: int | None = None) -> bytes:
        from supervisor.pki import urls

        if self._fetcher is None:
            self.known_hosts.touch(mode=0o600, exist_ok=True)
            self._fetcher = urls.Fetcher(self.roots, self.known_hosts)
        try:
            return await self._fetcher.fetch(url, limit=limit or urls.CERT_LIMIT)
        except urls.FetchError as exc:
            raise CommandFailure(str(exc)) from None

    async def prepare_certificate(
        self,
        name: str,
        kind: str,
        *,
        der_url: str | None = None,
        pem_data: str | None = None,
        pem_url: str | None = None,
        key_data: str | None = None,
        key_encrypted: bool = False,
        key_url: str | None = None,
    ) -> Prepared:
        from cryptography.hazmat.primitives.serialization import Encoding

        from supervisor.pki import credentials as cred

        try:
            if pem_data is not None:
                cred.check_pem_size(pem_data, with_key=False)
                cert = cred.load_certificate(normalize_pem(pem_data), "pem")
            elif pem_url is not None:
                cert = cred.load_certificate(await self.fetch(pem_url), "pem")
            else:
                cert = cred.load_certificate(await self.fetch(der_url), "der")
            files = {"cert.pem": cert.public_bytes(Encoding.PEM)}
            if kind == "certificate":
                if key_data is not None:
                    cred.check_pem_size(key_data, with_key=True)
                    key_pem = (
                        self.cipher.decrypt(key_data) if key_encrypted else normalize_pem(key_data)
                    )
                else:
                    key_pem = await self.fetch(key_url)
                key = cred.load_private_key(key_pem)
                cred.check_pair(cert, key, name)
                await self.workers.run(cred.validate_key, key_pem)  # once, here; cards trust it
                files["key.pem"] = _pkcs8(key)
            info = cred.describe(cert, self.now(), name)
            warning = cred.validity_warning(cert, self.now(), name)
        except cred.CredentialError as exc:
            raise CommandFailure(str(exc)) from None
        return Prepared(files, info, [warning] if warning else [])

    # --- what the cards get -----------------------------------------------------

    def pushed_credentials(self) -> dict:
        """Every certificate (with its key) and CA certificate, keyed `kind/name` (ASR 5500)."""
        entries = self.store.entries()
        index = {k: v["generation"] for k, v in entries.items()}
        if self._pushed is not None and self._pushed[0] == index:
            return self._pushed[1]
        pushed = {}
        for (kind, name), entry in entries.items():
            if kind == "csr":
                continue
            pushed[f"{kind}/{name}"] = self.bundle_entry(kind, name, entry)
        self._pushed = (index, pushed)
        return pushed

    def bundle_entry(self, kind: str, name: str, entry: dict | None = None) -> dict:
        entry = entry or self.store.entries(kind)[(kind, name)]
        value = {
            "kind": kind,
            "name": name,
            "generation": entry["generation"],
            "sha256": entry["sha256"]["cert.pem"],
            "cert_pem": self.store.read(kind, name, "cert.pem").decode(),
        }
        if "key.pem" in entry["files"]:
            value["key_pem"] = self.store.read(kind, name, "key.pem").decode()
        if "chain.pem" in entry["files"]:  # intermediates the gateway sends in IKE_AUTH
            value["chain_pem"] = self.store.read(kind, name, "chain.pem").decode()
        if "hash-url.txt" in entry["files"]:  # `cert-hash-url URL`
            value["hash_url"] = self.store.read(kind, name, "hash-url.txt").decode()
        return value


def _pkcs8(key) -> bytes:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
