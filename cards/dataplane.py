"""The card's ESP data plane: one cards.esp.EspSa per CHILD_SA the engine made (sans-IO).

The gateway feeds it the engine's events (ChildEstablished builds the child's ESP state,
ChildDeleted drops it) and the ESP-in-UDP datagrams the NPU steered here by the inbound
SPI's slot bits. Decrypted inner packets go to the service's sink: counted per child, and with
`ipsec sink echo` in the template sent back through the same child (source and destination
swapped), so both directions run without an external traffic source. `inject` sends inner
UDP packets toward a peer through one child. When a child's byte or packet lifetime passes
90% the engine rekeys it (``rekey`` callback); at 100% the data plane stops using it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from cards.esp import EspSa, build_udp, parse_inner
from cards.ike.events import ChildDeleted, ChildEstablished, Send

Addr = tuple[str, int]


@dataclass(slots=True)  # one per child on the card: no per-instance dict
class Tunnel:
    """One child's ESP state and where its packets go (follows the peer's NAT mapping)."""

    esp: EspSa
    local: Addr
    peer: Addr
    ike_spi: bytes  # our SPI of the IKE SA (the engine's key for a rekey)
    policy: str
    echo: bool
    ours: tuple = ()  # the child's selectors: our side, the peer's side
    theirs: tuple = ()
    rekeying: bool = False
    delivered: int = 0  # inner packets handed to the sink


class DataPlane:
    def __init__(self, rand: Callable[[int], bytes]) -> None:
        self.rand = rand
        self.tunnels: dict[bytes, Tunnel] = {}  # by our inbound SPI
        self.unknown_spi = 0  # ESP for no child of ours
        self._soft = False  # a tunnel passed 90% of a lifetime since due_rekeys last looked
        self._seq_sent: dict[bytes, int] = {}  # outbound seq last put in a checkpoint batch

    # ------------------------------------------------------------------ children
    def track(self, endpoint, outs: list, *, echo: bool, limits: dict) -> None:
        """Follow the children the engine made or deleted in ``outs``."""
        for o in outs:
            if isinstance(o, ChildEstablished):
                sa = endpoint.sas.get(o.spi_r) or endpoint.sas.get(o.spi_i)
                child = sa.children.get(o.our_spi) if sa is not None else None
                if child is None:
                    continue
                lifetime_bytes, lifetime_packets = limits.get(child.policy, (None, None))
                esp = EspSa.from_child(
                    child, lifetime_bytes=lifetime_bytes, lifetime_packets=lifetime_packets
                )
                ours, theirs = (child.tsi, child.tsr) if child.initiator else (child.tsr, child.tsi)
                self.tunnels[o.our_spi] = Tunnel(
                    esp, sa.local, sa.peer, sa.my_spi, child.policy, echo, ours, theirs
                )
            elif isinstance(o, ChildDeleted):
                self.tunnels.pop(o.our_spi, None)

    def adopt(self, endpoint, sa, *, echo: bool, limits: dict, seq_from: dict) -> None:
        """The children of an IKE SA taken over from another card (cards/recovery.py): their
        ESP state, sending from ``seq_from[our SPI]`` on (past what the failed card used)."""
        events = [ChildEstablished(sa.spi_i, sa.spi_r, c.our_spi, c.their_spi, c.tsi, c.tsr, "",
                                   c.policy) for c in sa.children.values()]  # fmt: skip
        self.track(endpoint, events, echo=echo, limits=limits)
        for c in sa.children.values():
            tunnel = self.tunnels.get(c.our_spi)
            if tunnel is not None:
                tunnel.esp.seq_out = max(tunnel.esp.seq_out, seq_from.get(c.our_spi, 0))

    def take_seq(self) -> dict[bytes, int]:
        """Outbound ESP sequence numbers that moved since the last call (for checkpoints)."""
        moved = {}
        for spi, tunnel in self.tunnels.items():
            n = tunnel.esp.seq_out
            if n and self._seq_sent.get(spi) != n:
                moved[spi] = self._seq_sent[spi] = n
        for spi in [s for s in self._seq_sent if s not in self.tunnels]:
            del self._seq_sent[spi]
        return moved

    def forget(self, local: Addr) -> None:
        """An endpoint went (reconfigured): its children's ESP state goes too."""
        for spi in [s for s, t in self.tunnels.items() if t.local == local]:
            del self.tunnels[spi]

    # ------------------------------------------------------------------ packets
    def inbound(self, local: Addr, remote: Addr, packet: bytes) -> list:
        """An ESP-in-UDP datagram (no marker): decrypt, count, echo if asked."""
        tunnel = self.tunnels.get(packet[:4])
        if tunnel is None:
            self.unknown_spi += 1
            return []
        inner = tunnel.esp.open(packet)
        if inner is None:
            return []
        if not tunnel.rekeying and tunnel.esp.soft_expired:
            self._soft = True
        if remote != tunnel.peer or local != tunnel.local:  # ESP-in-UDP follows the NAT
            tunnel.local, tunnel.peer = local, remote  # mapping (equal: the IKE SA's tuples)
        tunnel.delivered += 1
        if not tunnel.echo:
            return []
        return self._send(tunnel, _reversed(inner))

    def inject(self, spi: bytes, count: int, size: int, dport: int | None = None) -> list:
        """``count`` UDP packets of ``size`` payload bytes from our side of the child to the
        peer's side (its first address and port in each selector)."""
        tunnel = self.tunnels[spi]
        src, sport = _endpoint_of(tunnel.ours)
        dst, port = _endpoint_of(tunnel.theirs)
        out: list = []
        for n in range(count):
            payload = n.to_bytes(4, "big") + bytes(max(0, size - 4))
            out += self._send(tunnel, build_udp(src, dst, sport, dport or port, payload))
        return out

    def _send(self, tunnel: Tunnel, inner: bytes) -> list:
        packet = tunnel.esp.seal(inner, self.rand)
        if packet is None:
            return []
        if not tunnel.rekeying and tunnel.esp.soft_expired:
            self._soft = True
        return [Send(packet, tunnel.local, tunnel.peer)]

    # ------------------------------------------------------------------ lifetimes
    def due_rekeys(self) -> list[tuple[bytes, bytes]]:
        """(IKE SA SPI, child SPI) of each child past 90% of its byte or packet lifetime.
        Only a packet moves a tunnel past 90%: without one since the last look, none is due
        (this runs after every ESP datagram; the scan walks every tunnel)."""
        if not self._soft:
            return []
        self._soft = False
        due = []
        for spi, tunnel in self.tunnels.items():
            if not tunnel.rekeying and tunnel.esp.soft_expired:
                tunnel.rekeying = True
                due.append((tunnel.ike_spi, spi))
        return due

    def rehome(self, old_spis: tuple[bytes, bytes], new_ike_spi: bytes) -> None:
        """An IKE SA rekey moved the children of the IKE SA ``old_spis`` (SPIi, SPIr) to the
        one whose SPI of ours is ``new_ike_spi``."""
        for tunnel in self.tunnels.values():
            if tunnel.ike_spi in old_spis:
                tunnel.ike_spi = new_ike_spi

    def counters(self, spi: bytes) -> dict:
        tunnel = self.tunnels.get(spi)
        if tunnel is None:
            return {}
        return {**tunnel.esp.counters(), "delivered": tunnel.delivered}


def _reversed(inner: bytes) -> bytes:
    """The echo: the same UDP payload back, source and destination swapped."""
    parsed = parse_inner(inner)
    if parsed is None:
        return inner
    version, src, dst, proto, sport, dport = parsed
    if proto != 17:
        return inner
    ihl = (inner[0] & 0x0F) * 4 if version == 4 else 40
    return build_udp(dst, src, dport, sport, inner[ihl + 8 :])


def _endpoint_of(selectors: tuple):
    """A concrete address and port inside a side's first selector."""
    ts = selectors[0]
    addr = ts.start_addr
    if addr == ipaddress.ip_address("0.0.0.0") or addr == ipaddress.ip_address("::"):
        addr = addr + 1
    return str(addr), ts.start_port or 2152
