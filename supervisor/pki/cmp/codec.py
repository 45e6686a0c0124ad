"""CMPv2 messages (RFC 4210 / RFC 9480): `decode` into plain views, and builders for every
message a client or a CA sends.

A message is built from a `Header` (the same dataclass `decode` returns), a `Body` from one of
the `*_body` builders, and an optional protector (see `protection`), e.g. the lab CA's answer:

    body = cert_rep_body("ip", [accepted(cert_der)], ca_pubs=[root_der])
    der = encode_message(Header(transaction_id=req.header.transaction_id,
                                sender_nonce=rand(16), recip_nonce=req.header.sender_nonce,
                                sender=ca_name, recipient=req.header.sender,
                                message_time=now()), body, protector)

Certificates and CSRs are opaque DER for `cryptography`. Anything malformed is a `CmpError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1_alt_modules import rfc4211, rfc5280, rfc9480

from supervisor.pki.cmp import algs, asn1
from supervisor.pki.cmp.asn1 import CmpError

ID_IMPLICIT_CONFIRM = "1.3.6.1.5.5.7.4.13"
ID_OLD_CERT_ID = "1.3.6.1.5.5.7.5.1.5"
ID_PBM = "1.2.840.113533.7.66.13"
_ID_SAN = "2.5.29.17"

BODY_TAGS = {nt.name: i for i, nt in enumerate(rfc9480.PKIBody.componentType.namedTypes)}
CERT_REQUESTS = ("ir", "cr", "kur", "ccr", "krr")
CERT_REPLIES = ("ip", "cp", "kup", "ccp")
REPLY_TO = {"ir": "ip", "cr": "cp", "kur": "kup", "p10cr": "cp", "ccr": "ccp"}

ACCEPTED, GRANTED_WITH_MODS, REJECTION, WAITING = 0, 1, 2, 3
STATUS_NAMES = dict((v, k) for k, v in rfc9480.PKIStatus.namedValues.items())
FAIL_BITS = dict(rfc9480.PKIFailureInfo.namedValues.items())  # name -> bit
FAIL_NAMES = {v: k for k, v in FAIL_BITS.items()}


# --- views (also the builders' inputs) -------------------------------------------------------


@dataclass(frozen=True)
class StatusInfo:
    status: int
    strings: tuple[str, ...] = ()
    fail_info: tuple[str, ...] = ()  # PKIFailureInfo names, e.g. ("badRequest",)

    @property
    def name(self) -> str:
        return STATUS_NAMES.get(self.status, f"status {self.status}")


@dataclass(frozen=True)
class InfoValue:
    """InfoTypeAndValue (generalInfo, genm, genp); `value` is the DER of infoValue."""

    oid: str
    value: bytes | None = None


@dataclass(frozen=True)
class Header:
    """PKIHeader. As a builder input, `sender`/`recipient` None mean the NULL-DN and the
    protection fields come from the protector; decoded, a non-directoryName is None."""

    transaction_id: bytes | None = None
    sender_nonce: bytes | None = None
    recip_nonce: bytes | None = None
    sender: x509.Name | None = None
    recipient: x509.Name | None = None
    message_time: datetime | None = None
    sender_kid: bytes | None = None
    recip_kid: bytes | None = None
    free_text: tuple[str, ...] = ()
    general_info: tuple[InfoValue, ...] = ()
    pvno: int = 2
    protection_alg: str | None = None  # decoded only: the OID...
    protection_params: bytes | None = None  # ...and the DER of its parameters

    @property
    def implicit_confirm(self) -> bool:
        return any(i.oid == ID_IMPLICIT_CONFIRM for i in self.general_info)


@dataclass(frozen=True)
class CertRequest:
    """One CertReqMsg of ir/cr/kur (what a CA needs to issue)."""

    cert_req_id: int
    subject: x509.Name | None
    public_key_der: bytes | None  # SubjectPublicKeyInfo
    sans: tuple[x509.GeneralName, ...]
    extensions_der: bytes | None  # the template's Extensions, as a DER SEQUENCE
    old_cert_id: tuple[x509.Name | None, int] | None  # (issuer, serial) of the oldCertID control
    popo: str | None  # "signature", "raVerified", "keyEncipherment", "keyAgreement" or None
    popo_alg: str | None
    popo_signature: bytes | None
    popo_input_der: bytes | None  # POPOSigningKeyInput, when the signature covers it instead
    cert_req_der: bytes  # DER of certReq: what a POPO signature covers


@dataclass(frozen=True)
class CertResponse:
    cert_req_id: int
    status: StatusInfo
    cert_der: bytes | None = None
    encrypted_cert: bool = False  # the certificate came encrypted (not supported)


@dataclass(frozen=True)
class CertStatus:
    """One certConf entry."""

    cert_hash: bytes
    cert_req_id: int
    status: StatusInfo | None = None
    hash_alg: str | None = None


@dataclass(frozen=True)
class PollRep:
    cert_req_id: int
    check_after: int
    reason: tuple[str, ...] = ()


@dataclass(frozen=True)
class ErrorInfo:
    status: StatusInfo
    error_code: int | None = None
    details: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Message:
    body_type: str
    header: Header
    protection: bytes | None
    extra_certs: tuple[bytes, ...]
    protected_part: bytes  # DER of ProtectedPart over the header and body bytes as received
    raw: bytes
    requests: tuple[CertRequest, ...] = ()  # ir/cr/kur
    csr_der: bytes | None = None  # p10cr
    responses: tuple[CertResponse, ...] = ()  # ip/cp/kup
    ca_pubs: tuple[bytes, ...] = ()
    confirmations: tuple[CertStatus, ...] = ()  # certConf
    poll_req: tuple[int, ...] = ()
    poll_rep: tuple[PollRep, ...] = ()
    error: ErrorInfo | None = None
    info: tuple[InfoValue, ...] = ()  # genm/genp
    asn1: object = field(default=None, repr=False)  # the pyasn1 PKIMessage, for what is not viewed


# --- decoding --------------------------------------------------------------------------------


def decode(der: bytes) -> Message:
    """A PKIMessage; CmpError names what is wrong with it."""
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise CmpError("a PKIMessage must be bytes")
    der = bytes(der)
    parts = asn1.children(der)
    if len(parts) < 2:
        raise CmpError("PKIMessage lacks a header or a body")
    msg = asn1.der_decode(der, asn1.PKIMessage())
    try:
        return _view(der, msg, parts)
    except CmpError:
        raise
    except Exception as e:  # pyasn1 and cryptography reject hostile values in many ways
        raise CmpError(f"bad field value ({type(e).__name__}: {asn1.first_line(e)})") from None


def encode(message: Message) -> bytes:
    """DER of a decoded message (round trip of `decode`)."""
    return asn1.der_encode(message.asn1)


def _view(der: bytes, msg, parts: list[bytes]) -> Message:
    body = msg["body"]
    kind = body.getName()
    content = body[kind]
    extra = msg["extraCerts"]
    common = dict(
        body_type=kind,
        header=_header(msg["header"]),
        protection=msg["protection"].asOctets() if msg["protection"].isValue else None,
        extra_certs=tuple(bytes(c) for c in extra) if extra.isValue else (),
        protected_part=asn1.seq(parts[0], parts[1]),
        raw=der,
        asn1=msg,
    )
    if kind in CERT_REQUESTS:
        raw_msgs = asn1.children(_explicit_content(parts[1]))
        reqs = tuple(_request(m, raw) for m, raw in zip(content, raw_msgs, strict=True))
        return Message(**common, requests=reqs)
    if kind == "p10cr":
        return Message(**common, csr_der=bytes(content))
    if kind in CERT_REPLIES:
        pubs = content["caPubs"]
        return Message(
            **common,
            responses=tuple(_response(r) for r in content["response"]),
            ca_pubs=tuple(bytes(c) for c in pubs) if pubs.isValue else (),
        )
    if kind == "certConf":
        return Message(**common, confirmations=tuple(_cert_status(s) for s in content))
    if kind == "pollReq":
        return Message(**common, poll_req=tuple(int(p["certReqId"]) for p in content))
    if kind == "pollRep":
        reps = tuple(
            PollRep(int(p["certReqId"]), int(p["checkAfter"]), asn1.texts(p["reason"]))
            for p in content
        )
        return Message(**common, poll_rep=reps)
    if kind == "error":
        code = content["errorCode"]
        err = ErrorInfo(
            _status(content["pKIStatusInfo"]),
            int(code) if code.isValue else None,
            asn1.texts(content["errorDetails"]),
        )
        return Message(**common, error=err)
    if kind in ("genm", "genp"):
        return Message(**common, info=tuple(_info(i) for i in content))
    return Message(**common)  # rr, rp, pkiconf, announcements...: header and asn1 only


def _explicit_content(tagged: bytes) -> bytes:
    _, start, end = asn1.read_tlv(tagged, 0)
    return tagged[start:end]


def _header(h) -> Header:
    alg = h["protectionAlg"]
    params = alg["parameters"] if alg.isValue else None
    return Header(
        pvno=int(h["pvno"]),
        sender=asn1.general_name_to_name(h["sender"]),
        recipient=asn1.general_name_to_name(h["recipient"]),
        message_time=asn1.time_of(h["messageTime"]),
        protection_alg=str(alg["algorithm"]) if alg.isValue else None,
        protection_params=bytes(params) if params is not None and params.isValue else None,
        sender_kid=asn1.opt_bytes(h["senderKID"]),
        recip_kid=asn1.opt_bytes(h["recipKID"]),
        transaction_id=asn1.opt_bytes(h["transactionID"]),
        sender_nonce=asn1.opt_bytes(h["senderNonce"]),
        recip_nonce=asn1.opt_bytes(h["recipNonce"]),
        free_text=asn1.texts(h["freeText"]),
        general_info=tuple(_info(i) for i in h["generalInfo"]) if h["generalInfo"].isValue else (),
    )


def _info(itv) -> InfoValue:
    value = itv["infoValue"]
    return InfoValue(str(itv["infoType"]), bytes(value) if value.isValue else None)


def _status(si) -> StatusInfo:
    return StatusInfo(
        status=int(si["status"]),
        strings=asn1.texts(si["statusString"]),
        fail_info=tuple(FAIL_NAMES.get(b, f"bit{b}") for b in sorted(asn1.bits_of(si["failInfo"]))),
    )


def _response(r) -> CertResponse:
    ckp = r["certifiedKeyPair"]
    cert, encrypted = None, False
    if ckp.isValue:
        choice = ckp["certOrEncCert"]
        if choice.getName() == "certificate":
            cert = bytes(choice["certificate"])
        else:
            encrypted = True
    return CertResponse(int(r["certReqId"]), _status(r["status"]), cert, encrypted)


def _cert_status(s) -> CertStatus:
    return CertStatus(
        cert_hash=bytes(s["certHash"]),
        cert_req_id=int(s["certReqId"]),
        status=_status(s["statusInfo"]) if s["statusInfo"].isValue else None,
        hash_alg=str(s["hashAlg"]["algorithm"]) if s["hashAlg"].isValue else None,
    )


def _retag_sequence(der: bytes) -> bytes:
    """An IMPLICIT [n] SEQUENCE re-encoded with the universal SEQUENCE tag."""
    return b"\x30" + der[1:]


def _request(m, raw: bytes) -> CertRequest:
    req = m["certReq"]
    tmpl = req["certTemplate"]
    sans: list[x509.GeneralName] = []
    exts = None
    if tmpl["extensions"].isValue:
        exts = _retag_sequence(asn1.der_encode(tmpl["extensions"]))
        for ext in tmpl["extensions"]:
            if str(ext["extnID"]) == _ID_SAN:
                names = asn1.der_decode(bytes(ext["extnValue"]), rfc5280.SubjectAltName())
                sans.extend(n for n in map(_general_name, names) if n is not None)
    old = None
    for ctl in req["controls"] if req["controls"].isValue else ():
        if str(ctl["type"]) == ID_OLD_CERT_ID:
            cid = asn1.der_decode(bytes(ctl["value"]), rfc4211.CertId())
            old = (asn1.general_name_to_name(cid["issuer"]), int(cid["serialNumber"]))
    popo = m["popo"]
    kind = popo.getName() if popo.isValue else None
    alg = sig = pin = None
    if kind == "signature":
        sk = popo["signature"]
        alg = str(sk["algorithmIdentifier"]["algorithm"])
        sig = sk["signature"].asOctets()
        if sk["poposkInput"].isValue:
            pin = _retag_sequence(asn1.der_encode(sk["poposkInput"]))
    return CertRequest(
        cert_req_id=int(req["certReqId"]),
        subject=asn1.name_from_asn1(tmpl["subject"]) if tmpl["subject"].isValue else None,
        public_key_der=(
            _retag_sequence(asn1.der_encode(tmpl["publicKey"]))
            if tmpl["publicKey"].isValue
            else None
        ),
        sans=tuple(sans),
        extensions_der=exts,
        old_cert_id=old,
        popo=kind,
        popo_alg=alg,
        popo_signature=sig,
        popo_input_der=pin,
        cert_req_der=asn1.children(raw)[0],  # as received: a signature covers these bytes
    )


def _general_name(gn) -> x509.GeneralName | None:
    kind = gn.getName()
    if kind == "dNSName":
        return x509.DNSName(str(gn[kind]))
    if kind == "rfc822Name":
        return x509.RFC822Name(str(gn[kind]))
    if kind == "uniformResourceIdentifier":
        return x509.UniformResourceIdentifier(str(gn[kind]))
    if kind == "iPAddress":
        return x509.IPAddress(ipaddress.ip_address(bytes(gn[kind])))
    if kind == "directoryName":
        return x509.DirectoryName(asn1.name_from_asn1(gn[kind]))
    return None  # otherName etc.: a CA can still read them from extensions_der


# --- building --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    type: str
    der: bytes  # the PKIBody alternative, with its [n] tag

    @classmethod
    def of(cls, kind: str, content: bytes) -> Body:
        return cls(kind, asn1.ctx(BODY_TAGS[kind], content))


def encode_header(header: Header, protection_alg: bytes | None = None) -> bytes:
    h = header
    parts = [
        asn1.integer(h.pvno),
        asn1.directory_name(h.sender),
        asn1.directory_name(h.recipient),
    ]
    optional = [
        (0, asn1.generalized_time(h.message_time) if h.message_time else None),
        (1, protection_alg),
        (2, asn1.octets(h.sender_kid) if h.sender_kid is not None else None),
        (3, asn1.octets(h.recip_kid) if h.recip_kid is not None else None),
        (4, asn1.octets(h.transaction_id) if h.transaction_id is not None else None),
        (5, asn1.octets(h.sender_nonce) if h.sender_nonce is not None else None),
        (6, asn1.octets(h.recip_nonce) if h.recip_nonce is not None else None),
        (7, asn1.free_text(h.free_text) if h.free_text else None),
        (8, asn1.seq(*map(_encode_info, h.general_info)) if h.general_info else None),
    ]
    parts += [asn1.ctx(n, v) for n, v in optional if v is not None]
    return asn1.seq(*parts)


def _encode_info(info: InfoValue) -> bytes:
    return asn1.seq(asn1.oid(info.oid), info.value or b"")


IMPLICIT_CONFIRM = InfoValue(ID_IMPLICIT_CONFIRM, asn1.null())


def encode_message(
    header: Header, body: Body, protector=None, extra_certs: Sequence[bytes] = ()
) -> bytes:
    """The PKIMessage DER. `protector` (from `protection`) sets protectionAlg and senderKID,
    protects DER(ProtectedPart) and puts its certificates first in extraCerts."""
    certs = list(extra_certs)
    alg = None
    if protector is not None:
        alg, compute = protector.prepare()
        if protector.sender_kid is not None:
            header = replace(header, sender_kid=protector.sender_kid)
        certs = [*protector.extra_certs, *(c for c in certs if c not in protector.extra_certs)]
    head = encode_header(header, alg)
    parts = [head, body.der]
    if protector is not None:
        parts.append(asn1.ctx(0, asn1.bit_string(compute(asn1.seq(head, body.der)))))
    if certs:
        parts.append(asn1.ctx(1, asn1.seq(*certs)))
    return asn1.seq(*parts)


def status_info(status: StatusInfo) -> bytes:
    parts = [asn1.integer(status.status)]
    if status.strings:
        parts.append(asn1.free_text(status.strings))
    if status.fail_info:
        parts.append(asn1.named_bits(frozenset(FAIL_BITS[n] for n in status.fail_info)))
    return asn1.seq(*parts)


# client side ---


def cert_req_body(
    kind: str,
    new_key,
    *,
    subject: x509.Name | None = None,
    sans: Iterable[x509.GeneralName] = (),
    old_cert: x509.Certificate | None = None,
    cert_req_id: int = 0,
    hash_alg: str = "sha256",
) -> Body:
    """ir/cr/kur with one request for `new_key` (a private key; it signs the POPO). A kur
    names the certificate it updates in an oldCertID control and, like OpenSSL, takes issuer
    and subject from it unless a subject is given."""
    if kind not in CERT_REQUESTS:
        raise ValueError(f"not a certificate request body: {kind}")
    sans = list(sans)
    if old_cert is not None and subject is None:
        subject = old_cert.subject
    spki = new_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tmpl = []
    if old_cert is not None:
        tmpl.append(asn1.ctx(3, old_cert.issuer.public_bytes()))
    if subject is not None:
        tmpl.append(asn1.ctx(5, subject.public_bytes()))
    tmpl.append(b"\xa6" + spki[1:])  # [6] IMPLICIT SubjectPublicKeyInfo
    if sans:
        # RFC 5280 4.2.1.6: the SAN is critical when the subject is empty.
        critical = subject is None or len(subject) == 0
        value = x509.SubjectAlternativeName(sans).public_bytes()
        ext = asn1.seq(asn1.oid(_ID_SAN), b"\x01\x01\xff" if critical else b"", asn1.octets(value))
        tmpl.append(b"\xa9" + asn1.seq(ext)[1:])  # [9] IMPLICIT Extensions
    req = [asn1.integer(cert_req_id), asn1.seq(*tmpl)]
    if old_cert is not None:
        cert_id = asn1.seq(
            asn1.directory_name(old_cert.issuer), asn1.integer(old_cert.serial_number)
        )
        req.append(asn1.seq(asn1.seq(asn1.oid(ID_OLD_CERT_ID), cert_id)))
    cert_req = asn1.seq(*req)
    alg, sig = algs.sign(new_key, cert_req, hash_alg)
    popo = asn1.ctx(1, alg + asn1.bit_string(sig))  # signature [1] IMPLICIT POPOSigningKey
    return Body.of(kind, asn1.seq(asn1.seq(cert_req, popo)))


def p10cr_body(csr_der: bytes) -> Body:
    return Body.of("p10cr", csr_der)


def cert_hash(cert_der: bytes, hash_alg: str | None = None) -> bytes:
    """certConf certHash: by default with the certificate's signature digest (RFC 4210);
    `hash_alg` (an OID, RFC 9480 hashAlg) overrides it."""
    if hash_alg is not None:
        if hash_alg not in algs.HASH_OIDS:
            raise CmpError(f"unsupported certHash algorithm {hash_alg}")
        return algs.digest(algs.HASH_OIDS[hash_alg], cert_der)
    cert = x509.load_der_x509_certificate(cert_der)
    return algs.digest(algs.cert_hash_name(cert), cert_der)


def cert_conf_body(
    cert_der: bytes | None, cert_req_id: int = 0, status: StatusInfo | None = None
) -> Body:
    """certConf for one certificate; `status` None confirms it (RFC 4210: absent statusInfo
    means accepted, but OpenSSL always sends it, and so do we). No certificate: an empty
    certConf (every certificate rejected)."""
    if cert_der is None:
        return Body.of("certConf", asn1.seq())
    entry = asn1.seq(
        asn1.octets(cert_hash(cert_der)),
        asn1.integer(cert_req_id),
        status_info(status or StatusInfo(ACCEPTED)),
    )
    return Body.of("certConf", asn1.seq(entry))


def poll_req_body(*cert_req_ids: int) -> Body:
    ids = cert_req_ids or (0,)
    return Body.of("pollReq", asn1.seq(*(asn1.seq(asn1.integer(i)) for i in ids)))


def genm_body(*infos: InfoValue) -> Body:
    return Body.of("genm", asn1.seq(*map(_encode_info, infos)))


def error_body(
    status: StatusInfo, error_code: int | None = None, details: Sequence[str] = ()
) -> Body:
    parts = [status_info(status)]
    if error_code is not None:
        parts.append(asn1.integer(error_code))
    if details:
        parts.append(asn1.free_text(details))
    return Body.of("error", asn1.seq(*parts))


# server side ---


def accepted(cert_der: bytes, cert_req_id: int = 0, *, with_mods: bool = False) -> CertResponse:
    return CertResponse(
        cert_req_id, StatusInfo(GRANTED_WITH_MODS if with_mods else ACCEPTED), cert_der
    )


def waiting(cert_req_id: int = 0) -> CertResponse:
    return CertResponse(cert_req_id, StatusInfo(WAITING))


def rejected(
    fail_info: Sequence[str] = ("badRequest",), strings: Sequence[str] = (), cert_req_id: int = 0
) -> CertResponse:
    return CertResponse(cert_req_id, StatusInfo(REJECTION, tuple(strings), tuple(fail_info)))


def cert_rep_body(
    kind: str, responses: Sequence[CertResponse], ca_pubs: Sequence[bytes] = ()
) -> Body:
    """ip/cp/kup: each response carries its status and, when issued, the certificate."""
    if kind not in CERT_REPLIES:
        raise ValueError(f"not a certificate reply body: {kind}")
    items = []
    for r in responses:
        parts = [asn1.integer(r.cert_req_id), status_info(r.status)]
        if r.cert_der is not None:
            parts.append(asn1.seq(asn1.ctx(0, r.cert_der)))  # CertifiedKeyPair{certificate [0]}
        items.append(asn1.seq(*parts))
    pubs = asn1.ctx(1, asn1.seq(*ca_pubs)) if ca_pubs else b""
    return Body.of(kind, asn1.seq(pubs, asn1.seq(*items)))


def poll_rep_body(*entries: PollRep) -> Body:
    items = []
    for e in entries:
        parts = [asn1.integer(e.cert_req_id), asn1.integer(e.check_after)]
        if e.reason:
            parts.append(asn1.free_text(e.reason))
        items.append(asn1.seq(*parts))
    return Body.of("pollRep", asn1.seq(*items))


def pki_conf_body() -> Body:
    return Body.of("pkiconf", asn1.null())


def genp_body(*infos: InfoValue) -> Body:
    return Body.of("genp", asn1.seq(*map(_encode_info, infos)))


__all__ = [
    "ACCEPTED",
    "CmpError",
    "GRANTED_WITH_MODS",
    "REJECTION",
    "WAITING",
    "Body",
    "CertRequest",
    "CertResponse",
    "CertStatus",
    "ErrorInfo",
    "Header",
    "IMPLICIT_CONFIRM",
    "InfoValue",
    "Message",
    "PollRep",
    "StatusInfo",
    "accepted",
    "cert_conf_body",
    "cert_hash",
    "cert_rep_body",
    "cert_req_body",
    "decode",
    "encode",
    "encode_header",
    "encode_message",
    "error_body",
    "genm_body",
    "genp_body",
    "p10cr_body",
    "pki_conf_body",
    "poll_rep_body",
    "poll_req_body",
    "rejected",
    "status_info",
    "waiting",
]
