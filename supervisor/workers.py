"""Slow work off the event loop (DESIGN.md principle 9).

Key generation, private-key validation and big parses run in a process pool: a
thread would still hold the GIL and stall heartbeats and IKE. The pool starts on
first use (most runs never need it) with forkserver, because forking a process
that already runs ZeroMQ's I/O threads is unsafe.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor


class Workers:
    def __init__(self, max_workers: int = 1) -> None:
        self.max_workers = max_workers
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn, *args):
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(self.max_workers, mp_context=ctx)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
