"""Slow work in the pool leaves the event loop free (heartbeats keep their rhythm)."""

import asyncio
import time

from supervisor.workers import Workers


def burn(seconds: float) -> int:
    end, n = time.process_time() + seconds, 0
    while time.process_time() < end:
        n += 1
    return n


def test_cpu_bound_work_does_not_stall_the_loop():
    async def scenario():
        workers = Workers()
        gaps, last = [], time.monotonic()

        async def ticker():
            nonlocal last
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        await workers.run(burn, 0.0)  # start the pool outside the measured window
        last = time.monotonic()  # the first gap must not include the pool's start
        task = asyncio.create_task(ticker())
        result = await asyncio.wait_for(workers.run(burn, 0.6), 30)
        task.cancel()
        workers.close()
        return result, gaps

    result, gaps = asyncio.run(scenario())
    assert result > 0
    assert len(gaps) >= 20  # the loop ticked all along
    # Run inline, the 0.6 s burn would show as one 0.6 s gap.
    assert max(gaps) < 0.3


def test_pool_workers_die_with_their_parent(tmp_path):
    """A supervisor killed with -9 must not leave pool processes behind."""
    import os
    import signal
    import subprocess
    import sys

    from chassis import procs

    script = tmp_path / "parent.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from supervisor.workers import Workers\n"
        "async def main():\n"
        "    w = Workers()\n"
        "    pid = await w.run(os.getpid)\n"
        "    print(pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        started = procs.start_time(worker)
        assert procs.alive(worker, started)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while procs.alive(worker, started) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not procs.alive(worker, started)
    finally:
        parent.kill()
        parent.stdout.close()
