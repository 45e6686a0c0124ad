"""Card manager: slot states, registration, heartbeat deadlines.

States (named after what the card waits for or is doing):
    offline -> booting -> active | standby -> failed | offline
                                            -> unreachable -> booting (it registers again)
A card is booting from its process start until it has applied its snapshot (Ready).
A card that misses `liveness` heartbeats, or whose process exits, is failed; it stays
failed until `card reboot` starts a new process (a new boot_id).

Hung or cut off? Cards heartbeat the backplane too, on their own channel. While a card's
heartbeats are late, the runner asks the backplane when it last heard from the card
(on_backplane_seen). At the deadline, a card the backplane heard from after the supervisor
lost it (by more than half an interval) and within the liveness budget is alive but cut off
(an IPC partition): it becomes "unreachable", keeps its process and its tunnels, takes no
new SAs, and registers again (resyncing both streams) once it hears the supervisor. Anything
else, a hang in particular (SIGSTOP: the backplane hears nothing either), is failed at the
deadline as before; an unreachable card that the backplane stops hearing is failed too.
Sans-IO: callers pass `now` (CLOCK_MONOTONIC seconds, comparable across processes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MANAGEMENT = ("mio", "rsp")


@dataclass
class CardSlot:
    slot: int
    type: str
    role: str
    state: str = "offline"
    pid: int | None = None
    boot_id: str = ""
    failed_boot_id: str = ""
    last_heartbeat: float = 0.0
    state_since: float = 0.0
    acked_seq: int = 0
    failure: str = ""
    started_at: float = 0.0  # process start, register, ready (CLOCK_MONOTONIC)
    registered_at: float = 0.0
    ready_at: float = 0.0
    backplane_seen: float = 0.0  # the card's last heartbeat to the backplane (its clock)
    failed_at: float | None = None  # the last failure declared (kept after a reboot)
    failed_reason: str = ""
    detection_ms: float | None = None  # that failure: from the last heartbeat to the verdict
    unreachable_at: float | None = None  # the last time it was found cut off but alive

    @property
    def in_service(self) -> bool:
        return self.state in ("active", "standby", "migrating")


@dataclass
class CardManager:
    cards: dict[int, CardSlot]
    interval: float = 0.1
    liveness: int = 3
    changed: bool = field(default=False)

    @classmethod
    def from_topology(cls, topology: dict, interval: float, liveness: int) -> CardManager:
        cards = {c["slot"]: CardSlot(c["slot"], c["type"], c["role"]) for c in topology["cards"]}
        return cls(cards, interval, liveness)

    def _set(self, card: CardSlot, state: str, now: float, failure: str = "") -> None:
        if card.state != state:
            card.state, card.state_since, card.failure = state, now, failure
            self.changed = True

    def _fail(self, card: CardSlot, now: float, why: str, since: float | None = None) -> None:
        """Declare a card failed; `since` is its last sign of life (for the detection time)."""
        card.failed_boot_id = card.boot_id
        self._set(card, "failed", now, why)
        card.failed_at, card.failed_reason = now, why
        card.detection_ms = _ms(now - since) if since else None

    def on_started(self, slot: int, pid: int, now: float) -> None:
        card = self.cards[slot]
        card.pid, card.started_at = pid, now
        self._set(card, "booting", now)

    def on_exited(self, slot: int, pid: int, now: float, code: int | None) -> None:
        card = self.cards[slot]
        if card.pid == pid and card.state != "offline":
            self._fail(card, now, f"process exited ({code})")

    def on_register(self, slot: int, pid: int, boot_id: str, now: float) -> str | None:
        """Accept a card (returns None) or say why not."""
        card = self.cards.get(slot)
        if card is None or card.type in MANAGEMENT:
            return f"no packet card configured in slot {slot}"
        if boot_id == card.failed_boot_id:
            return f"card {slot} is failed; reboot it"
        if card.boot_id != boot_id or not card.in_service:
            card.pid, card.boot_id, card.acked_seq = pid, boot_id, 0
            card.registered_at = now
            self._set(card, "booting", now)
        card.last_heartbeat = now
        return None

    def on_heartbeat(self, slot: int, sent: float, boot_id: str = "") -> bool:
        card = self.cards.get(slot)
        if card is None or card.state in ("failed", "offline"):
            return False
        card.last_heartbeat = max(card.last_heartbeat, sent)
        return True

    def on_ready(self, slot: int, seq: int, now: float) -> None:
        card = self.cards[slot]
        if card.state == "booting":
            card.acked_seq = max(card.acked_seq, seq)
            card.ready_at = now
            self._set(card, card.role, now)

    def on_ack(self, slot: int, seq: int) -> None:
        card = self.cards[slot]
        card.acked_seq = max(card.acked_seq, seq)

    def on_reboot(self, slot: int, now: float) -> None:
        card = self.cards[slot]
        # the old process's boot ID goes: the card is watched again once the new one registers
        card.pid, card.failed_boot_id, card.boot_id = None, "", ""
        self._set(card, "booting", now)

    def set_state(self, slot: int, state: str, now: float) -> None:
        """A planned change (migrating, standby after a migration, offline after a halt)."""
        self._set(self.cards[slot], state, now)

    def promote(self, standby: int, failed: int, now: float) -> None:
        """Session recovery: the standby took the failed card's SAs and is active now; the
        failed card, once rebooted, is the standby (StarOS does not revert on its own)."""
        new, old = self.cards[standby], self.cards[failed]
        new.role, old.role = "active", "standby"
        self._set(new, "active", now)

    def on_backplane_seen(self, slot: int, sent: float) -> None:
        """The backplane last heard this card at `sent` (the card's CLOCK_MONOTONIC)."""
        card = self.cards.get(slot)
        if card is not None:
            card.backplane_seen = max(card.backplane_seen, sent)

    def watched(self, card: CardSlot) -> bool:
        """A registered packet card whose heartbeats are checked."""
        return card.type not in MANAGEMENT and (
            card.state in ("active", "standby", "migrating")
            or (card.state == "booting" and bool(card.boot_id))
        )

    def late(self, now: float) -> list[int]:
        """Cards to ask the backplane about: heartbeats more than an interval and a half late
        (so the answer is there at the deadline), and the unreachable ones."""
        return [
            c.slot
            for c in self.cards.values()
            if c.state == "unreachable"
            or (self.watched(c) and now - c.last_heartbeat > self.interval * 1.5)
        ]

    def check(self, now: float) -> list[int]:
        """Fail every registered card whose last heartbeat is older than the liveness budget,
        or mark it unreachable when the backplane still hears it; returns the slots whose
        state changed (failed or unreachable).

        Call only after every queued heartbeat has been read.
        """
        budget = self.interval * self.liveness
        changed = []
        for card in self.cards.values():
            if card.type in MANAGEMENT:  # the backplane watches management-card processes
                continue
            if card.state == "unreachable":
                if now - card.backplane_seen > budget:
                    self._fail(card, now, "unreachable and silent on the backplane too",
                               card.backplane_seen)  # fmt: skip
                    changed.append(card.slot)
            elif self.watched(card) and now - card.last_heartbeat > budget:
                alive = (
                    card.backplane_seen > card.last_heartbeat + self.interval / 2
                    and now - card.backplane_seen <= budget
                )
                if alive:
                    self._set(card, "unreachable", now,
                              f"missed {self.liveness} heartbeats; alive on the backplane")  # fmt: skip
                    card.unreachable_at = now
                else:
                    self._fail(card, now, f"missed {self.liveness} heartbeats",
                               card.last_heartbeat)  # fmt: skip
                changed.append(card.slot)
        return changed

    def take_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed

    def states(self) -> dict[str, dict]:
        return {
            str(c.slot): {
                "state": c.state,
                "role": c.role,
                "pid": c.pid,
                "since": c.state_since,
                "failure": c.failure,
                "failed_at": c.failed_at,
                "detection_ms": c.detection_ms,
            }  # fmt: skip
            for c in self.cards.values()
        }

    def table(self, now: float) -> list[dict]:
        return [
            {
                "slot": c.slot,
                "type": c.type,
                "role": c.role,
                "state": c.state,
                "pid": c.pid,
                "uptime_s": None,
                "spof": False,
                "acked_seq": c.acked_seq,
                "failure": c.failure,
                "state_since": c.state_since,  # CLOCK_MONOTONIC, comparable across processes
                # The last failure declared (CLOCK_MONOTONIC), why, and how long after the
                # card's last heartbeat; kept after a reboot until the next failure.
                "failed_at": c.failed_at,
                "failed_reason": c.failed_reason,
                "detection_ms": c.detection_ms,
                "unreachable_at": c.unreachable_at,
                # Last boot: process start -> ready, and registration -> ready (the resync).
                "boot_ms": _ms(c.ready_at - c.started_at)
                if c.ready_at > c.started_at > 0
                else None,
                "resync_ms": _ms(c.ready_at - c.registered_at)
                if c.ready_at > c.registered_at > 0
                else None,
            }
            for c in sorted(self.cards.values(), key=lambda c: c.slot)
        ]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
