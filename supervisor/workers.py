"""Slow work off the event loop (DESIGN.md principle 9).

Key generation, private-key validation and big parses run in a process pool: a
thread would still hold the GIL and stall heartbeats and IKE. The pool starts on
first use (most runs never need it) with spawn, because forking a process that
already runs ZeroMQ's I/O threads is unsafe. Every worker dies with its parent
(PR_SET_PDEATHSIG), so a killed supervisor leaves no pool behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor


class Workers:
    def __init__(self, max_workers: int = 1) -> None:
        self.max_workers = max_workers
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn, *args):
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.max_workers,
                mp_context=ctx,
                initializer=_die_with_parent,
                initargs=(os.getpid(),),
            )
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _die_with_parent(parent: int) -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
