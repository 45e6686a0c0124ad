"""Injectable randomness (DESIGN.md principle 7): engines take ``rand(n) -> bytes``; the
processes pass SystemRandom, tests their own (seeded) callable."""

from __future__ import annotations

import os


class SystemRandom:
    """The OS's CSPRNG. ``csprng`` says so to an engine: a key pair may then come from
    OpenSSL's own generator, which draws from the same kind of source for half the CPU of a
    key derived from our bytes (cards/ike/dh.py)."""

    csprng = True

    def __call__(self, n: int) -> bytes:
        return os.urandom(n)
