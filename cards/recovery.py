"""Session recovery: checkpoints of an active card's SAs, held by its standby card (sans-IO).

StarOS session recovery keeps a standby card ready to take over a failed card's sessions. The
active card's engines record which IKE SAs each step changed (Endpoint.track_changes); every
interval the runner calls ``Outbox.collect`` and sends the batch (numbered, key material:
only on CURVE channels), resending what the standby has not acked. A standby that (re)joins
is sent ``Outbox.full``. The standby's ``Holding`` applies batches in order (a gap asks for a
full one), keeps each SA restored and ready, and at takeover hands them to its gateway.

ESP sequence numbers change with every packet and are not worth a message each: a batch
carries each child's outbound sequence number as it was, and the standby starts past it by
``ESP_SEQ_MARGIN`` so the peer's anti-replay window never sees a number twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

ESP_SEQ_MARGIN = 1 << 20  # packets a card may send between two batches, with room to spare


def endpoint_key(local: tuple[str, int]) -> str:
    return f"{local[0]}|{local[1]}"


def endpoint_local(key: str) -> tuple[str, int]:
    address, port = key.rsplit("|", 1)
    return address, int(port)


@dataclass
class Outbox:
    """The active card's side: numbered batches, kept until acked."""

    seq: int = 0
    unacked: dict[int, dict] = field(default_factory=dict)

    def collect(self, endpoints: dict, esp_seq: dict[bytes, int]) -> dict | None:
        """The changes since the last batch (None: nothing changed). ``endpoints`` maps a
        local address to its Endpoint; ``esp_seq`` our inbound ESP SPI -> outbound seq."""
        body: dict = {}
        for local, endpoint in endpoints.items():
            upserts, gone = endpoint.take_changes()
            if upserts or gone:
                body[endpoint_key(local)] = {"upserts": upserts, "gone": [s.hex() for s in gone]}
        if not body and not esp_seq:
            return None
        return self._batch(body, esp_seq, full=False)

    def full(self, endpoints: dict, esp_seq: dict[bytes, int]) -> dict:
        """Everything established now (the standby replaces what it held)."""
        for endpoint in endpoints.values():
            endpoint.take_changes()  # covered by this batch
        body = {endpoint_key(local): {"upserts": ep.checkpoints(), "gone": []}
                for local, ep in endpoints.items()}  # fmt: skip
        self.unacked.clear()
        return self._batch(body, esp_seq, full=True)

    def _batch(self, body: dict, esp_seq: dict[bytes, int], full: bool) -> dict:
        self.seq += 1
        batch = {"seq": self.seq, "full": full, "endpoints": body,
                 "esp_seq": {spi.hex(): n for spi, n in esp_seq.items()}}  # fmt: skip
        self.unacked[self.seq] = batch
        return batch

    def on_ack(self, seq: int) -> None:
        for n in [n for n in self.unacked if n <= seq]:
            del self.unacked[n]

    def pending(self) -> list[dict]:
        """Batches to send again (no ack yet), oldest first."""
        return [self.unacked[n] for n in sorted(self.unacked)]


@dataclass
class Held:
    """One checkpointed IKE SA on the standby: the checkpoint, and the SA restored from it
    once the standby's endpoint for its address exists."""

    checkpoint: dict
    sa: object | None = None
    restored: bool = False  # tried (a checkpoint this card cannot read stays None)


class Holding:
    """The standby card's side."""

    def __init__(self) -> None:
        self.seq = 0  # the last batch applied
        self.sas: dict[str, dict[str, Held]] = {}  # endpoint key -> our SPI (hex) -> Held
        self.esp_seq: dict[str, int] = {}  # our inbound ESP SPI (hex) -> outbound seq

    def apply(self, batch: dict, endpoints: dict) -> tuple[int, bool]:
        """(the seq to ack, whether a full batch is needed: a batch was lost)."""
        seq = int(batch["seq"])
        if batch.get("full"):
            self.sas.clear()
            self.esp_seq.clear()
        elif seq <= self.seq:
            return self.seq, False  # already applied (a resend)
        elif seq != self.seq + 1:
            return self.seq, True
        for key, change in batch["endpoints"].items():
            held = self.sas.setdefault(key, {})
            for spi in change["gone"]:
                held.pop(spi, None)
            for checkpoint in change["upserts"]:  # restored later, a slice at a time (ready)
                spi = checkpoint["spi_r"] if not checkpoint["initiator"] else checkpoint["spi_i"]
                held[spi] = Held(checkpoint)
        self.esp_seq.update(batch.get("esp_seq") or {})
        self.seq = seq
        return seq, False

    def ready(self, endpoints: dict, limit: int | None = None) -> int:
        """Restore up to ``limit`` held checkpoints (all: None) into SAs ready to serve;
        returns how many are still waiting. The runner calls it between other work, so
        tens of thousands of them never stall the card's heartbeats."""
        waiting = 0
        for key, held in self.sas.items():
            endpoint = endpoints.get(endpoint_local(key))
            for item in held.values():
                if item.sa is not None:
                    continue
                if endpoint is None or (limit is not None and limit <= 0):
                    waiting += 1
                    continue
                item.sa = _restore(endpoint, item.checkpoint)
                item.restored = True
                if limit is not None:
                    limit -= 1
        return waiting

    def count(self) -> int:
        return sum(len(h) for h in self.sas.values())

    def take_over(self, endpoints: dict, now: float, limit: int | None = None
                  ) -> list[tuple[tuple[str, int], object]]:  # fmt: skip
        """Adopt up to ``limit`` held SAs (all: None) into the endpoints serving their
        addresses, their lifetimes going on from ``now``; (local, IkeSa) of each adopted,
        which the holding lets go. Call until count() is 0 (this card is the active one)."""
        adopted = []
        for key in list(self.sas):
            local, held = endpoint_local(key), self.sas[key]
            endpoint = endpoints.get(local)
            for spi in list(held):
                if limit is not None and len(adopted) >= limit:
                    return adopted
                item = held.pop(spi)
                if item.sa is None and endpoint is not None and not item.restored:
                    item.sa = _restore(endpoint, item.checkpoint)
                if item.sa is not None and endpoint is not None:
                    item.sa.restart_timers(item.checkpoint.get("timers") or {}, now)
                    adopted.append((local, endpoint.adopt(item.sa)))
            if not held:
                del self.sas[key]
        return adopted

    def esp_start(self, spis: Iterable[bytes]) -> dict[bytes, int]:
        """Where the adopted children's outbound ESP sequence numbers resume."""
        return {spi: self.esp_seq.get(spi.hex(), 0) + ESP_SEQ_MARGIN for spi in spis}


def _restore(endpoint, checkpoint: dict):
    if endpoint is None:
        return None
    from cards.ike.sa import IkeSa

    try:
        return IkeSa.from_checkpoint(checkpoint, endpoint.config, endpoint.rand,
                                     endpoint.wall_clock)  # fmt: skip
    except (KeyError, ValueError, TypeError):
        return None  # a checkpoint this card cannot read: the SA is lost, counted at takeover
