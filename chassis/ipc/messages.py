"""Every message type of the chassis, in one place.

Events travel as their own types; request/reply traffic uses Request (a method name
and arguments) answered by Reply, correlated by the request envelope's id.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from chassis.ipc.envelope import message

# --- request / reply (any socket pair) ---------------------------------------


@message("request")
class Request:
    method: str
    args: dict


@message("reply")
class Reply:
    ref: int
    ok: bool
    result: Any = None
    error: str = ""


@message("error")
class Error:
    """Answer to a message that could not be used (bad envelope, unknown type)."""

    ref: int
    reason: str


# --- supervisor <-> packet card (control ROUTER/DEALER) -----------------------


@message("register")
class Register:
    slot: int
    card_type: str
    role: str
    pid: int
    boot_id: str


@message("heartbeat")
class Heartbeat:
    sent: float  # sender's CLOCK_MONOTONIC: stale heartbeats (after SIGSTOP) are recognisable
    state_seq: int = 0


@message("ready")
class Ready:
    """A card has applied its snapshots (configuration and credentials) and can serve."""

    seq: int
    cred_seq: int = 0


@message("ack")
class Ack:
    seq: int
    stream: str = "config"  # "config" | "cred"


@message("cred-update")
class CredUpdate:
    """One key of a card's credential stream (certificates, keys, CA certificates).

    Sent only to its card on the control socket, never on the shared state PUB; the
    envelope's seq orders the stream as for Update.
    """

    key: str
    value: Any


@message("card-status")
class CardStatus:
    """What a card can serve: per crypto template, "ready" or why it refuses."""

    templates: dict
    counters: dict = field(default_factory=dict)  # e.g. {"npu_rx": 12}
    maps: list = field(default_factory=list)  # crypto maps this card initiates


# --- supervisor -> packet cards (state PUB/SUB, the Clone pattern) ------------


@message("update")
class Update:
    """One key of a card's state stream; the envelope's seq orders the stream."""

    key: str
    value: Any  # None deletes the key


@message("beacon")
class Beacon:
    """Latest seq per card stream, so a card notices a lost last update."""

    seqs: dict  # slot (str) -> configuration stream seq
    cred: dict = field(default_factory=dict)  # slot (str) -> credential stream seq


# --- supervisor <-> backplane -------------------------------------------------


@message("hello")
class Hello:
    slot: int
    role: str
    pid: int


@message("card-states")
class CardStates:
    states: dict  # slot (str) -> {"state": ..., "role": ...}


@message("power")
class Power:
    slot: int
    action: str  # "restart" | "stop"


@message("proc-event")
class ProcEvent:
    slot: int
    event: str  # "started" | "exited" | "hello" (a management card's)
    pid: int
    code: int | None = None
    role: str = ""  # "hello": the role the backplane gave it


# --- the NPU (backplane) <-> packet cards ------------------------------------------


@message("npu-binds")
class NpuBinds:
    """Supervisor -> backplane: the gateway addresses to listen on (from wsg-service binds)."""

    binds: list  # [{"address": "127.0.0.2", "port": 500}]
    # SPI slot bits -> the card serving them now: a standby card took over a failed one's
    # SAs (session recovery), whose SPIs still carry the failed card's slot
    owners: dict = field(default_factory=dict)


@message("datagram")
class Datagram:
    """A UDP datagram of the gateway: NPU -> card as received, card -> NPU to send."""

    local: list  # [address, port] of the gateway
    remote: list  # [address, port] of the peer
    data: bytes


@message("datagrams")
class Datagrams:
    """A burst of datagrams in one message (the per-message cost of the bus is paid once)."""

    items: list  # [[local, remote, data], ...] as in Datagram


def burst(items: list) -> Datagram | Datagrams:
    """A burst of ``[[local, remote, data], ...]`` as the bus carries it: one Datagram alone,
    else one Datagrams."""
    return Datagram(*items[0]) if len(items) == 1 else Datagrams(items)


def burst_items(msg: Datagram | Datagrams) -> list:
    """The ``[[local, remote, data], ...]`` of a Datagram or Datagrams (burst's inverse)."""
    return msg.items if isinstance(msg, Datagrams) else [[msg.local, msg.remote, msg.data]]
