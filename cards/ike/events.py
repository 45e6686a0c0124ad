"""What the engine hands back: datagrams to send and events for the runner (all frozen data)."""

from __future__ import annotations

from dataclasses import dataclass

from .payloads import TrafficSelector

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
class IkeRekeyed(Event):
    """The IKE SA was replaced by a new one (new SPIs); its CHILD_SAs moved along."""

    spi_i: bytes
    spi_r: bytes
    new_spi_i: bytes
    new_spi_r: bytes
    initiator: bool  # we started the rekey


@dataclass(frozen=True)
class FetchCertificate(Event):
    """IKE_AUTH waits for a peer certificate sent as Hash and URL: the runner fetches ``url``
    (bounded by the template's limits) and hands the bytes to ``Endpoint.resolve``."""

    my_spi: bytes
    url: str
    sha1: bytes
    max_bytes: int
    timeout_s: float


@dataclass(frozen=True)
class CheckOcsp(Event):
    """IKE_AUTH waits for the peer certificate's OCSP status: the runner POSTs ``request``
    (DER) to ``url`` on a connection of its own, bounded by ``timeout_s``, and hands the
    answer to ``Endpoint.revocation_answer``."""

    my_spi: bytes
    url: str
    request: bytes
    timeout_s: float


@dataclass(frozen=True)
class FetchCrl(Event):
    """IKE_AUTH waits for a CRL learned from the certificate's CDP: the runner asks the
    management card to fetch ``url`` (verified with ``issuer``, DER) and answers
    ``Endpoint.revocation_answer`` once the CRL is on this card."""

    my_spi: bytes
    url: str
    issuer: bytes
    timeout_s: float


@dataclass(frozen=True)
class RevocationChecked(Event):
    """A peer certificate's revocation verdict, with the answers of every source asked."""

    my_spi: bytes
    subject: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class MidSynced(Event):
    """RFC 6311: Message IDs agreed with the peer after a takeover (ours: next request we
    send, next request we expect)."""

    spi_i: bytes
    spi_r: bytes
    send_mid: int
    recv_mid: int


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
class ChildEstablished(Event):
    """A CHILD_SA was negotiated (keys stay on the SA: ``IkeSa.children``, never in events).

    ``our_spi`` is our inbound ESP SPI (the peer sends with it), ``their_spi`` our outbound.
    """

    spi_i: bytes
    spi_r: bytes
    our_spi: bytes
    their_spi: bytes
    tsi: tuple[TrafficSelector, ...]
    tsr: tuple[TrafficSelector, ...]
    suite: str
    policy: str = ""  # the child-SA payload
    replaces: bytes = b""  # a rekey: our inbound SPI of the child it replaces


@dataclass(frozen=True)
class ChildDeleted(Event):
    """A CHILD_SA is gone: deleted by either side, or with its IKE SA."""

    spi_i: bytes
    spi_r: bytes
    our_spi: bytes
    their_spi: bytes
    reason: str


@dataclass(frozen=True)
class ChildRefused(Event):
    """A CHILD_SA (in IKE_AUTH or CREATE_CHILD_SA) was not created; the IKE SA stays up."""

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
