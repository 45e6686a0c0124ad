"""Memory for big messages (ground floor).

A process that receives or sends big messages (a 1M-entry CRL index is 20 MB) allocates a
fresh buffer for each and frees it once decoded or sent. With glibc's dynamic mmap threshold
those buffers come from the heap after the first one, and freed heap stays in the process's
RSS; a fixed threshold keeps them mmapped, so freed means returned to the system.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)


def return_big_buffers(threshold: int = 1 << 20) -> bool:
    """Call once at process start; False where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
