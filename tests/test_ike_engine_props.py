"""cards.ike engine properties: hostile datagrams never raise; checkpoints round-trip."""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ike_engine import ENB, GW, Pair, decode, endpoint, gw_config

from cards.ike.events import Alive, Established, InternalError, Send
from cards.ike.sa import State

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@functools.cache
def recorded() -> tuple[Pair, tuple[bytes, ...]]:
    """An established pair plus every datagram of its setup and a liveness exchange."""
    pair = Pair().established()
    pair.run(pair.i.check_liveness(pair.sa("i").spi_i, pair.now))
    return pair, tuple(s.data for s in pair.wire)


@st.composite
def hostile(draw) -> bytes:
    _, wire = recorded()
    data = bytearray(draw(st.sampled_from(wire)))
    how = draw(st.sampled_from(["truncate", "flip", "splice", "garbage"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "splice":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(max_size=64)) + data[at:])
    return draw(st.binary(max_size=600))


@SETTINGS
@given(data=hostile(), to_gateway=st.booleans())
def test_hostile_datagrams_never_raise(data, to_gateway):
    pair, _ = recorded()
    ep, src, dst = (pair.r, ENB, GW) if to_gateway else (pair.i, GW, ENB)
    out = ep.receive(data, src, dst, pair.now)  # must return, never raise
    assert not [o for o in out if isinstance(o, InternalError)], out
    assert all(isinstance(o.data, bytes) for o in out if isinstance(o, Send))


@SETTINGS
@given(data=hostile())
def test_hostile_datagrams_to_a_fresh_responder(data):
    ep = endpoint(gw_config(cookie_threshold=None), 7)
    out = ep.receive(data, ENB, GW, 0.0)
    assert not [o for o in out if isinstance(o, InternalError)], out
    assert all(sa.state is State.WAIT_AUTH_REQUEST for sa in ep.sas.values())


@functools.cache
def established_gateway() -> tuple[dict, tuple[bytes, ...]]:
    """A checkpoint of the gateway's SA and liveness requests the eNodeB will send next."""
    pair = Pair().established()
    checkpoint = pair.r.export_sa(pair.sa("r").spi_r)
    requests = []
    for _ in range(4):
        (req,) = [s for s in pair.i.check_liveness(pair.sa("i").spi_i, pair.now)]
        requests.append(req.data)
        pair.run([req])
    return json.loads(json.dumps(checkpoint)), tuple(requests)


@SETTINGS
@given(seed=st.integers(0, 2**32), answered=st.integers(0, 3), repeat=st.booleans())
def test_checkpoint_round_trip_answers_identically(seed, answered, repeat):
    # The original and the restored SA, fed the same requests with the same randomness,
    # must send the same bytes: same keys, message IDs, cached response.
    checkpoint, requests = established_gateway()
    a, b = endpoint(gw_config(), 0), endpoint(gw_config(), 0)
    sa_a, sa_b = a.import_sa(checkpoint), b.import_sa(checkpoint)
    for req in requests[:answered]:  # a few exchanges on a, then export again
        a.receive(req, ENB, GW, 0.0)
    exported = json.loads(json.dumps(a.export_sa(sa_a.spi_r)))
    b.sas.clear()
    sa_b = b.import_sa(exported)
    assert sa_b.to_checkpoint() == exported and sa_b.state is State.ESTABLISHED
    a.rand.reseed(seed)
    b.rand.reseed(seed)
    nxt = requests[answered - 1] if repeat and answered else requests[answered]
    out_a, out_b = a.receive(nxt, ENB, GW, 1.0), b.receive(nxt, ENB, GW, 1.0)
    assert out_a == out_b and len(out_a) == 1 and isinstance(out_a[0], Send)
    assert decode(out_a[0]).is_response


def test_restored_gateway_keeps_serving_the_initiator():
    pair = Pair().established()
    checkpoint = json.loads(json.dumps(pair.r.export_sa(pair.sa("r").spi_r)))
    pair.r = endpoint(gw_config(), 99)  # the standby card takes over
    pair.r.import_sa(checkpoint)
    pair.run(pair.i.check_liveness(pair.sa("i").spi_i, pair.now))
    pair.run(pair.r.check_liveness(pair.sa("r").spi_r, pair.now))
    assert pair.of("i", Alive) and pair.of("r", Alive) and pair.of("i", Established)


def test_only_established_sas_are_checkpointed():
    pair = Pair()
    pair.deliver(pair.start()[0])
    with pytest.raises(ValueError):
        pair.sa("r").to_checkpoint()
