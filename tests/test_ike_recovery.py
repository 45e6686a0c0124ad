"""Session recovery in memory: an IKE SA checkpointed on one gateway engine, restored on
another (the standby card), Message IDs resynchronised with RFC 6311, and the tunnel goes on
(liveness both ways, a child rekey) without renegotiating the IKE SA.

eNodeB                                            SeGW (standby, restored from a checkpoint)
  <--  HDR(ID 0), SK{N(IKEV2_MESSAGE_ID_SYNC: nonce, M1 = send + 64, P1 = recv)}
  HDR(ID 0), SK{N(IKEV2_MESSAGE_ID_SYNC: nonce, P2, M2)}  -->
  both continue: the SeGW sends from M2, expects P2
"""

from __future__ import annotations

import json

from test_ike_engine import Pair, decode, endpoint, gw_config, no_internal_errors

from cards.ike.const import NotifyType
from cards.ike.events import Alive, ChildEstablished, Dropped, MidSynced
from cards.ike.message import NotifyPayload
from cards.ike.tasks.mid_sync import MARGIN


def take_over(pair: Pair, checkpoint: dict, seed: int = 77):
    """The standby card's engine, holding the SA restored from ``checkpoint``."""
    pair.r = endpoint(gw_config(), seed)
    return pair.r.import_sa(json.loads(json.dumps(checkpoint)))


def liveness(pair: Pair, side: str) -> None:
    ep, sa = (pair.i, pair.sa("i")) if side == "i" else (pair.r, pair.sa("r"))
    pair.run(pair._split(side, ep.check_liveness(sa.my_spi, pair.now)))


def test_both_sides_announce_message_id_sync_in_ike_auth():
    pair = Pair().established()
    assert pair.sa("i").mid_sync and pair.sa("r").mid_sync
    auth = [decode(s) for s in pair.wire[2:4]]
    assert all(m.exchange == 35 for m in auth)  # IKE_AUTH request and response
    assert pair.sa("r").to_checkpoint()["mid_sync"] is True


def test_a_stale_checkpoint_is_resynchronised_and_the_tunnel_goes_on():
    pair = Pair().established()
    checkpoint = pair.r.export_sa(pair.sa("r").spi_r)
    for side in ("i", "i", "r"):  # exchanges the checkpoint never saw
        liveness(pair, side)
    enb = pair.sa("i")
    wire_send, wire_recv = enb.send_mid, enb.recv_mid  # what the eNodeB uses now
    restored = take_over(pair, checkpoint)
    assert (restored.recv_mid, restored.send_mid) != (wire_send, wire_recv)  # stale

    pair.run(pair._split("r", pair.r.sync_message_ids(restored.spi_r, pair.now)))
    request = decode(pair.wire[-2])
    assert request.message_id == 0 and not request.is_response
    (r_sync,) = pair.of("r", MidSynced)
    (i_sync,) = pair.of("i", MidSynced)
    # The gateway sends from M2 = its checkpointed send ID + the margin, which the eNodeB
    # now expects; it expects the eNodeB's own next request ID (P2).
    assert r_sync.send_mid == i_sync.recv_mid >= wire_recv
    assert r_sync.recv_mid == i_sync.send_mid == wire_send
    assert restored.send_mid == checkpoint["send_mid"] + MARGIN

    # liveness both ways, then a child rekey from the eNodeB: no IKE renegotiation
    alive_i, alive_r = len(pair.of("i", Alive)), len(pair.of("r", Alive))
    liveness(pair, "r")
    liveness(pair, "i")
    assert len(pair.of("i", Alive)) == alive_i + 1 and len(pair.of("r", Alive)) == alive_r + 1
    old = next(iter(pair.sa("i").children))
    pair.run(pair._split("i", pair.i.rekey_child(pair.sa("i").spi_i, old, pair.now)))
    assert pair.of("r", ChildEstablished) and pair.sa("r") is restored
    assert not pair.of("r", Dropped), pair.of("r", Dropped)
    no_internal_errors(pair)


def test_without_the_sync_a_stale_checkpoint_loses_the_peers_requests():
    """Why RFC 6311 matters: the restored SA expects an ID the peer has already used."""
    pair = Pair().established()
    checkpoint = pair.r.export_sa(pair.sa("r").spi_r)
    liveness(pair, "i")
    take_over(pair, checkpoint)
    liveness(pair, "i")  # ID 3 arrives where the restored SA expects 2
    assert any("not expected" in d.reason for d in pair.of("r", Dropped))


