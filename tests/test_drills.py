"""Drills without a chassis: the file format and its errors (file:line and field), the seeded
fault schedule, conditions on canned chassis reports, figures and the HTML report from a
recorded timeline, and the runner against an in-memory stand-in for chassis.client.Chassis."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from chassis import drill_report, drills
from chassis import topology as topo_mod
from chassis.cli import main as cli_main

DRILLS = Path(__file__).resolve().parents[1] / "topologies" / "drills"

GOOD = """\
name: sample
seed: 11
metrics: [detection, recovery, tunnels_lost]
steps:
  - wait_for: {tunnels: {at_least: 12}}
    timeout: 5
  - inject: {fault: kill, target: random-card}
    at: 0.2
    jitter: 0.5
  - expect: {card: {slot: $target, state: failed}}
    within: 1
  - inject: {fault: ipc, target: random-card, mode: drop, rate: {random: [0.1, 0.5]}}
  - inject: {fault: resume, target: $target}
  - sleep: 1
    jitter: 2
  - inject: {fault: revoke, enodeb: random}
  - run: show card table
"""


def load(text: str, name: str = "d.yaml") -> drills.Drill:
    return drills.loads(text, source=name)


def problems(text: str) -> list[str]:
    with pytest.raises(drills.DrillError) as info:
        load(text)
    return [str(p) for p in info.value.problems]


# ------------------------------------------------------------------ the file
def test_a_good_file_loads_into_steps():
    d = load(GOOD)
    assert d.name == "sample" and d.seed == 11
    assert [s.kind for s in d.steps] == ["wait_for", "inject", "expect", "inject", "inject",
                                         "sleep", "inject", "run"]  # fmt: skip
    assert d.steps[0].options == {"timeout": 5} and d.steps[0].line == 5
    assert d.steps[7].body == ["show card table"]  # one command becomes a list
    assert d.metrics == ("detection", "recovery", "tunnels_lost")


def test_every_shipped_drill_and_its_topology_load():
    found = drills.shipped()
    names = {p.stem for p in found}
    assert names >= {"dpc-kill-no-standby", "dpc-hang", "ca-outage-during-renewal",
                     "ocsp-down-crl-fallback", "cert-expiry-auto-update", "revoked-at-runtime",
                     "ipc-partition"}  # fmt: skip
    for path in found:
        d = drills.load(path)
        assert d.name == path.stem and d.topology, path
        topo = topo_mod.load(d.topology)
        facts = drills.chassis_facts(topo.to_dict())
        assert facts.cards == (1, 2, 3) and 20 <= facts.enodebs <= 50  # a small fleet
        drills.plan(d, facts.cards, facts.enodebs)  # every random choice resolves


@pytest.mark.parametrize(
    "text, where, words",
    [
        ("seed: 1\nsteps: [{sleep: 1}]\n", "d.yaml:1:1: name", "required"),
        ("name: x\nsteps: [{sleep: 1}]\n", "d.yaml:1:1: seed", "required"),
        ("name: x\nseed: 1\n", "d.yaml:1:1: steps", "required"),
        ("name: x\nseed: one\nsteps: [{sleep: 1}]\n", "d.yaml:2:7: seed", "integer"),
        ("name: x\nseed: 1\ncolour: red\nsteps: [{sleep: 1}]\n", "d.yaml:3:1: colour",
         "unknown key"),
        ("name: x\nseed: 1\nmetrics: [speed]\nsteps: [{sleep: 1}]\n", "d.yaml:3:11: metrics.0",
         "unknown metric 'speed'"),
        ("name: x\nseed: 1\nsteps:\n  - sleep: 1\n    run: show version\n", "d.yaml:4:5: steps.0",
         "exactly one of"),
        ("name: x\nseed: 1\nsteps:\n  - nap: 1\n", "d.yaml:4:5: steps.0", "exactly one of"),
        ("name: x\nseed: 1\nsteps:\n  - expect: {tunnels: {at_least: 3}}\n    within: -1\n",
         "d.yaml:5:13: steps.0.within", "seconds >= 0"),
        ("name: x\nseed: 1\nsteps:\n  - expect: {tunnels: {at_least: 3}}\n    timeout: 3\n",
         "d.yaml:5:5: steps.0.timeout", "expect takes within, hold, label"),
        ("name: x\nseed: 1\nsteps:\n  - wait_for: {tunnel: {at_least: 3}}\n",
         "d.yaml:4:16: steps.0.wait_for.tunnel", "unknown condition"),
        ("name: x\nseed: 1\nsteps:\n  - wait_for: {tunnels: {more_than: 3}}\n",
         "steps.0.wait_for.tunnels", "at_least"),
        ("name: x\nseed: 1\nsteps:\n  - expect: {card: {slot: 2, state: dead}}\n",
         "steps.0.expect.card.state", "one of offline, booting"),
        ("name: x\nseed: 1\nsteps:\n  - expect: {cli: {command: show x, matches: '('}}\n",
         "steps.0.expect.cli.matches", "not a regular expression"),
        ("name: x\nseed: 1\nsteps:\n  - inject: {fault: explode}\n",
         "d.yaml:4:21: steps.0.inject.fault", "one of kill, hang"),
        ("name: x\nseed: 1\nsteps:\n  - inject: {fault: ipc, target: slot-2, mode: cut}\n",
         "steps.0.inject.mode", "drop, delay, duplicate, partition, heal"),
        ("name: x\nseed: 1\nsteps:\n  - inject: {fault: lab, target: 'lab:ca'}\n",
         "steps.0.inject.set", "behaviours"),
        ("name: x\nseed: 1\nsteps:\n  - inject: {fault: kill, target: card-2}\n",
         "steps.0.inject.target", "slot-N"),
        ("name: x\nseed: 1\nsteps:\n  - inject: {fault: warp}\n", "steps.0.inject",
         "days, hours, seconds or before_expiry"),
        ("name: x\nseed: 1\nsteps:\n  - inject: {fault: revoke, enodeb: 0}\n",
         "steps.0.inject.enodeb", "eNodeB's number"),
        ("name: x\nseed: 1\nsteps:\n  - inject: {fault: kill, target: {random: [3, 1]}}\n",
         "steps.0.inject.target.random", "LOW <= HIGH"),
        ("name: x\nseed: 1\nsteps:\n  - run: []\n", "steps.0.run", "CLI command"),
        ("name: x\nseed: 1\nname: y\nsteps: [{sleep: 1}]\n", "d.yaml:3:1: name",
         "duplicate key (first on line 1)"),
        ("name: x\nseed: 1\nsteps: [{sleep: 1}\n", "d.yaml:", "YAML"),
        ("- a list\n", "d.yaml:1:1: (document)", "expected a mapping"),
        ("name: x\nseed: 1\ntopology: nowhere.yaml\nsteps: [{sleep: 1}]\n",
         "d.yaml:3:11: topology", "no such file"),
    ],
)  # fmt: skip
def test_file_errors_name_the_line_and_the_field(text, where, words):
    found = problems(text)
    assert any(where in p and words in p for p in found), found


def test_every_problem_of_a_file_is_reported_at_once():
    text = "name: x\nseed: 1\nsteps:\n  - wait_for: {nope: 1}\n  - inject: {fault: x}\n"
    found = problems(text)
    assert len(found) == 2 and "d.yaml:4" in found[0] and "d.yaml:5" in found[1], found


def test_the_cli_refuses_a_bad_drill_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: 1\nsteps:\n  - expect: {tunnels: 3}\n")
    res = CliRunner().invoke(cli_main, ["drill", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:4:" in res.output and "steps.0.expect.tunnels" in res.output


# ------------------------------------------------------------------ the seeded schedule
def test_the_same_seed_gives_the_same_fault_schedule():
    d = load(GOOD)
    one = drills.plan(d, cards=(1, 2, 3), enodebs=24)
    two = drills.plan(d, cards=(1, 2, 3), enodebs=24)
    assert one == two
    assert [p.to_dict() for p in one] == [p.to_dict() for p in two]
    kinds = [(p.step, p.kind) for p in one]
    assert kinds == [(2, "inject"), (4, "inject"), (5, "inject"), (6, "sleep"), (7, "inject")]
    kill, drop, resume, sleep, revoke = one
    assert kill.fault["target"] in ("slot-1", "slot-2", "slot-3")
    assert 0.2 <= kill.delay <= 0.7
    assert 0.1 <= drop.fault["rate"] <= 0.5 and isinstance(drop.fault["seed"], int)
    assert resume.fault["target"] == drop.fault["target"]  # $target: the latest card target
    assert 1 <= sleep.delay <= 3
    assert 1 <= revoke.fault["enodeb"] <= 24 and revoke.fault["reason"] == "keyCompromise"


def test_another_seed_gives_another_schedule():
    d = load(GOOD)
    base = [p.to_dict() for p in drills.plan(d, (1, 2, 3), 24)]
    others = [[p.to_dict() for p in drills.plan(d, (1, 2, 3), 24, seed=s)] for s in (12, 13, 14)]
    assert all(o != base for o in others)
    assert [p.to_dict() for p in drills.plan(d, (1, 2, 3), 24, seed=11)] == base  # the file's


def test_a_random_card_needs_an_active_card():
    d = load("name: x\nseed: 1\nsteps:\n  - inject: {fault: kill, target: random-card}\n")
    with pytest.raises(drills.DrillError, match="no active packet card"):
        drills.plan(d, cards=(), enodebs=0)


def test_the_schedule_command_prints_the_same_schedule_twice():
    runner = CliRunner()
    first = runner.invoke(cli_main, ["drill", "dpc-hang", "--schedule"])
    again = runner.invoke(cli_main, ["drill", "dpc-hang", "--schedule"])
    other = runner.invoke(cli_main, ["drill", "dpc-hang", "--schedule", "--seed", "99"])
    assert first.exit_code == 0, first.output
    assert first.output == again.output and "hang slot-" in first.output
    assert "seed 6:" in first.output and "seed 99:" in other.output
    assert other.output.splitlines()[1:] != first.output.splitlines()[1:]


# ------------------------------------------------------------------ conditions
def card(slot, state="active", tunnels=0, since=100.0, kind="dpc"):
    return {"slot": slot, "type": kind, "state": state, "state_since": since,
            "counters": {"ike_sas": tunnels}}  # fmt: skip


def status(up=24, lost=0, **fleet):
    return {"slots": [{"slot": s, "type": "dpc", "state": "active"} for s in (1, 2, 3)],
            "lab": {"fleet": {"status": {"up": up, "lost": lost, "children_up": up, **fleet}}}}  # fmt: skip


SAS = {"sas": [{"card": 2, "peer_id": "enb0007.lab.example", "state": "ESTABLISHED"},
               {"card": 1, "peer_id": "enb0001.lab.example", "state": "ESTABLISHED"}],
       "silent": []}  # fmt: skip
CERT = {"items": [{"name": "segw", "generation": 3, "cards": {"1": "v3", "2": "v3", "3": "v2"}}]}
HISTORY = {"history": [{"type": "ir", "result": "success"}, {"type": "kur", "result": "failure"},
                       {"type": "kur", "result": "failure"}, {"type": "kur", "result": "success"}]}  # fmt: skip


def observation(**over) -> drills.Observation:
    base = dict(
        status=status(up=24, lost=3, re_established=5),
        cards=[card(1, tunnels=10), card(2, "failed", 7), card(3, "unreachable", 5),
               card(5, kind="mio")],
        cli={
            "show crypto ikev2-ikesa security-associations": {"output": "", "data": SAS,
                                                              "error": False},
            "show certificate name segw": {"output": "", "data": CERT, "error": False},
            "show cmp history": {"output": "", "data": HISTORY, "error": False},
            "show version": {"output": "Image Version: 21.28\nbuild 1", "data": None,
                             "error": False},
        },
        traps=[{"oid": "1.3.6.1.3.8164.1.1", "certificate": "segw"}],
        revoked_accepted=0,
        logs={"dpc-1.log": "x REFUSED: OCSP revoked\n", "mio-5.log": "hello\n"},
        figures={"detection_ms": 251.0, "recovery_s": 12.5},
        vars={"target": 2, "baseline": 24, "target_tunnels": 7, "enodeb": 7},
        start={"fleet_lost": 1, "fleet_reestablished": 2, "certificates": {"segw": 2},
               "cmp_history": 1},
    )  # fmt: skip
    base.update(over)
    return drills.Observation(**base)


@pytest.mark.parametrize(
    "cond, ok",
    [
        ({"tunnels": {"at_least": 24}}, True),
        ({"tunnels": {"at_least": "$baseline"}}, True),
        ({"tunnels": {"at_least": 25}}, False),
        ({"tunnels": {"view": "gateway", "equals": 15}}, True),  # the failed card counts 0
        ({"tunnels": {"card": "$target", "equals": 0}}, True),
        ({"tunnels": {"card": 3, "at_least": 5}}, True),  # unreachable: still holds them
        ({"children": {"at_least": 24}}, True),
        ({"card": {"slot": "$target", "state": "failed"}}, True),
        ({"card": {"slot": 1, "state": ["failed", "unreachable"]}}, False),
        ({"cli": {"command": "show version", "contains": "21.28"}}, True),
        ({"cli": {"command": "show version", "not_contains": "21.28"}}, False),
        ({"cli": {"command": "show version", "matches": r"^build \d$"}}, True),
        ({"cli": {"command": "show missing", "contains": "x"}}, False),
        ({"revoked_accepted": 0}, True),
        ({"revoked_accepted": {"at_most": -1}}, False),
        ({"trap": {"name": "cert-expiry", "count": 1}}, True),
        ({"trap": {"name": "cert-expiry", "certificate": "other", "count": 0}}, True),
        ({"trap": {"name": "1.3.6.1.3.8164.1.1", "at_least": 2}}, False),
        ({"certificate": {"name": "segw", "version_at_least": 3, "renewed": True}}, True),
        ({"certificate": {"name": "segw", "on_all_cards": True}}, True),  # 3 is not in service
        ({"cmp": {"type": "kur", "result": "failure", "equals": 2}}, True),
        ({"cmp": {"type": "any", "result": "success", "equals": 1}}, True),  # ir was before
        ({"enodeb": {"id": "$target", "tunnel": True}}, True),
        ({"enodeb": {"id": 3, "tunnel": False}}, True),
        ({"fleet": {"re_established": 5, "lost": {"at_most": 3}}}, True),
        ({"tunnels_lost": 2}, True),
        ({"tunnels_reestablished": {"at_least": 3}}, True),
        ({"detection_ms": {"at_most": 300}}, True),
        ({"recovery_s": {"at_most": 10}}, False),
        ({"log": {"file": "dpc-*.log", "contains": "REFUSED: OCSP revoked"}}, True),
        ({"log": {"file": "mio-*.log", "contains": "REFUSED"}}, False),
        ({"tunnels": {"at_least": 20}, "card": {"slot": 1, "state": "active"}}, True),
        ({"tunnels": {"at_least": 20}, "card": {"slot": 1, "state": "failed"}}, False),
    ],
)
def test_conditions_on_canned_reports(cond, ok):
    problems_seen = []
    drills.check_condition(cond, ("c",), lambda path, msg, key=False: problems_seen.append(msg))
    assert not problems_seen, problems_seen
    held, text = drills.evaluate(cond, observation())
    assert held is ok, text


def test_a_condition_tells_what_it_saw():
    held, text = drills.evaluate({"tunnels": {"at_least": 30}, "card": {"slot": 2,
                                  "state": "active"}}, observation())  # fmt: skip
    assert not held
    assert text == "NOT tunnels at the eNodeBs 24 (want >= 30); NOT card 2 failed (want active)"


def test_target_before_any_fault_is_not_yet_known():
    held, text = drills.evaluate({"card": {"slot": "$target", "state": "failed"}},
                                 observation(vars={}))  # fmt: skip
    assert not held and "$target is not known yet" in text


def test_a_silent_card_leaves_the_sa_table_incomplete():
    cli = {"show crypto ikev2-ikesa security-associations": {
        "output": "", "data": {"sas": [], "silent": [2]}, "error": False}}  # fmt: skip
    held, text = drills.evaluate({"enodeb": {"id": 7, "tunnel": False}}, observation(cli=cli))
    assert not held and "incomplete" in text


# ------------------------------------------------------------------ reports and logs
def recorded_timeline():
    """A kill of card 2 (6 tunnels) at t=2.0: failed at 2.004 (the supervisor's time) and
    counted out at the gateway at once; the eNodeBs count the loss at 6.0, half are back on
    the other cards at 7.5, all at 9.0."""
    tl = []
    for i in range(0, 121):
        t = round(i * 0.1, 3)
        failed = t >= 2.1
        moved = 6 if t >= 9.0 else (3 if t >= 7.5 else 0)
        cards = {
            "1": {"state": "active", "tunnels": 9 + moved // 2, "since": -1.0},
            "2": {"state": "failed" if failed else "active", "tunnels": 0 if failed else 6,
                  "since": 2.004 if failed else -1.0},
            "3": {"state": "active", "tunnels": 9 + moved - moved // 2, "since": -1.0},
        }  # fmt: skip
        fleet = {"up": 24 if t < 6 else 18 + moved, "lost": 0 if t < 6 else 6,
                 "establishing": 0, "failed": 0, "children_up": 24}  # fmt: skip
        gateway = sum(c["tunnels"] for c in cards.values())
        tl.append({"t": t, "cards": cards, "gateway": gateway, "fleet": fleet})
    return tl


def kill_fault():
    return {"step": 3, "fault": {"fault": "kill", "target": "slot-2"},
            "description": "kill slot-2", "t": 2.0, "call_ms": 1.0, "recovery_action": False,
            "target_slot": 2, "before": {"gateway": 24, "fleet_up": 24, "fleet_lost": 0,
                                         "cards": {"2": {"state": "active", "tunnels": 6}}},
            "answer": {}}  # fmt: skip


def test_figures_from_a_recorded_timeline():
    tl = recorded_timeline()
    assert tl[0]["gateway"] == 24 and tl[25]["gateway"] == 18 and tl[-1]["gateway"] == 24
    figs = drill_report.fault_figures(kill_fault(), tl)
    assert figs["detection_ms"] == 4.0 and figs["detection_source"].startswith("supervisor")
    assert figs["detected_as"] == "failed"
    assert figs["tunnels_on_target"] == 6 and figs["tunnels_lost"] == 6
    assert figs["recovery_s"] == 7.0 and figs["recovery_basis"].startswith("tunnels back")
    assert figs["lowest"] == {"gateway": 18, "fleet_up": 18}
    assert "card_back_s" not in figs  # no standby, no reboot: it stays failed


def test_datagrams_lost_count_from_the_fault_to_the_next_one(tmp_path):
    # the NPU's `lost` count: 3 before the kill, 5 more until the takeover, 1 after the next
    # fault (at 8.0 s), which is that fault's
    tl = recorded_timeline()
    for s in tl:
        s["npu_lost"] = 3 + (5 if s["t"] >= 2.2 else 0) + (1 if s["t"] >= 8.5 else 0)
    fault = {**kill_fault(), "before": {**kill_fault()["before"], "npu_lost": 3}}
    assert drill_report.fault_figures(fault, tl, until=8.0)["datagrams_lost"] == 5
    assert drill_report.fault_figures(fault, tl)["datagrams_lost"] == 6
    assert "datagrams_lost" not in drill_report.fault_figures(kill_fault(), tl)  # no baseline
    report = build_report(tmp_path, faults=[fault], timeline=tl)
    assert report["figures"]["datagrams_lost"] == 6
    report["metrics"] = ["datagrams_lost"]
    assert drill_report.figure_lines(report) == [("datagrams lost at the NPU", "6")]


def test_a_cut_off_card_that_comes_back_recovers_by_serving_again():
    tl = [{"t": t / 10, "gateway": 24, "fleet": {"up": 24, "lost": 0},
           "cards": {"2": {"state": "unreachable" if 12 <= t < 30 else "active", "tunnels": 8,
                           "since": 1.23 if 12 <= t < 30 else 3.0}}} for t in range(40)]  # fmt: skip
    fault = {**kill_fault(), "fault": {"fault": "ipc", "target": "slot-2", "mode": "partition"},
             "t": 1.0}  # fmt: skip
    figs = drill_report.fault_figures(fault, tl)
    assert figs["detected_as"] == "unreachable" and figs["detection_ms"] == 230.0
    assert figs["card_back_s"] == 2.0 and figs["recovery_s"] == 2.0
    assert figs["recovery_basis"] == "the card in service again" and figs["tunnels_lost"] == 0


def test_a_renewal_counts_when_every_card_in_service_holds_it():
    tl = []
    for i in range(30):
        t = i / 10
        gen = 3 if t >= 1.0 else 2
        cards = {"1": "v3" if t >= 1.0 else "v2", "2": "v3" if t >= 1.5 else "v2"}
        tl.append({"t": t, "gateway": 4, "fleet": {"up": 4, "lost": 0},
                   "cards": {"1": {"state": "active", "tunnels": 2},
                             "2": {"state": "active", "tunnels": 2}},
                   "certs": {"segw": {"generation": gen, "cards": cards}}})  # fmt: skip
    fault = {"t": 0.5, "target_slot": None, "recovery_action": False,
             "before": {"gateway": 4, "fleet_up": 4, "fleet_lost": 0,
                        "certs": {"segw": {"generation": 2}}}}  # fmt: skip
    assert drill_report.fault_figures(fault, tl)["renewal_s"] == {"segw": 1.0}


def build_report(tmp_path, **over):
    d = load(GOOD)
    tl = recorded_timeline()
    faults = [kill_fault(), {**kill_fault(), "fault": {"fault": "resume", "target": "slot-2"},
                             "description": "resume slot-2", "t": 10.0,
                             "recovery_action": True}]  # fmt: skip
    steps = [{"step": 1, "kind": "wait_for", "label": "tunnels", "line": 5, "t": 0, "ok": True,
              "detail": "ok"},
             {"step": 2, "kind": "expect", "label": "x < y & z", "line": 9, "t": 3, "ok": False,
              "detail": "NOT <tunnels>"}]  # fmt: skip
    args = dict(drill=d, seed=42, schedule=[p.to_dict() for p in drills.plan(d, (1, 2, 3), 24)],
                steps=steps, faults=faults, timeline=tl, traps=[{"oid": "1.3.6.1.3.8164.1.1"}],
                revocations=[{"fqdn": "enb0003.lab.example", "t": 1.0, "serials": ["AB"]}],
                accepted=[], cmp_lost=0, cmp={}, started=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                duration_s=12.0, chassis={"name": "drills", "run_dir": str(tmp_path)},
                notes=["a note"])  # fmt: skip
    args.update(over)
    return drill_report.build(**args)


def test_a_report_renders_json_and_html_with_the_timeline_and_the_seed(tmp_path):
    report = build_report(tmp_path)
    assert report["result"] == "failed" and report["seed"] == 42
    fig = report["figures"]
    assert fig["detection_ms"] == 4.0 and fig["recovery_s"] == 7.0
    assert fig["tunnels_lost"] == 6 and fig["revoked_accepted"] == 0 and fig["cmp_lost"] == 0
    assert fig["traps"] == {"cert-expiry": 1}
    assert "Key material" in report["seed_note"] and "stays random" in report["seed_note"]
    lines = dict(drill_report.figure_lines(report))
    assert fig["gateway_drop"] == 6
    assert lines == {"detection time": "4 ms", "recovery time": "7 s", "tunnels lost": "6 "
                     "(counted by the eNodeBs); the gateway's count fell by 6 at most"}  # fmt: skip

    json_path, html_path = drill_report.write(report, tmp_path / "out")
    again = json.loads(json_path.read_text())
    assert again["figures"] == fig and len(again["timeline"]) == 121
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</svg>" in page
    assert "Seed 42." in page and "stays random" in page
    assert "x &lt; y &amp; z" in page and "NOT &lt;tunnels&gt;" in page  # escaped
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    svg = drill_report.render_svg(report)
    assert sorted(p.name for p in json_path.parent.iterdir()) == [
        "report.html", "report.json", "report.svg"]  # fmt: skip
    assert (json_path.parent / "report.svg").read_text() == svg + "\n"  # the page's picture
    assert svg in page and svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" ')
    assert svg.count('stroke="#c62828"') == 1  # one fault mark (kill)
    assert svg.count('stroke="#2e7d32" stroke-width="1.5"') == 1  # one recovery (resume)
    assert "recovered (1)" in svg and "declared failed: 4 ms" in svg
    assert "card 1" in svg and "eNodeBs up (fleet)" in svg
    assert re.search(r'<rect x="[\d.]+" y="\d+" width="[\d.]+" height="14" fill="#e53935">', svg)
    from xml.dom import minidom

    minidom.parseString(svg)  # well-formed


def test_a_label_near_the_right_edge_is_drawn_left_of_its_mark(tmp_path):
    # recovered at 9.0 s of a 9.2 s drill: "recovered (1)" would run past the plot's edge
    report = build_report(tmp_path, faults=[kill_fault()], timeline=recorded_timeline()[:93],
                          duration_s=9.2)  # fmt: skip
    assert report["figures"]["recovery_s"] == 7.0
    label = re.search(r'<text x="([\d.]+)" y="\d+" fill="#2e7d32"( text-anchor="end")?>'
                      r"recovered \(1\)</text>", drill_report.render_svg(report))  # fmt: skip
    assert label and label[2] and float(label[1]) < 940  # anchored at its end, inside the plot
    early = drill_report.render_svg(build_report(tmp_path))  # at 9.0 s of 12: on the right
    assert re.search(r'fill="#2e7d32">recovered \(1\)</text>', early)


def test_a_passing_report(tmp_path):
    steps = [{"step": 1, "kind": "sleep", "label": "s", "line": 1, "t": 0, "ok": True,
              "detail": ""}]  # fmt: skip
    report = build_report(tmp_path, steps=steps, faults=[], timeline=[], traps=[])
    assert report["result"] == "passed"
    assert report["figures"]["detection_ms"] is None and report["figures"]["recovery_s"] is None
    assert "<svg" in drill_report.render_html(report)


def test_authentications_after_a_revocation_come_from_the_cards_logs(tmp_path):
    cut = dt.datetime(2026, 3, 1, 12, 0, 0).timestamp()  # local time, as the logs write it
    (tmp_path / "dpc-1.log").write_text(
        "2026-03-01 11:59:59,900 slot1 card INFO IKE SA up with enb0003.lab.example (CN=x) "
        "from 127.0.0.1:1, s\n"
        "2026-03-01 12:00:00,100 slot1 card INFO IKE SA up with enb0004.lab.example (CN=x) "
        "from 127.0.0.1:1, s\n"
    )  # fmt: skip
    (tmp_path / "dpc-2.log").write_text(
        "2026-03-01 12:00:01,500 slot2 card INFO IKE SA up with enb0003.lab.example (CN=x) "
        "from 127.0.0.1:1, s\n"
        "2026-03-01 12:00:02,000 slot2 card WARNING IKE_AUTH from 127.0.0.1:1 refused: x\n"
    )  # fmt: skip
    (tmp_path / "mio-5.log").write_text("2026-03-01 12:00:03,000 IKE SA up with enb0003.lab\n")
    found = drills.accepted_after(tmp_path, [{"fqdn": "enb0003.lab.example", "wall": cut}])
    assert [(f["card_log"], f["peer"]) for f in found] == [("dpc-2.log", "enb0003.lab.example")]
    assert drills.accepted_after(tmp_path, []) == []


def test_the_scanner_reads_only_what_the_logs_gained(tmp_path):
    log = tmp_path / "dpc-1.log"
    log.write_text("2026-03-01 12:00:05,000 s card INFO IKE SA up with enb0003.lab.example x\n")
    scanner = drills.AcceptedScanner(tmp_path)  # what was there before the drill: skipped
    cut = dt.datetime(2026, 3, 1, 12, 0, 0).timestamp()
    revoked = [{"fqdn": "enb0003.lab.example", "wall": cut}]
    assert scanner.scan([]) == [] and scanner.scan(revoked) == []
    with log.open("a") as f:
        f.write(
            "2026-03-01 12:00:06,000 s card INFO IKE SA up with enb0003.lab.example x\n"
            "2026-03-01 12:00:07,000 s card INFO IKE SA up with enb0003"
        )  # half a line
    assert len(scanner.scan(revoked)) == 1
    with log.open("a") as f:
        f.write(".lab.example x\n")
    assert [r["wall"] for r in scanner.scan(revoked)] == [cut + 6, cut + 7]


def test_a_revoked_enodeb_is_not_expected_back_for_the_recovery():
    tl = [{"t": t / 10, "gateway": 24 if t < 20 or t >= 40 else 12, "cards": {},
           "fleet": {"up": 24 if t < 20 else (12 if t < 40 else 23), "lost": 0}}
          for t in range(60)]  # fmt: skip
    for s in tl[40:]:
        s["gateway"] = 23
    fault = {"t": 1.5, "target_slot": None, "recovery_action": False,
             "before": {"gateway": 24, "fleet_up": 24, "fleet_lost": 0}}  # fmt: skip
    assert drill_report.fault_figures(fault, tl)["recovery_s"] is None
    assert drill_report.fault_figures(fault, tl, revoked=(1.0,))["recovery_s"] == 2.5


def test_an_enodeb_serial_comes_from_the_lab_ca_database(tmp_path):
    home = tmp_path / "lab" / "ca"
    home.mkdir(parents=True)
    rows = [
        {"serial": 10, "subject": "CN=enb0003.lab.example,O=SeGW Lab", "revoked_at": None},
        {"serial": 11, "subject": "CN=enb0030.lab.example,O=SeGW Lab", "revoked_at": None},
        {"serial": 12, "subject": "CN=enb0003.lab.example,O=SeGW Lab", "revoked_at": None},
        {"serial": 12, "subject": "CN=enb0003.lab.example,O=SeGW Lab", "revoked_at": "x"},
    ]
    (home / "issued.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{torn")
    assert drills.find_serials(tmp_path, "enb0003.lab.example") == [10]
    assert drills.find_serials(tmp_path / "nowhere", "enb0003.lab.example") == []


def test_the_trap_receiver_decodes_the_supervisors_expiry_trap():
    import asyncio

    from supervisor.snmp import Target, send_expiry_trap

    rx = drills.TrapReceiver(time.monotonic())
    try:
        error = asyncio.run(send_expiry_trap(Target("drill", "127.0.0.1", rx.port), "segw",
                                             "2027-01-01T00:00:00+00:00", 5))  # fmt: skip
        assert error is None
        deadline = time.monotonic() + 5
        while not rx.traps and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        rx.close()
    [trap] = rx.traps
    assert trap["oid"] == drills.TRAPS["cert-expiry"] and trap["certificate"] == "segw"
    assert trap["varbinds"]["1.3.6.1.3.8164.1.2.3"] == "5"
    assert drills.decode_trap(b"\x30\x03junk")["oid"] is None


# ------------------------------------------------------------------ session recovery
MIO_LOG = """\
2026-03-01 12:00:01,000 slot5 supervisor WARNING slot 2: process 41 exited (-9)
2026-03-01 12:00:01,250 slot5 recovery WARNING slot 2: failure: card 4 took over 7 IKE SAs \
(7 children) in 5.5 ms
2026-03-01 12:00:09,500 slot5 recovery WARNING slot 1: migrate: card 2 took over 12 IKE SAs \
(13 children) in 3.1 ms
2026-03-01 12:00:10,000 slot5 recovery INFO standby packet card: 1
"""


def test_takeovers_come_from_the_management_cards_log():
    wall0 = dt.datetime(2026, 3, 1, 12, 0, 0).timestamp()  # local time, as the logs write it
    assert drills.takeovers_in(MIO_LOG, wall0) == [
        {"failed": 2, "why": "failure", "by": 4, "sas": 7, "children": 7, "took_ms": 5.5,
         "t": 1.25},
        {"failed": 1, "why": "migrate", "by": 2, "sas": 12, "children": 13, "took_ms": 3.1,
         "t": 9.5},
    ]  # fmt: skip


def recovery_observation(**over) -> drills.Observation:
    wall0 = dt.datetime(2026, 3, 1, 12, 0, 0).timestamp()
    cards = [card(1, tunnels=10), card(2, "failed", 7), card(4, tunnels=7),
             {**card(3, "standby"), "counters": {"ike_sas": 0, "held_sas": 17}},
             {**card(5, "failed"), "counters": {"held_sas": 99}}]  # fmt: skip
    fleet = {"attempts": 26, "counts": {"attempts": 26, "established": 25, "retransmissions": 9}}
    base = dict(status=status(up=24, **fleet), cards=cards,
                takeovers=drills.takeovers_in(MIO_LOG, wall0),
                fleet_mark={"attempts": 24, "established": 24, "retransmissions": 9},
                vars={"target": 2, "baseline": 24, "target_tunnels": 7})  # fmt: skip
    base.update(over)
    return drills.Observation(**base)


@pytest.mark.parametrize(
    "cond, ok",
    [
        ({"takeover": {"failed": "$target", "by": 4, "sas": {"at_least": "$target_tunnels"}}},
         True),
        ({"takeover": {"failed": 2, "why": "failure", "took_ms": {"at_most": 5}}}, False),
        ({"takeover": {"failed": 2, "children": 7, "took_ms": {"at_most": 10}}}, True),
        ({"takeover": {"failed": 1, "by": 2, "why": "migrate", "children": 13}}, True),
        ({"takeover": {"failed": 3}}, False),
        ({"takeover": {}}, True),  # any takeover at all
        ({"tunnels": {"view": "held", "card": 3, "equals": 17}}, True),
        ({"tunnels": {"view": "held", "equals": 17}}, True),  # a failed card's count is stale
        ({"tunnels": {"view": "held", "card": 5, "equals": 0}}, True),
        ({"fleet_change": {"attempts": 2, "established": {"at_most": 1}}}, True),
        ({"fleet_change": {"retransmissions": 0}}, True),
        ({"fleet_change": {"attempts": 0}}, False),
        ({"fleet_change": {"unknown_counter": 0}}, False),
    ],
)  # fmt: skip
def test_recovery_conditions(cond, ok):
    problems_seen = []
    drills.check_condition(cond, ("c",), lambda path, msg, key=False: problems_seen.append(msg))
    assert not problems_seen, problems_seen
    held, text = drills.evaluate(cond, recovery_observation())
    assert held is ok, text


def test_recovery_conditions_tell_what_they_saw():
    obs = recovery_observation()
    held, text = drills.evaluate({"takeover": {"failed": 2, "sas": {"at_least": 8}}}, obs)
    assert not held and text == ("NOT card 4 took over card 2's SAs (failure): sas 7 "
                                 "(want >= 8)")  # fmt: skip
    held, text = drills.evaluate({"takeover": {"failed": 3}}, obs)
    assert text == "NOT no takeover (failed 3) since the start (2 in all)"
    held, text = drills.evaluate({"fleet_change": {"attempts": 0}}, obs)
    assert text == "NOT fleet attempts +2 (want == 0)"
    held, text = drills.evaluate({"fleet_change": {"attempts": 0}}, observation())
    assert not held and "fleet attempts +None" in text  # no mark: never holds


@pytest.mark.parametrize(
    "cond, field",
    [
        ({"takeover": {"failed": "x"}}, "c.takeover.failed"),
        ({"takeover": {"why": "crash"}}, "c.takeover.why"),
        ({"takeover": {"speed": 1}}, "c.takeover.speed"),
        ({"takeover": {"sas": {"more": 1}}}, "c.takeover.sas.more"),
        ({"takeover": 3}, "c.takeover"),
        ({"tunnels": {"view": "standby", "at_least": 1}}, "c.tunnels.view"),
        ({"fleet_change": {}}, "c.fleet_change"),
        ({"fleet_change": {"attempts": "many"}}, "c.fleet_change.attempts"),
    ],
)
def test_recovery_conditions_refuse_bad_shapes(cond, field):
    seen = []
    drills.check_condition(cond, ("c",), lambda path, msg, key=False: seen.append(
        ".".join(map(str, path))))  # fmt: skip
    assert field in seen, seen


def test_a_takeover_is_a_figure_of_the_fault_it_follows(tmp_path):
    tl = recorded_timeline()
    takeovers = [{"failed": 2, "why": "failure", "by": 4, "sas": 6, "children": 6,
                  "took_ms": 4.5, "t": 2.011},
                 {"failed": 1, "why": "migrate", "by": 2, "sas": 9, "children": 9,
                  "took_ms": 3.0, "t": 11.0}]  # fmt: skip
    figs = drill_report.fault_figures(kill_fault(), tl, takeovers=takeovers)
    assert (figs["takeover_ms"], figs["takeover_by"], figs["takeover_sas"]) == (4.5, 4, 6)
    assert figs["takeover_children"] == 6 and figs["takeover_done_ms"] == 11.0
    assert "takeover_ms" not in drill_report.fault_figures(kill_fault(), tl, until=2.01,
                                                           takeovers=takeovers)  # fmt: skip
    report = build_report(tmp_path, takeovers=takeovers)
    fig = report["figures"]
    assert fig["takeover_ms"] == 4.5 and fig["takeovers"] == takeovers
    assert report["faults"][0]["figures"]["takeover_by"] == 4
    report["metrics"] = ["takeover"]
    assert drill_report.figure_lines(report) == [("takeover time", (
        "4.5 ms: card 4 took over card 2's 6 IKE SAs (6 children, failure); 3 ms: card 2 "
        "took over card 1's 9 IKE SAs (9 children, migrate)"))]  # fmt: skip
    assert build_report(tmp_path)["figures"]["takeover_ms"] is None


# ------------------------------------------------------------------ the runner, in memory
class Result:
    def __init__(self, command, output="", data=None, error=False):
        self.command, self.output, self.data, self.error = command, output, data, error
        self.prompt = "[local]segw#"


class FakeChassis:
    """chassis.client.Chassis as the runner uses it: 3 DPCs with 4 eNodeBs each. A kill fails
    the card at once; 0.3 s later its eNodeBs are lost and back on the other cards. A warp
    renews the certificate (generation 2 -> 3). `with_faults`: has Chassis.fault."""

    def __init__(self, root: Path, with_faults: bool) -> None:
        self.name = "fake"
        self.manifest = {"platform": "asr5500", "lab": {"crl": {"url": "http://crl/x.crl"}},
                         "topology": {"cards": [{"slot": s, "type": "dpc", "role": "active"}
                                                for s in (1, 2, 3)]
                                      + [{"slot": 5, "type": "mio", "role": "active"}],
                                      "lab": {"fleet": {"count": 12}}}}  # fmt: skip
        self.run = type("Run", (), {"root": root, "logs": root / "logs"})()
        self.run.logs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.cards = {s: {"state": "active", "tunnels": 4, "since": 1.0} for s in (1, 2, 3)}
        self.fleet = {"up": 12, "lost": 0, "re_established": 0, "children_up": 12}
        self.generation, self.later = 2, []
        self.calls: list = []
        if with_faults:
            self.fault = self._fault

    def _tick(self):
        now = time.monotonic()
        with self.lock:
            for due, fn in list(self.later):
                if due <= now:
                    self.later.remove((due, fn))
                    fn()

    def status(self, timeout=3.0):
        self._tick()
        with self.lock:
            return {"slots": [{"slot": s, "type": "dpc", "state": c["state"]}
                              for s, c in self.cards.items()],
                    "lab": {"fleet": {"status": dict(self.fleet)}}}  # fmt: skip

    def _cli(self, command):
        self._tick()
        with self.lock:
            if command == "show card table":
                rows = [{"slot": s, "type": "dpc", "state": c["state"], "state_since": c["since"],
                         "counters": {"ike_sas": c["tunnels"]}} for s, c in self.cards.items()]  # fmt: skip
                return Result(command, "table", {"cards": rows})
            if command.startswith("show certificate name segw"):
                cards = {str(s): f"v{self.generation}" for s in self.cards}
                na = "2027-01-01T00:00:00+00:00"
                return Result(command, "", {"items": [{"name": "segw", "not_after": na,
                              "generation": self.generation, "cards": cards}]})  # fmt: skip
            if command == "show cmp statistics":
                return Result(command, "", {"messages": {"ir": {"sent": 1}},
                                            "transactions": {"ir": {"success": 1}}})  # fmt: skip
            if command == "show cmp outstanding-req":
                return Result(command, "", {"requests": []})
            if command == "show cmp history":
                return Result(command, "", {"history": []})
            return Result(command, f"ran {command}")

    def session(self, timeout=10.0):
        chassis = self

        class Session:
            client = type("C", (), {"close": lambda self: None})()

            def execute(self, line):
                return chassis._cli(line)

            def close(self):
                pass

        return Session()

    def exec(self, *commands, timeout=30.0, stop_on_error=True):
        self.calls += [("exec", c) for c in commands]
        return [self._cli(c) for c in commands]

    def warp(self, seconds):
        self.calls.append(("warp", round(seconds)))
        if seconds:
            with self.lock:
                self.generation += 1
        return {"now": "2026-01-01T00:00:00+00:00", "offset": seconds}

    def lab_set(self, peer, changes):
        self.calls.append(("lab_set", peer, changes))
        return {}

    def _fault(self, fault):
        self.calls.append(("fault", dict(fault)))
        at = time.monotonic()
        if fault["fault"] == "kill":
            slot = int(fault["target"][5:])
            with self.lock:
                lost = self.cards[slot]["tunnels"]
                self.cards[slot].update(state="failed", tunnels=0, since=at + 0.002)

            def lose_and_return():  # the eNodeBs notice and come back on the others
                self.fleet["lost"] += lost
                self.fleet["re_established"] += lost
                alive = [c for c in self.cards.values() if c["state"] == "active"]
                for k in range(lost):
                    alive[k % len(alive)]["tunnels"] += 1

            self.later.append((at + 0.3, lose_and_return))
        return {"fault": fault["fault"], "at": {"monotonic": at, "wall": time.time()}}


KILL = """\
name: fake-kill
seed: 3
metrics: [detection, recovery, tunnels_lost, cmp_lost]
steps:
  - wait_for: {tunnels: {at_least: 12}, tunnels: {view: gateway, at_least: 12}}
    timeout: 5
  - inject: {fault: kill, target: random-card}
  - expect: {card: {slot: $target, state: failed}}
    within: 1
  - expect: {detection_ms: {at_most: 50}}
  - expect: {tunnels_lost: {at_least: $target_tunnels}}
    within: 3
  - expect: {tunnels: {view: gateway, at_least: $baseline}}
    within: 2
    hold: 0.3
  - run: ["configure", "ca-crl name c der url ${lab.crl.url}", "card reboot $target", "end"]
"""


def test_the_runner_injects_measures_and_reports(tmp_path):
    text = KILL.replace("tunnels: {at_least: 12}, tunnels:", "fleet: {up: 12}, tunnels:")
    d = load(text)
    ch = FakeChassis(tmp_path, with_faults=True)
    seen = []

    class Watch(drills.Progress):
        def step_finished(self, step, result):
            seen.append((step.number, result["ok"], result["detail"]))

    report, runner = drills.run(d, ch, progress=Watch())
    assert report["result"] == "passed", seen
    [fault] = [c for c in ch.calls if c[0] == "fault"]
    assert fault[1]["target"] == runner.schedule[0].fault["target"]
    slot = int(fault[1]["target"][5:])
    assert ("exec", f"card reboot {slot}") in ch.calls
    assert ("exec", "ca-crl name c der url http://crl/x.crl") in ch.calls  # ${lab.X.Y}
    fig = report["figures"]
    assert fig["detection_ms"] == pytest.approx(2.0, abs=0.2)
    assert fig["tunnels_lost"] == 4 and fig["cmp_lost"] == 0
    assert 0.25 <= fig["recovery_s"] <= 1.0
    assert (
        len(report["timeline"]) >= 5 and report["schedule"][0]["fault"]["target"] == f"slot-{slot}"
    )
    assert [s[1] for s in seen] == [True] * 7


def test_without_the_faults_api_a_kill_is_blocked_and_the_rest_not_run(tmp_path):
    d = load(KILL.replace("tunnels: {at_least: 12}, tunnels:", "fleet: {up: 12}, tunnels:"))
    report, _ = drills.run(d, FakeChassis(tmp_path, with_faults=False))
    assert report["result"] == "failed"
    kill = report["steps"][1]
    assert kill["ok"] is False and kill["blocked"] and "faults API" in kill["detail"]
    assert [s["ok"] for s in report["steps"][2:]] == [None] * 5
    assert any("the rest is not run" in n for n in report["notes"])


def test_a_warp_to_expiry_renews_without_the_faults_api(tmp_path):
    d = load("""\
name: fake-renewal
seed: 1
metrics: [renewal]
steps:
  - wait_for: {certificate: {name: segw, on_all_cards: true}}
    timeout: 3
  - inject: {fault: warp, before_expiry: {certificate: segw, days: 30}}
  - expect: {certificate: {name: segw, renewed: true, on_all_cards: true}}
    within: 2
  - expect: {tunnels: {view: gateway, at_least: 12}}
    hold: 0.3
""")
    ch = FakeChassis(tmp_path, with_faults=False)
    report, _ = drills.run(d, ch)
    assert report["result"] == "passed", report["steps"]
    warps = [c for c in ch.calls if c[0] == "warp"]
    assert warps[0] == ("warp", 0)  # the supervisor's wall clock
    expected = (dt.datetime(2027, 1, 1, tzinfo=dt.UTC) - dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
                ).total_seconds() - 30 * 86400  # fmt: skip
    assert warps[1] == ("warp", round(expected))
    assert report["faults"][0]["fault"] == {"fault": "warp", "seconds": expected}
    assert report["figures"]["renewal_s"]["segw"] < 1.0


def test_yaml_with_two_equal_keys_in_a_condition_is_refused():
    # (YAML would keep the last; a drill says which tunnels it means once per step)
    with pytest.raises(drills.DrillError, match="duplicate key"):
        load(KILL)


def test_shipped_drills_are_plain_yaml():
    for path in drills.shipped():
        assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_a_free_udp_port_for_traps_is_on_loopback():
    rx = drills.TrapReceiver(time.monotonic())
    try:
        assert rx.sock.getsockname()[0] == "127.0.0.1" and rx.sock.type == socket.SOCK_DGRAM
    finally:
        rx.close()
