"""The run directory every process of one chassis shares, and its manifest.

    RUN/flash/ logs/ keys/ chassis.json pids.json
    /tmp/segw-HASH/   ipc sockets (sun_path holds only 107 bytes, run dirs can be deep)

chassis.json (written by the backplane before any process starts) tells every process
the chassis name, platform, timers, the topology and the endpoints to use.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes, mode: int = 0o644, *, prefix: str | None = None, sync_dir: bool = True
) -> None:
    """Temp file, fsync, rename: readers see the old file or the new one, never a mix.

    `sync_dir=False` leaves the directory's fsync to the caller (several files, one fsync)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.")  # 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


class RunDir:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        self.ipc = Path(tempfile.gettempdir()) / f"segw-{digest}"

    flash = property(lambda self: self.root / "flash")
    logs = property(lambda self: self.root / "logs")
    keys = property(lambda self: self.root / "keys")
    manifest_path = property(lambda self: self.root / "chassis.json")
    pids_path = property(lambda self: self.root / "pids.json")

    def create(self) -> None:
        for d in (self.root, self.flash, self.logs, self.ipc):
            d.mkdir(parents=True, exist_ok=True)
        self.keys.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.ipc, 0o700)

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.ipc / name}"

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def write_json(self, path: Path, data: dict) -> None:
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def pids(self) -> dict:
        try:
            return json.loads(self.pids_path.read_text())
        except FileNotFoundError:
            return {}
