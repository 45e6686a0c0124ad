"""The lab CA's CMPv2 server logic (sans-IO): one PKIMessage in, one out.

It reuses the client's codec (supervisor/pki/cmp) for the server side and really issues:
ir/cr/kur certificates carry the requested public key, signed by the lab's issuing CA.
Requests must be protected: PBM with the lab's shared secret, or a signature by a
certificate this CA issued (cr, and kur, whose oldCertID must name the signer).
Behaviours a test or drill can set (poll N times, checkAfter, reject with a failInfo,
answer with an error, delay, be down) live in Behaviour; the HTTP process applies the
last two.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chassis.lab.authority import Authority
from supervisor.pki.cmp import codec, protection
from supervisor.pki.cmp.codec import (
    REPLY_TO,
    Header,
    PollRep,
    StatusInfo,
    accepted,
    cert_rep_body,
    encode_message,
    error_body,
    pki_conf_body,
    poll_rep_body,
    rejected,
    waiting,
)

MAX_TRANSACTIONS = 1000


@dataclass
class Behaviour:
    poll: int = 0  # answer "waiting" and make the client poll this many times
    check_after: int = 1
    reject: str | None = None  # a PKIFailureInfo name, e.g. "badRequest"
    error: bool = False  # answer every request with an error message
    delay: float = 0.0  # seconds before answering
    down: bool = False  # close connections without answering
    grant_implicit: bool = True
    # Spoil answers on purpose (client robustness drills): "garbage", "unprotected",
    # "wrong_tid", "wrong_nonce", "bad_protection", "replay" (an answer from an older exchange)
    tamper: str | None = None
    counts: dict = field(
        default_factory=lambda: {"issued": 0, "rejected": 0, "errors": 0, "confirmed": 0}
    )

    SETTABLE = (
        "poll",
        "check_after",
        "reject",
        "error",
        "delay",
        "down",
        "grant_implicit",
        "tamper",
    )
    TAMPERING = ("garbage", "unprotected", "wrong_tid", "wrong_nonce", "bad_protection", "replay")

    @classmethod
    def from_config(cls, conf: dict) -> Behaviour:
        b = cls()
        b.update(
            {k.replace("-", "_"): v for k, v in conf.items() if k.replace("-", "_") in cls.SETTABLE}
        )
        return b

    def update(self, changes: dict) -> None:
        for key, value in changes.items():
            if key not in self.SETTABLE:
                raise ValueError(f"unknown behaviour {key!r}")
            current = getattr(self, key)
            if key == "reject":
                if value is not None and value not in codec.FAIL_BITS:
                    raise ValueError(f"unknown failInfo {value!r}")
            elif key == "tamper":
                if value is not None and value not in self.TAMPERING:
                    raise ValueError(f"tamper must be one of {', '.join(self.TAMPERING)}")
            elif not isinstance(value, type(current)) and not (
                isinstance(current, float) and isinstance(value, int)
            ):
                raise ValueError(f"{key} must be {type(current).__name__}")
            setattr(self, key, value)

    def report(self, responder: Responder) -> dict:
        return {
            **{k: getattr(self, k) for k in self.SETTABLE},
            "counts": dict(self.counts),
            "pending": len(responder.pending),
        }


@dataclass
class _Pending:
    reply: str
    cert_der: bytes
    cert_req_id: int
    polls_left: int
    method: str
    delivered: bool = False  # the certificate went out in this answer


class Responder:
    def __init__(
        self,
        authority: Authority,
        secret: bytes,
        behaviour: Behaviour,
        now: Callable[[], datetime],
        rand: Callable[[int], bytes],
    ) -> None:
        self.ca, self.secret, self.behaviour, self.now, self.rand = (
            authority,
            secret,
            behaviour,
            now,
            rand,
        )
        self.root_der = authority.root.public_bytes(serialization.Encoding.DER)
        self.issuing_der = authority.issuing.public_bytes(serialization.Encoding.DER)
        self.pending: OrderedDict[bytes, _Pending] = OrderedDict()
        self.last_answer: bytes | None = None

    def handle(self, der: bytes) -> bytes:
        answer = self._handle(der)
        spoiled = self._tamper(answer)
        self.last_answer = answer
        return spoiled

    def _tamper(self, answer: bytes) -> bytes:
        how = self.behaviour.tamper
        if how is None:
            return answer
        if how == "garbage":
            return self.rand(64)
        if how == "replay":
            return self.last_answer or answer
        if how == "bad_protection":
            return answer[:-1] + bytes(
                [answer[-1] ^ 0x01]
            )  # the protection BIT STRING ends the message
        return answer  # the header-level spoils are applied in _answer

    def _handle(self, der: bytes) -> bytes:
        try:
            req = codec.decode(der)
        except codec.CmpError as exc:
            return self._unprotected_error(f"malformed request: {exc}")
        try:
            how = protection.verify(
                req,
                secret=self.secret,
                trust_anchor_der=self.root_der,
                now=self.now(),
                untrusted=[self.issuing_der],
            )
        except protection.ProtectionError as exc:
            self.behaviour.counts["errors"] += 1
            body = error_body(StatusInfo(2, (f"protection: {exc}",), ("badMessageCheck",)))
            # Answer the way the request was protected, so the client can verify the refusal.
            method = "pbm" if req.header.protection_alg == protection.ID_PBM else "signature"
            return self._answer(req, body, method, False)
        try:
            body = self._body(req, how)
        except _Refuse as refuse:
            self.behaviour.counts["errors"] += 1
            body = error_body(StatusInfo(2, (refuse.text,), (refuse.fail_info,)))
        tid = req.header.transaction_id
        entry = self.pending.get(tid)
        implicit = (
            self.behaviour.grant_implicit
            and req.header.implicit_confirm
            and entry is not None
            and entry.delivered
        )
        if implicit:  # no certConf will come: the certificate is final now
            del self.pending[tid]
            self.behaviour.counts["confirmed"] += 1
        return self._answer(req, body, how.method, implicit)

    def _body(self, req: codec.Message, how: protection.Verified) -> codec.Body:
        b, tid = self.behaviour, req.header.transaction_id
        kind = req.body_type
        if b.error:
            raise _Refuse("the lab CA was told to answer with an error", "systemUnavail")
        if kind in REPLY_TO and kind != "p10cr" and kind != "ccr":
            if len(req.requests) != 1:
                raise _Refuse("exactly one certificate request per message", "badRequest")
            r = req.requests[0]
            if not protection.verify_popo(r):
                raise _Refuse("proof of possession does not verify", "badPOP")
            if kind == "kur":
                self._check_kur(r, how)
            elif kind == "cr" and how.method != "signature":
                raise _Refuse("cr must be signed with a certificate of this CA", "badMessageCheck")
            reply = REPLY_TO[kind]
            if b.reject:
                self.behaviour.counts["rejected"] += 1
                return cert_rep_body(
                    reply, [rejected((b.reject,), ("rejected by the lab CA",), r.cert_req_id)]
                )
            cert_der = self._issue(r)
            entry = _Pending(reply, cert_der, r.cert_req_id, b.poll, how.method)
            self._remember(tid, entry)
            if b.poll:
                return cert_rep_body(reply, [waiting(r.cert_req_id)])
            return self._issued(entry, req)
        if kind == "pollReq":
            entry = self.pending.get(tid)
            if entry is None or entry.delivered:
                raise _Refuse("no request of this transaction is waiting", "badRequest")
            entry.polls_left -= 1
            if entry.polls_left > 0:
                return poll_rep_body(PollRep(entry.cert_req_id, self.behaviour.check_after))
            entry.polls_left = 0
            return self._issued(entry, req)
        if kind == "certConf":
            entry = self.pending.pop(tid, None)
            if entry is None:
                raise _Refuse("nothing to confirm in this transaction", "badRequest")
            for conf in req.confirmations:
                if conf.status is not None and conf.status.status == codec.REJECTION:
                    self.ca.revoke(
                        x509.load_der_x509_certificate(entry.cert_der).serial_number,
                        "cessationOfOperation",
                    )
                elif conf.cert_hash != codec.cert_hash(entry.cert_der):
                    raise _Refuse("certHash does not match the certificate issued", "badCertId")
                else:
                    self.behaviour.counts["confirmed"] += 1
            return pki_conf_body()
        raise _Refuse(f"the lab CA does not serve {kind}", "badRequest")

    def _check_kur(self, r: codec.CertRequest, how: protection.Verified) -> None:
        if how.method != "signature":
            raise _Refuse(
                "kur must be signed with the certificate being updated", "badMessageCheck"
            )
        signer = x509.load_der_x509_certificate(how.signer_der)
        if r.old_cert_id is None:
            raise _Refuse("kur without an oldCertID control", "badRequest")
        issuer, serial = r.old_cert_id
        if serial != signer.serial_number or (issuer is not None and issuer != signer.issuer):
            raise _Refuse("oldCertID does not name the signing certificate", "badCertId")
        if self.ca.status(serial) != "good":
            raise _Refuse(f"certificate {serial:x} is {self.ca.status(serial)} here", "certRevoked")

    def _issue(self, r: codec.CertRequest) -> bytes:
        if r.public_key_der is None or r.subject is None:
            raise _Refuse("the template lacks a subject or a public key", "badCertTemplate")
        public = serialization.load_der_public_key(r.public_key_der)
        cert = self.ca.issue(r.subject, public, list(r.sans))
        self.behaviour.counts["issued"] += 1
        return cert.public_bytes(serialization.Encoding.DER)

    def _issued(self, entry: _Pending, req: codec.Message) -> codec.Body:
        entry.delivered = True
        return cert_rep_body(
            entry.reply, [accepted(entry.cert_der, entry.cert_req_id)], [self.root_der]
        )

    def _remember(self, tid: bytes, entry: _Pending) -> None:
        self.pending[tid] = entry
        while len(self.pending) > MAX_TRANSACTIONS:
            self.pending.popitem(last=False)

    def _answer(self, req: codec.Message, body: codec.Body, method: str, implicit: bool) -> bytes:
        how = self.behaviour.tamper
        header = Header(
            transaction_id=self.rand(16) if how == "wrong_tid" else req.header.transaction_id,
            sender_nonce=self.rand(16),
            recip_nonce=self.rand(16) if how == "wrong_nonce" else req.header.sender_nonce,
            sender=self.ca.issuing.subject,
            recipient=req.header.sender,
            message_time=self.now(),
            general_info=(codec.IMPLICIT_CONFIRM,) if implicit else (),
        )
        if how == "unprotected":
            prot = None
        elif how == "bad_protection" and method == "pbm":
            prot = protection.PbmProtector(self.secret + b"-not", None, self.rand)
        elif how == "bad_protection":  # our certificate, somebody else's signature
            from cryptography.hazmat.primitives.asymmetric import ec

            prot = protection.SignatureProtector(
                ec.generate_private_key(ec.SECP256R1()), self.issuing_der, [self.root_der]
            )
        elif method == "pbm":
            prot = protection.PbmProtector(self.secret, None, self.rand)
        else:
            prot = protection.SignatureProtector(
                self.ca.issuing_key, self.issuing_der, [self.root_der]
            )
        return encode_message(header, body, prot, extra_certs=[self.issuing_der, self.root_der])

    def _unprotected_error(self, text: str) -> bytes:
        header = Header(
            sender=self.ca.issuing.subject, sender_nonce=self.rand(16), message_time=self.now()
        )
        return encode_message(header, error_body(StatusInfo(2, (text,), ("badDataFormat",))))


class _Refuse(Exception):
    def __init__(self, text: str, fail_info: str) -> None:
        super().__init__(text)
        self.text, self.fail_info = text, fail_info
