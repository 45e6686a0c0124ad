"""The client side of one CMP enrollment transaction (ir, cr or kur), sans-IO.

The runner POSTs what `start()`/`poll()` return and the `Send` steps carry, and feeds every
HTTP response body to `receive()`, which never raises: anything wrong becomes `Failed`.

    Send(der)            POST it and feed the answer back (certConf)
    Wait(check_after)    the CA is still working: call poll() after that many seconds
    Done(...)            the certificate is issued and confirmed
    Failed(reason, ...)  the transaction is over; with `confirm`, POST that certConf (our
                         rejection of the certificate) first and feed the answer back

Every response is checked before anything in it is used: protection (PBM with our secret, or
a signature chaining to the configured ca-root), sender, transactionID, recipNonce (= the
senderNonce we sent last, so an old or replayed response fails) and certReqId. The sender of a
signed response must be the configured recipient, if any (and is always the signer's subject);
a PBM-protected response is authenticated by the secret, and its sender is not compared, since
OpenSSL's mock answers as its -srv_cert subject whatever recipient was named. messageTime is
not checked: the lab clock can be warped, and OpenSSL's mock does not check it either. An
issued certificate must carry our new public key and, when a ca-root is configured, chain to
it; otherwise we reject it with a certConf.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from supervisor.pki.cmp import codec, protection
from supervisor.pki.cmp.asn1 import CmpError, first_line, same_name
from supervisor.pki.cmp.codec import (
    ACCEPTED,
    GRANTED_WITH_MODS,
    IMPLICIT_CONFIRM,
    REJECTION,
    REPLY_TO,
    WAITING,
    Header,
    Message,
    StatusInfo,
)
from supervisor.pki.credentials import load_private_key
from supervisor.pki.keygen import parse_subject

DEFAULT_WAIT = 1.0  # seconds before the first pollReq after an ip/cp/kup "waiting"
MAX_WAIT = 86_400.0  # a checkAfter beyond a day is taken as a day


# --- configuration (the public API the supervisor runner uses) --------------------------------


@dataclass(frozen=True)
class Protection:
    """How our requests are protected. With cert_der and key_pem, by signature (they win over
    a secret); otherwise PBM with `secret` and senderKID `reference`."""

    secret: bytes | None = None  # PBM shared secret (StarOS `ca-psk`)
    reference: bytes | None = None  # senderKID for PBM
    cert_der: bytes | None = None  # signature protection: our current certificate...
    key_pem: bytes | None = None  # ...and its key
    extra_certs: tuple[bytes, ...] = ()  # e.g. vendor chain (3GPP TS 33.310 initial enrolment)
    hash_alg: str = "sha256"  # "sha1" only when configured


@dataclass(frozen=True)
class Enrollment:
    kind: str  # "ir" | "cr" | "kur"
    new_key_pem: bytes  # the key pair being certified (signs the POPO)
    subject: str | None = None  # "/C=US/O=Lab/CN=segw" or "CN=segw, O=Lab"
    sans: tuple[tuple[str, str], ...] = ()  # ("fqdn", ...), ("ip", ...), ("rfc822-addr", ...)
    old_cert_der: bytes | None = None  # kur: the certificate being updated
    recipient: str | None = None  # CA subject for the header recipient (None -> NULL-DN)
    sender: str | None = None  # header sender (default: see Transaction)
    ca_root_der: bytes | None = None  # trust anchor; the only root accepted from caPubs
    implicit_confirm: bool = True


# --- steps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    der: bytes


@dataclass(frozen=True)
class Wait:
    check_after: float


@dataclass(frozen=True)
class Done:
    cert_der: bytes
    chain: tuple[bytes, ...]  # issuers of cert_der from extraCerts/caPubs, nearest first
    ca_pubs: tuple[bytes, ...]  # caPubs (only the configured ca-root, when there is one)
    confirmed: bool  # True: certConf/pkiConf done; False: the CA granted implicitConfirm


@dataclass(frozen=True)
class Failed:
    reason: str
    fail_info: tuple[str, ...] = ()
    status_strings: tuple[str, ...] = ()
    confirm: bytes | None = None  # certConf rejecting the certificate: POST it, feed the answer
    error_code: int | None = None  # from an error message body
    error_details: tuple[str, ...] = ()


Step = Send | Wait | Done | Failed


# --- the state machine -----------------------------------------------------------------------


class State(enum.Enum):
    """Named after what the transaction waits for."""

    START = "start"  # the runner to call start()
    CERT = "cert"  # ip/cp/kup for our request
    POLL_TIME = "poll-time"  # the runner to call poll() (after a Wait)
    POLL_REP = "poll-rep"  # pollRep or ip/cp/kup for our pollReq
    PKI_CONF = "pki-conf"  # pkiConf for our certConf accepting the certificate
    REJECT_ACK = "reject-ack"  # pkiConf for our certConf rejecting it
    DONE = "done"
    FAILED = "failed"


# (state, event) -> next state; "fail" leads from any state to FAILED.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.START, "start"): State.CERT,
    (State.CERT, "issued"): State.PKI_CONF,
    (State.CERT, "issued-implicit"): State.DONE,
    (State.CERT, "waiting"): State.POLL_TIME,
    (State.CERT, "reject-cert"): State.REJECT_ACK,
    (State.POLL_TIME, "poll"): State.POLL_REP,
    (State.POLL_REP, "waiting"): State.POLL_TIME,
    (State.POLL_REP, "issued"): State.PKI_CONF,
    (State.POLL_REP, "issued-implicit"): State.DONE,
    (State.POLL_REP, "reject-cert"): State.REJECT_ACK,
    (State.PKI_CONF, "pkiconf"): State.DONE,
    (State.REJECT_ACK, "pkiconf"): State.FAILED,
}


class _Reject(Exception):
    """A response that fails a check; carries the Failed to return."""

    def __init__(self, failed: Failed) -> None:
        self.failed = failed


def _san(id_type: str, value: str) -> x509.GeneralName:
    if id_type == "fqdn":
        return x509.DNSName(value)
    if id_type == "ip":
        return x509.IPAddress(ipaddress.ip_address(value))
    if id_type == "rfc822-addr":
        return x509.RFC822Name(value)
    raise ValueError(f"unknown id type {id_type!r}")


def _cert_spki(cert: x509.Certificate) -> bytes | None:
    try:
        return _spki(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):  # a key type we cannot load is not ours
        return None


def _spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Transaction:
    """One enrollment. `rand(n) -> bytes` gives transactionID, nonces and PBM salts;
    `now() -> datetime` (UTC) gives messageTime and the time for certificate validity."""

    def __init__(
        self,
        enrollment: Enrollment,
        protection: Protection,
        *,
        rand: Callable[[int], bytes],
        now: Callable[[], datetime],
    ) -> None:
        e, p = enrollment, protection
        if e.kind not in ("ir", "cr", "kur"):
            raise ValueError(f"unsupported enrollment kind {e.kind!r} (ir, cr or kur)")
        if e.kind == "kur" and e.old_cert_der is None:
            raise ValueError("kur needs the certificate being updated (old_cert_der)")
        self.enrollment, self.protection = e, p
        self._rand, self._now = rand, now
        self._new_key = load_private_key(e.new_key_pem)
        self._old_cert = x509.load_der_x509_certificate(e.old_cert_der) if e.old_cert_der else None
        self._subject = parse_subject(e.subject) if e.subject else None
        self._sans = tuple(_san(t, v) for t, v in e.sans)
        self._recipient = parse_subject(e.recipient) if e.recipient else None
        self._protector = self._make_protector()
        self._sender = self._default_sender()
        self.state = State.START
        self.transaction_id = rand(16)
        self.cert_req_id = 0
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self._last_nonce: bytes | None = None  # our last senderNonce: the recipNonce we expect
        self._peer_nonce: bytes | None = None  # the CA's last senderNonce: our next recipNonce
        self._done: Done | None = None  # issued, awaiting pkiConf
        self._failure: Failed | None = None  # final failure, repeated on later calls

    def _make_protector(self):
        p = self.protection
        if p.cert_der is not None and p.key_pem is not None:
            key = load_private_key(p.key_pem)
            return protection.SignatureProtector(key, p.cert_der, p.extra_certs, p.hash_alg)
        if p.secret is not None:
            return protection.PbmProtector(p.secret, p.reference, self._rand)
        raise ValueError("protection needs a shared secret or a certificate and key")

    def _default_sender(self) -> x509.Name | None:
        """Explicit sender; else the signer's subject (RFC 4210 5.1.1: it names the
        protecting certificate); else our subject, the old certificate's, or the NULL-DN."""
        if self.enrollment.sender:
            return parse_subject(self.enrollment.sender)
        if self.protection.cert_der is not None and self.protection.key_pem is not None:
            return x509.load_der_x509_certificate(self.protection.cert_der).subject
        if self._subject is not None:
            return self._subject
        return self._old_cert.subject if self._old_cert is not None else None

    # --- requests ---

    def start(self) -> bytes:
        """The first request (ir/cr/kur)."""
        self._expect(State.START)
        body = codec.cert_req_body(
            self.enrollment.kind,
            self._new_key,
            subject=self._subject,
            sans=self._sans,
            old_cert=self._old_cert,
            cert_req_id=self.cert_req_id,
            hash_alg=self.protection.hash_alg,
        )
        der = self._message(body, implicit=self.enrollment.implicit_confirm)
        self._go("start")
        return der

    def poll(self) -> bytes:
        """The pollReq to POST once a Wait step's time has passed."""
        self._expect(State.POLL_TIME)
        der = self._message(codec.poll_req_body(self.cert_req_id))
        self._go("poll")
        return der

    def _expect(self, state: State) -> None:
        if self.state is not state:
            raise RuntimeError(f"not allowed in state {self.state.value}")

    def _message(self, body: codec.Body, implicit: bool = False) -> bytes:
        self._last_nonce = self._rand(16)
        header = Header(
            transaction_id=self.transaction_id,
            sender_nonce=self._last_nonce,
            recip_nonce=self._peer_nonce,
            sender=self._sender,
            recipient=self._recipient,
            message_time=self._utcnow(),
            general_info=(IMPLICIT_CONFIRM,) if implicit else (),
        )
        der = codec.encode_message(header, body, self._protector, self.protection.extra_certs)
        self.sent[body.type] += 1
        return der

    def _utcnow(self) -> datetime:
        now = self._now()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def _go(self, event: str) -> None:
        self.state = State.FAILED if event == "fail" else TRANSITIONS[(self.state, event)]

    # --- responses ---

    def receive(self, der: bytes) -> Step:
        """The next step after the CA's answer `der`. Never raises."""
        if self.state is State.REJECT_ACK:
            # We rejected the certificate: whatever the CA says now, the enrollment failed.
            self._count(der)
            self._go("pkiconf")
            return self._failure
        if self.state is State.FAILED and self._failure is not None:
            return self._failure
        if self.state not in (State.CERT, State.POLL_REP, State.PKI_CONF):
            return Failed(f"no response expected in state {self.state.value}")
        try:
            step = self._receive(der)
        except _Reject as r:
            step = r.failed
        except CmpError as e:
            step = Failed(f"malformed response: {e}")
        except Exception as e:  # a peer must not be able to crash the runner
            step = Failed(f"malformed response: {type(e).__name__}: {first_line(e)}")
        if isinstance(step, Failed) and self.state is not State.REJECT_ACK:
            self._failure = step
            self._go("fail")
        return step

    def _count(self, der: bytes) -> None:
        try:
            self.received[codec.decode(der).body_type] += 1
        except CmpError:
            pass  # statistics only: a garbled answer is simply not counted

    def _receive(self, der: bytes) -> Step:
        msg = codec.decode(der)
        self.received[msg.body_type] += 1
        self._check(msg)
        self._peer_nonce = msg.header.sender_nonce
        if msg.body_type == "error":
            raise _Reject(_error_failed(msg))
        reply = REPLY_TO[self.enrollment.kind]
        if self.state is State.PKI_CONF:
            if msg.body_type != "pkiconf":
                raise _Reject(Failed(f"unexpected {msg.body_type} instead of pkiConf"))
            self._go("pkiconf")
            return self._done
        if msg.body_type == "pollRep" and self.state is State.POLL_REP:
            rep = next((r for r in msg.poll_rep if r.cert_req_id == self.cert_req_id), None)
            if rep is None:
                raise _Reject(Failed(f"pollRep without certReqId {self.cert_req_id}"))
            self._go("waiting")
            return Wait(float(min(max(rep.check_after, 0), MAX_WAIT)))
        if msg.body_type != reply:
            raise _Reject(Failed(f"unexpected {msg.body_type} (expected {reply})"))
        return self._cert_reply(msg)

    def _check(self, msg: Message) -> None:
        """Protection, sender, transactionID, recipNonce: failures end the transaction. An
        error message that fails them is reported as unverifiable, with what it claims."""
        try:
            verified = protection.verify(
                msg,
                secret=self.protection.secret,
                trust_anchor_der=self.enrollment.ca_root_der,
                now=self._utcnow(),
            )
        except protection.ProtectionError as e:
            if msg.body_type == "error":
                raise _Reject(_unverifiable(msg, str(e))) from None
            if msg.protection is None:
                raise _Reject(Failed("unprotected response")) from None
            raise _Reject(Failed(f"bad response protection: {e}")) from None
        h = msg.header
        problem = None
        # A signature only proves a certificate under ca-root, which may be any end entity's:
        # the name is what says it is the CA. With PBM the shared secret is the proof, and
        # OpenSSL's mock answers as its -srv_cert whatever recipient we named.
        named = verified.method == "signature" and self._recipient is not None
        if named and not same_name(h.sender, self._recipient):
            shown = h.sender.rfc4514_string() if h.sender is not None else "a non-DN name"
            problem = f"unexpected sender {shown!r}"
        elif h.transaction_id != self.transaction_id:
            problem = "transactionID mismatch"
        elif h.recip_nonce != self._last_nonce:
            problem = "recipNonce mismatch (stale or replayed response)"
        if problem is not None:
            raise _Reject(
                _unverifiable(msg, problem) if msg.body_type == "error" else Failed(problem)
            )

    def _cert_reply(self, msg: Message) -> Step:
        resp = next((r for r in msg.responses if r.cert_req_id == self.cert_req_id), None)
        if resp is None:
            raise _Reject(Failed(f"no response for certReqId {self.cert_req_id}"))
        st = resp.status
        if st.status == WAITING:
            self._go("waiting")
            return Wait(DEFAULT_WAIT)
        if st.status == REJECTION:
            raise _Reject(Failed("certificate request rejected", st.fail_info, st.strings))
        if st.status not in (ACCEPTED, GRANTED_WITH_MODS):
            raise _Reject(Failed(f"unexpected status {st.name}", st.fail_info, st.strings))
        if resp.cert_der is None:
            what = "an encrypted certificate (not supported)" if resp.encrypted_cert else "none"
            raise _Reject(Failed(f"malformed response: {st.name} with {what}"))
        return self._issued(msg, resp.cert_der)

    def _issued(self, msg: Message, cert_der: bytes) -> Step:
        try:
            cert = x509.load_der_x509_certificate(cert_der)
        except ValueError:
            raise _Reject(Failed("malformed response: unparsable certificate")) from None
        implicit = self.enrollment.implicit_confirm and msg.header.implicit_confirm
        pool = [c for c in map(_load, (*msg.extra_certs, *msg.ca_pubs)) if c is not None]
        root = self.enrollment.ca_root_der
        problem, chain = None, ()
        if _cert_spki(cert) != _spki(self._new_key.public_key()):
            problem = "public key mismatch"
        elif root is not None:
            try:
                chain = protection.build_chain(cert, pool, x509.load_der_x509_certificate(root))
            except protection.ProtectionError:
                problem = "issued certificate does not chain to ca-root"
        else:
            chain = protection.issuer_chain(cert, pool)
        if problem is not None:
            if implicit:  # already confirmed by the CA: a certConf is not allowed any more
                raise _Reject(Failed(problem))
            status = StatusInfo(REJECTION, (f"rejected by client: {problem}",), ("incorrectData",))
            confirm = self._message(codec.cert_conf_body(cert_der, self.cert_req_id, status))
            self._failure = Failed(problem)
            self._go("reject-cert")
            return replace(self._failure, confirm=confirm)
        pubs = msg.ca_pubs if root is None else tuple(c for c in msg.ca_pubs if c == root)
        done = Done(cert_der, tuple(map(_der, chain)), pubs, confirmed=not implicit)
        if implicit:
            self._go("issued-implicit")
            return done
        self._done = done
        confirm = self._message(codec.cert_conf_body(cert_der, self.cert_req_id))
        self._go("issued")
        return Send(confirm)

    # --- journal ---

    def to_journal(self) -> dict:
        """A JSON-able snapshot to resume after a restart (polling, in particular).

        It holds the PBM secret and private keys in clear: store it like a key file (0600).
        """
        e, p = self.enrollment, self.protection
        return {
            "v": 1,
            "state": self.state.value,
            "transaction_id": _b64(self.transaction_id),
            "cert_req_id": self.cert_req_id,
            "last_nonce": _b64(self._last_nonce),
            "peer_nonce": _b64(self._peer_nonce),
            "sent": dict(self.sent),
            "received": dict(self.received),
            "enrollment": {
                "kind": e.kind,
                "new_key_pem": e.new_key_pem.decode(),
                "subject": e.subject,
                "sans": [list(s) for s in e.sans],
                "old_cert_der": _b64(e.old_cert_der),
                "recipient": e.recipient,
                "sender": e.sender,
                "ca_root_der": _b64(e.ca_root_der),
                "implicit_confirm": e.implicit_confirm,
            },
            "protection": {
                "secret": _b64(p.secret),
                "reference": _b64(p.reference),
                "cert_der": _b64(p.cert_der),
                "key_pem": p.key_pem.decode() if p.key_pem is not None else None,
                "extra_certs": [_b64(c) for c in p.extra_certs],
                "hash_alg": p.hash_alg,
            },
            "done": _done_to_json(self._done),
            "failure": self._failure.reason if self._failure is not None else None,
        }

    @classmethod
    def from_journal(cls, data: dict, *, rand, now) -> Transaction:
        """The transaction saved by to_journal. A pollReq that was in flight is forgotten:
        the state goes back to waiting for poll(), and asking again is harmless."""
        if data.get("v") != 1:
            raise ValueError("unsupported CMP journal version")
        e, p = data["enrollment"], data["protection"]
        enrollment = Enrollment(
            kind=e["kind"],
            new_key_pem=e["new_key_pem"].encode(),
            subject=e["subject"],
            sans=tuple((t, v) for t, v in e["sans"]),
            old_cert_der=_unb64(e["old_cert_der"]),
            recipient=e["recipient"],
            sender=e["sender"],
            ca_root_der=_unb64(e["ca_root_der"]),
            implicit_confirm=e["implicit_confirm"],
        )
        prot = Protection(
            secret=_unb64(p["secret"]),
            reference=_unb64(p["reference"]),
            cert_der=_unb64(p["cert_der"]),
            key_pem=p["key_pem"].encode() if p["key_pem"] is not None else None,
            extra_certs=tuple(_unb64(c) for c in p["extra_certs"]),
            hash_alg=p["hash_alg"],
        )
        tx = cls(enrollment, prot, rand=rand, now=now)
        state = State(data["state"])
        tx.state = State.POLL_TIME if state is State.POLL_REP else state
        tx.transaction_id = _unb64(data["transaction_id"])
        tx.cert_req_id = int(data["cert_req_id"])
        tx._last_nonce = _unb64(data["last_nonce"])
        tx._peer_nonce = _unb64(data["peer_nonce"])
        tx.sent.update(data["sent"])
        tx.received.update(data["received"])
        tx._done = _done_from_json(data["done"])
        if data["failure"] is not None:
            tx._failure = Failed(data["failure"])
        return tx


