"""Versioned state for each packet card: its configuration projection and its credentials.

Two Clone streams per card (chassis.ipc.clone). The configuration goes out on the shared
state PUB. Credentials (certificates, private keys, CA certificates) go only to their own
card, on the control socket: CURVE-encrypted and separate from the configuration, so a
subscriber to the state stream never sees a key. Cards ack each sequence number; a
credential counts as propagated to a card when the card acked the sequence that carried
its current version.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from chassis.ipc.clone import Stream
from chassis.ipc.messages import Beacon, CredUpdate, Update

STREAMS = ("config", "cred")


class Fanout:
    def __init__(
        self,
        slots: Iterable[int],
        publish: Callable[[int, Update, int], Any],
        unicast: Callable[[int, CredUpdate, int], Any],
    ) -> None:
        self.slots = tuple(slots)
        self.streams = {name: {s: Stream() for s in self.slots} for name in STREAMS}
        self.acked = {name: dict.fromkeys(self.slots, 0) for name in STREAMS}
        self.set_at: dict[int, dict[str, int]] = {s: {} for s in self.slots}  # cred key -> seq
        self._publish, self._unicast = publish, unicast
        # Credential propagation: (published at, {slot: seq}) until every card acked it.
        self._batches: list[tuple[float, dict[int, int]]] = []
        self.propagation: deque[float] = deque(maxlen=1000)  # seconds, publish -> last ack

    def set_config(self, slot: int, key: str, value: Any) -> None:
        seq = self.streams["config"][slot].set(key, value)
        if seq is not None:
            self._publish(slot, Update(key, value), seq)

    def sync_creds(self, slot: int, wanted: dict[str, Any]) -> int:
        """Make a card's credential stream equal `wanted`; returns the stream's seq."""
        stream = self.streams["cred"][slot]
        for key in [k for k in stream.entries if k not in wanted]:
            self._set_cred(slot, key, None)
        for key, value in wanted.items():
            self._set_cred(slot, key, value)
        return stream.seq

    def push_creds(self, wanted: dict[str, Any], in_service: Iterable[int], now: float) -> None:
        """Sync every card's credentials; time how long until every card in service acks."""
        before = {s: self.cred_seq(s) for s in self.slots}
        for slot in self.slots:
            self.sync_creds(slot, wanted)
        waiting = {s: self.cred_seq(s) for s in in_service if self.cred_seq(s) > before[s]}
        if waiting:
            self._batches.append((now, waiting))

    def _set_cred(self, slot: int, key: str, value: Any) -> None:
        seq = self.streams["cred"][slot].set(key, value)
        if seq is None:
            return
        if value is None:
            self.set_at[slot].pop(key, None)
        else:
            self.set_at[slot][key] = seq
        self._unicast(slot, CredUpdate(key, value), seq)

    def snapshot(self, slot: int, stream: str) -> dict:
        return self.streams[stream][slot].snapshot()

    def on_ack(self, slot: int, stream: str, seq: int, now: float = 0.0) -> None:
        if stream in self.acked and slot in self.acked[stream]:
            self.acked[stream][slot] = max(self.acked[stream][slot], seq)
        if stream == "cred" and self._batches:
            done = [
                b for b in self._batches if all(self.acked["cred"][s] >= q for s, q in b[1].items())
            ]
            for batch in done:
                self.propagation.append(now - batch[0])
                self._batches.remove(batch)

    def forget(self, slot: int) -> None:
        """A card restarted: it holds nothing until it acks again (and no longer delays a batch)."""
        for stream in STREAMS:
            self.acked[stream][slot] = 0
        for _, waiting in self._batches:
            waiting.pop(slot, None)

    def holds(self, slot: int, key: str) -> bool:
        at = self.set_at[slot].get(key)
        return at is not None and self.acked["cred"][slot] >= at

    def cred_seq(self, slot: int) -> int:
        return self.streams["cred"][slot].seq

    def beacon(self) -> Beacon:
        seqs = {name: {str(s): st.seq for s, st in self.streams[name].items()} for name in STREAMS}
        return Beacon(seqs["config"], seqs["cred"])
