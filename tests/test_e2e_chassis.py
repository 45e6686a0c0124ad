"""End to end: real processes, real sockets, every wait bounded.

These start whole chassis (several Python processes each), so they share one
xdist group and run one after the other on a single worker.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import BASIC, TOPOLOGIES, slot_pid, slot_states, small_topology, wait_until

from chassis import client, procs

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_up_shows_every_slot_in_its_role(chassis_factory):
    ch = chassis_factory(TOPOLOGIES / "asr5500.yaml")
    status = ch.status()
    roles = {s["slot"]: (s["type"], s["role"], s["state"]) for s in status["slots"]}
    assert roles == {
        1: ("dpc", "active", "active"),
        2: ("dpc", "active", "active"),
        3: ("dpc", "active", "active"),
        4: ("dpc", "standby", "standby"),
        5: ("mio", "active", "active"),
        6: ("mio", "standby", "standby"),
    }
    pids = {s["pid"] for s in status["slots"]}
    assert None not in pids and len(pids) == 6 and status["backplane_pid"] not in pids
    for s in status["slots"]:
        assert procs.alive(*slot_pid(ch, s["slot"]))
    table = ch.exec("show card table")[0]
    assert not table.error
    assert " 4: DPC" in table.output and "Standby" in table.output
    assert {row["slot"]: row["state"] for row in table.data["cards"]}[4] == "standby"


def test_kill_crash_hang_and_reboot(chassis_factory, tmp_path):
    ch = chassis_factory(BASIC)
    pid1, start1 = slot_pid(ch, 1)
    os.kill(pid1, signal.SIGKILL)
    wait_until(lambda: slot_states(ch)[1] == "failed", 2.0, what="slot 1 failed after kill -9")

    pid2, _ = slot_pid(ch, 2)
    os.kill(pid2, signal.SIGSTOP)
    try:
        wait_until(lambda: slot_states(ch)[2] == "failed", 2.0, what="slot 2 failed after SIGSTOP")
        os.kill(pid2, signal.SIGCONT)
        # Resumed, its heartbeats are stale and it stays failed until rebooted.
        with pytest.raises(AssertionError):
            wait_until(lambda: slot_states(ch)[2] != "failed", 0.6)
    finally:
        os.kill(pid2, signal.SIGCONT)

    out = ch.exec("card reboot 1 -noconfirm", "card reboot 2 -noconfirm")
    assert [r.error for r in out] == [False, False]
    wait_until(
        lambda: slot_states(ch)[1] == slot_states(ch)[2] == "active",
        10.0,
        what="rebooted cards active",
    )
    assert slot_pid(ch, 1)[0] != pid1 and slot_pid(ch, 2)[0] != pid2
    assert not procs.alive(pid1, start1)


def test_down_leaves_no_process_and_no_socket(chassis_factory):
    ch = chassis_factory(BASIC)
    records = json.loads(ch.run.pids_path.read_text())
    sockets = list(ch.run.ipc.iterdir())
    assert sockets
    ch.down()
    for rec in records.values():
        assert not procs.alive(rec["pid"], rec["start"])
    assert not ch.run.ipc.exists()
    assert not ch.run.pids_path.exists()


def test_no_orphan_when_the_backplane_is_killed_first(chassis_factory):
    ch = chassis_factory(BASIC)
    records = json.loads(ch.run.pids_path.read_text())
    os.kill(records["backplane"]["pid"], signal.SIGKILL)
    # PR_SET_PDEATHSIG: every card and supervisor dies with the backplane.
    for rec in records.values():
        wait_until(
            lambda rec=rec: not procs.alive(rec["pid"], rec["start"]), 5.0, what="card death"
        )
    client.down(ch.run.root)
    assert not ch.run.ipc.exists()


def test_supervisor_crash_is_restarted_with_a_higher_epoch(chassis_factory):
    ch = chassis_factory(BASIC)
    epoch = ch.status()["epoch"]
    pid, _ = slot_pid(ch, 5)
    card_pid = slot_pid(ch, 1)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: ch.status()["epoch"] > epoch, 5.0, what="new epoch")
    wait_until(
        lambda: set(slot_states(ch).values()) <= {"active", "standby"}, 10.0, what="all slots back"
    )
    assert slot_pid(ch, 1) == card_pid  # the cards kept running and re-attached
    assert not ch.exec("show card table")[0].error


def test_tcp_transport(chassis_factory, tmp_path):
    ch = chassis_factory(small_topology(tmp_path, name="tcp1", transport="tcp"))
    assert all(ep.startswith("tcp://127.0.0.1:") for ep in ch.manifest["endpoints"].values())
    assert slot_states(ch) == {1: "active", 2: "standby", 5: "active"}


def test_asr9000(chassis_factory):
    ch = chassis_factory(TOPOLOGIES / "asr9000.yaml")
    table = ch.exec("show card table")[0].output
    assert "RSP" in table and "VSM" in table
    assert set(slot_states(ch).values()) <= {"active", "standby"}


def test_configuration_reaches_every_card(chassis_factory, tmp_path):
    ch = chassis_factory(small_topology(tmp_path, name="cfg1"))

    def acked():
        rows = ch.exec("show card table")[0].data["cards"]
        return {r["slot"]: r.get("acked_seq") for r in rows if r["slot"] in (1, 2)}

    before = acked()
    res = ch.exec("configure", "context segw", "ip pool p1 10.1.0.0 255.255.0.0", "end")
    assert not any(r.error for r in res)
    wait_until(lambda: all(acked()[s] > before[s] for s in (1, 2)), 5.0, what="both cards acked")
