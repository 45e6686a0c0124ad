"""An IKE SA's messages on the wire: SK sealing and opening, RFC 7383 fragments, the RFC 3948
non-ESP marker. A mixin of IkeSa (cards/ike/sa.py).
"""

from __future__ import annotations

from .const import FLAG_INITIATOR, FLAG_RESPONSE
from .crypto import IntegrityError, open_sk, open_skf, seal_message
from .errors import IkeError
from .events import Addr, Dropped, Send
from .message import (
    IkeDecodeError,
    Message,
    SkfPayload,
    SkPayload,
    add_non_esp_marker,
    decode_payloads,
)
from .states import X

MAX_FRAGMENTS = 64  # of one message we reassemble (RFC 7383 leaves the limit to us)


class Wire:
    __slots__ = ()

    def _open(self, msg: Message):
        """Cleartext payloads; None when dropped (bad ICV) or when fragments are still missing;
        an IkeError when malformed inside."""
        if msg.exchange == X.IKE_SA_INIT:
            return msg.payloads
        last = msg.payloads[-1] if msg.payloads else None
        if self.keys is None or not isinstance(last, SkPayload | SkfPayload):
            self.emit(Dropped(self.peer, "no SK payload to authenticate"))  # never answered
            return None
        keys = self.keys.inbound(self.initiator)
        try:
            if isinstance(last, SkfPayload):
                return self._reassemble(msg, last, keys)
            payloads = open_sk(msg, self.suite, keys)
        except IntegrityError as exc:
            self.emit(Dropped(self.peer, f"integrity check failed: {exc}"))
            return None
        except IkeDecodeError as exc:
            return IkeError.from_decode(exc)
        self.last_heard = self.now  # authentic: the peer is alive
        return payloads

    def _reassemble(self, msg: Message, skf: SkfPayload, keys):
        """RFC 7383 2.6: every fragment is authenticated on its own and kept until all of its
        message are in; then the plaintexts joined are one payload chain."""
        if not self.fragmenting:
            self.emit(Dropped(self.peer, "a fragment, but fragmentation was not negotiated"))
            return None
        _, plain = open_skf(msg, self.suite, keys)
        self.last_heard = self.now
        key = (msg.message_id, msg.is_response, skf.total)
        buf = self.reassembly or {}  # None between messages: most SAs never see fragments
        if buf.get("key") != key:  # a new message (fragments of an older one are dropped)
            if skf.total > MAX_FRAGMENTS:
                self.emit(Dropped(self.peer, f"{skf.total} fragments (at most {MAX_FRAGMENTS})"))
                return None
            buf.clear()
            buf.update(key=key, parts={})
            self.reassembly = buf
        buf["parts"].setdefault(skf.number, plain)
        if skf.number == 1:
            buf["first"], buf["first_raw"] = skf.first_inner, msg.raw
        if len(buf["parts"]) < skf.total:
            return None
        data = b"".join(buf["parts"][n] for n in range(1, skf.total + 1))
        self.first_fragment = buf["first_raw"]  # what a retransmission is recognised by
        first = buf["first"]
        self.reassembly = None
        return decode_payloads(first, data)

    def _encode(self, exchange: int, mid: int, response: bool, payloads: list,
                spi_r: bytes | None = None) -> tuple[bytes, ...]:  # fmt: skip
        """The datagrams of one message: one, or RFC 7383 fragments when both sides support
        them and it would not fit in ``fragment_size`` (an IP datagram)."""
        flags = (FLAG_INITIATOR if self.initiator else 0) | (FLAG_RESPONSE if response else 0)
        head = Message(self.spi_i, self.spi_r if spi_r is None else spi_r, exchange, flags, mid)
        if exchange == X.IKE_SA_INIT:
            head.payloads = list(payloads)
            return (head.encode(),)
        keys = self.keys.outbound(self.initiator)
        limit = self._max_datagram() if self.fragmenting else None
        return tuple(seal_message(head, payloads, self.suite, keys, self.rand, limit))

    def _max_datagram(self) -> int:
        """Largest IKE message in one fragment: the IP datagram less IP, UDP, marker."""
        ip_udp = 48 if ":" in self.peer[0] else 28
        marker = 0 if 500 in (self.local[1], self.peer[1]) else 4
        return self.config.fragment_size - ip_udp - marker

    def _send(self, datagrams: tuple[bytes, ...], src: Addr, dst: Addr) -> None:
        # RFC 3948 framing: when neither port is 500 every IKE packet carries the marker.
        marked = 500 not in (src[1], dst[1])
        for data in datagrams:
            self.emit(Send(add_non_esp_marker(data) if marked else data, src, dst))
