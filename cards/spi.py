"""The chassis's SPI layout: the owning slot in the top byte of every SPI a card allocates.

The NPU (chassis/npu.py) steers IKE and ESP datagrams by it, so it lives with the cards
that allocate (the chassis may import floor-2 code; the cards may not import the chassis).
"""

from __future__ import annotations


def make_spi(slot: int, rand: bytes) -> bytes:
    """A gateway SPI owned by `slot` (8 bytes for IKE, 4 for ESP; `rand` gives the rest)."""
    if not 0 <= slot <= 255:
        raise ValueError("slot out of range")
    return bytes([slot]) + rand[1:]


def slot_of_spi(spi: bytes) -> int:
    return spi[0]
