"""A compact, sorted index of revoked certificate serial numbers (ground floor).

The supervisor builds it (in a worker process, from a verified CRL) and fans the bytes out;
a packet card looks serials up in those bytes without copying them or holding a Python set.

Layout, little-endian, every array 8-byte aligned (20 bytes per serial plus a small table):

    magic "CRLX" | version 1 (uint16) | bucket bits k (uint8) | shift s (uint8)
    count n (uint64) | base (uint64): the smallest low
    starts  (2**k + 1) x uint32, padded to 8 bytes: bucket b holds entries starts[b]..starts[b+1]
    lows    n x uint64   bits 0..63 of each serial, ascending
    mids    n x uint64   bits 64..127, same order
    tops    n x uint32   bits 128..159, same order

Entries are sorted by (low, mid, top) and unique, so serials that share their low 64 bits sit
next to each other. Bucket b holds the entries with (low - base) >> s == b, where s makes the
k bits span the lows actually present (random serials and sequential ones alike), so a lookup
is a binary search (bisect, in C, over a memoryview cast to uint64) within one bucket of about
16 entries instead of over all of them. Serials are 0 <= serial < 2**160 (RFC 5280:
at most 20 octets).
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable

MAGIC = b"CRLX"
VERSION = 1
HEADER = struct.Struct("<4sHBBQQ")  # magic, version, bucket bits, shift, count, base
ENTRY_BYTES = 20  # a serial: 8 (low) + 8 (mid) + 4 (top)
MAX_SERIAL_BITS = 160
MAX_BUCKET_BITS = 24
_M64 = (1 << 64) - 1


def bucket_bits(n: int) -> int:
    """About 16 entries per bucket (a 1M index: 65,537 starts, 256 KiB)."""
    return max(0, min(MAX_BUCKET_BITS, n.bit_length() - 4))


def _starts_bytes(bits: int) -> int:
    return ((1 << bits) + 1) * 4 + 7 & ~7


def size(n: int) -> int:
    """Bytes of an index of n distinct serials."""
    return HEADER.size + _starts_bytes(bucket_bits(n)) + n * ENTRY_BYTES


def build(serials: Iterable[int]) -> bytes:
    """The index of serials; duplicates are dropped. serials: an iterable of ints, a 1-D
    numpy integer array, or an (n, 20) uint8 array of little-endian serials (what the CRL
    parser produces without making a million ints). ValueError for a serial that is
    negative or needs over 160 bits."""
    import numpy as np  # lazily: the supervisor's worker builds, cards only look up

    if isinstance(serials, np.ndarray) and serials.ndim == 2:
        if serials.dtype != np.uint8 or serials.shape[1] != ENTRY_BYTES:
            raise ValueError(f"serials: expected rows of {ENTRY_BYTES} uint8, got {serials.shape}")
        rows = serials
    elif isinstance(serials, np.ndarray):
        if serials.ndim != 1 or serials.dtype.kind not in "iu":
            raise ValueError(f"serials: expected integers, got {serials.dtype} {serials.shape}")
        if serials.dtype.kind == "i" and serials.size and int(serials.min()) < 0:
            raise ValueError("serial out of range: negative")
        rows = np.zeros((serials.size, ENTRY_BYTES), dtype=np.uint8)
        rows[:, :8] = serials.astype("<u8").view(np.uint8).reshape(-1, 8)
    else:
        try:
            raw = b"".join([s.to_bytes(ENTRY_BYTES, "little") for s in serials])
        except OverflowError:
            raise ValueError("serial out of range: negative or over 20 octets") from None
        except (AttributeError, TypeError):
            raise ValueError("serials must be integers") from None
        rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, ENTRY_BYTES)
    lows = np.ascontiguousarray(rows[:, :8]).view("<u8").ravel()
    mids = np.ascontiguousarray(rows[:, 8:16]).view("<u8").ravel()
    tops = np.ascontiguousarray(rows[:, 16:]).view("<u4").ravel()
    order = np.argsort(lows)
    lows, mids, tops = lows[order], mids[order], tops[order]
    if lows.size > 1 and bool(np.any(lows[1:] == lows[:-1])):  # rare: order the rest too
        order = np.lexsort((tops, mids, lows))
        lows, mids, tops = lows[order], mids[order], tops[order]
        same = (lows[1:] == lows[:-1]) & (mids[1:] == mids[:-1]) & (tops[1:] == tops[:-1])
        keep = np.concatenate(([True], ~same))
        lows, mids, tops = lows[keep], mids[keep], tops[keep]
    n = int(lows.size)
    if n >= 1 << 32:
        raise ValueError(f"{n} serials: an index holds fewer than 2**32")
    bits = bucket_bits(n)
    base = int(lows[0]) if n else 0
    shift = max(0, (int(lows[-1]) - base if n else 0).bit_length() - bits)
    starts = np.zeros(_starts_bytes(bits) // 4, dtype="<u4")
    if bits:  # then shift <= 63
        keys = (lows - np.uint64(base)) >> np.uint64(shift)
        wanted = np.arange((1 << bits) + 1, dtype=np.uint64)
        starts[: (1 << bits) + 1] = np.searchsorted(keys, wanted, side="left")
    else:
        starts[1] = n
    parts = [HEADER.pack(MAGIC, VERSION, bits, shift, n, base), starts.tobytes()]
    parts += [lows.astype("<u8").tobytes(), mids.astype("<u8").tobytes()]
    parts.append(tops.astype("<u4").tobytes())
    return b"".join(parts)


def _cast(view: memoryview, fmt: str):
    if sys.byteorder == "little":
        return view.cast(fmt)
    a = array(fmt, view)  # the format is little-endian; a big-endian host pays a copy
    a.byteswap()
    return a


class CrlIndex:
    """Membership of serials in an index blob, zero-copy (the blob is referenced, not copied).

    CrlIndex(blob) checks the header, sizes and bucket table (ValueError on a bad blob);
    check_order=True also checks that the serials are sorted, unique and in their buckets
    (O(n), for tests and untrusted input).
    """

    __slots__ = ("_blob", "_starts", "_lows", "_mids", "_tops", "_n", "_base", "_shift", "_nb")

    def __init__(self, blob: bytes | bytearray | memoryview, *, check_order: bool = False):
        view = memoryview(blob)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if len(view) < HEADER.size:
            raise ValueError(f"CRL index: {len(view)} bytes, shorter than its header")
        magic, version, bits, shift, n, base = HEADER.unpack_from(view)
        if magic != MAGIC:
            raise ValueError("CRL index: bad magic")
        if version != VERSION:
            raise ValueError(f"CRL index: unsupported version {version}")
        if bits != bucket_bits(n) or shift > 64:
            raise ValueError("CRL index: bad header")
        at = HEADER.size + _starts_bytes(bits)
        if len(view) != at + n * ENTRY_BYTES:
            raise ValueError(f"CRL index: {len(view)} bytes, {n} entries need {size(n)}")
        starts = _cast(view[HEADER.size : at], "I")[: (1 << bits) + 1]
        if starts[0] != 0 or starts[-1] != n or any(map(int.__gt__, starts, starts[1:])):
            raise ValueError("CRL index: bad bucket table")
        self._starts, self._n, self._base, self._shift, self._nb = starts, n, base, shift, 1 << bits
        self._lows = _cast(view[at : at + 8 * n], "Q")
        self._mids = _cast(view[at + 8 * n : at + 16 * n], "Q")
        self._tops = _cast(view[at + 16 * n :], "I")
        self._blob = blob
        if check_order:
            self._check_order()

    def _check_order(self) -> None:
        lows, mids, tops = self._lows, self._mids, self._tops
        for i in range(1, self._n):
            if (lows[i - 1], mids[i - 1], tops[i - 1]) >= (lows[i], mids[i], tops[i]):
                raise ValueError(f"CRL index: entries {i - 1} and {i} out of order")
        starts, base, shift = self._starts, self._base, self._shift
        for b in range(len(starts) - 1):
            first, end = starts[b], starts[b + 1]
            if first < end and not (
                0 <= lows[first] - base and (lows[first] - base) >> shift == b
                and (lows[end - 1] - base) >> shift == b
            ):  # fmt: skip
                raise ValueError(f"CRL index: bucket {b} holds foreign entries")

    def __len__(self) -> int:
        return self._n

    def __contains__(self, serial: object) -> bool:
        if not isinstance(serial, int) or serial < 0 or serial >> MAX_SERIAL_BITS:
            return False
        low = serial & _M64
        b = (low - self._base) >> self._shift
        if b < 0 or b >= self._nb:
            return False
        lows = self._lows
        i = bisect_left(lows, low, self._starts[b], self._starts[b + 1])
        n = self._n
        if i == n or lows[i] != low:
            return False
        mid, top = serial >> 64 & _M64, serial >> 128
        mids, tops = self._mids, self._tops
        while True:
            if mids[i] == mid and tops[i] == top:
                return True
            i += 1
            if i == n or lows[i] != low:
                return False

    def __repr__(self) -> str:
        return f"<CrlIndex {self._n} serials>"