def test_the_peer_side_refuses_a_sync_going_backwards():
    """A second takeover from the same old checkpoint offers the same M1 with a new nonce:
    not above what the eNodeB saw from the first sync (5.1), so it is dropped."""
    pair = Pair().established()
    checkpoint = pair.r.export_sa(pair.sa("r").spi_r)
    restored = take_over(pair, checkpoint)
    pair.run(pair._split("r", pair.r.sync_message_ids(restored.spi_r, pair.now)))
    assert len(pair.of("i", MidSynced)) == 1
    again = take_over(pair, checkpoint, seed=78)
    pair.run(pair._split("r", pair.r.sync_message_ids(again.spi_r, pair.now)))
    assert len(pair.of("i", MidSynced)) == 1
    assert any("no acceptable sync" in d.reason for d in pair.of("i", Dropped))


def test_a_retransmitted_sync_gets_the_same_answer():
    pair = Pair().established()
    restored = take_over(pair, pair.r.export_sa(pair.sa("r").spi_r))
    out = pair.r.sync_message_ids(restored.spi_r, pair.now)
    (request,) = pair._split("r", out)
    first = pair.deliver(request)
    again = pair.deliver(request)  # the answer was lost: the SeGW retransmits
    assert [s.data for s in again] == [s.data for s in first]
    pair.run(again)
    assert len(pair.of("i", MidSynced)) == 1 and len(pair.of("r", MidSynced)) == 1


def test_no_sync_when_the_peer_did_not_announce_it():
    pair = Pair().established()
    restored = take_over(pair, {**pair.r.export_sa(pair.sa("r").spi_r), "mid_sync": False})
    assert pair.r.sync_message_ids(restored.spi_r, pair.now) == []


def test_the_sync_notify_carries_nonce_and_both_ids():
    pair = Pair().established()
    restored = take_over(pair, pair.r.export_sa(pair.sa("r").spi_r))
    out = pair.r.sync_message_ids(restored.spi_r, pair.now)
    (send,) = [o for o in out if hasattr(o, "data")]
    sa = pair.sa("i")
    from cards.ike.crypto import open_sk

    msg = decode(send)
    payloads = open_sk(msg, sa.suite, sa.keys.inbound(True))
    (n,) = [p for p in payloads if isinstance(p, NotifyPayload)]
    assert n.type == NotifyType.IKEV2_MESSAGE_ID_SYNC and len(n.data) == 12
    assert int.from_bytes(n.data[4:8]) == restored.send_mid + MARGIN
    assert int.from_bytes(n.data[8:12]) == restored.recv_mid


def test_a_reconfigured_endpoint_keeps_its_sas():
    """A renewed certificate (kur) or an edited template reaches the card as a new
    IkeConfig: the SAs up stay up and use it from their next exchange."""
    pair = Pair().established()
    sa = pair.sa("r")
    new = gw_config(dpd_interval_s=30.0)
    pair.r.reconfigure(new)
    assert pair.sa("r") is sa and sa.config is new and pair.r.config is new
    liveness(pair, "i")
    liveness(pair, "r")
    assert len(pair.of("i", Alive)) == 1 and len(pair.of("r", Alive)) == 1
    old = next(iter(pair.sa("i").children))
    pair.run(pair._split("i", pair.i.rekey_child(pair.sa("i").spi_i, old, pair.now)))
    assert pair.of("r", ChildEstablished) and not pair.of("r", Dropped)


def test_a_request_in_flight_at_the_takeover_is_answered_after_the_sync():
    """The eNodeB's liveness check is lost with the failed card; after the sync its
    retransmission (the ID the sync moved past) is taken once and answered."""
    pair = Pair().established()
    checkpoint = pair.r.export_sa(pair.sa("r").spi_r)
    lost = pair._split("i", pair.i.check_liveness(pair.sa("i").spi_i, pair.now))
    assert lost and pair.sa("i").outstanding is not None  # never delivered: the card died
    restored = take_over(pair, checkpoint)
    pair.run(pair._split("r", pair.r.sync_message_ids(restored.spi_r, pair.now)))
    assert pair.of("i", MidSynced) and pair.of("r", MidSynced)
    pair.now += 1.0
    pair.run(pair.timers("i"))  # the eNodeB retransmits its liveness check
    assert len(pair.of("i", Alive)) == 1 and not pair.of("r", Dropped), pair.of("r", Dropped)
    liveness(pair, "i")  # and the next one is expected too
    assert len(pair.of("i", Alive)) == 2
