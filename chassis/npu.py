"""The NPU: the gateway's UDP front, steering IKE and ESP datagrams to packet cards (sans-IO).

The gateway allocates every SPI it owns with the owning slot in the top byte. A datagram is
steered by the SPI the gateway allocated: SPIr when the IKE header's Initiator flag is set
(the gateway is the responder), SPIi when it is clear (the gateway initiated). A new
IKE_SA_INIT (SPIr = 0) is steered by a stable hash of (source address, source port, SPIi)
over the cards in service, so retransmissions, COOKIE and INVALID_KE retries reach the same
card. ESP is steered by its SPI the same way. On port 4500 (or whenever neither port is 500)
IKE carries a 4-byte non-ESP marker; NAT keepalives (one 0xFF byte) are dropped here.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cards.spi import slot_of_spi

IKE_HEADER = 28
FLAG_INITIATOR = 0x08


@dataclass(frozen=True)
class Steer:
    slot: int | None  # None: drop
    kind: str  # "ike" | "esp" | "keepalive" | "garbage"
    reason: str = ""


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
) -> Steer:
    """Where a datagram goes. `ready`: cards in service (they keep their SAs); `new_sa`: the
    cards that may take a new IKE SA (default: all ready ones). `marked`: this port frames
    IKE behind a non-ESP marker."""
    if data == b"\xff":
        return Steer(None, "keepalive")
    if marked:
        if len(data) >= 4 and data[:4] == b"\0\0\0\0":
            data = data[4:]
        elif len(data) >= 8:  # ESP: SPI first
            spi = data[:4]
            return (
                Steer(slot_of_spi(spi), "esp")
                if slot_of_spi(spi) in ready
                else Steer(None, "esp", "no card owns SPI")
            )
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
    return (
        Steer(slot, "ike")
        if slot in ready
        else Steer(None, "ike", f"no card in service owns slot {slot}")
    )
