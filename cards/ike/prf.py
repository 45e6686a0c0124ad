"""IKEv2 pseudo-random functions (RFC 7296 2.13, RFC 4868 HMAC-SHA-2 PRFs)."""

from __future__ import annotations

import hashlib
import hmac

from .const import Prf

_PRF_HASH = {Prf.HMAC_SHA2_256: "sha256", Prf.HMAC_SHA2_384: "sha384", Prf.HMAC_SHA2_512: "sha512"}


_PRF_SIZE = {alg: hashlib.new(name).digest_size for alg, name in _PRF_HASH.items()}


def prf(alg: Prf, key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, _PRF_HASH[alg])  # OpenSSL's one-shot HMAC


def prf_size(alg: Prf) -> int:
    return _PRF_SIZE[alg]


def prf_plus(alg: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n); the counter stops at 255."""
    if length > 255 * prf_size(alg):
        raise ValueError(f"prf+ cannot produce {length} bytes with {Prf(alg).name}")
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = prf(alg, key, t + seed + bytes([n]))
        out, n = out + t, n + 1
    return out[:length]
