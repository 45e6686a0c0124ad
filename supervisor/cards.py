"""Card manager: slot states, registration, heartbeat deadlines.

States (named after what the card waits for or is doing):
    offline -> booting -> active | standby -> failed | offline
A card is booting from its process start until it has applied its snapshot (Ready).
A card that misses `liveness` heartbeats, or whose process exits, is failed; it stays
failed until `card reboot` starts a new process (a new boot_id).
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

    @property
    def in_service(self) -> bool:
        return self.state in ("active", "standby")


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

    def on_started(self, slot: int, pid: int, now: float) -> None:
        card = self.cards[slot]
        card.pid, card.started_at = pid, now
        self._set(card, "booting", now)

    def on_exited(self, slot: int, pid: int, now: float, code: int | None) -> None:
        card = self.cards[slot]
        if card.pid == pid and card.state != "offline":
            card.failed_boot_id = card.boot_id
            self._set(card, "failed", now, f"process exited ({code})")

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
        card.pid, card.failed_boot_id = None, ""
        self._set(card, "booting", now)

    def check(self, now: float) -> list[int]:
        """Fail every registered card whose last heartbeat is older than the liveness budget.

        Call only after every queued heartbeat has been read.
        """
        budget = self.interval * self.liveness
        failed = []
        for card in self.cards.values():
            if card.type in MANAGEMENT:  # the backplane watches management-card processes
                continue
            if card.state in ("active", "standby") or (card.state == "booting" and card.boot_id):
                if now - card.last_heartbeat > budget:
                    card.failed_boot_id = card.boot_id
                    self._set(card, "failed", now, f"missed {self.liveness} heartbeats")
                    failed.append(card.slot)
        return failed

    def take_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed

    def states(self) -> dict[str, dict]:
        return {
            str(c.slot): {"state": c.state, "role": c.role, "pid": c.pid}
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
