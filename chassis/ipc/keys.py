"""CURVE key pairs of the chassis's own processes, kept 0600 in the run directory.

keys/public/NAME.key holds public keys: the ZAP handler admits exactly these.
keys/private/NAME.key_secret holds the matching secrets (directory 0700).
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq
import zmq.auth


def ensure_keypair(keys_dir: Path, name: str) -> None:
    keys_dir = Path(keys_dir)
    public, private = keys_dir / "public", keys_dir / "private"
    for d, mode in ((keys_dir, 0o700), (public, 0o755), (private, 0o700)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
    if (private / f"{name}.key_secret").exists() and (public / f"{name}.key").exists():
        return
    old = os.umask(0o077)
    try:
        pub_file, sec_file = zmq.auth.create_certificates(str(private), name)
    finally:
        os.umask(old)
    os.chmod(sec_file, 0o600)
    os.replace(pub_file, public / f"{name}.key")
    os.chmod(public / f"{name}.key", 0o644)


def public_key(keys_dir: Path, name: str) -> bytes:
    key, _ = zmq.auth.load_certificate(str(Path(keys_dir) / "public" / f"{name}.key"))
    return key


def keypair(keys_dir: Path, name: str) -> tuple[bytes, bytes]:
    pub, sec = zmq.auth.load_certificate(str(Path(keys_dir) / "private" / f"{name}.key_secret"))
    if sec is None:
        raise FileNotFoundError(f"no secret key for {name}")
    return pub, sec


def allowed_dir(keys_dir: Path) -> str:
    return str(Path(keys_dir) / "public")


def generate_unlisted() -> tuple[bytes, bytes]:
    """A key pair the chassis never listed (tests play a rogue client with it)."""
    return zmq.curve_keypair()
