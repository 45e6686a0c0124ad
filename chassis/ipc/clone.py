"""The ZeroMQ guide's Clone pattern, sans-IO: a versioned key/value stream per card.

The supervisor keeps one Stream per card (its configuration projection, later its
credentials); each update gets the next sequence number. A card's Replica subscribes
first, buffers updates, takes a snapshot, then applies only updates newer than the
snapshot. A gap in the sequence, or a beacon announcing a sequence it never saw,
means an update was lost: the replica asks for a new snapshot (resync).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


@dataclass
class Stream:
    seq: int = 0
    entries: dict[str, Any] = field(default_factory=dict)

    def set(self, key: str, value: Any) -> int | None:
        """Record a change; returns its sequence number, or None when nothing changed."""
        if value is None:
            if key not in self.entries:
                return None
            del self.entries[key]
        elif self.entries.get(key) == value:
            return None
        else:
            self.entries[key] = value
        self.seq += 1
        return self.seq

    def snapshot(self) -> dict:
        return {"seq": self.seq, "entries": dict(self.entries)}


class Outcome(Enum):
    APPLIED = "applied"
    BUFFERED = "buffered"  # before the snapshot arrived
    STALE = "stale"  # already covered by the snapshot
    GAP = "gap"  # an update was lost: resync


@dataclass
class Replica:
    seq: int | None = None  # None until a snapshot is applied
    entries: dict[str, Any] = field(default_factory=dict)
    _early: list[tuple[int, str, Any]] = field(default_factory=list)

    @property
    def synced(self) -> bool:
        return self.seq is not None

    def reset(self) -> None:
        """Forget the snapshot (before asking for a new one); keep buffering updates."""
        self.seq = None

    def on_update(self, seq: int, key: str, value: Any) -> Outcome:
        if self.seq is None:
            self._early.append((seq, key, value))
            return Outcome.BUFFERED
        if seq <= self.seq:
            return Outcome.STALE
        if seq != self.seq + 1:
            self.seq = None
            return Outcome.GAP
        self._apply(seq, key, value)
        return Outcome.APPLIED

    def on_snapshot(self, seq: int, entries: dict[str, Any]) -> Outcome:
        self.seq, self.entries = seq, dict(entries)
        early, self._early = sorted(self._early, key=lambda u: u[0]), []
        for useq, key, value in early:
            if self.on_update(useq, key, value) is Outcome.GAP:
                return Outcome.GAP
        return Outcome.APPLIED

    def on_beacon(self, latest: int) -> bool:
        """True when the stream is ahead of us: the last update was lost, resync."""
        if self.seq is not None and latest > self.seq:
            self.seq = None
            return True
        return False

    def _apply(self, seq: int, key: str, value: Any) -> None:
        if value is None:
            self.entries.pop(key, None)
        else:
            self.entries[key] = value
        self.seq = seq
