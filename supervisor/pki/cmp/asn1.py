"""ASN.1 plumbing for CMP: the decoding schema, a tiny DER writer and name/time conversions.

Decoding uses pyasn1-alt-modules' RFC 9480 schema with one change: every place that holds a
certificate (caPubs, certOrEncCert, extraCerts) and the p10cr request are `ANY`, so a
certificate stays opaque DER for `cryptography` instead of being decoded field by field by
pyasn1 (which is slow and not needed). Encoding is done with a small DER writer: the parts
that come from `cryptography` (names, SPKIs, extensions, certificates) are already DER, and
pyasn1 objects with explicit/implicit tags are where the traps are.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.name import _ASN1Type
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import char, constraint, namedtype, tag, tagmap, univ, useful
from pyasn1_alt_modules import rfc4211, rfc9480


class CmpError(Exception):
    """Anything malformed in a CMP message; the message is one line naming the cause."""


def _ctx(n: int) -> tag.Tag:
    return tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, n)


_MAX = float("inf")


# --- decoding schema: RFC 9480 with opaque certificates --------------------------------------


class Opaque(univ.Any):
    """A tagged ANY kept as raw DER. A plain ANY's tag map has itself as the default type, so
    inside a CHOICE it would swallow every alternative it does not know (an error body decoded
    as p10cr); this one matches only its own tag."""

    @property
    def tagMap(self):
        return tagmap.TagMap({self.tagSet: self})


class CertOrEncCert(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("certificate", Opaque().subtype(explicitTag=_ctx(0))),
        namedtype.NamedType("encryptedCert", rfc4211.EncryptedKey().subtype(explicitTag=_ctx(1))),
    )


class CertifiedKeyPair(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("certOrEncCert", CertOrEncCert()),
        namedtype.OptionalNamedType(
            "privateKey", rfc4211.EncryptedKey().subtype(explicitTag=_ctx(0))
        ),
        namedtype.OptionalNamedType(
            "publicationInfo", rfc4211.PKIPublicationInfo().subtype(explicitTag=_ctx(1))
        ),
    )


class CertResponse(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("certReqId", univ.Integer()),
        namedtype.NamedType("status", rfc9480.PKIStatusInfo()),
        namedtype.OptionalNamedType("certifiedKeyPair", CertifiedKeyPair()),
        namedtype.OptionalNamedType("rspInfo", univ.OctetString()),
    )


def _cert_list(n: int) -> univ.SequenceOf:
    return univ.SequenceOf(componentType=univ.Any()).subtype(
        sizeSpec=constraint.ValueSizeConstraint(1, _MAX), explicitTag=_ctx(n)
    )


class CertRepMessage(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("caPubs", _cert_list(1)),
        namedtype.NamedType("response", univ.SequenceOf(componentType=CertResponse())),
    )


# Body alternatives that carry certificates or a CSR; every other one is RFC 9480's own.
_OPAQUE_BODIES = {
    "ip": CertRepMessage().subtype(explicitTag=_ctx(1)),
    "cp": CertRepMessage().subtype(explicitTag=_ctx(3)),
    "p10cr": Opaque().subtype(explicitTag=_ctx(4)),
    "kup": CertRepMessage().subtype(explicitTag=_ctx(8)),
    "ccp": CertRepMessage().subtype(explicitTag=_ctx(14)),
}


class PKIBody(univ.Choice):
    componentType = namedtype.NamedTypes(
        *(
            namedtype.NamedType(nt.name, _OPAQUE_BODIES.get(nt.name, nt.asn1Object))
            for nt in rfc9480.PKIBody.componentType.namedTypes
        )
    )


class PKIMessage(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("header", rfc9480.PKIHeader()),
        namedtype.NamedType("body", PKIBody()),
        namedtype.OptionalNamedType(
            "protection", rfc9480.PKIProtection().subtype(explicitTag=_ctx(0))
        ),
        namedtype.OptionalNamedType("extraCerts", _cert_list(1)),
    )


def der_decode(der: bytes, spec):
    """pyasn1 DER decode of exactly `der` (no trailing bytes); any failure is a CmpError."""
    try:
        value, rest = decoder.decode(der, asn1Spec=spec)
    except Exception as e:  # pyasn1 raises several unrelated types on hostile input
        raise CmpError(f"bad DER ({type(e).__name__}: {first_line(e)})") from None
    if rest:
        raise CmpError(f"{len(rest)} trailing bytes after the DER value")
    return value


def der_encode(value) -> bytes:
    return encoder.encode(value)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:120] if text else "no detail"


# --- a minimal DER reader: splitting the outer PKIMessage ------------------------------------


def read_tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag byte, content start, content end) of the TLV at `pos`; low tag numbers only."""
    if pos + 2 > len(buf):
        raise CmpError("truncated DER")
    tag_byte = buf[pos]
    if tag_byte & 0x1F == 0x1F:
        raise CmpError("unexpected high tag number")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(buf):
            raise CmpError("bad DER length")
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    if pos + length > len(buf):
        raise CmpError("truncated DER")
    return tag_byte, pos, pos + length


