"""cards.pools: each card's share of the IP pools; addresses come back (unit + property)."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from cards.pools import AddressPool, Pools


def test_ipv4_share_skips_network_and_broadcast():
    pool = AddressPool("p", "10.0.0.0/29")
    got = [pool.allocate() for _ in range(7)]
    assert got == [f"10.0.0.{i}" for i in range(1, 7)] + [None]
    pool.release("10.0.0.3")
    assert pool.allocate() == "10.0.0.3"


def test_release_of_a_foreign_or_free_address_is_refused():
    pool = AddressPool("p", "10.0.0.0/29")
    a = pool.allocate()
    assert not pool.release("10.0.1.1")  # not in the pool
    assert pool.release(a) and not pool.release(a)  # twice


def test_pools_in_order_per_family():
    pools = Pools([AddressPool("a", "10.0.0.0/30"), AddressPool("v6", "2001:db8::/126"),
                   AddressPool("b", "10.1.0.0/30")])  # fmt: skip
    assert [pools.allocate(4) for _ in range(5)] == ["10.0.0.1", "10.0.0.2", "10.1.0.1",
                                                     "10.1.0.2", None]  # fmt: skip
    assert pools.allocate(6) == "2001:db8::"
    pools.release("10.1.0.1")
    assert pools.allocate(4) == "10.1.0.1"
    assert pools.reserve("2001:db8::1") and not pools.reserve("2001:db8::1")
    assert pools.allocate(6) == "2001:db8::2"


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.integers(24, 30),
    cards=st.integers(1, 8),
    ops=st.lists(st.tuples(st.integers(0, 7), st.booleans()), max_size=200),
)
def test_shares_never_overlap_and_nothing_is_lost(prefix, cards, ops):
    net = ipaddress.ip_network(f"10.9.0.0/{prefix}")
    shares = [AddressPool("p", str(net), k, cards) for k in range(cards)]
    held: list[set] = [set() for _ in range(cards)]
    for card, take in ops:
        card %= cards
        if take or not held[card]:
            address = shares[card].allocate()
            if address is not None:
                assert all(address not in h for h in held)  # disjoint across cards
                held[card].add(address)
        else:
            shares[card].release(held[card].pop())
    # every share drains to exactly its addresses: nothing lost, nothing twice
    for card, share in enumerate(shares):
        while (address := share.allocate()) is not None:
            held[card].add(address)
    total = set().union(*held)
    assert sum(len(h) for h in held) == len(total) == net.num_addresses - 2
