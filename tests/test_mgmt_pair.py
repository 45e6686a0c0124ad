"""chassis.mgmt_pair: the backplane's decisions about the two management cards, on a stub
backplane (no processes): who takes over, at which epoch, and how an old active is stepped
down. The end-to-end behaviour is tests/test_e2e_mio_redundancy.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from chassis.ipc.messages import Heartbeat, Request
from chassis.mgmt_pair import ManagementPair


@dataclass
class Slot:
    slot: int
    role: str
    state: str
    pid: int | None = 100
    expect_exit: bool = False
    restart_on_exit: bool = False
    card: object = None

    def __post_init__(self):
        self.card = SimpleNamespace(slot=self.slot, is_management=True)


@dataclass
class Bus:
    sent: list = field(default_factory=list)

    def send(self, msg, to=None):
        self.sent.append((msg, to))


class Stub(ManagementPair):
    def __init__(self):
        self.slots = {5: Slot(5, "active", "active"), 6: Slot(6, "standby", "standby")}
        self.epoch, self.active_mgmt, self.interval, self.liveness = 1, 5, 0.1, 3
        self.node, self.bus, self.told = SimpleNamespace(epoch=1), Bus(), []
        self._mgmt_init()

    def _spawn(self, coro):
        self.told.append(coro)
        coro.close()


def msg(peer: bytes, epoch: int, body=None):
    body = body if body is not None else Heartbeat(time.monotonic())
    return SimpleNamespace(peer=peer, env=SimpleNamespace(epoch=epoch, msg=body,
                                                          type=type(body).__name__))  # fmt: skip


def test_a_crash_promotes_the_live_standby_at_a_higher_epoch():
    bp = Stub()
    bp.mgmt_heartbeat(6, time.monotonic(), synced=True)
    assert bp.mgmt_exited(bp.slots[5])
    assert bp.active_mgmt == 6 and bp.epoch == 2 and bp.node.epoch == 2
    assert (bp.slots[5].role, bp.slots[6].role, bp.slots[6].state) == (
        "standby",
        "active",
        "active",
    )
    (record,) = bp.mgmt_takeovers
    assert record["from"] == 5 and record["to"] == 6 and record["why"] == "process exited"
    assert len(bp.told) == 1  # the standby is told to take over


def test_no_takeover_without_a_standby_heard_recently():
    bp = Stub()
    assert not bp.mgmt_exited(bp.slots[5])  # never heard: it may be hung too
    bp.mgmt_heartbeat(6, time.monotonic() - 3.0, synced=True)  # older than the 2 s budget
    assert not bp.mgmt_exited(bp.slots[5]) and bp.active_mgmt == 5 and bp.epoch == 1
    bp.mgmt_heartbeat(6, time.monotonic(), synced=False)  # alive, but never got the state
    assert not bp.mgmt_exited(bp.slots[5]) and bp.active_mgmt == 5


def test_an_old_active_that_comes_back_is_stepped_down_once():
    bp = Stub()
    bp.mgmt_heartbeat(6, time.monotonic(), synced=True)
    bp.mgmt_takeover("missed 3 heartbeats", since=time.monotonic() - 0.3)
    assert 5 in bp.demoted  # its process still lives (a hang)
    assert not bp.mgmt_message(msg(b"mgmt-5", 1))  # resumed: ignored, told to step down
    (step_down, to), = bp.bus.sent  # fmt: skip
    assert step_down.method == "mgmt.step-down" and to == b"mgmt-5"
    assert bp.slots[5].restart_on_exit and bp.slots[5].expect_exit
    assert bp.mgmt_message(msg(b"mgmt-6", 2))  # the new active is obeyed
    assert not bp.mgmt_message(msg(b"mgmt-6", 1, Request("status", {})))  # not at epoch 1
    assert bp.mgmt_message(msg(b"card-1", 0))  # not a management card: not this module's
    # The old active, before its step-down takes effect, still heartbeats (it is the
    # standby now), but a command of its is ignored, whatever epoch it claims.
    assert bp.mgmt_message(msg(b"mgmt-5", 1))
    for body in (Request("mgmt.switch", {"from": 5, "to": 6}), Request("npu.owners", {})):
        assert not bp.mgmt_message(msg(b"mgmt-5", 2, body))
    assert len(bp.bus.sent) == 1  # stepped down once


def test_a_planned_switch_names_what_is_wrong():
    bp = Stub()
    with pytest.raises(ValueError, match="no standby"):
        bp.mgmt_switch(5, 6)
    bp.mgmt_heartbeat(6, time.monotonic(), synced=True)
    with pytest.raises(ValueError, match="card 6 is not the active"):
        bp.mgmt_switch(6, 5)
    assert bp.mgmt_switch(5, 6).startswith("Info: management card 6 is taking over")
    assert bp.mgmt_takeovers[-1]["planned"] and bp.epoch == 2
