"""cards.gateway: the configuration tree (as the CLI projects it) becomes IKE child policies."""

import ipaddress

from test_cli_ike_config import CHILD_CONFIG, engine

from cards.gateway import ANY_TS, child_policies, settings
from cards.ike.config import DEFAULT_CHILD_PROPOSALS, ChildProposal
from cards.ike.const import DhGroup, Encr, Integ


def context() -> dict:
    eng = engine()
    assert eng.apply_boot(CHILD_CONFIG) == []
    return eng.projection()["config"]["context"]["segw"]


def test_template_payloads_in_configuration_order_with_the_peer_as_tsi():
    ctx = context()
    gtp, oam = child_policies(ctx["crypto-template"]["t"], ctx, initiator=False)
    assert (gtp.name, oam.name) == ("gtp", "oam")
    assert gtp.proposals == (
        ChildProposal(Encr.AES_GCM_16, 256),
        ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128, DhGroup.ECP_256),  # PFS
    )
    assert gtp.rekey and not oam.rekey
    (remote,) = gtp.ts_remote  # tsi: the eNodeB's side when the gateway responds
    assert remote.start_addr == remote.end_addr == ipaddress.ip_address("198.51.100.66")
    assert (remote.ip_proto, remote.start_port, remote.end_port) == (17, 100, 100)
    (local,) = gtp.ts_local
    assert (local.start_port, local.end_port) == (300, 300) and gtp.lifetime_s == 7200


def test_crypto_map_payload_has_the_gateway_as_tsi_and_defaults_to_its_family():
    ctx = context()
    (pl,) = child_policies(ctx["crypto-map"]["to-core"], ctx, initiator=True)
    assert pl.ts_local == pl.ts_remote == ANY_TS[1:]  # match ipv6, no selectors
    assert pl.proposals == (ChildProposal(Encr.AES_GCM_16, 256),)


def test_no_payload_means_any_ipv4_or_ipv6_with_the_default_transform_sets():
    (pl,) = child_policies({}, {}, initiator=False)
    assert pl.ts_local == pl.ts_remote == ANY_TS and pl.proposals == DEFAULT_CHILD_PROPOSALS


def test_template_settings_mcsa_dpd_and_rekey():
    ctx = context()
    got = settings(ctx["crypto-template"]["t"], ctx, initiator=False)
    assert (got["max_children"], got["overload_action"]) == (3, "terminate")
    assert got["ike_rekey"] and got["dpd_interval_s"] == 30.0
    assert (got["dpd_retry_s"], got["dpd_max_retries"]) == (5.0, 4)
    cmap = settings(ctx["crypto-map"]["to-core"], ctx, initiator=True)
    assert cmap["dpd_interval_s"] is None and not cmap["ike_rekey"] and cmap["max_children"] == 2


def test_service_pools_become_this_cards_share():
    from cards.gateway import address_pools

    ctx = {"ip-pool": {"a": {"address": "10.8.0.0", "mask": "255.255.255.0"}},
           "ipv6-pool": {"b": {"prefix": "2001:db8:8::/64"}}}  # fmt: skip
    card0, card1 = (address_pools(["a", "b"], ctx, {"index": k, "of": 2}) for k in (0, 1))
    assert [card0.allocate(4), card1.allocate(4), card0.allocate(4)] == [
        "10.8.0.2", "10.8.0.1", "10.8.0.4"]  # fmt: skip
    assert card1.allocate(6) == "2001:db8:8::1" and address_pools(["nope"], ctx, {}) is None
