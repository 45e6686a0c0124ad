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
