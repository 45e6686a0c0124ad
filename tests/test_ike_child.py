"""cards.ike: the first CHILD_SA in IKE_AUTH and its INFORMATIONAL delete (RFC 7296 1.3, 2.9).

In-memory eNodeB initiator <-> SeGW responder pairs from test_ike_engine, manual clock.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
from test_ike_engine import Pair, _inner, config, endpoint, gw_config, no_internal_errors

from cards.ike import child as child_mod
from cards.ike import tasks as _tasks
from cards.ike.child import (
    ChildSa,
    derive_child_keys,
    intersect,
    narrow,
    select_esp,
    within,
)
from cards.ike.config import ChildPolicy, ChildProposal
from cards.ike.const import (
    ATTR_KEY_LENGTH,
    Encr,
    ExchangeType,
    Integ,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)
from cards.ike.crypto import child_keymat
from cards.ike.errors import NoProposalChosen
from cards.ike.events import ChildDeleted, ChildEstablished, ChildRefused, Deleted
from cards.ike.message import DeletePayload, NotifyPayload, SaPayload, TsPayload
from cards.ike.payloads import Proposal, TrafficSelector, Transform
from cards.ike.sa import State
from cards.spi import make_spi

V4 = TsType.IPV4_ADDR_RANGE


def ts(net: str, proto: int = 0, ports=(0, 65535)) -> TrafficSelector:
    n = ipaddress.ip_network(net)
    return TrafficSelector(V4, proto, ports[0], ports[1], n[0], n[-1])


def policy(**kw) -> tuple[ChildPolicy, ...]:
    """``children=`` for an IkeConfig with one child-SA payload."""
    return (ChildPolicy(**kw),)


def child(pair: Pair, side: str) -> ChildSa:
    (c,) = pair.sa(side).children.values()
    return c


def notify_types(payloads) -> list[int]:
    return [p.type for p in payloads if isinstance(p, NotifyPayload)]


CHILD_SUITES = {
    "AES_GCM_16_256": ChildProposal(Encr.AES_GCM_16, 256),
    "AES_GCM_16_128": ChildProposal(Encr.AES_GCM_16, 128),
    "AES_CBC_256/HMAC_SHA2_256_128": ChildProposal(Encr.AES_CBC, 256, Integ.HMAC_SHA2_256_128),
    "AES_CBC_128/HMAC_SHA2_256_128": ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128),
}


# ---------------------------------------------------------------------- establishment
@pytest.mark.parametrize("name", CHILD_SUITES)
def test_first_child_with_the_ike_sa(name):
    #  HDR, SK{IDi, CERT, AUTH, SAi2, TSi, TSr}  -->
    #  <--  HDR, SK{IDr, CERT, AUTH, SAr2, TSi, TSr}
    suite = CHILD_SUITES[name]
    pair = Pair(config("enb", children=policy(proposals=(suite,)))).established()
    (ei,), (er,) = pair.of("i", ChildEstablished), pair.of("r", ChildEstablished)
    ci, cr = child(pair, "i"), child(pair, "r")
    assert ei.suite == er.suite == str(suite) == name
    assert (ei.our_spi, ei.their_spi) == (er.their_spi, er.our_spi) == (ci.our_spi, cr.our_spi)
    assert ei.our_spi != ei.their_spi and len(ei.our_spi) == len(ei.their_spi) == 4
    assert (ei.spi_i, ei.spi_r) == (er.spi_i, er.spi_r) == (pair.sa("i").spi_i, pair.sa("r").spi_r)
    assert ei.tsi == er.tsi == (ts("0.0.0.0/0"),) and ei.tsr == er.tsr
    # the same KEYMAT on both sides, each direction paired
    assert ci.outbound == cr.inbound and ci.inbound == cr.outbound and ci.outbound != ci.inbound
    encr, integ = ci.outbound
    assert len(encr) == suite.key_bits // 8 + (4 if suite.encr == Encr.AES_GCM_16 else 0)
    assert len(integ) == (0 if suite.encr == Encr.AES_GCM_16 else 32)
    # RFC 7296 2.17: KEYMAT = prf+(SK_d, Ni | Nr), initiator->responder first, encr then integ
    sa = pair.sa("i")
    km = child_keymat(sa.suite.prf, sa.keys.sk_d, sa.ni, sa.nr, 2 * (len(encr) + len(integ)))
    assert km == b"".join([*ci.outbound, *ci.inbound])
    # SAr2: one ESP proposal, the responder's SPI, exactly the chosen transforms, no ESN
    (prop,) = next(p for p in _inner(pair, 3) if isinstance(p, SaPayload)).proposals
    assert prop.protocol == ProtocolId.ESP and prop.spi == cr.our_spi
    assert (TransformType.ESN, 0) in [(t.type, t.id) for t in prop.transforms]
    assert not pair.of("i", ChildRefused) and not pair.of("r", ChildRefused)
    no_internal_errors(pair)


def test_esp_spi_from_the_allocator_hook():
    # the gateway passes make_spi(slot, rand(4)): the NPU steers ESP by the top byte
    gw = endpoint(gw_config(), 2, esp_spi_alloc=iter([bytes(4), b"\x00\x00\x00\xff",
                                                    b"\x07\xab\xcd\xef"]).__next__)  # fmt: skip
    pair = Pair()
    pair.r = gw
    pair.established()
    assert child(pair, "r").our_spi == b"\x07\xab\xcd\xef"  # 0 and 1-255 are reserved
    assert gw.esp_spis == {b"\x07\xab\xcd\xef"}
    assert make_spi(7, b"\xff\x01\x02\x03") == b"\x07\x01\x02\x03"


def test_ts_narrowed_to_the_configured_selectors():
    gw = gw_config(children=policy(ts_local=(ts("10.0.0.0/8"),), ts_remote=(ts("192.0.2.0/24"),)))
    enb = config(
        "enb",
        children=policy(ts_remote=(ts("10.1.0.0/16", 17, (2152, 2152)), ts("172.16.0.0/12"))),
    )
    pair = Pair(enb, gw).established()
    (ev,) = pair.of("r", ChildEstablished)
    assert ev.tsi == (ts("192.0.2.0/24"),)
    assert ev.tsr == (ts("10.1.0.0/16", 17, (2152, 2152)),)  # 172.16/12 does not survive
    assert child(pair, "i").tsi == ev.tsi and child(pair, "i").tsr == ev.tsr
    no_internal_errors(pair)


def test_ts_unacceptable_keeps_the_ike_sa():
    gw = gw_config(children=policy(ts_local=(ts("10.0.0.0/8"),)))
    pair = Pair(config("enb", children=policy(ts_remote=(ts("172.16.0.0/12"),))), gw).established()
    assert NotifyType.TS_UNACCEPTABLE in notify_types(_inner(pair, 3))
    assert not any(isinstance(p, SaPayload) for p in _inner(pair, 3))
    assert pair.of("i", ChildRefused)[0].reason == "TS_UNACCEPTABLE" and pair.of("r", ChildRefused)
    assert not pair.sa("i").children and not pair.sa("r").children
    assert pair.sa("i").state is pair.sa("r").state is State.ESTABLISHED
    no_internal_errors(pair)


def test_no_proposal_chosen_keeps_the_ike_sa():
    enb = config(
        "enb",
        children=policy(proposals=(ChildProposal(Encr.AES_CBC, 256, Integ.HMAC_SHA2_512_256),)),
    )
    pair = Pair(enb).established()
    assert NotifyType.NO_PROPOSAL_CHOSEN in notify_types(_inner(pair, 3))
    assert pair.of("i", ChildRefused)[0].reason == "NO_PROPOSAL_CHOSEN"
    assert "no acceptable ESP proposal" in pair.of("r", ChildRefused)[0].reason
    assert not pair.of("i", ChildEstablished) and not pair.of("r", ChildEstablished)
    assert pair.sa("i").state is pair.sa("r").state is State.ESTABLISHED
    # the IKE SA is usable: liveness both ways
    pair.run(pair.i.check_liveness(pair.sa("i").spi_i, pair.now))
    assert pair.sa("r").recv_mid == 3
    no_internal_errors(pair)


def test_initiator_without_a_child_offer():
    pair = Pair(config("enb", children=())).established()
    assert not pair.of("r", ChildRefused) and not pair.of("r", ChildEstablished)
    assert not any(isinstance(p, SaPayload) for p in _inner(pair, 3))


def test_initiator_refuses_ts_outside_its_request(monkeypatch):
    # a responder that widens the TS: the initiator refuses and deletes the child it made
    monkeypatch.setattr(child_mod, "narrow", lambda peer, ours: (ts("0.0.0.0/0"),))
    pair = Pair(config("enb", children=policy(ts_remote=(ts("10.0.0.0/8"),)))).established()
    assert "TSr is not within" in pair.of("i", ChildRefused)[0].reason
    assert pair.of("r", ChildEstablished) and pair.of("r", ChildDeleted)
    assert not pair.sa("i").children and not pair.sa("r").children
    assert pair.sa("i").state is pair.sa("r").state is State.ESTABLISHED
    no_internal_errors(pair)


# ---------------------------------------------------------------------- selection units
def esp(num, spi=b"\x01\x02\x03\x04", *transforms, protocol=ProtocolId.ESP) -> Proposal:
    return Proposal(num, protocol, spi, tuple(transforms))


def encr(alg, bits):
    return Transform(TransformType.ENCR, alg, ((ATTR_KEY_LENGTH, bits),))


INTEG = Transform(TransformType.INTEG, Integ.HMAC_SHA2_256_128)
NO_ESN, ESN = Transform(TransformType.ESN, 0), Transform(TransformType.ESN, 1)


def test_select_follows_the_peers_order():
    mine = gw_config().children[0].proposals
    peer = SaPayload([
        esp(1, b"\x01\x02\x03\x04", encr(Encr.AES_CBC, 192), INTEG, NO_ESN),  # not configured
        esp(2, b"\x01\x02\x03\x04", encr(Encr.AES_GCM_16, 256), ESN),  # ESN only
        esp(3, b"\x01\x02", encr(Encr.AES_GCM_16, 256), NO_ESN),  # bad SPI size
        esp(4, b"\x01\x02\x03\x04", encr(Encr.AES_GCM_16, 256), NO_ESN, protocol=ProtocolId.AH),
        esp(5, b"\x01\x02\x03\x04", encr(Encr.AES_GCM_16, 256), NO_ESN,
            Transform(TransformType.DH, 19)),  # a KE group in IKE_AUTH
        esp(6, b"\x05\x06\x07\x08", encr(Encr.AES_CBC, 128), INTEG, NO_ESN, ESN,
            Transform(TransformType.DH, 0)),
        esp(7, b"\x01\x02\x03\x04", encr(Encr.AES_GCM_16, 256), NO_ESN),
    ])  # fmt: skip
    theirs, ours = select_esp(peer, mine)
    assert theirs.num == 6 and theirs.spi == b"\x05\x06\x07\x08"
    assert ours == ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128)
    with pytest.raises(NoProposalChosen):
        select_esp(SaPayload(peer.proposals[:5]), mine)


def test_ts_set_operations():
    assert intersect(ts("10.0.0.0/8"), ts("10.1.0.0/16", 6)) == ts("10.1.0.0/16", 6)
    assert intersect(ts("10.0.0.0/8", 6), ts("10.0.0.0/8", 17)) is None
    assert intersect(ts("10.0.0.0/8", 17, (500, 600)), ts("0.0.0.0/0", 0, (550, 700))) == ts(
        "10.0.0.0/8", 17, (550, 600)
    )
    v6 = TrafficSelector(TsType.IPV6_ADDR_RANGE, 0, 0, 65535, ipaddress.ip_address("::"),
                         ipaddress.ip_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))  # fmt: skip
    assert narrow([v6, ts("10.0.0.0/8")], [ts("0.0.0.0/0")]) == (ts("10.0.0.0/8"),)
    assert within([ts("10.1.0.0/16")], [ts("10.0.0.0/8")])
    assert not within([ts("10.0.0.0/7")], [ts("10.0.0.0/8")]) and not within([], [ts("0.0.0.0/0")])


# ---------------------------------------------------------------------- delete
def test_initiator_deletes_the_child():
    #  HDR, SK{D(ESP, SPIi)}  -->   <--  HDR, SK{D(ESP, SPIr)}
    pair = Pair().established()
    ci, cr = child(pair, "i"), child(pair, "r")
    pair.run(pair.i.delete_child(pair.sa("i").spi_i, ci.our_spi, pair.now))
    (req,) = [p for p in _inner(pair, 4) if isinstance(p, DeletePayload)]
    (resp,) = [p for p in _inner(pair, 5) if isinstance(p, DeletePayload)]
    assert (req.protocol, req.spis) == (ProtocolId.ESP, [ci.our_spi])
    assert (resp.protocol, resp.spis) == (ProtocolId.ESP, [cr.our_spi])
    (di,), (dr,) = pair.of("i", ChildDeleted), pair.of("r", ChildDeleted)
    assert (di.our_spi, di.reason) == (ci.our_spi, "deleted")
    assert (dr.our_spi, dr.their_spi, dr.reason) == (cr.our_spi, ci.our_spi, "deleted by peer")
    assert not pair.sa("i").children and not pair.sa("r").children
    assert not pair.r.esp_spis and not pair.i.esp_spis
    assert pair.sa("i").state is pair.sa("r").state is State.ESTABLISHED
    assert not pair.of("i", Deleted) and not pair.of("r", Deleted)
    no_internal_errors(pair)


def test_gateway_deletes_the_child():
    pair = Pair().established()
    cr = child(pair, "r")
    pair.run(pair.r.delete_child(pair.sa("r").spi_r, cr.our_spi, pair.now))
    assert pair.of("i", ChildDeleted)[0].reason == "deleted by peer"
    assert pair.of("r", ChildDeleted)[0].reason == "deleted"
    assert not pair.sa("i").children and not pair.sa("r").children
    # an unknown SPI: nothing to delete, nothing to send
    assert pair.r.delete_child(pair.sa("r").spi_r, cr.our_spi, pair.now) == []


def test_delete_of_an_unknown_child_spi_is_answered_empty():
    pair = Pair().established()
    sa = pair.sa("i")
    sa.pending.append(
        (ExchangeType.INFORMATIONAL, [_tasks.informational.ChildDeleteTask(b"\x99\x99\x99\x99")])
    )
    pair.run(sa._run(pair.now, sa._kick, pair.now))
    assert _inner(pair, 5) == [] and len(pair.sa("r").children) == 1
    assert not pair.of("r", ChildDeleted)


def test_ike_delete_takes_the_children_along():
    pair = Pair().established()
    pair.run(pair.i.delete(pair.sa("i").spi_i, pair.now))
    assert pair.of("i", ChildDeleted)[0].reason == "IKE SA deleted"
    assert pair.of("r", ChildDeleted)[0].reason == "IKE SA deleted by peer"
    assert not pair.i.sas and not pair.r.sas and not pair.r.esp_spis


# ---------------------------------------------------------------------- checkpoint, secrecy
def test_checkpoint_round_trip_with_a_child():
    pair = Pair().established()
    cr = child(pair, "r")
    checkpoint = json.loads(json.dumps(pair.r.export_sa(pair.sa("r").spi_r)))
    pair.r = endpoint(gw_config(), 99)  # the standby card takes over
    restored = pair.r.import_sa(checkpoint, pair.now)
    assert restored.children == {cr.our_spi: cr} and pair.r.esp_spis == {cr.our_spi}
    assert restored.to_checkpoint() == checkpoint
    # the peer deletes the child at the restored SA
    pair.run(pair.i.delete_child(pair.sa("i").spi_i, child(pair, "i").our_spi, pair.now))
    assert pair.of("r", ChildDeleted)[0].our_spi == cr.our_spi and pair.of("i", ChildDeleted)
    # an old checkpoint without children still loads
    del checkpoint["children"]
    assert not endpoint(gw_config(), 98).import_sa(checkpoint).children


def test_keys_never_in_repr_or_events():
    pair = Pair(
        config("enb", children=policy(proposals=(CHILD_SUITES["AES_CBC_256/HMAC_SHA2_256_128"],)))
    )
    pair.established()
    for side in ("i", "r"):
        c = child(pair, side)
        secrets = [k for k in (*c.outbound, *c.inbound) if k]
        shown = repr(c) + str(c) + repr(c.keys) + str(c.keys) + repr(pair.events[side])
        shown += repr(pair.sa(side).children)
        for secret in secrets:
            assert secret.hex() not in shown and repr(secret) not in shown
        assert "redacted" in repr(c.keys) or "keys" not in repr(c)


def test_derive_child_keys_split():
    suite = ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128)
    sa = Pair().established().sa("i")
    k = derive_child_keys(sa.suite.prf, sa.keys.sk_d, sa.ni, sa.nr, suite)
    km = child_keymat(sa.suite.prf, sa.keys.sk_d, sa.ni, sa.nr, 2 * (16 + 32))
    assert (k.encr_i, k.integ_i, k.encr_r, k.integ_r) == (km[:16], km[16:48], km[48:64], km[64:])


def test_ts_payload_types_in_the_response():
    pair = Pair().established()
    inner = _inner(pair, 3)
    assert [p.ptype for p in inner if isinstance(p, TsPayload)] == [
        PayloadType.TSi,
        PayloadType.TSr,
    ]


# ---------------------------------------------------------------------- child-SA payloads
def test_payload_chosen_by_containment_in_configuration_order():
    # payload "wide" comes first but only narrows; "gtp" contains the eNodeB's selectors
    gw = gw_config(
        children=(
            ChildPolicy("wide", ts_local=(ts("10.0.0.0/8"),), ts_remote=(ts("192.0.2.0/24"),)),
            ChildPolicy("gtp", ts_local=(ts("10.1.0.0/16", 17),), ts_remote=(ts("0.0.0.0/0"),)),
        )
    )
    enb = config("enb", children=policy(ts_remote=(ts("10.1.2.0/24", 17),)))
    pair = Pair(enb, gw).established()
    assert child(pair, "r").policy == "gtp"
    assert child(pair, "r").tsr == (ts("10.1.2.0/24", 17),)
    assert child(pair, "r").tsi == (ts("0.0.0.0/0"),)  # not narrowed to the first payload's
    # nothing contains 10.0.0.0/8: the first payload it can be narrowed to wins
    enb = config("enb", children=policy(ts_remote=(ts("10.0.0.0/8"),)))
    pair = Pair(enb, gw).established()
    assert child(pair, "r").policy == "wide" and child(pair, "r").tsr == (ts("10.0.0.0/8"),)
    no_internal_errors(pair)


def test_each_payload_has_its_own_transform_sets():
    cbc = ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128)
    gw = gw_config(
        children=(
            ChildPolicy("gcm", proposals=(ChildProposal(),), ts_local=(ts("10.0.0.0/8"),)),
            ChildPolicy("cbc", proposals=(cbc,), ts_local=(ts("0.0.0.0/0"),)),
        )
    )
    # the eNodeB offers CBC first, then GCM (proposal numbers 1 and 2); "gcm" matches first
    core = (ts("10.1.0.0/16"),)
    enb = config("enb", children=policy(proposals=(cbc, ChildProposal()), ts_remote=core))
    pair = Pair(enb, gw).established()
    assert (child(pair, "r").policy, child(pair, "r").suite) == ("gcm", ChildProposal())
    assert child(pair, "i").suite == ChildProposal()  # proposal 2 of the offer, understood
    only_cbc = config("enb", children=policy(proposals=(cbc,), ts_remote=core))
    pair = Pair(only_cbc, gw).established()
    assert (child(pair, "r").policy, child(pair, "r").suite) == ("cbc", cbc)


def test_initiator_refuses_a_proposal_number_it_did_not_offer():
    from cards.ike.child import accepted_esp, esp_sa_payload

    gcm = ChildProposal()
    reply = esp_sa_payload(gcm, b"\x01\x02\x03\x04", num=2)
    with pytest.raises(NoProposalChosen):
        accepted_esp(reply, (gcm,))  # we made one proposal: number 2 does not exist
    assert accepted_esp(reply, (ChildProposal(Encr.AES_GCM_16, 128), gcm))[1] == gcm
