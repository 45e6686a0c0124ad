"""Expiry decisions on a manual wall clock: trap once per crossing, update with back-off, re-arm."""

import datetime as dt

from supervisor.pki.expiry import FIRST_RETRY, ExpiryWatch

T0 = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = T0 + dt.timedelta(days=10)


def kinds(actions):
    return [(a.kind, a.name) for a in actions]


def test_nothing_is_due_before_the_thresholds():
    w = ExpiryWatch()
    assert w.due({"gw": (1, NOT_AFTER)}, T0, trap_hours=24, auto={"gw": 5}) == []


def test_the_trap_fires_once_per_crossing_and_rearms_after_renewal():
    w = ExpiryWatch()
    late = NOT_AFTER - dt.timedelta(hours=23)
    [trap] = w.due({"gw": (1, NOT_AFTER)}, late, trap_hours=24, auto={})
    assert trap.kind == "trap" and trap.generation == 1
    w.trapped(trap)
    assert w.due({"gw": (1, NOT_AFTER)}, late + dt.timedelta(hours=1), trap_hours=24, auto={}) == []
    renewed = NOT_AFTER + dt.timedelta(days=365)
    assert w.due({"gw": (2, renewed)}, late, trap_hours=24, auto={}) == []  # re-armed, not yet due
    assert kinds(w.due({"gw": (2, renewed)}, renewed - dt.timedelta(hours=1), 24, {})) == [
        ("trap", "gw")
    ]


def test_the_update_backs_off_while_the_ca_fails_and_stops_once_renewed():
    w = ExpiryWatch()
    now = NOT_AFTER - dt.timedelta(days=4)
    [upd] = w.due({"gw": (1, NOT_AFTER)}, now, trap_hours=None, auto={"gw": 5})
    assert upd.kind == "update"
    assert w.update_failed(upd, now) == FIRST_RETRY
    assert w.due({"gw": (1, NOT_AFTER)}, now + dt.timedelta(seconds=30), None, {"gw": 5}) == []
    later = now + dt.timedelta(seconds=FIRST_RETRY + 1)
    [again] = w.due({"gw": (1, NOT_AFTER)}, later, None, {"gw": 5})
    assert w.update_failed(again, later) == 2 * FIRST_RETRY
    w.updated(again)
    assert w.due({"gw": (1, NOT_AFTER)}, later + dt.timedelta(hours=2), None, {"gw": 5}) == []


def test_busy_certificates_are_left_alone():
    w = ExpiryWatch()
    now = NOT_AFTER - dt.timedelta(days=1)
    assert w.due({"gw": (1, NOT_AFTER)}, now, None, {"gw": 5}, busy={"gw"}) == []


def test_marks_survive_a_json_round_trip():
    import json

    w = ExpiryWatch()
    [trap] = w.due({"gw": (3, NOT_AFTER)}, NOT_AFTER, 1, {})
    w.trapped(trap)
    restored = ExpiryWatch(json.loads(json.dumps(w.marks)))
    assert restored.due({"gw": (3, NOT_AFTER)}, NOT_AFTER, 1, {}) == []
