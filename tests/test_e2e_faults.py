"""Faults on a running chassis, through the API the drills use (Chassis.fault / faults).

kill: a real crash the backplane sees (the card table says failed, why and when); hang: the
supervisor fails the card within the heartbeat liveness, by its own timestamps; an IPC
partition of a DPC holding tunnels: the card is "unreachable" (alive on the backplane), keeps
its process and its IKE SAs, and once healed registers again and resyncs its configuration;
UDP drop at the NPU for one card; lab faults, warp and clear.
"""

from __future__ import annotations

import socket
import time

import pytest
from helpers import BASIC, LAB_SEGW_CONFIG, slot_pid, slot_states, wait_until, write_topology

from chassis import procs
from chassis.backplane import process_stopped
from chassis.faults import FaultError

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def slot(ch, n: int) -> dict:
    return next(s for s in ch.status()["slots"] if s["slot"] == n)


def card_row(ch, n: int) -> dict:
    return next(c for c in ch.exec("show card table")[0].data["cards"] if c["slot"] == n)


def test_kill_a_dpc_and_the_supervisor(chassis_factory):
    ch = chassis_factory(BASIC)
    pid, start = slot_pid(ch, 1)
    done = ch.fault({"fault": "kill", "target": "slot-1"})
    assert done["fault"] == "kill slot-1" and done["pid"] == pid and done["target"] == "slot-1"
    wait_until(lambda: slot_states(ch)[1] == "failed", 2.0, what="slot 1 failed after the kill")
    row = slot(ch, 1)
    assert row["failed_reason"] == "process exited (-9)" and row["pid"] is None
    assert 0 <= row["failed_at"] - done["at"]["monotonic"] < 0.5  # the pidfd, at once
    assert not procs.alive(pid, start) and ch.faults() == []  # a crash is not a fault in force
    table = card_row(ch, 1)
    assert table["state"] == "failed" and table["failed_reason"] == "process exited (-9)"
    # a failed card is failed until it is rebooted: the backplane restarts it when told to
    assert not ch.exec("card reboot 1 -noconfirm")[0].error
    wait_until(lambda: slot_states(ch)[1] == "active", 10.0, what="slot 1 back")
    # the last failure stays on record (the backplane's or the supervisor's stamp of it)
    assert slot(ch, 1)["failed_at"] == pytest.approx(row["failed_at"], abs=1.0)
    assert slot_pid(ch, 1)[0] != pid

    # the active supervisor: the backplane restarts it with a higher epoch, cards re-attach
    epoch, mio = ch.status()["epoch"], slot_pid(ch, 5)[0]
    assert ch.fault({"fault": "kill", "target": "supervisor"})["pid"] == mio
    wait_until(lambda: ch.status()["epoch"] == epoch + 1, 5.0, what="a new supervisor")
    wait_until(lambda: set(slot_states(ch).values()) <= {"active", "standby"}, 10.0,
               what="every card in its role again")  # fmt: skip
    assert slot_pid(ch, 5)[0] != mio


def test_hang_a_dpc_is_failed_within_the_liveness_and_resume(chassis_factory):
    ch = chassis_factory(BASIC)
    pid, _ = slot_pid(ch, 2)
    done = ch.fault({"fault": "hang", "target": 2})
    try:
        assert done["pid"] == pid and process_stopped(pid)
        assert [f["fault"] for f in ch.faults()] == ["hang slot-2"]
        assert ch.status()["faults"][0]["pid"] == pid
        wait_until(lambda: slot_states(ch)[2] == "failed", 2.0, what="slot 2 failed")
        row = slot(ch, 2)
        timers = ch.manifest["timers"]
        budget_ms = timers["interval"] * timers["liveness"] * 1000
        # the supervisor's own timestamps: from the card's last heartbeat to its verdict,
        # within the liveness plus the check step (a quarter interval) and a little jitter
        assert row["failed_reason"] == "missed 3 heartbeats"  # hung, not "unreachable"
        assert budget_ms < row["detection_ms"] <= budget_ms + timers["interval"] * 250 + 25
        assert row["failed_at"] > done["at"]["monotonic"]
        assert card_row(ch, 2)["detection_ms"] == row["detection_ms"]
        with pytest.raises(FaultError, match="already hung"):
            ch.fault({"fault": "hang", "target": "slot-2"})
        with pytest.raises(FaultError, match="hung; resume it first"):
            ch.fault({"fault": "ipc", "target": "slot-2", "mode": "drop"})
    finally:
        resumed = ch.fault({"fault": "resume", "target": "slot-2"})
    assert resumed["pid"] == pid and not process_stopped(pid) and ch.faults() == []
    with pytest.raises(FaultError, match="not hung: nothing to resume"):
        ch.fault({"fault": "resume", "target": "slot-2"})
    # resumed, its heartbeats are stale: it stays failed until rebooted (as after a SIGSTOP)
    time.sleep(0.5)
    assert slot_states(ch)[2] == "failed"
    assert not ch.exec("card reboot 2 -noconfirm")[0].error
    wait_until(lambda: slot_states(ch)[2] == "active", 10.0, what="slot 2 back after reboot")


