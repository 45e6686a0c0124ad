"""The NPU: the gateway's UDP front, steering IKE and ESP datagrams to packet cards (sans-IO).

The gateway allocates every SPI it owns with the owning slot in the top byte. A datagram is
steered by the SPI the gateway allocated: SPIr when the IKE header's Initiator flag is set
(the gateway is the responder), SPIi when it is clear (the gateway initiated). A new
IKE_SA_INIT (SPIr = 0) is steered by a stable hash of (source address, source port, SPIi)
over the cards in service, so retransmissions, COOKIE and INVALID_KE retries reach the same
card. ESP is steered by its SPI the same way. On port 4500 (or whenever neither port is 500)
IKE carries a 4-byte non-ESP marker; NAT keepalives (one 0xFF byte) are dropped here.

UdpFaults (`chassis fault udp`) drop or delay the datagrams of one card (those steered to it
and those it sends) or of one peer address, each with a probability from a seeded generator.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections import Counter
from dataclasses import dataclass, field

from cards.spi import slot_of_spi

IKE_HEADER = 28
FLAG_INITIATOR = 0x08


@dataclass(frozen=True)
class Steer:
    slot: int | None  # None: drop
    kind: str  # "ike" | "esp" | "keepalive" | "garbage"
    reason: str = ""
    sa: bool = False  # of an existing SA (ESP, or IKE with SPIr set): not delivered, it is lost


def _hash_pick(key: bytes, ready: list[int]) -> int:
    # Rendezvous hashing: stable for a given key, and only the keys of a card that leaves move.
    return max(ready, key=lambda slot: hashlib.blake2b(key + bytes([slot]), digest_size=8).digest())


def steer(
    data: bytes,
    src: tuple[str, int],
    local_port: int,
    ready: list[int],
    marked: bool,
    new_sa: list[int] | None = None,
    owners: dict[int, int] | None = None,
) -> Steer:
    """Where a datagram goes. `ready`: cards in service (they keep their SAs); `new_sa`: the
    cards that may take a new IKE SA (default: all ready ones). `marked`: this port frames
    IKE behind a non-ESP marker. `owners`: SPI slot bits served by another card (a standby
    that took over a failed card's SAs)."""
    if data == b"\xff":
        return Steer(None, "keepalive")
    if marked:
        if len(data) >= 4 and data[:4] == b"\0\0\0\0":
            data = data[4:]
        elif len(data) >= 8:  # ESP: SPI first
            slot = slot_of_spi(data[:4])
            slot = owners.get(slot, slot) if owners else slot
            if slot in ready:
                return Steer(slot, "esp", sa=True)
            return Steer(None, "esp", "no card owns SPI", sa=True)
        else:
            return Steer(None, "garbage", "short datagram")
    if len(data) < IKE_HEADER:
        return Steer(None, "garbage", "shorter than an IKE header")
    spi_i, spi_r = data[:8], data[8:16]
    flags = data[19]
    if spi_r == bytes(8):
        takers = ready if new_sa is None else new_sa
        if not takers:
            return Steer(None, "ike", "no card in service can take the SA")
        key = src[0].encode() + struct.pack("!H", src[1]) + spi_i
        return Steer(_hash_pick(key, takers), "ike")
    ours = spi_r if flags & FLAG_INITIATOR else spi_i
    slot = slot_of_spi(ours)
    slot = owners.get(slot, slot) if owners else slot
    if slot in ready:
        return Steer(slot, "ike", sa=True)
    return Steer(None, "ike", f"no card in service owns slot {slot}", sa=True)


@dataclass
class UdpRule:
    """One udp fault: the datagrams of card `slot`, or of `peer` (address, port or None)."""

    mode: str  # "drop" | "delay"
    rate: float = 1.0
    ms: float = 0.0
    slot: int | None = None
    peer: tuple[str, int | None] | None = None
    seed: object = 0
    record: dict = field(default_factory=dict)  # what the fault list shows (chassis.faults)
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.mode not in ("drop", "delay"):
            raise ValueError(f"udp fault mode {self.mode!r}: drop or delay")
        if (self.slot is None) == (self.peer is None):
            raise ValueError("a udp fault names a card or a peer")
        self.rng = random.Random(self.seed)

    @property
    def key(self) -> tuple:
        return ("slot", self.slot) if self.slot is not None else ("peer", self.peer)

    def matches(self, slot: int | None, remote: tuple[str, int]) -> bool:
        if self.slot is not None:
            return slot == self.slot
        host, port = self.peer
        return remote[0] == host and (port is None or int(remote[1]) == port)


class UdpFaults:
    """The udp faults in force; decide() is asked for every datagram while any is."""

    def __init__(self) -> None:
        self.rules: list[UdpRule] = []

    def add(self, rule: UdpRule) -> UdpRule | None:
        """Put a rule in force (it replaces one on the same card or peer); returns the old."""
        old = next((r for r in self.rules if r.key == rule.key), None)
        self.rules = [r for r in self.rules if r.key != rule.key] + [rule]
        return old

    def heal(self, slot: int | None = None, peer: tuple | None = None) -> list[UdpRule]:
        """Remove the rule of that card or peer (neither: every rule); returns what went."""
        if slot is None and peer is None:
            gone, self.rules = self.rules, []
            return gone
        key = ("slot", slot) if slot is not None else ("peer", peer)
        gone = [r for r in self.rules if r.key == key]
        self.rules = [r for r in self.rules if r.key != key]
        return gone

    def decide(self, slot: int | None, remote: tuple[str, int]) -> float | None:
        """For a datagram of card `slot` (or None) with peer `remote`: None drops it, 0 lets
        it through, a positive number delays it by that many seconds. The first matching rule
        decides."""
        for rule in self.rules:
            if rule.matches(slot, remote):
                if rule.rng.random() >= rule.rate:
                    rule.counts["passed"] += 1
                    return 0.0
                if rule.mode == "drop":
                    rule.counts["dropped"] += 1
                    return None
                rule.counts["delayed"] += 1
                return rule.ms / 1000
        return 0.0
