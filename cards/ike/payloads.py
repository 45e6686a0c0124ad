"""IKEv2 payload codecs (RFC 7296 section 3.2-3.16): one dataclass per payload.

Each has ``encode() -> body`` (without the 4-byte generic header) and
``decode(body)``; malformed input raises :class:`IkeDecodeError`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from .const import (
    ATTR_KEY_LENGTH,
    AuthMethod,
    CertEncoding,
    DhGroup,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)


class IkeDecodeError(Exception):
    """Malformed IKE input; ``notify`` (with ``data``) is what the engine answers."""

    def __init__(self, notify=NotifyType.INVALID_SYNTAX, reason: str = "", data: bytes = b""):
        super().__init__(f"{NotifyType(notify).name}: {reason}")
        self.notify = NotifyType(notify)
        self.reason = reason
        self.data = data


def _enum(cls, value: int):
    """Known numbers become enum members; unknown ones stay plain ints (a dict lookup: the
    enum call costs a microsecond, and a message decode makes dozens)."""
    return cls._value2member_map_.get(value, value)


_STRUCTS: dict[str, struct.Struct] = {}


def _unpack(fmt: str, buf: bytes, off: int = 0) -> tuple:
    st = _STRUCTS.get(fmt)
    if st is None:
        st = _STRUCTS[fmt] = struct.Struct("!" + fmt)
    try:
        return st.unpack_from(buf, off)
    except struct.error:
        raise IkeDecodeError(reason=f"truncated at offset {off}") from None


def _take(buf: bytes, off: int, n: int) -> bytes:
    if off + n > len(buf):
        raise IkeDecodeError(reason="field overruns its structure")
    return bytes(buf[off : off + n])


# ------------------------------------------------------------------ SA (3.3)
@dataclass(frozen=True)
class Transform:
    type: int
    id: int
    attributes: tuple[tuple[int, int | bytes], ...] = ()  # int value: TV form, bytes: TLV

    @property
    def key_length(self) -> int | None:
        return next((v for t, v in self.attributes if t == ATTR_KEY_LENGTH), None)

    def encode(self, last: bool) -> bytes:
        attrs = b"".join(
            struct.pack("!HH", 0x8000 | t, v)
            if isinstance(v, int)
            else struct.pack("!HH", t, len(v)) + v
            for t, v in self.attributes
        )
        head = struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), self.type, 0, self.id)
        return head + attrs

    @classmethod
    def decode(cls, buf: bytes) -> Transform:
        ttype, _, tid = _unpack("BBH", buf, 4)
        attrs, off = [], 8
        while off < len(buf):
            atype, val = _unpack("HH", buf, off)
            if atype & 0x8000:
                attrs.append((atype & 0x7FFF, val))
                off += 4
            else:
                attrs.append((atype, _take(buf, off + 4, val)))
                off += 4 + val
        return cls(_enum(TransformType, ttype), tid, tuple(attrs))


@dataclass(frozen=True)
class Proposal:
    num: int
    protocol: int
    spi: bytes = b""
    transforms: tuple[Transform, ...] = ()

    def encode(self, last: bool) -> bytes:
        n = len(self.transforms)
        body = self.spi + b"".join(t.encode(i == n - 1) for i, t in enumerate(self.transforms))
        head = struct.pack(
            "!BBHBBBB",
            0 if last else 2,
            0,
            8 + len(body),
            self.num,
            self.protocol,
            len(self.spi),
            n,
        )
        return head + body

    @classmethod
    def decode(cls, buf: bytes) -> Proposal:
        num, proto, spi_size, ntrans = _unpack("BBBB", buf, 4)
        spi = _take(buf, 8, spi_size)
        items = _substructures(buf, 8 + spi_size, 3, "transform") if ntrans else []
        if len(items) != ntrans or 8 + spi_size + sum(map(len, items)) != len(buf):
            raise IkeDecodeError(reason=f"proposal {num}: transform count/length mismatch")
        return cls(num, _enum(ProtocolId, proto), spi, tuple(Transform.decode(t) for t in items))


def _substructures(buf: bytes, off: int, more: int, what: str) -> list[bytes]:
    """Split proposals/transforms; each one's 'last' flag must agree with the data."""
    out = []
    while True:
        flag, _, length = _unpack("BBH", buf, off)
        if length < 8 or off + length > len(buf):
            raise IkeDecodeError(reason=f"bad {what} length {length}")
        out.append(bytes(buf[off : off + length]))
        off += length
        if flag == 0:
            break
        if flag != more or off >= len(buf):
            raise IkeDecodeError(reason=f"bad {what} last-substructure flag {flag}")
    if off != len(buf):
        raise IkeDecodeError(reason=f"trailing bytes after last {what}")
    return out


