"""The active MIO's view of the other management card when the backplane's answer (hello or
status: a snapshot of the slots) and its events (the other MIO started, said hello) are read
in one batch: the event is handled before the coroutine awaiting the answer resumes, and must
not be overwritten by the older snapshot (a drill once saw MIO 6 stuck as "booting" in MIO
5's card table). The message order is the backplane's, over one socket."""

from __future__ import annotations

from types import SimpleNamespace

from chassis.ipc.envelope import Envelope
from chassis.ipc.messages import ProcEvent, Reply
from supervisor.cards import CardManager
from supervisor.runner import Supervisor

TOPOLOGY = {"cards": [{"slot": 5, "type": "mio", "role": "active"},
                      {"slot": 6, "type": "mio", "role": "standby"},
                      {"slot": 1, "type": "dpc", "role": "active"}]}  # fmt: skip
SNAPSHOT = [  # MIO 6 had not said hello yet when the backplane answered
    {"slot": 5, "type": "mio", "pid": 50, "state": "active", "role": "active"},
    {"slot": 6, "type": "mio", "pid": 60, "state": "booting", "role": "standby"},
    {"slot": 1, "type": "dpc", "pid": 10, "state": "booting", "role": "active"},
]


def supervisor() -> Supervisor:
    sup = Supervisor.__new__(Supervisor)
    sup.cards = CardManager.from_topology(TOPOLOGY, 0.1, 3)
    sup.packet_slots = [1]
    sup.bp = SimpleNamespace()
    sup.bp_seen, sup.bp_reply_at, sup.mgmt_events = 0, 0, {}
    sup.mono = SimpleNamespace(now=lambda: 0.0)
    sup.pending = SimpleNamespace(resolve=lambda inc: isinstance(inc.env.msg, Reply))
    return sup


def read(sup: Supervisor, msg) -> None:
    """One message from the backplane, through the supervisor's dispatch."""
    inc = SimpleNamespace(error=None, env=Envelope(msg), peer=b"backplane")
    sup._dispatch(sup.bp, inc, sup.on_backplane)


def test_an_event_read_after_the_answer_wins_over_its_snapshot():
    sup = supervisor()
    read(sup, Reply(1, True, {"slots": SNAPSHOT}))
    read(sup, ProcEvent(6, "hello", 60, role="standby"))  # same batch, before _activate
    sup._adopt_slots(SNAPSHOT, 0.0)
    assert (sup.cards.cards[6].state, sup.cards.cards[6].role) == ("standby", "standby")


def test_an_event_read_before_the_answer_is_older_than_its_snapshot():
    sup = supervisor()
    read(sup, ProcEvent(6, "started", 60))
    later = [{**e, "state": "standby"} if e["slot"] == 6 else e for e in SNAPSHOT]
    read(sup, Reply(1, True, {"slots": later}))
    sup._adopt_slots(later, 0.0)
    assert sup.cards.cards[6].state == "standby"  # not "booting" from the older event


def test_hello_takes_the_role_the_backplane_gives():
    sup = supervisor()
    sup._adopt_slots(SNAPSHOT, 0.0)
    read(sup, ProcEvent(6, "hello", 61, role="active"))  # after a takeover, say
    assert (sup.cards.cards[6].state, sup.cards.cards[6].role, sup.cards.cards[6].pid) == (
        "active", "active", 61)  # fmt: skip
    read(sup, ProcEvent(6, "exited", 61, code=-9))
    assert sup.cards.cards[6].state == "failed" and sup.cards.cards[6].pid is None
