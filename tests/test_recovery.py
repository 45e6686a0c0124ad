"""cards.recovery: checkpoint batches from an active card's engine to a standby's Holding, and
the takeover (in memory; the engines of test_ike_engine, batches through a msgpack round trip
as on the wire)."""

from __future__ import annotations

import msgpack
from test_ike_engine import GW, Pair, endpoint, gw_config, no_internal_errors

from cards.dataplane import DataPlane
from cards.esp import EspSa
from cards.ike.events import Alive, MidSynced
from cards.recovery import ESP_SEQ_MARGIN, Holding, Outbox


def wire(batch: dict) -> dict:
    return msgpack.unpackb(msgpack.packb(batch), raw=False, strict_map_key=False)


def active_pair() -> Pair:
    pair = Pair()
    pair.r.track_changes()
    return pair.established()


def test_established_sas_go_to_the_standby_and_come_back_to_life():
    pair = active_pair()
    outbox, holding = Outbox(), Holding()
    standby = endpoint(gw_config(), 55)
    batch = outbox.collect({GW: pair.r}, {})
    assert batch["seq"] == 1 and len(batch["endpoints"]["192.0.2.1|500"]["upserts"]) == 1
    assert holding.apply(wire(batch), {GW: standby}) == (1, False)
    outbox.on_ack(1)
    assert holding.count() == 1 and not outbox.pending()
    assert outbox.collect({GW: pair.r}, {}) is None  # nothing changed since

    pair.now += 10
    pair.r = standby  # the active card fails; the standby's NPU mapping takes its traffic
    (local, sa), = holding.take_over({GW: standby}, pair.now)  # fmt: skip
    assert local == GW and standby.sas[sa.my_spi] is sa and holding.count() == 0
    assert sa.ike_expire_at is not None and sa.ike_expire_at > pair.now  # lifetimes go on
    pair.run(pair._split("r", standby.sync_message_ids(sa.my_spi, pair.now)))
    assert pair.of("r", MidSynced) and pair.of("i", MidSynced)
    pair.run(pair._split("i", pair.i.check_liveness(pair.sa("i").spi_i, pair.now)))
    assert pair.of("i", Alive)
    no_internal_errors(pair)


def test_changes_deletes_and_message_ids_follow():
    pair = active_pair()
    outbox, holding, standby = Outbox(), Holding(), endpoint(gw_config(), 56)
    holding.apply(wire(outbox.collect({GW: pair.r}, {})), {GW: standby})
    spi = pair.sa("r").my_spi.hex()
    pair.run(pair._split("i", pair.i.check_liveness(pair.sa("i").spi_i, pair.now)))
    batch = outbox.collect({GW: pair.r}, {})  # the liveness moved the gateway's recv ID
    holding.apply(wire(batch), {GW: standby})
    held = holding.sas["192.0.2.1|500"][spi]
    assert held.checkpoint["recv_mid"] == pair.sa("r").recv_mid
    pair.run(pair.i.delete(pair.sa("i").spi_i, pair.now))
    holding.apply(wire(outbox.collect({GW: pair.r}, {})), {GW: standby})
    assert holding.count() == 0


def test_a_lost_batch_asks_for_a_full_one_and_resends_are_idempotent():
    pair = active_pair()
    outbox, holding, standby = Outbox(), Holding(), endpoint(gw_config(), 57)
    first = outbox.collect({GW: pair.r}, {})
    pair.run(pair._split("i", pair.i.check_liveness(pair.sa("i").spi_i, pair.now)))
    second = outbox.collect({GW: pair.r}, {})
    assert holding.apply(wire(second), {GW: standby}) == (0, True)  # the first was lost
    assert holding.apply(wire(outbox.full({GW: pair.r}, {})), {GW: standby}) == (3, False)
    assert holding.apply(wire(first), {GW: standby}) == (3, False)  # a late resend: ignored
    assert holding.count() == 1 and set(outbox.unacked) == {3}


def test_checkpoints_before_the_endpoint_exists_are_restored_later():
    pair = active_pair()
    holding, standby = Holding(), endpoint(gw_config(), 58)
    holding.apply(wire(Outbox().collect({GW: pair.r}, {})), {})  # no configuration yet
    (held,) = holding.sas["192.0.2.1|500"].values()
    assert held.sa is None
    holding.ready({GW: standby})
    assert held.sa is not None and held.sa.spi_r == pair.sa("r").spi_r


def test_esp_resumes_past_the_failed_cards_sequence_numbers():
    pair = active_pair()
    sa = pair.sa("r")
    dp_active = DataPlane(pair.r.rand)
    (child,) = sa.children.values()
    dp_active.adopt(pair.r, sa, echo=False, limits={}, seq_from={})
    dp_active.tunnels[child.our_spi].esp.seq_out = 1234
    outbox, holding, standby = Outbox(), Holding(), endpoint(gw_config(), 59)
    holding.apply(wire(outbox.collect({GW: pair.r}, dp_active.take_seq())), {GW: standby})
    assert dp_active.take_seq() == {}  # unchanged since: not sent again
    (local, restored), = holding.take_over({GW: standby}, 5.0)  # fmt: skip
    dp = DataPlane(standby.rand)
    seq_from = holding.esp_start(restored.children)
    dp.adopt(standby, restored, echo=True, limits={}, seq_from=seq_from)
    esp = dp.tunnels[child.our_spi].esp
    assert isinstance(esp, EspSa) and esp.seq_out == 1234 + ESP_SEQ_MARGIN
    assert dp.tunnels[child.our_spi].echo
