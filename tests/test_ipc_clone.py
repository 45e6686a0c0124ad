"""Clone pattern: a replica that loses updates notices (gap or beacon) and converges after resync."""

from hypothesis import given
from hypothesis import strategies as st

from chassis.ipc.clone import Outcome, Replica, Stream


def test_updates_before_the_snapshot_are_buffered_then_only_newer_ones_apply():
    stream, replica = Stream(), Replica()
    stream.set("a", 1)
    s2 = stream.set("b", 2)
    assert replica.on_update(s2, "b", 2) is Outcome.BUFFERED
    snap = stream.snapshot()
    s3 = stream.set("c", 3)
    assert replica.on_update(s3, "c", 3) is Outcome.BUFFERED
    assert replica.on_snapshot(snap["seq"], snap["entries"]) is Outcome.APPLIED
    assert replica.entries == stream.entries and replica.seq == s3


def test_unchanged_values_do_not_bump_the_sequence():
    stream = Stream()
    assert stream.set("k", {"x": 1}) == 1
    assert stream.set("k", {"x": 1}) is None
    assert stream.set("gone", None) is None
    assert stream.set("k", None) == 2 and stream.entries == {}


def test_a_gap_forces_a_resync():
    stream, replica = Stream(), Replica()
    replica.on_snapshot(**stream.snapshot())
    stream.set("a", 1)
    s2 = stream.set("b", 2)
    assert replica.on_update(s2, "b", 2) is Outcome.GAP
    assert not replica.synced


def test_a_beacon_reveals_a_lost_last_update():
    stream, replica = Stream(), Replica()
    replica.on_snapshot(**stream.snapshot())
    stream.set("a", 1)  # published, never received
    assert replica.on_beacon(stream.seq) is True
    assert replica.on_beacon(0) is False


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 3) | st.none(), st.booleans()), max_size=40
    )
)
def test_replica_converges_whatever_is_lost(ops):
    stream, replica = Stream(), Replica()
    replica.on_snapshot(**stream.snapshot())
    for key, value, delivered in ops:
        seq = stream.set(key, value)
        if seq is None or not delivered:
            continue
        if replica.on_update(seq, key, value) is Outcome.GAP or not replica.synced:
            replica.on_snapshot(**stream.snapshot())
    if replica.on_beacon(stream.seq):
        replica.on_snapshot(**stream.snapshot())
    assert replica.entries == stream.entries and replica.seq == stream.seq
