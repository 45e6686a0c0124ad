"""cards.ike: the reference's CA-chaining deployments as in-memory pairs (tier 2, issue #5).

StarOS "CA Certificate Chaining": root CA1 issues the intermediate CA1_1; one side's
certificate is issued by CA1, the other's by CA1_1. Scenario A: eNodeB under CA1, SeGW under
CA1_1. Scenario B: the reverse. Each runs with the gateway as responder (the eNodeB dials in)
and as initiator (the gateway dials the eNodeB: a crypto map). The trust anchors are each
side's configured `ca-certificate list`, set the ways an operator does:

- ``ca1``: both sides list only the root CA1;
- ``ca1_1``: the side that validates the CA1_1-issued certificate lists CA1_1 as its anchor
  (StarOS takes an intermediate as anchor), the other side lists CA1;
- ``ca1+ca1_1``: the side holding the CA1_1-issued certificate lists its whole issuing chain
  (CA1 and CA1_1), the peer lists only CA1.

Whatever the lists, the rules checked are the same (RFC 7296 3.6/3.7, StarOS chain rules):
each side sends one CERTREQ, encoding 4 (X.509 Certificate - Signature), whose Certification
Authority field is the SHA-1 of each listed CA's SubjectPublicKeyInfo, concatenated in list
order; each side sends its entity certificate plus the intermediates up to, but not
including, the first CA the peer named in its CERTREQ, one CERT payload per certificate, and
never a trust anchor.
"""

from __future__ import annotations

import functools
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from test_ike_engine import (
    ENB,
    GW,
    Pair,
    _inner,
    _types,
    config,
    decode,
    gw_config,
    key,
    make,
    no_internal_errors,
    pki,
)

from cards.ike.config import Credentials, IkeConfig
from cards.ike.const import CertEncoding, ExchangeType, NotifyType, PayloadType
from cards.ike.crypto import open_sk
from cards.ike.events import AuthFailed, ChildEstablished, Established
from cards.ike.message import CertPayload, CertReqPayload
from cards.ike.sa import State

DER = serialization.Encoding.DER


# ---------------------------------------------------------------------- the deployment's PKI
@functools.cache
def ca() -> dict:
    """CA1 (self-signed root, RSA) -> CA1_1 (intermediate, EC) and the four entities."""
    ca1 = make("CA1", "chain-ca1", ca=True, days=(-300, 3650))
    ca1_1 = make("CA1_1", "ec-chain-ca1_1", (ca1, key("chain-ca1")), ca=True)
    by = {"CA1": (ca1, key("chain-ca1")), "CA1_1": (ca1_1, key("ec-chain-ca1_1"))}
    p = {"CA1": ca1, "CA1_1": ca1_1}
    for issuer in by:
        p[f"enb/{issuer}"] = make("enb1.example.net", "enb", by[issuer], dns="enb1.example.net")
        p[f"gw/{issuer}"] = make("segw.example.net", "gw", by[issuer], dns="segw.example.net")
    return p


KEY = {"enb": "enb", "gw": "gw"}

# scenario -> the CA that issued each side's certificate
SCENARIOS = {
    "A": {"enb": "CA1", "gw": "CA1_1"},  # eNodeB under the root, gateway under CA1_1
    "B": {"enb": "CA1_1", "gw": "CA1"},  # eNodeB under CA1_1, gateway under the root
}


def anchors_for(scenario: str, variant: str) -> dict[str, tuple[str, ...]]:
    """Each side's configured CA list, by CA name, as an operator sets it."""
    issuers = SCENARIOS[scenario]
    holder = next(side for side, by in issuers.items() if by == "CA1_1")  # under CA1_1
    other = "gw" if holder == "enb" else "enb"
    lists = {
        "ca1": {holder: ("CA1",), other: ("CA1",)},
        "ca1_1": {holder: ("CA1",), other: ("CA1_1",)},  # `other` validates the CA1_1 cert
        "ca1+ca1_1": {holder: ("CA1", "CA1_1"), other: ("CA1",)},
    }
    return lists[variant]


def side_config(side: str, scenario: str, anchors: tuple[str, ...]) -> IkeConfig:
    p = ca()
    issuer = SCENARIOS[scenario][side]
    # Each side is configured with the intermediate above it when it has one (any order).
    intermediates = (p["CA1_1"],) if issuer == "CA1_1" else ()
    cred = Credentials(p[f"{side}/{issuer}"], key(KEY[side]), intermediates)
    return IkeConfig(
        cred, tuple(p[name] for name in anchors), fragmentation=False
    )  # whole messages


def expected_chain(side: str, scenario: str, peer_anchors: tuple[str, ...]) -> list:
    """The entity certificate plus the intermediates below the first CA the peer named."""
    p = ca()
    chain = [p[f"{side}/{SCENARIOS[scenario][side]}"]]
    if SCENARIOS[scenario][side] == "CA1_1" and "CA1_1" not in peer_anchors:
        chain.append(p["CA1_1"])
    return chain


