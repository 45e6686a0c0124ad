"""cards.ike: the eNodeB's inner address through the configuration payload (RFC 7296 2.19).

HDR, SK{IDi, CERT, AUTH, CP(CFG_REQUEST: INTERNAL_IP4_ADDRESS), SAi2, TSi = any, TSr}  -->
<--  HDR, SK{IDr, CERT, AUTH, CP(CFG_REPLY: INTERNAL_IP4_ADDRESS = 10.8.0.1), SAr2,
             TSi = 10.8.0.1, TSr}
"""

from __future__ import annotations

from test_ike_create_child import tick, ts
from test_ike_engine import Pair, _inner, config, endpoint, gw_config, no_internal_errors

from cards.ike.config import ChildPolicy
from cards.ike.const import NotifyType
from cards.ike.events import ChildRefused
from cards.ike.message import CpPayload, NotifyPayload
from cards.pools import AddressPool, Pools


def pools(net="10.8.0.0/30", v6=None) -> Pools:
    return Pools([AddressPool("p", net)] + ([AddressPool("p6", v6)] if v6 else []))


def cp_pair(pool: Pools, versions=(4,), **gw) -> Pair:
    return Pair(config("enb", request_addresses=versions), gw_config(addresses=pool, **gw))


def test_address_assigned_and_the_child_pinned_to_it():
    pool = pools()
    pair = cp_pair(pool).established()
    assert pair.sa("r").assigned == ["10.8.0.1"] and pair.sa("i").virtual_ips == ["10.8.0.1"]
    (child,) = pair.sa("r").children.values()
    assert child.tsi == (ts("10.8.0.1/32"),)
    reply = [p for p in _inner(pair, 3) if isinstance(p, CpPayload)]
    assert reply and reply[0].cfg_type == 2
    no_internal_errors(pair)


def test_ipv4_and_ipv6_at_once():
    pair = cp_pair(pools(v6="2001:db8:8::/64"), versions=(4, 6)).established()
    assert pair.sa("r").assigned == ["10.8.0.1", "2001:db8:8::"]
    assert pair.sa("i").virtual_ips == pair.sa("r").assigned


def test_the_address_returns_to_the_pool_with_the_ike_sa():
    pool = pools()
    first = cp_pair(pool).established()
    second = cp_pair(pool).established()
    assert second.sa("r").assigned == ["10.8.0.2"]
    first.run(first.i.delete(first.sa("i").spi_i, first.now))
    third = cp_pair(pool).established()
    assert third.sa("r").assigned == ["10.8.0.1"]  # reused


def test_pool_exhausted_gives_internal_address_failure_and_no_child():
    pool = pools("10.8.0.0/30")  # two usable addresses
    for _ in range(2):
        cp_pair(pool).established()
    pair = cp_pair(pool).established()  # the IKE SA comes up, without a child
    notes = [n.type for n in _inner(pair, 3) if isinstance(n, NotifyPayload)]
    assert NotifyType.INTERNAL_ADDRESS_FAILURE in notes
    assert not pair.sa("r").children and not pair.sa("r").assigned
    assert pair.of("i", ChildRefused)[0].reason == "INTERNAL_ADDRESS_FAILURE"
    no_internal_errors(pair)


def test_more_children_and_rekeys_keep_the_address():
    pool = pools("10.8.0.0/24")
    inner = ts("10.8.0.0/24")  # the payloads' TSi cover the pool
    gw_pl = tuple(ChildPolicy(n, ts_remote=(inner,), ts_local=(ts(net),))
                  for n, net in (("s1u", "10.1.0.0/16"), ("oam", "10.2.0.0/16"), ("x2", "10.3.0.0/16")))  # fmt: skip
    enb_pl = tuple(
        ChildPolicy(p.name, ts_local=(ts("0.0.0.0/0"),), ts_remote=p.ts_local) for p in gw_pl
    )
    enb = config("enb", request_addresses=(4,), children=enb_pl, mcsa_delay_s=None)
    pair = Pair(enb, gw_config(addresses=pool, children=gw_pl)).established()
    tick(pair, pair.now + 2)  # the gateway creates oam and x2 towards the eNodeB's address
    assert len(pair.sa("r").children) == 3
    assert {c.tsr for c in pair.sa("r").children.values() if c.initiator} == {(ts("10.8.0.1/32"),)}
    pair.run(pair.r.rekey_ike(pair.sa("r").spi_r, pair.now))
    assert pair.sa("r").assigned == ["10.8.0.1"] and pool.allocate(4) == "10.8.0.2"
    no_internal_errors(pair)


def test_checkpoint_keeps_and_restores_the_address():
    pool = pools("10.8.0.0/24")
    pair = cp_pair(pool).established()
    checkpoint = pair.r.export_sa(pair.sa("r").spi_r)
    assert checkpoint["assigned"] == ["10.8.0.1"]
    fresh = pools("10.8.0.0/24")
    standby = endpoint(gw_config(addresses=fresh), 77)
    standby.import_sa(checkpoint)
    assert fresh.allocate(4) == "10.8.0.2"  # 10.8.0.1 is taken again
