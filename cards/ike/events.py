"""What the engine hands back: datagrams to send and events for the runner (all frozen data)."""

from __future__ import annotations

from dataclasses import dataclass

Addr = tuple[str, int]


@dataclass(frozen=True)
class Send:
    data: bytes
    src: Addr
    dst: Addr


class Event:
    """Base class of everything the runner logs, counts or reports."""


@dataclass(frozen=True)
class Established(Event):
    spi_i: bytes
    spi_r: bytes
    peer_id: str
    peer_cert_subject: str
    peer: Addr
    suite: str
    initiator: bool


@dataclass(frozen=True)
class AuthFailed(Event):
    spi_i: bytes
    spi_r: bytes
    reason: str
    peer: Addr


@dataclass(frozen=True)
class Deleted(Event):
    spi_i: bytes
    spi_r: bytes
    reason: str


@dataclass(frozen=True)
class Retransmit(Event):
    spi_i: bytes
    spi_r: bytes
    message_id: int
    attempt: int


@dataclass(frozen=True)
class Alive(Event):
    """Our liveness check (empty INFORMATIONAL) was answered."""

    spi_i: bytes
    spi_r: bytes


@dataclass(frozen=True)
class ChildRefused(Event):
    """The CHILD_SA piggybacked on IKE_AUTH was not created; the IKE SA stays up."""

    spi_i: bytes
    spi_r: bytes
    reason: str


@dataclass(frozen=True)
class Rejected(Event):
    """An IKE_SA_INIT request was answered with an error notify and no state kept."""

    peer: Addr
    notify: int
    reason: str


@dataclass(frozen=True)
class Dropped(Event):
    peer: Addr
    reason: str


@dataclass(frozen=True)
class InternalError(Event):
    """A bug, not the peer's fault: the datagram is dropped and the card keeps running."""

    reason: str


Out = Send | Event