def children(buf: bytes) -> list[bytes]:
    """The raw TLVs inside the single SEQUENCE that is `buf`."""
    tag_byte, start, end = read_tlv(buf, 0)
    if tag_byte != 0x30 or end != len(buf):
        raise CmpError("not a single DER SEQUENCE")
    parts, pos = [], start
    while pos < end:
        _, _, stop = read_tlv(buf, pos)
        parts.append(buf[pos:stop])
        pos = stop
    return parts


# --- a minimal DER writer ---------------------------------------------------------------------


def tlv(tag_byte: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag_byte, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag_byte, 0x80 | len(size)]) + size + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def ctx(n: int, content: bytes) -> bytes:
    """[n] constructed: an explicit tag around `content` (or an implicit one on a SEQUENCE)."""
    return tlv(0xA0 | n, content)


def ctx_prim(n: int, content: bytes) -> bytes:
    """[n] primitive: an implicit tag on a primitive value's contents."""
    return tlv(0x80 | n, content)


def integer(n: int) -> bytes:
    return der_encode(univ.Integer(n))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def bit_string(data: bytes) -> bytes:
    return tlv(0x03, b"\x00" + data)


def named_bits(bits: set[int] | frozenset[int]) -> bytes:
    """A DER named-bit BIT STRING: trailing zero bits are dropped (X.690 11.2.2)."""
    if not bits:
        return tlv(0x03, b"\x00")
    top = max(bits)
    n = top // 8 + 1
    value = 0
    for b in bits:
        value |= 1 << (n * 8 - 1 - b)
    return tlv(0x03, bytes([7 - top % 8]) + value.to_bytes(n, "big"))


def oid(dotted: str) -> bytes:
    return der_encode(univ.ObjectIdentifier(dotted))


def null() -> bytes:
    return b"\x05\x00"


def utf8(text: str) -> bytes:
    return tlv(0x0C, text.encode())


def free_text(texts) -> bytes:
    return seq(*(utf8(t) for t in texts))


def generalized_time(when: datetime) -> bytes:
    """GeneralizedTime in UTC, whole seconds (RFC 5280 4.1.2.5.2 style, as OpenSSL sends)."""
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


def algorithm(dotted: str, params: bytes | None = None) -> bytes:
    return seq(oid(dotted), params or b"")


def directory_name(name: x509.Name | None) -> bytes:
    """GeneralName directoryName ([4], explicit in effect since Name is a CHOICE); None is the
    NULL-DN (an empty RDNSequence), which RFC 4210 uses for "sender/recipient unknown"."""
    return ctx(4, name.public_bytes() if name is not None else seq())


# --- decoded values -> plain Python -----------------------------------------------------------

# Directory string types -> cryptography's type marker, so a name keeps its string types.
_STRING_TAGS = {
    char.UTF8String.tagSet: _ASN1Type.UTF8String,
    char.PrintableString.tagSet: _ASN1Type.PrintableString,
    char.IA5String.tagSet: _ASN1Type.IA5String,
    char.TeletexString.tagSet: _ASN1Type.T61String,
    char.BMPString.tagSet: _ASN1Type.BMPString,
    char.UniversalString.tagSet: _ASN1Type.UniversalString,
}


def name_from_asn1(name) -> x509.Name:
    """A pyasn1 rfc5280.Name as an x509.Name (for comparisons and certificate building)."""
    rdns = []
    for rdn in name["rdnSequence"]:
        attrs = []
        for atv in rdn:
            value, rest = decoder.decode(bytes(atv["value"]))
            kind = _STRING_TAGS.get(value.tagSet)
            if rest or kind is None:
                raise CmpError(f"unsupported value in name attribute {atv['type']}")
            attrs.append(
                x509.NameAttribute(x509.ObjectIdentifier(str(atv["type"])), str(value), _type=kind)
            )
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def general_name_to_name(gn) -> x509.Name | None:
    """The directoryName of a header GeneralName; None when it is another kind of name."""
    if gn.getName() != "directoryName":
        return None
    return name_from_asn1(gn["directoryName"])


def same_name(a: x509.Name | None, b: x509.Name | None) -> bool:
    """Names equal the way RFC 5280 7.1 compares them, approximately: attribute by attribute,
    case-insensitive with internal whitespace collapsed, ignoring the string type."""
    if a is None or b is None:
        return False
    return _name_key(a) == _name_key(b)


def _name_key(name: x509.Name) -> list:
    return [
        sorted((a.oid.dotted_string, " ".join(str(a.value).split()).casefold()) for a in rdn)
        for rdn in name.rdns
    ]


def texts(free) -> tuple[str, ...]:
    return tuple(str(t) for t in free) if free.isValue else ()


def opt_bytes(value) -> bytes | None:
    return bytes(value) if value.isValue else None


def time_of(value) -> datetime | None:
    if not value.isValue:
        return None
    try:
        when = value.asDateTime
    except Exception:  # a syntactically odd time is not worth failing the message for
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def bits_of(value) -> frozenset[int]:
    return frozenset(i for i, bit in enumerate(value) if bit) if value.isValue else frozenset()


GENERALIZED_TIME = useful.GeneralizedTime
