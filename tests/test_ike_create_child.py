"""cards.ike: CREATE_CHILD_SA, MCSA and child rekeys (RFC 7296 1.3, 2.8, 2.8.1, 2.9, 2.17).

In-memory eNodeB initiator <-> SeGW responder pairs (test_ike_engine.Pair), manual clock.
Ladder notation as in RFC 7296.
"""

from __future__ import annotations

import ipaddress

import pytest
from test_ike_engine import Pair, _inner, config, gw_config, no_internal_errors

from cards.ike.child import derive_child_keys
from cards.ike.config import ChildPolicy, ChildProposal
from cards.ike.const import DhGroup, Encr, Integ, NotifyType, TsType
from cards.ike.events import (
    ChildDeleted,
    ChildEstablished,
    ChildRefused,
    Deleted,
    Established,
    IkeRekeyed,
)
from cards.ike.message import KePayload, NotifyPayload
from cards.ike.payloads import TrafficSelector
from cards.ike.sa import State

V4 = TsType.IPV4_ADDR_RANGE
GCM = ChildProposal(Encr.AES_GCM_16, 256)
CBC = ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128)


def ts(net: str, proto: int = 0, ports=(0, 65535)) -> TrafficSelector:
    n = ipaddress.ip_network(net)
    return TrafficSelector(V4, proto, ports[0], ports[1], n[0], n[-1])


def udp(addr: str, port: int) -> TrafficSelector:
    return ts(f"{addr}/32", 17, (port, port))


ANY = ts("0.0.0.0/0")
ENB_NET, CORE, OAM, X2 = ts("192.0.2.0/24"), ts("10.1.0.0/16"), ts("10.2.0.0/16"), ts("10.3.0.0/16")


def payloads(*specs, **kw) -> tuple[ChildPolicy, ...]:
    """(name, remote TS, local TS) per payload, as the gateway sees them."""
    return tuple(ChildPolicy(n, ts_remote=(r,), ts_local=(loc,), **kw) for n, r, loc in specs)


GW_MCSA = payloads(("s1u", ENB_NET, CORE), ("oam", ENB_NET, OAM), ("x2", ENB_NET, X2))


def enb_side(*specs, **kw) -> tuple[ChildPolicy, ...]:
    """The eNodeB's payloads: its own net as local TS, the gateway's side as remote."""
    return tuple(ChildPolicy(n, ts_local=(ENB_NET,), ts_remote=(r,), **kw) for n, r in specs)


