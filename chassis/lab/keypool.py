"""RSA keys for the eNodeB fleet, cached in the run directory (RUN/lab/fleet/rsa-2048/).

An RSA-2048 key takes tens of milliseconds to generate, thousands of them minutes: each
eNodeB's key is kept (PEM, PKCS#8, 0600, written atomically) and a restarted fleet loads it
instead. Key number N always belongs to eNodeB N. Missing or unreadable keys are generated
again, in a process pool when one is given (DESIGN principle 9: never on an event loop).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chassis.ipc.rundir import atomic_write, fsync_dir

log = logging.getLogger("keypool")


def generate_rsa_pem(bits: int) -> bytes:
    """A new RSA key as unencrypted PKCS#8 PEM (top level: runs in a worker process)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KeyPool:
    def __init__(
        self,
        directory: Path | str,
        bits: int = 2048,
        generate: Callable[[int], bytes] | None = None,
    ) -> None:
        self.dir, self.bits = Path(directory), bits
        self.generate = generate or generate_rsa_pem
        self.loaded = self.generated = 0  # this pool's counts, for the fleet's status
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def path(self, n: int) -> Path:
        return self.dir / f"key-{n:05d}.pem"

    def load(self, n: int):
        """Key number ``n`` from the cache, or None (absent, unreadable, not RSA-``bits``)."""
        try:
            # our own keys, written 0600 by us: RSA's expensive consistency check is skipped
            # (about 50 ms a key; a restart of thousands of eNodeBs would wait minutes)
            key = serialization.load_pem_private_key(
                self.path(n).read_bytes(), None, unsafe_skip_rsa_key_validation=True
            )
        except (OSError, ValueError, TypeError):
            return None
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != self.bits:
            return None
        return key

    def _store(self, n: int, pem: bytes):
        atomic_write(self.path(n), pem, 0o600, sync_dir=False)
        self.generated += 1
        return serialization.load_pem_private_key(pem, None, unsafe_skip_rsa_key_validation=True)

    def keys(self, count: int, executor: Executor | None = None) -> Iterator[tuple[int, object]]:
        """(n, key) for n = 1..count in order: cached ones at once, the others as they are
        generated (all submitted to ``executor`` up front, or generated here one by one)."""
        cached = {n: k for n in range(1, count + 1) if (k := self.load(n)) is not None}
        self.loaded += len(cached)
        missing = [n for n in range(1, count + 1) if n not in cached]
        if missing:
            log.info("%d of %d RSA-%d keys cached; generating %d", len(cached), count,
                     self.bits, len(missing))  # fmt: skip
        futures = (
            {n: executor.submit(self.generate, self.bits) for n in missing} if executor else {}
        )
        try:
            for n in range(1, count + 1):
                if n in cached:
                    yield n, cached.pop(n)
                    continue
                pem = futures.pop(n).result() if executor else self.generate(self.bits)
                yield n, self._store(n, pem)
        finally:
            for future in futures.values():
                future.cancel()
            if missing:
                fsync_dir(self.dir)