def spki_sha1(cert) -> bytes:
    """Computed independently of cards.pki: SHA-1 over the DER SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha1(spki).digest()


def build(scenario: str, variant: str, gw_role: str) -> tuple[Pair, dict[str, str]]:
    """The pair and which Pair side ("i"/"r") each of "gw" and "enb" is."""
    lists = anchors_for(scenario, variant)
    enb = side_config("enb", scenario, lists["enb"])
    gw = side_config("gw", scenario, lists["gw"])
    if gw_role == "responder":
        return Pair(enb, gw, enb_addr=ENB, gw_addr=GW), {"enb": "i", "gw": "r"}
    # Pair's initiator is always `i`: put the gateway there, at the gateway's address.
    return Pair(gw, enb, enb_addr=GW, gw_addr=ENB), {"gw": "i", "enb": "r"}


def certs_sent(payloads) -> list[CertPayload]:
    return [p for p in payloads if type(p) is CertPayload]


def certreqs(payloads) -> list[CertReqPayload]:
    return [p for p in payloads if type(p) is CertReqPayload]


def ptypes(payloads) -> list[str]:
    return [PayloadType(p.ptype).name for p in payloads]


# ---------------------------------------------------------------------- the four scenarios
#
# Scenario A, gateway as responder (the eNodeB dials in); variant ca1 shown:
#
#  eNodeB (enb <- CA1)                                     SeGW (segw <- CA1_1 <- CA1)
#  HDR, SAi1, KEi, Ni, N(NAT_D)x2, N(SIG_HASH)  ---------------------------->
#  <----  HDR, SAr1, KEr, Nr, CERTREQ(4, SHA1(SPKI(CA1))), N(NAT_D)x2, N(SIG_HASH)
#  HDR, SK{IDi, CERT(enb), AUTH, CERTREQ(4, SHA1(SPKI(CA1))), SAi2, TSi, TSr}  -->
#  <----  HDR, SK{IDr, CERT(segw), CERT(CA1_1), AUTH, SAr2, TSi, TSr}
#
#  ca1_1: the eNodeB lists CA1_1, its CERTREQ names CA1_1, the SeGW sends only CERT(segw).
#  ca1+ca1_1: the SeGW lists CA1 and CA1_1, so its CERTREQ carries both hashes; the eNodeB
#  named only CA1, so the SeGW still sends CERT(segw), CERT(CA1_1).
#
# Scenario A, gateway as initiator (crypto map: the SeGW dials the eNodeB):
#
#  SeGW (segw <- CA1_1 <- CA1)                             eNodeB (enb <- CA1)
#  HDR, SAi1, KEi, Ni, N(NAT_D)x2, N(SIG_HASH)  ---------------------------->
#  <----  HDR, SAr1, KEr, Nr, CERTREQ(4, SHA1(SPKI(CA1))), N(NAT_D)x2, N(SIG_HASH)
#  HDR, SK{IDi, CERT(segw), CERT(CA1_1), AUTH, CERTREQ(4, SHA1(SPKI(CA1))), SAi2, TSi, TSr} -->
#  <----  HDR, SK{IDr, CERT(enb), AUTH, SAr2, TSi, TSr}
#
# Scenario B, gateway as responder:
#
#  eNodeB (enb <- CA1_1 <- CA1)                            SeGW (segw <- CA1)
#  HDR, SAi1, KEi, Ni, N(NAT_D)x2, N(SIG_HASH)  ---------------------------->
#  <----  HDR, SAr1, KEr, Nr, CERTREQ(4, SHA1(SPKI(CA1))), N(NAT_D)x2, N(SIG_HASH)
#  HDR, SK{IDi, CERT(enb), CERT(CA1_1), AUTH, CERTREQ(4, SHA1(SPKI(CA1))), SAi2, TSi, TSr} -->
#  <----  HDR, SK{IDr, CERT(segw), AUTH, SAr2, TSi, TSr}
#
#  ca1_1: the SeGW lists CA1_1 and names it in its CERTREQ; the eNodeB sends only CERT(enb).
#
# Scenario B, gateway as initiator:
#
#  SeGW (segw <- CA1)                                      eNodeB (enb <- CA1_1 <- CA1)
#  HDR, SAi1, KEi, Ni, N(NAT_D)x2, N(SIG_HASH)  ---------------------------->
#  <----  HDR, SAr1, KEr, Nr, CERTREQ(4, SHA1(SPKI(CA1))), N(NAT_D)x2, N(SIG_HASH)
#  HDR, SK{IDi, CERT(segw), AUTH, CERTREQ(4, SHA1(SPKI(CA1))), SAi2, TSi, TSr}  -->
#  <----  HDR, SK{IDr, CERT(enb), CERT(CA1_1), AUTH, SAr2, TSi, TSr}
@pytest.mark.parametrize("variant", ["ca1", "ca1_1", "ca1+ca1_1"])
@pytest.mark.parametrize("gw_role", ["responder", "initiator"])
@pytest.mark.parametrize("scenario", ["A", "B"])
def test_ca_chaining(scenario, gw_role, variant):
    pair, at = build(scenario, variant, gw_role)
    pair.established()
    lists = anchors_for(scenario, variant)
    side_of = {v: k for k, v in at.items()}  # "i"/"r" -> "gw"/"enb"

    # Established both sides, the first CHILD_SA with it, nothing went wrong.
    assert len(pair.wire) == 4
    assert pair.sa("i").state is pair.sa("r").state is State.ESTABLISHED
    (ei,), (er,) = pair.of("i", Established), pair.of("r", Established)
    assert ei.initiator and not er.initiator
    peer_id = {"gw": "segw.example.net", "enb": "enb1.example.net"}
    assert ei.peer_id == peer_id[side_of["r"]] and er.peer_id == peer_id[side_of["i"]]
    assert pair.of("i", ChildEstablished) and pair.of("r", ChildEstablished)
    assert not pair.of("i", AuthFailed) and not pair.of("r", AuthFailed)
    no_internal_errors(pair)

    # The four messages: INIT request/response in clear, IKE_AUTH decrypted with the SA keys.
    init_req, init_resp = decode(pair.wire[0]).payloads, decode(pair.wire[1]).payloads
    auth_req, auth_resp = _inner(pair, 2), _inner(pair, 3)
    assert decode(pair.wire[2]).exchange == ExchangeType.IKE_AUTH
    sent = {"i": init_req + auth_req, "r": init_resp + auth_resp}
    assert not certs_sent(init_req) and not certs_sent(init_resp)
    assert not certreqs(init_req) and not certreqs(auth_resp)  # RFC 7296 1.2/3.7 placement

    for side, who in side_of.items():
        peer = side_of["r" if side == "i" else "i"]
        # One CERTREQ, encoding 4, SHA-1(SPKI) of each listed CA in list order.
        (req,) = certreqs(sent[side])
        assert req.encoding == CertEncoding.X509_SIGNATURE == 4
        assert req.data == b"".join(spki_sha1(ca()[name]) for name in lists[who])
        assert len(req.data) == 20 * len(lists[who])
        # The entity certificate first, then the intermediates below what the peer named.
        want = expected_chain(who, scenario, lists[peer])
        got = certs_sent(sent[side])
        assert [c.encoding for c in got] == [CertEncoding.X509_SIGNATURE] * len(want)
        assert [c.data for c in got] == [c.public_bytes(DER) for c in want], (side, who)
        # Never a trust anchor: not the root, not whatever the peer itself lists.
        anchors = {ca()[name].public_bytes(DER) for name in (*lists[peer], "CA1")}
        assert not anchors & {c.data for c in got}

    # The IKE_AUTH messages in the order RFC 7296 1.2 shows them.
    names = {"i": ptypes(auth_req), "r": ptypes(auth_resp)}
    for side, payloads in names.items():
        ncert = len(certs_sent(sent[side]))
        idp = "IDi" if side == "i" else "IDr"
        certreq = ["CERTREQ"] if side == "i" else []
        assert payloads[: 2 + ncert + len(certreq)] == [idp, *["CERT"] * ncert, "AUTH", *certreq]


# ---------------------------------------------------------------------- chain too long
def test_chain_longer_than_four_gateway_as_initiator(monkeypatch):
    #  SeGW                                                   eNodeB
    #  HDR, SAi1, KEi, Ni, ...  -------------------------------->
    #  <--------  HDR, SAr1, KEr, Nr, CERTREQ(root), ...
    #  HDR, SK{IDi, CERT, CERT, AUTH, CERTREQ(root), ...}  ----->
    #  <--------  HDR, SK{IDr, CERT x5, AUTH, ...}       (leaf + Deep CA 4..1 below the root)
    #  HDR, SK{N(AUTHENTICATION_FAILED)}  --------------------->   (INFORMATIONAL)
    #
    # The mirror of test_ike_engine.test_chain_longer_than_four: chain_to_send refuses to
    # build it, so make the eNodeB send all five certificates anyway.
    monkeypatch.setattr(
        "cards.ike.tasks.auth.chain_to_send", lambda own, inter, req, anchors: [own, *inter]
    )
    enb = config("enb_deep", tuple(reversed(pki()["deep"])))
    pair = Pair(gw_config(), enb, enb_addr=GW, gw_addr=ENB)
    first = pair.start()
    answer = pair.deliver(first[0])
    enb_sa = next(iter(pair.r.sas.values()))  # kept to decrypt the refusal after it is gone
    pair.run(answer)

    assert len(certs_sent(_inner_with(pair, 3, pair.last_i))) == 5
    assert "exceeds the maximum of 4" in pair.of("i", AuthFailed)[0].reason
    refusal = decode(pair.wire[4])
    assert refusal.exchange == ExchangeType.INFORMATIONAL and not refusal.is_response
    assert _types(_inner_with(pair, 4, enb_sa)) == [NotifyType.AUTHENTICATION_FAILED]
    assert "peer refused" in pair.of("r", AuthFailed)[0].reason
    assert not pair.of("i", Established)
    assert not pair.i.sas and not pair.r.sas
    no_internal_errors(pair)


def _inner_with(pair: Pair, index: int, receiver) -> list:
    """Decrypt the index-th datagram with the keys of a receiver SA kept aside."""
    send = pair.wire[index]
    return open_sk(decode(send), receiver.suite, receiver.keys.inbound(receiver.initiator))
