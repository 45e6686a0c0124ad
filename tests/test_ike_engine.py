"""cards.ike engine: in-memory initiator/responder pairs on a manual clock (tier 2 tests).

Ladder notation as in RFC 7296: HDR, SA, KE, Ni/Nr, N(...), SK{...}. The eNodeB endpoint is
the initiator, the SeGW endpoint the responder, unless a test says otherwise.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import struct
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from cards.ike import tasks as _tasks
from cards.ike.config import Credentials, IkeConfig, IkeProposal
from cards.ike.const import (
    AuthMethod,
    DhGroup,
    Encr,
    ExchangeType,
    IdType,
    Integ,
    NotifyType,
    Prf,
)
from cards.ike.crypto import open_sk
from cards.ike.engine import Endpoint
from cards.ike.events import (
    Alive,
    AuthFailed,
    ChildEstablished,
    ChildRefused,
    Deleted,
    Established,
    InternalError,
    Rejected,
    Retransmit,
    Send,
)
from cards.ike.message import Message, NotifyPayload
from cards.ike.sa import State

WALL = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # the injected (warpable) wall clock
DAY = dt.timedelta(days=1)
GW = ("192.0.2.1", 500)
ENB = ("198.51.100.7", 500)


# ---------------------------------------------------------------------- test PKI
@functools.cache
def key(tag: str):
    if tag.startswith("ec"):
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make(cn, key_tag, issuer=None, *, ca=False, dns=None, days=(-30, 365)):
    """A certificate for key(key_tag), issued by (cert, key) or self-signed."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key(key_tag))
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key(key_tag).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(WALL + days[0] * DAY)
        .not_valid_after(WALL + days[1] * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return b.sign(signer, hashes.SHA256())


@functools.cache
def pki() -> dict:
    root = make("Lab Root CA", "root", ca=True, days=(-300, 3650))
    inter = make("Lab Sub CA", "inter", (root, key("root")), ca=True)
    rogue = make("Rogue CA", "rogue", ca=True)
    p = {"root": root, "inter": inter, "rogue": rogue}
    p["gw"] = make("segw.example.net", "gw", (inter, key("inter")), dns="segw.example.net")
    p["enb"] = make("enb1.example.net", "enb", (root, key("root")), dns="enb1.example.net")
    p["enb_ec"] = make("enb2.example.net", "ec-enb", (root, key("root")), dns="enb2.example.net")
    p["enb_dn"] = make("enb3 no SAN", "enb", (root, key("root")))
    p["enb_rogue"] = make("enb1.example.net", "enb", (rogue, key("rogue")), dns="enb1.example.net")
    p["enb_expired"] = make(
        "enb1.example.net", "enb", (root, key("root")), dns="enb1.example.net", days=(-60, -1)
    )
    # root -> d1 -> d2 -> d3 -> d4 -> leaf: five certificates below the anchor
    chain, issuer = [], (root, key("root"))
    for i in range(1, 5):
        c = make(f"Deep CA {i}", "inter", issuer, ca=True)
        chain.append(c)
        issuer = (c, key("inter"))
    p["deep"] = chain
    p["enb_deep"] = make("enb1.example.net", "enb", issuer, dns="enb1.example.net")
    return p


KEYS = {"gw": "gw", "enb": "enb", "enb_ec": "ec-enb", "enb_dn": "enb", "enb_rogue": "enb",
        "enb_expired": "enb", "enb_deep": "enb"}  # fmt: skip


def config(who: str, intermediates=(), anchors=None, **over) -> IkeConfig:
    """Fragmentation is off unless a test asks (the tests index whole messages on the wire;
    test_ike_fragments.py covers RFC 7383)."""
    p = pki()
    cred = Credentials(p[who], key(KEYS[who]), tuple(intermediates))
    anchors = tuple(anchors if anchors is not None else (p["root"],))
    return IkeConfig(cred, anchors, **{"fragmentation": False, **over})


def gw_config(**over) -> IkeConfig:
    return config("gw", (pki()["inter"],), **over)


class Rng:
    """Deterministic injected randomness; reseed() makes two endpoints draw the same bytes."""

    def __init__(self, seed: int = 0):
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self._r = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._r.randbytes(n)


def endpoint(cfg: IkeConfig, seed: int, **kw) -> Endpoint:
    return Endpoint(cfg, rand=Rng(seed), wall_clock=lambda: WALL, **kw)


# ---------------------------------------------------------------------- the pair
class Pair:
    """eNodeB initiator <-> SeGW responder; datagrams passed by hand on a manual clock."""

    def __init__(self, enb_cfg: IkeConfig | None = None, gw_cfg: IkeConfig | None = None,
                 enb_addr=ENB, gw_addr=GW):  # fmt: skip
        self.i = endpoint(enb_cfg or config("enb"), 1)
        self.r = endpoint(gw_cfg or gw_config(), 2)
        self.i_addr, self.r_addr = enb_addr, gw_addr
        self.now = 0.0
        self.events = {"i": [], "r": []}
        self.wire: list[Send] = []  # every datagram delivered, in order

    def _split(self, side: str, outs) -> list[Send]:
        sends = [o for o in outs if isinstance(o, Send)]
        self.events[side] += [o for o in outs if not isinstance(o, Send)]
        return sends

    def start(self) -> list[Send]:
        out = self._split("i", self.i.initiate(self.r_addr, self.now, local=self.i_addr))
        self.last_i = next(iter(self.i.sas.values()))  # kept to decrypt after the SA is gone
        return out

    def deliver(self, send: Send) -> list[Send]:
        """One datagram to whichever endpoint owns its destination address."""
        self.wire.append(send)
        side, ep = ("r", self.r) if send.dst == self.r_addr else ("i", self.i)
        return self._split(side, ep.receive(send.data, send.src, send.dst, self.now))

    def run(self, sends: list[Send], drop=lambda send: False) -> list[Send]:
        """Deliver until quiet; returns the dropped datagrams."""
        dropped, queue = [], list(sends)
        while queue:
            s = queue.pop(0)
            if drop(s):
                dropped.append(s)
                continue
            queue += self.deliver(s)
        return dropped

    def timers(self, side: str) -> list[Send]:
        ep = self.i if side == "i" else self.r
        self.now = ep.get_timer()
        return self._split(side, ep.handle_timer(self.now))

    def of(self, side: str, cls) -> list:
        return [e for e in self.events[side] if isinstance(e, cls)]

    def established_or_not(self) -> Pair:
        self.run(self.start())
        return self

    def established(self) -> Pair:
        self.run(self.start())
        assert self.of("i", Established) and self.of("r", Established), self.events
        return self

    def sa(self, side: str):
        ep = self.i if side == "i" else self.r
        (sa,) = ep.sas.values()
        return sa


def decode(send: Send) -> Message:
    data = send.data[4:] if send.data[:4] == bytes(4) else send.data
    return Message.decode(data)


def notifies(send: Send) -> list[int]:
    return [n.type for n in decode(send).find(NotifyPayload)]


def _types(payloads) -> list[int]:
    return [p.type for p in payloads if isinstance(p, NotifyPayload)]


def no_internal_errors(pair: Pair) -> None:
    assert not pair.of("i", InternalError) and not pair.of("r", InternalError)


# ---------------------------------------------------------------------- establishment
SUITES = {
    "aes256-sha256-ecp256": IkeProposal(
        Encr.AES_CBC, 256, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128, DhGroup.ECP_256
    ),
    "aesgcm256-prfsha384-modp2048": IkeProposal(
        Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_384, Integ.NONE, DhGroup.MODP_2048
    ),
    "aesgcm128-prfsha256-x25519": IkeProposal(
        Encr.AES_GCM_16, 128, Prf.HMAC_SHA2_256, Integ.NONE, DhGroup.CURVE25519
    ),
    "aes128-sha512-ecp384": IkeProposal(
        Encr.AES_CBC, 128, Prf.HMAC_SHA2_512, Integ.HMAC_SHA2_512_256, DhGroup.ECP_384
    ),
}


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("enb", ["enb", "enb_ec"])
def test_establishes_with_certificates(suite, enb):
    #  eNodeB                                               SeGW
    #  HDR, SAi1, KEi, Ni, N(NAT_D)x2, N(SIG_HASH)  ---------->
    #  <-------  HDR, SAr1, KEr, Nr, CERTREQ, N(NAT_D)x2, N(SIG_HASH)
    #  HDR, SK{IDi, CERT, AUTH, CERTREQ, SAi2, TSi, TSr}  ---->
    #  <-------  HDR, SK{IDr, CERT, CERT, AUTH, SAr2, TSi, TSr}
    proposals = (SUITES[suite],)
    pair = Pair(config(enb, proposals=proposals), gw_config(proposals=proposals)).established()
    assert len(pair.wire) == 4
    (ei,), (er,) = pair.of("i", Established), pair.of("r", Established)
    want_id = pki()[enb].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert er.peer_id == want_id.value.get_values_for_type(x509.DNSName)[0]
    assert er.peer_cert_subject == pki()[enb].subject.rfc4514_string()
    assert ei.peer_id == "segw.example.net" and "segw.example.net" in ei.peer_cert_subject
    assert ei.suite == er.suite == str(SUITES[suite]) and ei.initiator and not er.initiator
    assert (ei.spi_i, ei.spi_r) == (er.spi_i, er.spi_r)
    assert pair.sa("i").state is pair.sa("r").state is State.ESTABLISHED
    # the first CHILD_SA comes up with it (more in test_ike_child.py)
    assert pair.of("i", ChildEstablished) and pair.of("r", ChildEstablished)
    assert not pair.of("i", ChildRefused) and not pair.of("r", ChildRefused)
    # the gateway sent its intermediate: the eNodeB's CERTREQ named only the root
    assert sum(type(p).__name__ == "CertPayload" for p in _inner(pair, 3)) == 2
    no_internal_errors(pair)


def _inner(pair: Pair, index: int) -> list:
    """Decrypt the index-th datagram on the wire with the keys of its receiver."""
    send = pair.wire[index]
    receiver = pair.sa("r" if send.dst == pair.r_addr else "i")
    return open_sk(decode(send), receiver.suite, receiver.keys.inbound(receiver.initiator))


def test_identity_from_dn_when_the_cert_has_no_san():
    pair = Pair(config("enb_dn")).established()
    (er,) = pair.of("r", Established)
    assert er.peer_id == pki()["enb_dn"].subject.rfc4514_string()
    assert IdType.DER_ASN1_DN == config("enb_dn").identity()[0]


def test_auth_method_1_when_configured():
    methods = frozenset({AuthMethod.RSA_SIG, AuthMethod.DIGITAL_SIGNATURE})
    pair = Pair(
        config("enb", auth_method=AuthMethod.RSA_SIG, accept_auth_methods=methods),
        gw_config(auth_method=AuthMethod.RSA_SIG, accept_auth_methods=methods),
    ).established()
    assert [p.method for p in _inner(pair, 2) if type(p).__name__ == "AuthPayload"] == [1]


def test_auth_method_1_refused_unless_configured():
    pair = Pair(config("enb", auth_method=AuthMethod.RSA_SIG))
    pair.run(pair.start())
    assert "AUTH method 1 not accepted" in pair.of("r", AuthFailed)[0].reason
    assert pair.of("i", AuthFailed) and not pair.i.sas and not pair.r.sas


def test_custom_ports_use_the_non_esp_marker():
    # Neither port is 500: every IKE datagram starts with 4 zero bytes (RFC 3948 2.2).
    pair = Pair(enb_addr=("198.51.100.7", 4500), gw_addr=("192.0.2.1", 5500)).established()
    assert all(s.data[:4] == bytes(4) for s in pair.wire)
    out = pair.r.receive(pair.wire[0].data[4:], pair.wire[0].src, pair.wire[0].dst, 0.0)
    assert "non-ESP marker" in out[0].reason


# ---------------------------------------------------------------------- INIT negotiation
def test_invalid_ke_payload_retry():
    #  HDR, SAi1(modp2048, ecp256), KEi(modp2048), Ni  -->
    #  <--  HDR(A,0), N(INVALID_KE_PAYLOAD = 19)
    #  HDR, SAi1(modp2048, ecp256), KEi(ecp256), Ni  -->
    #  <--  HDR, SAr1(ecp256), KEr, Nr, ...             (then IKE_AUTH as usual)
    modp, ecp = SUITES["aesgcm256-prfsha384-modp2048"], SUITES["aes256-sha256-ecp256"]
    modp = replace(modp, encr=ecp.encr, key_bits=256, prf=ecp.prf, integ=ecp.integ)
    pair = Pair(config("enb", proposals=(modp, ecp)), gw_config(proposals=(ecp,))).established()
    assert notifies(pair.wire[1]) == [NotifyType.INVALID_KE_PAYLOAD]
    assert decode(pair.wire[1]).notify(NotifyType.INVALID_KE_PAYLOAD).data == struct.pack("!H", 19)
    assert decode(pair.wire[1]).spi_r == bytes(8) and not pair.of("r", Deleted)
    assert pair.of("r", Rejected)[0].notify == NotifyType.INVALID_KE_PAYLOAD
    assert pair.of("i", Established)[0].suite.endswith("/ECP_256")
    assert len(pair.wire) == 6 and len(pair.r.sas) == 1


def test_no_proposal_chosen():
    ecp, gcm = SUITES["aes256-sha256-ecp256"], SUITES["aesgcm128-prfsha256-x25519"]
    pair = Pair(config("enb", proposals=(gcm,)), gw_config(proposals=(ecp,)))
    pair.run(pair.start())
    assert notifies(pair.wire[1]) == [NotifyType.NO_PROPOSAL_CHOSEN]
    assert pair.of("i", Deleted) and not pair.i.sas and not pair.r.sas


def test_cookie_under_half_open_pressure():
    #  HDR, SAi1, KEi, Ni  -->
    #  <--  HDR(A,0), N(COOKIE)
    #  HDR, N(COOKIE), SAi1, KEi, Ni  -->
    #  <--  HDR, SAr1, KEr, Nr, ...
    pair = Pair(gw_cfg=gw_config(cookie_threshold=0)).established()
    assert notifies(pair.wire[1]) == [NotifyType.COOKIE]
    retry = decode(pair.wire[2])
    assert retry.payloads[0].type == NotifyType.COOKIE and retry.message_id == 0
    assert retry.payloads[0].data == decode(pair.wire[1]).payloads[0].data
    assert len(pair.wire) == 6


def test_wrong_cookie_is_answered_with_a_fresh_demand():
    pair = Pair(gw_cfg=gw_config(cookie_threshold=0))
    (first,) = pair.start()
    (cookie_reply,) = pair.deliver(first)
    out = pair.r.receive(first.data, first.src, first.dst, 0.0)  # again without the cookie
    assert notifies(out[0]) == [NotifyType.COOKIE] and not pair.r.sas
    assert cookie_reply.data == out[0].data  # stateless: the same demand


# ---------------------------------------------------------------------- auth failures
def _auth_failure(enb_cfg, gw_cfg=None) -> Pair:
    #  ... IKE_SA_INIT ...
    #  HDR, SK{IDi, CERT+, AUTH, ...}  -->
    #  <--  HDR, SK{N(AUTHENTICATION_FAILED)}
    pair = Pair(enb_cfg, gw_cfg)
    pair.run(pair.start())
    assert len(pair.wire) == 4
    assert _types(_inner_dead(pair, 3)) == [NotifyType.AUTHENTICATION_FAILED]
    assert pair.of("r", AuthFailed) and pair.of("i", AuthFailed)
    assert not pair.of("r", Established) and not pair.of("i", Established)
    assert not pair.i.sas and not pair.r.sas and not pair.r.half_open
    no_internal_errors(pair)
    return pair


def _inner_dead(pair, index):
    """Decrypt a response to the initiator with the keys of its (now forgotten) SA."""
    return open_sk(decode(pair.wire[index]), pair.last_i.suite, pair.last_i.keys.inbound(True))


def test_untrusted_peer_certificate():
    pair = _auth_failure(config("enb_rogue"))
    assert "neither in the CERT payloads nor a configured CA" in pair.of("r", AuthFailed)[0].reason


def test_expired_peer_certificate():
    pair = _auth_failure(config("enb_expired"))
    assert "expired" in pair.of("r", AuthFailed)[0].reason


def test_chain_longer_than_four(monkeypatch):
    # chain_to_send refuses to build it, so make the eNodeB send all five certificates anyway.
    monkeypatch.setattr(
        "cards.ike.tasks.auth.chain_to_send", lambda own, inter, req, anchors: [own, *inter]
    )
    pair = _auth_failure(config("enb_deep", tuple(reversed(pki()["deep"]))))
    assert "exceeds the maximum of 4" in pair.of("r", AuthFailed)[0].reason


def test_id_not_matching_the_certificate():
    pair = _auth_failure(config("enb", local_id=(IdType.FQDN, b"enb9.example.net")))
    assert "not bound" in pair.of("r", AuthFailed)[0].reason


def test_initiator_refuses_the_gateway():
    #  ... IKE_SA_INIT, IKE_AUTH answered with the gateway's AUTH ...
    #  HDR, SK{N(AUTHENTICATION_FAILED)}  -->   (INFORMATIONAL, not retransmitted)
    pair = Pair(config("enb", anchors=(pki()["rogue"],)))
    pair.run(pair.start())
    assert pair.of("i", AuthFailed) and pair.of("r", AuthFailed)
    assert "peer refused" in pair.of("r", AuthFailed)[0].reason
    assert decode(pair.wire[4]).exchange == ExchangeType.INFORMATIONAL
    assert not pair.i.sas and not pair.r.sas


# ---------------------------------------------------------------------- retransmission
def test_lost_auth_response_is_retransmitted_and_answered_from_cache():
    #  HDR, SK{IDi, ...}  -->
    #           X <--  HDR, SK{IDr, ...}          (lost)
    #  t=0.5: HDR, SK{IDi, ...}  -->              (same bytes)
    #  <--  HDR, SK{IDr, ...}                     (from the cache, same bytes)
    pair = Pair()
    lost = pair.run(pair.start(), drop=lambda s: s.dst == ENB and decode(s).message_id == 1)
    assert len(lost) == 1 and pair.of("r", Established) and not pair.of("i", Established)
    assert pair.i.get_timer() == 0.5
    (again,) = pair.timers("i")
    assert again.data == pair.wire[2].data
    assert pair.of("i", Retransmit) == [Retransmit(*_spis(pair), 1, 1)]
    (answer,) = pair.deliver(again)
    assert answer.data == lost[0].data
    pair.deliver(answer)
    assert pair.of("i", Established) and len(pair.of("r", Established)) == 1


def _spis(pair):
    sa = pair.sa("i")
    return sa.spi_i, sa.spi_r


def test_retransmitted_init_request_answered_from_cache():
    pair = Pair()
    (req,) = pair.start()
    (resp1,) = pair.deliver(req)
    (resp2,) = pair.deliver(req)
    assert resp1.data == resp2.data and len(pair.r.sas) == 1 and len(pair.r.half_open) == 1


def test_backoff_then_give_up():
    pair = Pair(gw_cfg=gw_config())
    pair.i = endpoint(config("enb", setup_timeout_s=120), 1)
    pair.run(pair.start(), drop=lambda s: s.dst == ENB)
    times = []
    while pair.i.sas:
        times.append(pair.i.get_timer())
        sends = pair.timers("i")
        assert len(sends) == (1 if pair.i.sas else 0)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [e.attempt for e in pair.of("i", Retransmit)] == [1, 2, 3, 4, 5]
    assert "after 5 retransmissions" in pair.of("i", Deleted)[0].reason
    assert pair.i.get_timer() is None


def test_half_open_sa_times_out():
    pair = Pair(gw_cfg=gw_config(setup_timeout_s=10))
    (req,) = pair.start()
    pair.deliver(req)
    assert pair.r.get_timer() == 10
    pair.timers("r")
    assert pair.of("r", Deleted) and not pair.r.sas and not pair.r.half_open


# ---------------------------------------------------------------------- INFORMATIONAL
def test_liveness_both_ways():
    #  HDR, SK{}  -->   <--  HDR, SK{}
    pair = Pair().established()
    pair.run(pair.i.check_liveness(pair.sa("i").spi_i, pair.now))
    pair.run(pair.r.check_liveness(pair.sa("r").spi_r, pair.now))
    assert len(pair.of("i", Alive)) == 1 and len(pair.of("r", Alive)) == 1
    assert pair.sa("i").send_mid == 3 and pair.sa("r").recv_mid == 3
    assert pair.sa("r").send_mid == 1 and pair.sa("i").recv_mid == 1
    no_internal_errors(pair)


def test_delete_ike_sa():
    #  HDR, SK{D(IKE)}  -->   <--  HDR, SK{}
    pair = Pair().established()
    pair.run(pair.i.delete(pair.sa("i").spi_i, pair.now))
    assert pair.of("i", Deleted)[0].reason == "deleted"
    assert pair.of("r", Deleted)[0].reason == "deleted by peer"
    assert not pair.i.sas and not pair.r.sas


def test_gateway_deletes():
    pair = Pair().established()
    pair.run(pair.r.delete(pair.sa("r").spi_r, pair.now))
    assert pair.of("r", Deleted) and pair.of("i", Deleted) and not pair.i.sas and not pair.r.sas


def test_empty_create_child_sa_gets_invalid_syntax_ike_sa_kept():
    pair = Pair().established()
    sa = pair.sa("i")
    sa.pending.append((ExchangeType.CREATE_CHILD_SA, [_tasks.Task()]))
    pair.run(sa._run(pair.now, sa._kick, pair.now))
    assert NotifyType.INVALID_SYNTAX in _types(_inner(pair, 5))
    assert pair.sa("r").state is State.ESTABLISHED


# ---------------------------------------------------------------------- outside any SA
def test_unknown_spi_gets_invalid_ike_spi():
    pair = Pair().established()
    req = pair.wire[2]
    data = req.data[:8] + b"\x99" * 8 + req.data[16:]
    (out,) = pair.r.receive(data, req.src, req.dst, 0.0)
    msg = decode(out)
    assert msg.is_response and msg.exchange == ExchangeType.INFORMATIONAL
    assert notifies(out) == [NotifyType.INVALID_IKE_SPI]


def test_higher_major_version_answered():
    pair = Pair()
    (req,) = pair.start()
    data = bytearray(req.data)
    data[17] = 0x30
    (out,) = pair.r.receive(bytes(data), req.src, req.dst, 0.0)
    assert notifies(out) == [NotifyType.INVALID_MAJOR_VERSION] and not pair.r.sas


def test_unauthenticated_requests_are_never_answered():
    pair = Pair().established()
    sa = pair.sa("r")
    # a cleartext INFORMATIONAL request with the right SPIs and next message ID
    fake = Message(sa.spi_i, sa.spi_r, ExchangeType.INFORMATIONAL, 0x08, 2, [NotifyPayload(1)])
    out = pair.r.receive(fake.encode(), ENB, GW, 0.0)
    assert not [o for o in out if isinstance(o, Send)] and sa.recv_mid == 2
    # a different request reusing the answered message ID 1 does not get the cached answer
    auth = bytearray(pair.wire[2].data)
    auth[-1] ^= 1
    out = pair.r.receive(bytes(auth), ENB, GW, 0.0)
    assert not [o for o in out if isinstance(o, Send)]
    assert sa.state is State.ESTABLISHED
