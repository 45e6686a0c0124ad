"""Fan-out bookkeeping: per-card streams, acks, what each card holds, beacons."""

import pytest
from pki_material import lab

from cards.credentials import Credentials, NoCredentials
from chassis.ipc.clone import Replica
from chassis.ipc.messages import CredUpdate, Update
from supervisor.fanout import Fanout


def make():
    sent = {"pub": [], "uni": []}
    fan = Fanout(
        [1, 2],
        lambda s, m, q: sent["pub"].append((s, m, q)),
        lambda s, m, q: sent["uni"].append((s, m, q)),
    )
    return fan, sent


def test_credentials_go_only_to_their_card_and_count_when_acked():
    fan, sent = make()
    fan.sync_creds(1, {"certificate/a": {"generation": 1}})
    assert sent["uni"] == [(1, CredUpdate("certificate/a", {"generation": 1}), 1)]
    assert sent["pub"] == []  # never on the shared state stream
    assert not fan.holds(1, "certificate/a")
    fan.on_ack(1, "cred", 1)
    assert fan.holds(1, "certificate/a") and not fan.holds(2, "certificate/a")


def test_sync_removes_what_is_no_longer_wanted_and_skips_unchanged():
    fan, sent = make()
    fan.sync_creds(1, {"a": {"g": 1}, "b": {"g": 1}})
    fan.sync_creds(1, {"a": {"g": 1}})
    assert [m.key for _, m, _ in sent["uni"]] == ["a", "b", "b"]
    assert sent["uni"][-1][1].value is None
    assert fan.cred_seq(1) == 3


def test_a_restarted_card_holds_nothing_until_it_acks_again():
    fan, _ = make()
    fan.sync_creds(2, {"a": {"g": 1}})
    fan.on_ack(2, "cred", 1)
    fan.forget(2)
    assert not fan.holds(2, "a")


def test_config_goes_on_the_state_stream_and_beacons_carry_both_sequences():
    fan, sent = make()
    fan.set_config(1, "config", {"x": 1})
    fan.sync_creds(1, {"a": {"g": 1}})
    assert sent["pub"] == [(1, Update("config", {"x": 1}), 1)]
    beacon = fan.beacon()
    assert beacon.seqs == {"1": 1, "2": 0} and beacon.cred == {"1": 1, "2": 0}


def test_a_card_replica_mirrors_the_stream():
    fan, sent = make()
    fan.sync_creds(1, {"a": {"g": 1}, "b": {"g": 2}})
    fan.sync_creds(1, {"b": {"g": 3}})
    replica = Replica()
    replica.on_snapshot(0, {})
    for _, msg, seq in sent["uni"]:
        replica.on_update(seq, msg.key, msg.value)
    assert replica.entries == fan.snapshot(1, "cred")["entries"] == {"b": {"g": 3}}


def test_card_credentials_load_lazily_and_say_what_is_missing():
    material = lab()
    creds = Credentials()
    with pytest.raises(NoCredentials, match="cmp fetch"):
        creds.require("segw")
    creds.pushed = {
        "certificate/segw": {
            "generation": 2,
            "cert_pem": material["gw1.crt"].decode(),
            "key_pem": material["gw1.key"].decode(),
        }
    }
    assert creds._parsed == {}  # nothing parsed before it is needed
    key = creds.private_key("segw")
    cert = creds.certificate("certificate", "segw")
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert creds.private_key("segw") is key  # parsed once per version
    assert creds.summary() == {"certificate/segw": 2}
    assert creds.names("certificate") == ["segw"]
