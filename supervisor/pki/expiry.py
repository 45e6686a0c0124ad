"""What certificate expiry calls for, decided on the warpable wall clock (sans-IO).

Two thresholds per certificate: `cmp cert-trap time HOURS` (an SNMP trap, once per
threshold crossing) and `cmp auto-fetch current-name NAME ... time DAYS` (an automatic
key update, retried with back-off while the CA fails). Both re-arm when the certificate
is renewed, i.e. when its store generation changes. The marks are plain JSON that the
supervisor persists (and a standby will replicate), so a trap is never sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

FIRST_RETRY = 60.0  # seconds before retrying a failed automatic update
MAX_RETRY = 3600.0


@dataclass(frozen=True)
class Action:
    kind: str  # "trap" | "update"
    name: str
    generation: int
    not_after: datetime


@dataclass
class ExpiryWatch:
    marks: dict = field(
        default_factory=dict
    )  # name -> {"trap": gen, "update": gen, "retry_at": ts, "backoff": s}

    def due(
        self,
        certs: dict[str, tuple[int, datetime]],
        now: datetime,
        trap_hours: float | None,
        auto: dict[str, float],
        busy: set[str] = frozenset(),
    ) -> list[Action]:
        """certs: name -> (store generation, notAfter); auto: name -> days before expiry."""
        actions = []
        for name, (gen, not_after) in sorted(certs.items()):
            mark = self.marks.get(name, {})
            left = not_after - now
            if (
                trap_hours is not None
                and left <= timedelta(hours=trap_hours)
                and mark.get("trap") != gen
            ):
                actions.append(Action("trap", name, gen, not_after))
            days = auto.get(name)
            if (
                days is not None
                and name not in busy
                and left <= timedelta(days=days)
                and mark.get("update") != gen
                and now.timestamp() >= mark.get("retry_at", 0.0)
            ):
                actions.append(Action("update", name, gen, not_after))
        return actions

    def trapped(self, action: Action) -> None:
        self.marks.setdefault(action.name, {})["trap"] = action.generation

    def updated(self, action: Action) -> None:
        mark = self.marks.setdefault(action.name, {})
        mark["update"] = action.generation
        mark.pop("retry_at", None)
        mark.pop("backoff", None)

    def update_failed(self, action: Action, now: datetime) -> float:
        """Back off before the next automatic attempt; returns the delay chosen."""
        mark = self.marks.setdefault(action.name, {})
        delay = min(mark.get("backoff", FIRST_RETRY / 2) * 2, MAX_RETRY)
        mark["backoff"], mark["retry_at"] = delay, now.timestamp() + delay
        return delay
