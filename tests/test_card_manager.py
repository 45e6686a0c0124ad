"""Card manager on a manual clock: registration, heartbeat deadlines, sticky failure, reboot."""

from chassis.clock import ManualClock
from supervisor.cards import CardManager

TOPO = {
    "cards": [
        {"slot": 5, "type": "mio", "role": "active"},
        {"slot": 1, "type": "dpc", "role": "active"},
        {"slot": 2, "type": "dpc", "role": "standby"},
    ]
}


def booted(clock):
    cm = CardManager.from_topology(TOPO, interval=0.1, liveness=3)
    for slot in (1, 2):
        cm.on_started(slot, 100 + slot, clock.now())
        assert cm.on_register(slot, 100 + slot, f"boot{slot}", clock.now()) is None
        assert cm.cards[slot].state == "booting"
        cm.on_ready(slot, 1, clock.now())
    return cm


def test_ready_cards_take_their_role():
    cm = booted(ManualClock(10))
    assert cm.cards[1].state == "active" and cm.cards[2].state == "standby"
    assert cm.take_changed() and not cm.take_changed()


def test_missing_heartbeats_fail_a_card_after_interval_times_liveness():
    clock = ManualClock(10)
    cm = booted(clock)
    failed_at = None
    for _ in range(10):  # card 2 keeps beating, card 1 went quiet at t=10
        clock.advance(0.05)
        cm.on_heartbeat(2, clock.now())
        if cm.check(clock.now()) == [1]:
            failed_at = clock.now()
    assert failed_at is not None and 0.3 < failed_at - 10 <= 0.35
    assert cm.cards[1].state == "failed" and cm.cards[1].failure == "missed 3 heartbeats"
    assert cm.cards[2].state == "standby"
    assert cm.cards[5].state == "offline"  # management cards are the backplane's to watch


def test_stale_heartbeats_do_not_revive_liveness():
    clock = ManualClock(10)
    cm = booted(clock)
    clock.advance(0.25)
    cm.on_heartbeat(2, clock.now())
    cm.on_heartbeat(1, 9.0)  # a burst queued before a SIGSTOP carries old timestamps
    clock.advance(0.1)
    assert cm.check(clock.now()) == [1]


def test_failure_sticks_until_reboot():
    clock = ManualClock(10)
    cm = booted(clock)
    cm.on_exited(1, 101, clock.now(), -9)
    assert cm.cards[1].state == "failed"
    assert "reboot" in cm.on_register(1, 101, "boot1", clock.now())  # the same process comes back
    assert cm.on_heartbeat(1, clock.now()) is False
    cm.on_reboot(1, clock.now())
    cm.on_started(1, 201, clock.now())
    assert cm.on_register(1, 201, "boot1b", clock.now()) is None
    cm.on_ready(1, 3, clock.now())
    assert cm.cards[1].state == "active" and cm.cards[1].acked_seq == 3


def test_exit_of_an_older_process_is_ignored():
    clock = ManualClock(10)
    cm = booted(clock)
    cm.on_exited(1, 999, clock.now(), 0)
    assert cm.cards[1].state == "active"


def test_registration_is_refused_for_unknown_and_management_slots():
    cm = booted(ManualClock(10))
    assert cm.on_register(7, 1, "x", 10) is not None
    assert cm.on_register(5, 1, "x", 10) is not None


def test_a_known_card_registering_again_keeps_its_state():
    clock = ManualClock(10)
    cm = booted(clock)
    assert cm.on_register(1, 101, "boot1", clock.now()) is None  # after a supervisor hiccup
    assert cm.cards[1].state == "active"
