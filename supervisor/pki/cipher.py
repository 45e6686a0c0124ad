"""The per-chassis configuration key behind `private-key pem encrypted data TOKEN`.

`show configuration` prints a private key only as a token encrypted under a random 256-bit key
kept in a 0600 file on the chassis, so a saved configuration replays on this chassis and is
useless anywhere else. AES-256-GCM: authenticated, so a damaged or foreign token is refused
instead of decrypting to garbage.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from supervisor.pki.credentials import CredentialError

KEY_BYTES = 32
NONCE_BYTES = 12
PREFIX = "v1-"  # format version; the rest is unpadded URL-safe base64, so one CLI word
AAD = b"staros-segw configuration private key v1"  # ties tokens to this use of the key

_UNDECRYPTABLE = "encrypted key data cannot be decrypted with this chassis's configuration key"


class ConfigCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise CredentialError(f"configuration key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:  # never show the key
        return "ConfigCipher(<key hidden>)"

    @classmethod
    def load_or_create(cls, path: Path) -> ConfigCipher:
        """Read the key file, creating it on first use.

        Created as a complete 0600 temp file that is then hard-linked into place: the link
        fails if the file exists (O_EXCL semantics), so two supervisors racing on first boot
        end up sharing the winner's key, and nobody ever sees a half-written key file.
        """
        path = Path(path)
        try:
            return cls(_read_key(path))
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # lost the race: use the existing key
        finally:
            tmp.unlink(missing_ok=True)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return cls(_read_key(path))

    def encrypt(self, plaintext: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + self._aead.encrypt(nonce, plaintext, AAD)
        return PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode()

    def decrypt(self, token: str) -> bytes:
        try:
            if not token.startswith(PREFIX) or "=" in token:  # we never pad
                raise ValueError
            body = token[len(PREFIX) :]
            blob = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], AAD)
        except (ValueError, TypeError, binascii.Error, InvalidTag):
            raise CredentialError(_UNDECRYPTABLE) from None


def _read_key(path: Path) -> bytes:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_mode & 0o077:
            os.fchmod(f.fileno(), 0o600)  # tighten a key file someone loosened
        key = f.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise CredentialError(f"configuration key file {path} is corrupt")
    return key