def children(pair: Pair, side: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in pair.sa(side).children.values():
        out.setdefault(c.policy, []).append(c)
    return out


def tick(pair: Pair, until: float) -> None:
    """Run both endpoints' timers up to ``until`` (delivering what they send)."""
    while True:
        due = [(t, side) for side, ep in (("i", pair.i), ("r", pair.r))
               if (t := ep.get_timer()) is not None and t <= until]  # fmt: skip
        if not due:
            pair.now = until
            return
        t, side = min(due)
        pair.now = max(pair.now, t)
        ep = pair.i if side == "i" else pair.r
        pair.run(pair._split(side, ep.handle_timer(pair.now)))


def paired(pair: Pair) -> None:
    """Every child on one side has its twin on the other (SPIs and keys crossed)."""
    mine, theirs = pair.sa("i").children, pair.sa("r").children
    assert len(mine) == len(theirs)
    for c in mine.values():
        twin = theirs[c.their_spi]
        assert twin.their_spi == c.our_spi and c.outbound == twin.inbound
        assert c.policy and (c.tsi, c.tsr) == (twin.tsi, twin.tsr)


# ---------------------------------------------------------------------- new children
def test_enodeb_creates_more_children_each_matched_to_its_payload():
    #  eNodeB                                                  SeGW
    #  IKE_AUTH {..., SA, TSi=192.0.2.0/24, TSr=10.1/16}  ---> payload s1u
    #  HDR, SK{SA, Ni, TSi, TSr=10.2/16}  ------------------>  payload oam
    #  <------------------------------  HDR, SK{SA, Nr, TSi, TSr}
    #  HDR, SK{SA, Ni, TSi, TSr=10.3/16}  ------------------>  payload x2
    #  <------------------------------  HDR, SK{SA, Nr, TSi, TSr}
    enb = config("enb", children=enb_side(("a", CORE), ("b", OAM), ("c", X2)))
    pair = Pair(enb, gw_config(children=GW_MCSA, mcsa_delay_s=None)).established()
    sa = pair.sa("i")
    pair.run(pair.i.create_child(sa.spi_i, pair.now, "b"))
    pair.run(pair.i.create_child(sa.spi_i, pair.now, "c"))
    assert sorted(children(pair, "r")) == ["oam", "s1u", "x2"]
    assert [c.tsr for c in children(pair, "r")["x2"]] == [(X2,)]
    paired(pair)
    assert len(pair.of("r", ChildEstablished)) == 3 and not pair.of("r", ChildRefused)
    no_internal_errors(pair)


def test_gateway_creates_the_payloads_the_enodeb_did_not():
    #  responder-triggered MCSA: the eNodeB asks for s1u only; one second after IKE_AUTH
    #  the gateway initiates CREATE_CHILD_SA for oam and x2 (TSi = its side, TSr = the eNodeB's)
    enb = config("enb", children=enb_side(("a", ts("10.0.0.0/8"))))  # accepts any narrowing
    pair = Pair(enb, gw_config(children=GW_MCSA)).established()
    assert list(children(pair, "r")) == ["s1u"]
    tick(pair, pair.now + 0.5)
    assert list(children(pair, "r")) == ["s1u"]  # not before the delay
    tick(pair, pair.now + 1.0)
    assert sorted(children(pair, "r")) == ["oam", "s1u", "x2"]
    oam = children(pair, "r")["oam"][0]
    assert oam.initiator and oam.tsi == (OAM,) and oam.tsr == (ENB_NET,)
    paired(pair)
    no_internal_errors(pair)


def test_gateway_skips_what_the_enodeb_covered_meanwhile():
    enb = config("enb", children=enb_side(("a", CORE), ("b", OAM), ("c", X2)), mcsa_delay_s=None)
    pair = Pair(enb, gw_config(children=GW_MCSA)).established()
    pair.run(pair.i.create_child(pair.sa("i").spi_i, pair.now, "b"))  # oam, by the eNodeB
    tick(pair, pair.now + 2)
    got = children(pair, "r")
    assert sorted(got) == ["oam", "s1u", "x2"] and len(got["oam"]) == 1
    assert not got["oam"][0].initiator and got["x2"][0].initiator
    paired(pair)


def test_max_childsa_refuses_more_and_terminate_deletes_the_ike_sa():
    enb = config("enb", children=enb_side(("a", CORE), ("b", OAM), ("c", X2)))
    gw = gw_config(children=GW_MCSA, max_children=2, mcsa_delay_s=None)
    pair = Pair(enb, gw).established()
    spi = pair.sa("i").spi_i
    pair.run(pair.i.create_child(spi, pair.now, "b"))
    # the eNodeB's own limit is 5: it asks, the gateway refuses
    pair.run(pair.i.create_child(spi, pair.now, "c"))
    assert NotifyType.NO_ADDITIONAL_SAS in [n.type for n in _inner(pair, -1)
                                            if isinstance(n, NotifyPayload)]  # fmt: skip
    assert pair.of("i", ChildRefused)[-1].reason == "NO_ADDITIONAL_SAS"
    assert len(pair.sa("r").children) == 2 and pair.sa("r").state is State.ESTABLISHED
    # overload-action terminate: the same request now ends the IKE SA
    gw = gw_config(children=GW_MCSA, max_children=2, mcsa_delay_s=None,
                   overload_action="terminate")  # fmt: skip
    pair = Pair(enb, gw).established()
    pair.run(pair.i.create_child(spi := pair.sa("i").spi_i, pair.now, "b"))
    pair.run(pair.i.create_child(spi, pair.now, "c"))
    assert pair.of("r", Deleted) and not pair.r.sas and not pair.i.sas


def test_a_request_matching_no_payload_gets_ts_unacceptable():
    enb = config("enb", children=enb_side(("a", CORE), ("b", ts("172.16.0.0/12"))))
    pair = Pair(enb, gw_config(children=GW_MCSA, mcsa_delay_s=None)).established()
    pair.run(pair.i.create_child(pair.sa("i").spi_i, pair.now, "b"))
    assert pair.of("i", ChildRefused)[-1].reason == "TS_UNACCEPTABLE"
    assert "every configured child-SA payload" in pair.of("r", ChildRefused)[-1].reason
    assert len(pair.sa("i").children) == len(pair.sa("r").children) == 1
    no_internal_errors(pair)


# ---------------------------------------------------------------------- the reference's example
H = "198.51.100.66"


def test_reference_example_one_child_for_the_whole_product():
    # UDP from 198.51.100.66, source ports {100, 200} x destination ports {300, 400}: one
    # payload whose TSi holds both source ports and TSr both destination ports
    gw_pl = (ChildPolicy("all", ts_remote=(udp(H, 100), udp(H, 200)),
                         ts_local=(ts("0.0.0.0/0", 17, (300, 300)), ts("0.0.0.0/0", 17, (400, 400)))),)  # fmt: skip
    enb_pl = (ChildPolicy("all", ts_local=gw_pl[0].ts_remote, ts_remote=gw_pl[0].ts_local),)
    pair = Pair(config("enb", children=enb_pl), gw_config(children=gw_pl)).established()
    (c,) = pair.sa("r").children.values()
    assert c.tsi == gw_pl[0].ts_remote and c.tsr == gw_pl[0].ts_local
    tick(pair, pair.now + 5)
    assert len(pair.sa("r").children) == 1  # nothing left to create


def test_reference_example_two_pairs_need_two_children():
    # (100,300) and (200,400) only: two payloads, so two children
    gw_pl = (ChildPolicy("p1", ts_remote=(udp(H, 100),), ts_local=(ts("0.0.0.0/0", 17, (300, 300)),)),
             ChildPolicy("p2", ts_remote=(udp(H, 200),), ts_local=(ts("0.0.0.0/0", 17, (400, 400)),)))  # fmt: skip
    enb_pl = tuple(ChildPolicy(p.name, ts_local=p.ts_remote, ts_remote=p.ts_local) for p in gw_pl)
    # the eNodeB knows both pairs but asks only for the first: the gateway creates p2
    enb = config("enb", children=enb_pl, mcsa_delay_s=None)
    pair = Pair(enb, gw_config(children=gw_pl)).established()
    assert list(children(pair, "r")) == ["p1"]
    tick(pair, pair.now + 2)  # the gateway creates p2
    got = children(pair, "r")
    assert sorted(got) == ["p1", "p2"] and got["p2"][0].tsr == (udp(H, 200),)
    paired(pair)


# ---------------------------------------------------------------------- rekeys
@pytest.mark.parametrize("who", ["i", "r"])
@pytest.mark.parametrize("pfs", [0, DhGroup.ECP_256], ids=["no-pfs", "pfs-ecp256"])
def test_child_rekey_either_side(who, pfs):
    #  HDR, SK{N(REKEY_SA, old SPI), SA, Ni, [KEi], TSi, TSr}  -->
    #  <--  HDR, SK{SA, Nr, [KEr], TSi, TSr}
    #  HDR, SK{D(old SPI)}  -->   <--  HDR, SK{D(peer's old SPI)}
    suite = ChildProposal(Encr.AES_GCM_16, 256, dh=pfs)
    pl = (ChildPolicy(proposals=(suite,)),)
    pair = Pair(config("enb", children=pl), gw_config(children=pl)).established()
    ep = pair.i if who == "i" else pair.r
    sa = pair.sa(who)
    (old,) = sa.children.values()
    pair.run(ep.rekey_child(sa.my_spi, old.our_spi, pair.now))
    (new,) = sa.children.values()
    assert new.our_spi != old.our_spi and new.keys != old.keys and new.suite == suite
    paired(pair)
    request = _inner(pair, -4)
    assert (KePayload in {type(p) for p in request}) == bool(pfs)
    rekey = [p for p in request if isinstance(p, NotifyPayload) and p.type == NotifyType.REKEY_SA]
    assert rekey and rekey[0].spi == old.our_spi  # the SPI the rekey's initiator receives on
    assert [e.replaces for e in pair.of(who, ChildEstablished)][-1] == old.our_spi
    assert {e.our_spi for e in pair.of("i", ChildDeleted) + pair.of("r", ChildDeleted)} == {
        old.our_spi, old.their_spi}  # fmt: skip
    if pfs:  # KEYMAT = prf+(SK_d, g^ir | Ni | Nr): not the no-PFS keys
        plain = derive_child_keys(sa.suite.prf, sa.keys.sk_d, *new.nonces, suite)
        assert plain != new.keys
    no_internal_errors(pair)


def test_simultaneous_rekeys_leave_one_child():
    # both sides rekey the same child at once; the new child holding the lowest of the four
    # nonces is deleted by the side that created it, the old one by both (2.8.1)
    pair = Pair().established()
    (ci,), (cr,) = pair.sa("i").children.values(), pair.sa("r").children.values()
    a = pair.i.rekey_child(pair.sa("i").spi_i, ci.our_spi, pair.now)
    b = pair.r.rekey_child(pair.sa("r").spi_r, cr.our_spi, pair.now)
    pair.run(a + b)
    assert len(pair.sa("i").children) == len(pair.sa("r").children) == 1
    paired(pair)
    (left,) = pair.sa("i").children.values()
    assert left.our_spi != ci.our_spi
    no_internal_errors(pair)


def test_rekey_at_ninety_percent_and_expiry_without_rekey():
    rekeying = (ChildPolicy(lifetime_s=100, rekey=True),)
    pair = Pair(config("enb", children=(ChildPolicy(lifetime_s=1000),)),
                gw_config(children=rekeying)).established()  # fmt: skip
    start = pair.now
    (first,) = pair.sa("r").children.values()
    tick(pair, start + 89)
    assert first.our_spi in pair.sa("r").children
    tick(pair, start + 91)  # the gateway rekeyed at 90 s
    (second,) = pair.sa("r").children.values()
    assert second.our_spi != first.our_spi and second.initiator
    # without rekey the child is deleted at the end of its lifetime
    pair = Pair(config("enb", children=(ChildPolicy(lifetime_s=1000),)),
                gw_config(children=(ChildPolicy(lifetime_s=100),))).established()  # fmt: skip
    tick(pair, pair.now + 101)
    assert not pair.sa("r").children and not pair.sa("i").children
    assert pair.sa("r").state is State.ESTABLISHED


def test_pfs_group_mismatch_is_retried_with_the_group_asked():
    # the eNodeB proposes ECP-256 first, then MODP-2048; the gateway only takes MODP-2048
    enb = (ChildPolicy(proposals=(ChildProposal(dh=DhGroup.ECP_256),
                                  ChildProposal(dh=DhGroup.MODP_2048))),)  # fmt: skip
    gw = (ChildPolicy(proposals=(ChildProposal(dh=DhGroup.MODP_2048),)),)
    pair = Pair(config("enb", children=enb), gw_config(children=gw)).established()
    (old,) = pair.sa("i").children.values()
    pair.run(pair.i.rekey_child(pair.sa("i").spi_i, old.our_spi, pair.now))
    (new,) = pair.sa("i").children.values()
    assert new.suite.dh == DhGroup.MODP_2048 and new.our_spi != old.our_spi
    notes = [n.type for n in _inner(pair, 5) if isinstance(n, NotifyPayload)]
    assert NotifyType.INVALID_KE_PAYLOAD in notes
    paired(pair)


def test_rekey_of_an_unknown_child_is_refused():
    pair = Pair().established()
    sa = pair.sa("i")
    (c,) = sa.children.values()
    pair.r.sas[pair.sa("r").spi_r].children.clear()  # the gateway lost it
    pair.run(pair.i.rekey_child(sa.spi_i, c.our_spi, pair.now))
    assert pair.of("i", ChildRefused)[-1].reason == "CHILD_SA_NOT_FOUND"
    assert c.our_spi in sa.children and sa.state is State.ESTABLISHED


# ---------------------------------------------------------------------- IKE SA rekey
def ike_state(pair: Pair, side: str):
    ep = pair.i if side == "i" else pair.r
    return {spi: sa.state for spi, sa in ep.sas.items()}


@pytest.mark.parametrize("who", ["i", "r"])
def test_ike_rekey_either_side_moves_the_children(who):
    #  HDR, SK{SA(SPI = new SPI), Ni, KEi}  -->  <--  HDR, SK{SA(SPI = new SPI), Nr, KEr}
    #  (old SA) HDR, SK{D}  -->  <--  HDR, SK{}
    pair = Pair().established()
    old_i, old_r = pair.sa("i"), pair.sa("r")
    kids = set(old_r.children)
    ep = pair.i if who == "i" else pair.r
    pair.run(ep.rekey_ike((old_i if who == "i" else old_r).my_spi, pair.now))
    new_i, new_r = pair.sa("i"), pair.sa("r")  # the old ones are gone
    assert new_i.spi_i == new_r.spi_i and new_i.spi_r == new_r.spi_r
    assert {new_i.spi_i, new_i.spi_r}.isdisjoint({old_i.spi_i, old_i.spi_r})
    assert new_i.initiator == (who == "i") and new_r.initiator == (who == "r")
    assert new_i.keys == new_r.keys and new_i.keys != old_i.keys
    assert set(new_r.children) == kids and not pair.of("r", ChildDeleted)
    assert new_i.send_mid == new_r.recv_mid == 0  # message IDs start again (2.18)
    # a rekey is not a new establishment: one Established each, and one IkeRekeyed
    assert len(pair.of("i", Established)) == len(pair.of("r", Established)) == 1
    (rekeyed,) = pair.of(who, IkeRekeyed)
    assert (rekeyed.spi_i, rekeyed.new_spi_i) == (old_i.spi_i, new_i.spi_i) and rekeyed.initiator
    paired(pair)
    # the new SA works: liveness, then a child rekey on it
    pair.run(pair.i.check_liveness(new_i.my_spi, pair.now))
    assert new_r.recv_mid == 1
    pair.run(pair.r.rekey_child(new_r.my_spi, next(iter(new_r.children)), pair.now))
    paired(pair)
    no_internal_errors(pair)


def test_simultaneous_ike_rekeys_leave_one_ike_sa():
    pair = Pair().established()
    kids = set(pair.sa("r").children)
    a = pair.i.rekey_ike(pair.sa("i").my_spi, pair.now)
    b = pair.r.rekey_ike(pair.sa("r").my_spi, pair.now)
    pair.run(a + b)
    new_i, new_r = pair.sa("i"), pair.sa("r")  # exactly one on each side
    assert (new_i.spi_i, new_i.spi_r) == (new_r.spi_i, new_r.spi_r)
    assert set(new_r.children) == kids
    paired(pair)
    no_internal_errors(pair)


def test_ike_lifetime_rekey_and_expiry():
    gw = gw_config(ike_lifetime_s=1000, ike_rekey=True)
    pair = Pair(config("enb", ike_lifetime_s=5000), gw).established()
    first = pair.sa("r").my_spi
    tick(pair, pair.now + 899)
    assert pair.sa("r").my_spi == first
    tick(pair, pair.now + 2)  # at 90%
    assert pair.sa("r").my_spi != first and pair.sa("r").initiator
    # without rekey the IKE SA is deleted at the end of its lifetime
    pair = Pair(config("enb", ike_lifetime_s=5000), gw_config(ike_lifetime_s=1000)).established()
    tick(pair, pair.now + 1001)
    assert not pair.r.sas and not pair.i.sas


# ---------------------------------------------------------------------- dead peer detection
def test_dpd_after_a_quiet_interval_then_dead_after_the_retries():
    gw = gw_config(dpd_interval_s=10, dpd_retry_s=2, dpd_max_retries=3)
    pair = Pair(config("enb"), gw).established()
    start = pair.now
    tick(pair, start + 9.9)
    assert pair.sa("r").send_mid == 0  # nothing sent yet
    tick(pair, start + 10.1)  # one empty INFORMATIONAL, answered
    assert pair.sa("r").send_mid == 1 and pair.sa("i").recv_mid == 1
    # traffic from the peer resets the interval
    pair.run(pair.i.check_liveness(pair.sa("i").spi_i, pair.now))
    tick(pair, pair.now + 9.9)
    assert pair.sa("r").send_mid == 1
    # the eNodeB goes silent: 3 retries 2 s apart, then the IKE SA is dead
    mark = pair.now
    pair.i = type(pair.i)(pair.i.config, rand=pair.i.rand, wall_clock=pair.i.wall_clock)  # gone
    tick(pair, mark + 0.2)
    tick(pair, mark + 6.3)
    assert pair.r.sas  # not yet: 3 retries at 2 s after the first try
    tick(pair, mark + 8.5)
    assert not pair.r.sas
    assert "dead peer" in pair.of("r", Deleted)[-1].reason


def test_a_child_rekey_due_with_the_ike_rekey_follows_the_children():
    # both fall due in one tick: the child rekey queued behind the IKE rekey moves with the
    # children to the new IKE SA and is sent there (it used to be lost with the old SA)
    gw = gw_config(ike_lifetime_s=100, ike_rekey=True,
                   children=(ChildPolicy(lifetime_s=100, rekey=True),))  # fmt: skip
    enb = config("enb", ike_lifetime_s=5000, children=(ChildPolicy(lifetime_s=5000),))
    pair = Pair(enb, gw).established()
    start, first_ike = pair.now, pair.sa("r").my_spi
    (first,) = pair.sa("r").children.values()
    tick(pair, start + 91)
    assert pair.sa("r").my_spi != first_ike
    (child,) = pair.sa("r").children.values()
    assert child.our_spi != first.our_spi and child.expire_at == start + 90 + 100
    tick(pair, start + 101)
    assert pair.sa("r").children  # not dead at the old child's hard lifetime
    paired(pair)
    no_internal_errors(pair)