def _error_failed(msg: Message) -> Failed:
    err = msg.error
    reason = "error response"
    if err.error_code is not None:
        reason += f" (errorCode {err.error_code})"
    said = "; ".join((*err.status.strings, *err.details))
    return Failed(
        f"{reason}: {said}" if said else reason,
        err.status.fail_info,
        err.status.strings,
        error_code=err.error_code,
        error_details=err.details,
    )


def _unverifiable(msg: Message, problem: str) -> Failed:
    """An error message we cannot trust: what it claims is shown, but only as a claim."""
    err = msg.error
    claim = "; ".join((*err.status.strings, *err.details))
    return Failed(
        f"unverifiable error response: {problem}" + (f" (it says: {claim})" if claim else "")
    )


def _load(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def _done_to_json(done: Done | None) -> dict | None:
    if done is None:
        return None
    return {
        "cert_der": _b64(done.cert_der),
        "chain": [_b64(c) for c in done.chain],
        "ca_pubs": [_b64(c) for c in done.ca_pubs],
        "confirmed": done.confirmed,
    }


def _done_from_json(data: dict | None) -> Done | None:
    if data is None:
        return None
    return Done(
        _unb64(data["cert_der"]),
        tuple(map(_unb64, data["chain"])),
        tuple(map(_unb64, data["ca_pubs"])),
        data["confirmed"],
    )