# ------------------------------------------------------------------ payloads
@dataclass
class SaPayload:
    proposals: list[Proposal] = field(default_factory=list)
    ptype: ClassVar[int] = PayloadType.SA

    def encode(self) -> bytes:
        n = len(self.proposals)
        return b"".join(p.encode(i == n - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def decode(cls, body: bytes) -> SaPayload:
        return cls([Proposal.decode(p) for p in _substructures(body, 0, 2, "proposal")])


@dataclass
class KePayload:
    group: int
    data: bytes
    ptype: ClassVar[int] = PayloadType.KE

    def encode(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def decode(cls, body: bytes) -> KePayload:
        (group, _) = _unpack("HH", body)
        return cls(_enum(DhGroup, group), body[4:])


@dataclass
class NoncePayload:
    data: bytes
    ptype: ClassVar[int] = PayloadType.NONCE

    def encode(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, body: bytes) -> NoncePayload:
        if not 16 <= len(body) <= 256:  # RFC 7296 3.9
            raise IkeDecodeError(reason=f"nonce length {len(body)} outside 16..256")
        return cls(bytes(body))


@dataclass
class NotifyPayload:
    type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""
    ptype: ClassVar[int] = PayloadType.NOTIFY

    def encode(self) -> bytes:
        return struct.pack("!BBH", self.protocol, len(self.spi), self.type) + self.spi + self.data

    @classmethod
    def decode(cls, body: bytes) -> NotifyPayload:
        proto, spi_size, ntype = _unpack("BBH", body)
        spi = _take(body, 4, spi_size)
        return cls(_enum(NotifyType, ntype), body[4 + spi_size :], _enum(ProtocolId, proto), spi)


@dataclass
class IdPayload:
    id_type: int
    data: bytes
    ptype: int = PayloadType.IDi  # IDi or IDr

    def encode(self) -> bytes:
        """Also IDx' of RFC 7296 2.15: the bytes the AUTH prf covers."""
        return struct.pack("!B3x", self.id_type) + self.data

    @classmethod
    def decode(cls, body: bytes, ptype: int = PayloadType.IDi) -> IdPayload:
        (id_type,) = _unpack("B3x", body)
        return cls(_enum(IdType, id_type), body[4:], ptype)


@dataclass
class CertPayload:
    encoding: int
    data: bytes
    ptype: ClassVar[int] = PayloadType.CERT

    def encode(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode(cls, body: bytes):
        (enc,) = _unpack("B", body)
        return cls(_enum(CertEncoding, enc), body[1:])


@dataclass
class CertReqPayload(CertPayload):
    """Data is the concatenation of 20-byte SHA-1 hashes of CA public keys."""

    ptype: ClassVar[int] = PayloadType.CERTREQ


@dataclass
class AuthPayload:
    method: int
    data: bytes
    ptype: ClassVar[int] = PayloadType.AUTH

    def encode(self) -> bytes:
        return struct.pack("!B3x", self.method) + self.data

    @classmethod
    def decode(cls, body: bytes) -> AuthPayload:
        (method,) = _unpack("B3x", body)
        return cls(_enum(AuthMethod, method), body[4:])


@dataclass(frozen=True, slots=True)  # each CHILD_SA keeps its own: no per-instance dict
class TrafficSelector:
    ts_type: int
    ip_proto: int
    start_port: int
    end_port: int
    start_addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    end_addr: ipaddress.IPv4Address | ipaddress.IPv6Address

    def encode(self) -> bytes:
        addrs = self.start_addr.packed + self.end_addr.packed
        return (
            struct.pack(
                "!BBHHH",
                self.ts_type,
                self.ip_proto,
                8 + len(addrs),
                self.start_port,
                self.end_port,
            )
            + addrs
        )


_TS_ADDR = {
    TsType.IPV4_ADDR_RANGE: (4, ipaddress.IPv4Address),
    TsType.IPV6_ADDR_RANGE: (16, ipaddress.IPv6Address),
}


@dataclass
class TsPayload:
    selectors: list[TrafficSelector] = field(default_factory=list)
    ptype: int = PayloadType.TSi  # TSi or TSr

    def encode(self) -> bytes:
        return struct.pack("!B3x", len(self.selectors)) + b"".join(
            s.encode() for s in self.selectors
        )

    @classmethod
    def decode(cls, body: bytes, ptype: int = PayloadType.TSi) -> TsPayload:
        (count,) = _unpack("B3x", body)
        sels, off = [], 4
        for _ in range(count):
            ts_type, proto, length, sport, eport = _unpack("BBHHH", body, off)
            if ts_type not in _TS_ADDR:
                raise IkeDecodeError(reason=f"unknown traffic selector type {ts_type}")
            size, addr = _TS_ADDR[ts_type]
            if length != 8 + 2 * size:
                raise IkeDecodeError(reason=f"traffic selector length {length} for type {ts_type}")
            raw = _take(body, off + 8, 2 * size)
            sels.append(
                TrafficSelector(
                    TsType(ts_type), proto, sport, eport, addr(raw[:size]), addr(raw[size:])
                )
            )
            off += length
        if off != len(body):
            raise IkeDecodeError(reason="trailing bytes after traffic selectors")
        return cls(sels, ptype)


@dataclass
class DeletePayload:
    protocol: int
    spis: list[bytes] = field(default_factory=list)  # empty for the IKE SA (protocol IKE)
    ptype: ClassVar[int] = PayloadType.DELETE

    def encode(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        return struct.pack("!BBH", self.protocol, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode(cls, body: bytes) -> DeletePayload:
        proto, size, count = _unpack("BBH", body)
        if len(body) != 4 + size * count or (count and not size):
            raise IkeDecodeError(reason="delete payload SPI size/count mismatch")
        spis = [bytes(body[4 + i * size : 4 + (i + 1) * size]) for i in range(count)]
        return cls(_enum(ProtocolId, proto), spis)


@dataclass
class VendorPayload:
    data: bytes
    ptype: ClassVar[int] = PayloadType.VENDOR

    def encode(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, body: bytes) -> VendorPayload:
        return cls(bytes(body))


@dataclass
class CpPayload:
    cfg_type: int
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    ptype: ClassVar[int] = PayloadType.CP

    def encode(self) -> bytes:
        attrs = b"".join(struct.pack("!HH", t & 0x7FFF, len(v)) + v for t, v in self.attributes)
        return struct.pack("!B3x", self.cfg_type) + attrs

    @classmethod
    def decode(cls, body: bytes) -> CpPayload:
        (cfg_type,) = _unpack("B3x", body)
        attrs, off = [], 4
        while off < len(body):
            atype, length = _unpack("HH", body, off)
            attrs.append((atype & 0x7FFF, _take(body, off + 4, length)))
            off += 4 + length
        return cls(cfg_type, attrs)


@dataclass
class EapPayload:
    data: bytes
    ptype: ClassVar[int] = PayloadType.EAP

    def encode(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, body: bytes) -> EapPayload:
        return cls(bytes(body))


@dataclass
class SkPayload:
    """Encrypted payload: IV | ciphertext | ICV, opaque here. Always the last payload."""

    first_inner: int  # carried in this payload's Next Payload field
    data: bytes
    ptype: ClassVar[int] = PayloadType.SK

    def encode(self) -> bytes:
        return self.data


@dataclass
class SkfPayload:
    """Encrypted fragment (RFC 7383); first_inner is nonzero only in fragment 1."""

    first_inner: int
    number: int
    total: int
    data: bytes
    ptype: ClassVar[int] = PayloadType.SKF

    def encode(self) -> bytes:
        return struct.pack("!HH", self.number, self.total) + self.data


@dataclass
class UnknownPayload:
    ptype: int
    body: bytes
    critical: bool = False

    def encode(self) -> bytes:
        return self.body


Payload = (
    SaPayload | KePayload | NoncePayload | NotifyPayload | IdPayload | CertPayload | AuthPayload
    | TsPayload | DeletePayload | VendorPayload | CpPayload | EapPayload | SkPayload | SkfPayload
    | UnknownPayload
)  # fmt: skip

_DECODERS = {
    PayloadType.SA: SaPayload.decode,
    PayloadType.KE: KePayload.decode,
    PayloadType.IDi: lambda b: IdPayload.decode(b, PayloadType.IDi),
    PayloadType.IDr: lambda b: IdPayload.decode(b, PayloadType.IDr),
    PayloadType.CERT: CertPayload.decode,
    PayloadType.CERTREQ: CertReqPayload.decode,
    PayloadType.AUTH: AuthPayload.decode,
    PayloadType.NONCE: NoncePayload.decode,
    PayloadType.NOTIFY: NotifyPayload.decode,
    PayloadType.DELETE: DeletePayload.decode,
    PayloadType.VENDOR: VendorPayload.decode,
    PayloadType.TSi: lambda b: TsPayload.decode(b, PayloadType.TSi),
    PayloadType.TSr: lambda b: TsPayload.decode(b, PayloadType.TSr),
    PayloadType.CP: CpPayload.decode,
    PayloadType.EAP: EapPayload.decode,
}
