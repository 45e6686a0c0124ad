"""IKEv2 message codec (RFC 7296 section 3.1): header and payload chain.

Every malformed input raises :class:`IkeDecodeError`, which carries the NOTIFY the
engine answers with (INVALID_SYNTAX unless the RFC names another). SK/SKF bodies
stay opaque here; their plaintext is parsed with :func:`decode_payloads` after
decryption (see ``crypto.open_sk``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .const import FLAG_INITIATOR, FLAG_RESPONSE, ExchangeType, NotifyType, PayloadType
from .payloads import (  # noqa: F401  (re-exported: the codec API lives in one module)
    _DECODERS,
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    IkeDecodeError,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    UnknownPayload,
    VendorPayload,
    _enum,
    _unpack,
)

HEADER_LEN = 28
NON_ESP_MARKER = b"\x00\x00\x00\x00"


def strip_non_esp_marker(datagram: bytes) -> tuple[bool, bytes]:
    """Port 4500 framing (RFC 3948 2.2): 4 zero bytes mean IKE, anything else is ESP."""
    if len(datagram) >= 4 and datagram[:4] == NON_ESP_MARKER:
        return True, datagram[4:]
    return False, datagram


def add_non_esp_marker(data: bytes) -> bytes:
    return NON_ESP_MARKER + data


def decode_payloads(first_type: int, data: bytes) -> list[Payload]:
    """Walk a payload chain (a message body or decrypted SK plaintext) to its end."""
    out: list[Payload] = []
    ptype, off = first_type, 0
    while ptype != PayloadType.NONE:
        nxt, flags, length = _unpack("BBH", data, off)
        if length < 4 or off + length > len(data):
            raise IkeDecodeError(reason=f"payload {ptype} length {length} overruns message")
        body = bytes(data[off + 4 : off + length])
        if ptype in (PayloadType.SK, PayloadType.SKF):
            if off + length != len(data):  # RFC 7296 3.14: SK is the last payload
                raise IkeDecodeError(reason="encrypted payload is not the last payload")
            if ptype == PayloadType.SK:
                out.append(SkPayload(nxt, body))
            else:
                number, total = _unpack("HH", body)
                if not 1 <= number <= total:
                    raise IkeDecodeError(reason=f"fragment {number} of {total}")
                out.append(SkfPayload(nxt, number, total, body[4:]))
            return out
        if ptype in _DECODERS:
            out.append(_DECODERS[ptype](body))
        elif flags & 0x80:
            raise IkeDecodeError(
                NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, f"critical payload {ptype}", bytes([ptype])
            )
        else:
            out.append(UnknownPayload(ptype, body, False))
        ptype, off = nxt, off + length
    if off != len(data):
        raise IkeDecodeError(reason=f"{len(data) - off} trailing bytes after last payload")
    return out


def encode_payloads(payloads: list[Payload]) -> bytes:
    """Serialize a chain; SK/SKF put their inner first type in Next Payload."""
    out = []
    for i, p in enumerate(payloads):
        if isinstance(p, SkPayload | SkfPayload):
            nxt = p.first_inner
        else:
            nxt = payloads[i + 1].ptype if i + 1 < len(payloads) else PayloadType.NONE
        body = p.encode()
        crit = 0x80 if isinstance(p, UnknownPayload) and p.critical else 0
        out.append(struct.pack("!BBH", nxt, crit, 4 + len(body)) + body)
    return b"".join(out)


# ------------------------------------------------------------------ message (3.1)
@dataclass
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    flags: int
    message_id: int
    payloads: list[Payload] = field(default_factory=list)
    minor_version: int = 0
    raw: bytes = field(default=b"", compare=False, repr=False)  # as received, for AUTH and SK

    @property
    def is_initiator(self) -> bool:
        return bool(self.flags & FLAG_INITIATOR)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    def find(self, cls, ptype: int | None = None) -> list:
        return [
            p for p in self.payloads if isinstance(p, cls) and (ptype is None or p.ptype == ptype)
        ]

    def first(self, cls, ptype: int | None = None):
        found = self.find(cls, ptype)
        return found[0] if found else None

    def notify(self, ntype: int) -> NotifyPayload | None:
        return next((n for n in self.find(NotifyPayload) if n.type == ntype), None)

    def encode(self) -> bytes:
        body = encode_payloads(self.payloads)
        first = self.payloads[0].ptype if self.payloads else PayloadType.NONE
        header = struct.pack(
            "!8s8sBBBBII", self.spi_i, self.spi_r, first, 0x20 | self.minor_version,
            self.exchange, self.flags, self.message_id, HEADER_LEN + len(body),
        )  # fmt: skip
        return header + body

    @classmethod
    def decode(cls, data: bytes) -> Message:
        data = bytes(data)
        spi_i, spi_r, first, version, exch, flags, msg_id, length = _unpack("8s8sBBBBII", data)
        if version >> 4 != 2:
            raise IkeDecodeError(NotifyType.INVALID_MAJOR_VERSION, f"major version {version >> 4}")
        if length != len(data):
            raise IkeDecodeError(reason=f"header length {length} != datagram length {len(data)}")
        payloads = decode_payloads(first, data[HEADER_LEN:])
        return cls(
            spi_i, spi_r, _enum(ExchangeType, exch), flags, msg_id, payloads, version & 0x0F, data
        )
