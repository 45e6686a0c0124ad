"""Injectable clocks (DESIGN.md principle 7).

Two clocks: a monotonic one for liveness and protocol timers, and a warpable wall
clock for certificate validity, expiry and scheduling. Engines take a clock; tests
pass a ManualClock. CLOCK_MONOTONIC is system-wide on Linux, so monotonic readings
from different processes of one host can be compared (heartbeat timestamps rely on it).
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class MonotonicClock:
    """Seconds from CLOCK_MONOTONIC: liveness, retransmission, DPD, lifetimes."""

    def now(self) -> float:
        return time.monotonic()


class WallClock:
    """Unix seconds, shifted by a warp offset (expiry drills move it forward)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def warp(self, seconds: float) -> None:
        self.offset += seconds

    def datetime(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.now(), _dt.UTC)


class ManualClock:
    """A clock that moves only when told; for tests of either kind of clock."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds

    def warp(self, seconds: float) -> None:
        self.advance(seconds)

    def datetime(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self._now, _dt.UTC)
