"""Envelope codec: round trips, every kind of bad message is a DecodeError, never a crash."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chassis.ipc.envelope import DecodeError, Envelope, decode, encode
from chassis.ipc.messages import Heartbeat, ProcEvent, Register, Reply, Request


def test_round_trip_keeps_every_field():
    env = Envelope(
        Register(3, "dpc", "active", 1234, "ab12"), id=7, src="dpc-3", ts=1.5, epoch=2, seq=9
    )
    assert decode(encode(env)) == env


def test_optional_and_any_fields():
    assert decode(encode(Envelope(ProcEvent(1, "exited", 5)))).msg.code is None
    reply = Reply(4, True, {"nested": [1, "x", None]})
    assert decode(encode(Envelope(reply))).msg == reply


def raw(**over):
    base = {
        "v": 1,
        "type": "heartbeat",
        "id": 5,
        "src": "x",
        "ts": 0.0,
        "epoch": 0,
        "seq": 1,
        "body": {"sent": 1.0},
    }
    base.update(over)
    return msgpack.packb(base)


def test_unknown_type_keeps_the_id_for_the_error_reply():
    with pytest.raises(DecodeError) as exc:
        decode(raw(type="no-such-thing"))
    assert exc.value.ref == 5 and "unknown message type" in exc.value.reason


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\xc1garbage", "not msgpack"),
        (msgpack.packb([1, 2]), "not a map"),
        (raw(v=2), "version"),
        (raw(body={"sent": "soon"}), "field 'sent'"),
        (raw(body={"sent": 1.0, "extra": 1}), "unknown field"),
        (raw(type="register", body={"slot": 1}), "missing field"),
        (raw(id="seven"), "'id'"),
        (raw(epoch=True), "'epoch'"),
    ],
)
def test_bad_messages_name_the_cause(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode(data)


def test_int_field_refuses_bool():
    with pytest.raises(DecodeError):
        decode(raw(type="ack", body={"seq": True}))


def test_float_field_accepts_int():
    assert decode(raw(body={"sent": 3})).msg == Heartbeat(3)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data):
    try:
        decode(data)
    except DecodeError:
        pass


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["v", "type", "id", "src", "ts", "epoch", "seq", "body", "zz"]),
        json_values | st.sampled_from(["request", "register", "heartbeat", 1]),
    )
)
def test_random_envelopes_never_crash(fields):
    try:
        env = decode(msgpack.packb(fields))
    except DecodeError:
        return
    assert env.type in (
        "request",
        "register",
        "heartbeat",
        "reply",
        "error",
        "ack",
        "ready",
        "update",
    )


def test_request_args_must_be_a_map():
    with pytest.raises(DecodeError):
        decode(raw(type="request", body={"method": "x", "args": [1]}))
    assert decode(raw(type="request", body={"method": "x", "args": {}})).msg == Request("x", {})
