"""Just enough DER reading to take fields out of a certificate byte-exactly.

cryptography exposes parsed objects, but two IKEv2 comparisons are defined on the bytes:
the CERTREQ hash covers the SubjectPublicKeyInfo as the CA encoded it, and an ID of type
DER_ASN1_DN arrives as a DER Name with no certificate around it.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.name import _ASN1Type

SEQUENCE, SET, OID = 0x30, 0x31, 0x06

# Directory string types a Name attribute may use, and how their content decodes.
_STRING_CODECS = {
    _ASN1Type.UTF8String.value: "utf-8",
    _ASN1Type.NumericString.value: "ascii",
    _ASN1Type.PrintableString.value: "ascii",
    _ASN1Type.T61String.value: "latin-1",  # as cryptography decodes it
    _ASN1Type.IA5String.value: "ascii",
    _ASN1Type.VisibleString.value: "ascii",
    _ASN1Type.UniversalString.value: "utf-32-be",
    _ASN1Type.BMPString.value: "utf-16-be",
}


def read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end) of the TLV at `pos`; ValueError when malformed.

    Single-byte tags only: nothing we read uses high tag numbers.
    """
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("DER length beyond the data")
    return tag, pos, pos + length


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, TLV start, content start, end) of each element between start and end."""
    out = []
    pos = start
    while pos < end:
        tag, content, nxt = read_tlv(data, pos)
        if nxt > end:
            raise ValueError("DER element overruns its parent")
        out.append((tag, pos, content, nxt))
        pos = nxt
    return out


def spki_der(tbs: bytes) -> bytes:
    """The SubjectPublicKeyInfo TLV of a DER TBSCertificate, byte for byte."""
    tag, start, end = read_tlv(tbs, 0)
    if tag != SEQUENCE:
        raise ValueError("TBSCertificate is not a SEQUENCE")
    fields = children(tbs, start, end)
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version, absent for v1
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(fields) < 6 or fields[5][0] != SEQUENCE:
        raise ValueError("TBSCertificate has no SubjectPublicKeyInfo")
    _, tlv_start, _, tlv_end = fields[5]
    return tbs[tlv_start:tlv_end]


def _oid(content: bytes) -> x509.ObjectIdentifier:
    arcs, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or content[-1] & 0x80:
        raise ValueError("bad OID")
    first = min(arcs[0] // 40, 2)
    dotted = [first, arcs[0] - 40 * first, *arcs[1:]]
    return x509.ObjectIdentifier(".".join(map(str, dotted)))


def parse_name(der: bytes) -> x509.Name:
    """A DER Name as an x509.Name; ValueError/TypeError when it is not one we can read."""
    tag, start, end = read_tlv(der, 0)
    if tag != SEQUENCE or end != len(der):
        raise ValueError("not a DER Name")
    rdns = []
    for rdn_tag, _, rdn_start, rdn_end in children(der, start, end):
        if rdn_tag != SET:
            raise ValueError("RDN is not a SET")
        attributes = []
        for atv_tag, _, atv_start, atv_end in children(der, rdn_start, rdn_end):
            parts = children(der, atv_start, atv_end) if atv_tag == SEQUENCE else []
            if len(parts) != 2 or parts[0][0] != OID:
                raise ValueError("bad AttributeTypeAndValue")
            (_, _, oid_start, oid_end), (value_tag, _, value_start, value_end) = parts
            codec = _STRING_CODECS.get(value_tag)
            if codec is None:
                raise ValueError(f"unsupported attribute value type {value_tag}")
            value = der[value_start:value_end].decode(codec)
            attributes.append(x509.NameAttribute(_oid(der[oid_start:oid_end]), value))
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)