REFUSALS = [
    ({"fault": "kill", "target": "slot-4"}, "slot 4 is empty"),
    ({"fault": "kill", "target": 11}, "unknown slot 11 on asr5500"),
    ({"fault": "ipc", "target": 5, "mode": "partition"}, "slot 5 is a management card"),
    ({"fault": "udp", "target": 6, "mode": "drop"}, "slot 6 is a management card"),
    ({"fault": "kill", "target": "lab:ca"}, "has no lab ca"),
    ({"fault": "lab", "target": "lab:ocsp", "set": {"down": True}}, "has no lab ocsp"),
    ({"fault": "resume", "target": "supervisor"}, "not hung: nothing to resume"),
]


def test_refusals_name_the_cause(chassis_factory):
    ch = chassis_factory(BASIC)
    for fault, message in REFUSALS:
        with pytest.raises(FaultError, match=message):
            ch.fault(fault)
    assert ch.faults() == []


FLEET = (
    """\
name: faults
platform: asr5500
timers: {{heartbeat-interval-ms: 100, heartbeat-liveness: 3}}
cards:
  5: {{type: mio, role: active}}
  1: {{type: dpc, role: active}}
  2: {{type: dpc, role: active}}
lab:
  ca: {{psk: lab-secret}}
  ocsp: {{}}
  fleet:
    count: 8
    children: 1
    issuer: intermediate
    dh-group: 19
    key: ec-p256
    rate: 50
    half-open: 16
    dpd-interval: 1
    retry: {{initial: 1, max: 4}}
    traffic:
      - {{proto: udp, port: 2152, pps: 5, size: 200}}
"""
    + LAB_SEGW_CONFIG
)
COUNT = 8


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet(ch) -> dict:
    return ch.status()["lab"]["fleet"].get("status") or {}


def fleet_chassis(chassis_factory, tmp_path):
    path = write_topology(tmp_path, FLEET.format(port=free_udp_port()))
    ch = chassis_factory(path, timeout=60)
    wait_until(lambda: fleet(ch).get("up") == COUNT, 60, 0.1, what=f"{COUNT} eNodeBs up")
    return ch


def sas_by_card(ch) -> dict[int, set]:
    data = wait_until(
        lambda: (d := ch.exec("show crypto ikev2-ikesa security-associations")[0].data)
        and not d["silent"] and d,
        10, what="every card's SA table",
    )  # fmt: skip
    out: dict[int, set] = {}
    for sa in data["sas"]:
        out.setdefault(sa["card"], set()).add((sa["spi_i"], sa["spi_r"], sa["state"]))
    return out


def test_ipc_partition_keeps_the_tunnels_and_the_card_resyncs(chassis_factory, tmp_path):
    ch = fleet_chassis(chassis_factory, tmp_path)
    before = sas_by_card(ch)
    victim = max(before, key=lambda n: len(before[n]))
    assert before[victim], "the NPU's hash put no eNodeB on either card"
    pid = slot_pid(ch, victim)[0]
    done = ch.fault({"fault": "ipc", "target": victim, "mode": "partition"})
    assert done["pid"] == pid and done["fault"] == f"ipc partition slot-{victim}"
    wait_until(lambda: slot_states(ch)[victim] != "active", 2.0, what="the partition noticed")
    row = slot(ch, victim)
    assert row["state"] == "unreachable" and row["failed_at"] is None  # not failed
    assert [f["fault"] for f in ch.faults()] == [f"ipc partition slot-{victim}"]
    table = card_row(ch, victim)
    assert table["state"] == "unreachable" and "alive on the backplane" in table["failure"]
    # the configuration changes meanwhile (a context the service does not use)
    seq = card_row(ch, 3 - victim)["acked_seq"]
    assert not ch.exec("configure", "context spare", "end")[-1].error
    published = wait_until(
        lambda: (a := card_row(ch, 3 - victim)["acked_seq"]) > seq and a, 2.0,
        what="the change acked by the other card",
    )  # fmt: skip
    time.sleep(1.5)  # longer than the fleet's DPD interval: the tunnels are still served
    assert slot_states(ch)[victim] == "unreachable" and slot_pid(ch, victim)[0] == pid
    assert fleet(ch).get("up") == COUNT and fleet(ch).get("lost", 0) == 0

    healed = ch.fault({"fault": "ipc", "target": f"slot-{victim}", "mode": "heal"})
    assert healed["fault"] == f"ipc heal slot-{victim}" and ch.faults() == []
    wait_until(lambda: slot_states(ch)[victim] == "active", 3.0, what="the card back in service")
    table = card_row(ch, victim)
    assert table["acked_seq"] >= published > 0  # it resynced the configuration stream
    assert table["cred_seq"] == card_row(ch, 3 - victim)["cred_seq"] > 0  # and its credentials
    assert table["resync_ms"] is not None and table["failed_at"] is None
    assert slot_pid(ch, victim)[0] == pid  # the same process
    assert sas_by_card(ch)[victim] == before[victim]  # the same IKE SAs
    assert fleet(ch).get("up") == COUNT and fleet(ch).get("lost", 0) == 0


def counters(ch, n: int) -> dict:
    return card_row(ch, n).get("counters") or {}


def test_udp_drop_for_one_card(chassis_factory, tmp_path):
    ch = fleet_chassis(chassis_factory, tmp_path)
    on = sas_by_card(ch)
    victim = max(on, key=lambda n: len(on[n]))
    other = 3 - victim
    ch.fault({"fault": "udp", "target": victim, "mode": "drop"})
    time.sleep(0.4)  # what was in flight arrives and is counted
    # a card that never got a datagram has no npu_rx counter yet
    rx_victim, rx_other = counters(ch, victim)["npu_rx"], counters(ch, other).get("npu_rx", 0)
    time.sleep(1.0)  # the eNodeBs' traffic: 5 packets a second each
    assert counters(ch, victim)["npu_rx"] == rx_victim  # nothing reaches the card
    assert ch.status()["npu"]["fault_dropped"] > 0
    (rule,) = ch.faults()
    assert rule["fault"] == f"udp drop slot-{victim}" and rule["counts"]["dropped"] > 0
    if on.get(other):
        assert counters(ch, other).get("npu_rx", 0) > rx_other  # the other card's traffic flows
    ch.fault({"fault": "udp", "mode": "heal"})
    assert ch.faults() == []
    wait_until(lambda: counters(ch, victim)["npu_rx"] > rx_victim, 5.0, what="traffic again")


LAB = """\
name: labfaults
platform: asr5500
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
lab:
  ca: {psk: lab-secret}
  ocsp: {}
startup-config: |
  config
  end
"""


def test_lab_faults_warp_and_clear(chassis_factory, tmp_path):
    ch = chassis_factory(write_topology(tmp_path, LAB), timeout=60)
    done = ch.fault({"fault": "lab", "target": "lab:ocsp", "set": {"down": True}})
    assert done["fault"] == "lab lab:ocsp down=true" and done["report"]["behaviour"]["down"]
    ch.fault({"fault": "lab", "target": "lab:ca", "set": {"slow": 1}})  # the CA's "delay"
    assert ch.lab_status()["ca"]["report"]["delay"] == 1
    assert [f["fault"] for f in ch.faults()] == ["lab lab:ocsp down=true", "lab lab:ca slow=1"]
    warped = ch.fault({"fault": "warp", "days": 2})
    assert warped["offset"] == 2 * 86400 and warped["fault"] == "warp +2 days"
    assert ch.lab_status()["ocsp"]["report"]["warp"] == 2 * 86400

    ca_pid = ch.status()["lab"]["ca"]["pid"]
    hung = ch.fault({"fault": "hang", "target": "lab:ca"})
    assert hung["pid"] == ca_pid and process_stopped(ca_pid)
    ch.fault({"fault": "resume", "target": "lab:ca"})
    assert not process_stopped(ca_pid)
    ocsp_pid = ch.status()["lab"]["ocsp"]["pid"]
    assert ch.fault({"fault": "kill", "target": "lab:ocsp"})["pid"] == ocsp_pid
    wait_until(lambda: ch.status()["lab"]["ocsp"]["pid"] is None, 2.0, what="the OCSP peer gone")
    with pytest.raises(FaultError, match="lab ocsp is not running"):
        ch.fault({"fault": "hang", "target": "lab:ocsp"})
    assert "kill lab:ocsp" in [f["fault"] for f in ch.status()["faults"]]

    cleared = ch.fault({"fault": "clear"})
    assert set(cleared["healed"]) == {"kill lab:ocsp", "lab lab:ocsp down=true",
                                      "lab lab:ca slow=1"} and cleared["errors"] == []  # fmt: skip
    assert ch.faults() == []
    lab = ch.lab_status()
    assert lab["ca"]["report"]["delay"] == 0 and not lab["ocsp"]["report"]["behaviour"]["down"]
    assert lab["ocsp"]["pid"] not in (None, ocsp_pid)  # the killed peer runs again
