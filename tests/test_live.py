"""The live view of `chassis up` as pure functions of snapshots (no chassis): readiness levels,
events from snapshot diffs and log lines, the tracker's rates and stale data, the rich and the
plain renderings, the log tail, gather() and the polling loop against a fake chassis."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from rich.console import Console

from chassis import client, live
from chassis.client import ChassisError, CommandResult

NOW = 1_800_000_000.0


def slot(n, kind="dpc", role="active", state="active", **extra) -> dict:
    return {
        "slot": n,
        "type": kind,
        "label": kind.upper(),
        "role": role,
        "state": state,
        "pid": 1000 + n,
        "uptime_s": 5.0,
        "restarts": 0,
        "failed_at": None,
        "failed_reason": "",
        "detection_ms": None,
        **extra,
    }


def card(n, kind="dpc", templates=None, **counters) -> dict:
    row = {"slot": n, "type": kind, "role": "active", "state": "active", "failure": ""}
    if kind == "dpc":
        row["templates"] = {"segw/segw-tmpl": "ready"} if templates is None else templates
        row["counters"] = {"ike_sas": 0, "child_sas": 0, **counters}
    return row


def cert(generation=2, cards=None, name="segw") -> dict:
    return {
        "name": name,
        "generation": generation,
        "is_ca": False,
        "serial": "ABCDEF0123456789",
        "subject": "CN=segw.lab.example",
        "not_after": "2027-11-29T10:01:58+00:00",
        "cards": {"1": f"v{generation}", "2": f"v{generation}"} if cards is None else cards,
    }


def fleet_status(up=4, children_up=8, configured=4, children_wanted=8, **extra) -> dict:
    return {
        "configured": configured,
        "up": up,
        "children_up": children_up,
        "children_wanted": children_wanted,
        "establishing": configured - up,
        "lost": 0,
        "failed": 0,
        "losses": {},
        "failures": {},
        "flows": [
            {
                "flow": "udp/2152",
                "packets_sent": 100,
                "packets_received": 99,
                "bytes_sent": 120000,
                "bytes_received": 118800,
            }
        ],
        **extra,
    }


def snapshot(wall=NOW, mono=100.0, **over) -> dict:
    snap = {
        "wall": wall,
        "mono": mono,
        "errors": [],
        "name": "lab",
        "platform": "asr5500",
        "epoch": 1,
        "slots": [slot(1), slot(2, role="standby", state="standby"), slot(5, "mio")],
        "mgmt_takeovers": [],
        "faults": [],
        "npu": {"ike": 10, "esp": 200},
        "lab": {"ca": {"pid": 7, "url": "http://127.0.0.1:1/pkix/", "status": None}},
        "cards": [card(1, ike_sas=3, child_sas=6, npu_rx=500), card(2), card(5, "mio")],
        "certificates": [cert()],
        "cmp_history": [
            {
                "time": "2026-11-29T10:01:58+00:00",
                "type": "ir",
                "cert": "segw",
                "ca": "lab-root",
                "result": "success",
                "reason": "",
            }
        ],
        "cmp_statistics": {
            "transactions": {"ir": {"success": 1, "failure": 0}},
            "messages": {"ir": {"sent": 1, "received": 0, "failed": 0}},
        },
        "crls": [],
    }
    snap.update(over)
    return snap


# ------------------------------------------------------------------ readiness
def test_cards_level_names_the_slots_not_in_role():
    snap = snapshot(slots=[slot(1, state="booting"), slot(5, "mio")])
    assert client.readiness_missing("cards", snap) == ["slot 1 booting"]
    assert client.readiness_missing("certs", snap) == ["slot 1 booting"]
    assert client.cards_missing({"slots": []}) == ["no slot reported"]
    assert client.readiness_missing("cards", snapshot()) == []


def test_certs_level_needs_every_packet_card_in_service_on_the_current_version():
    assert client.readiness_missing("certs", snapshot()) == []
    pending = snapshot(certificates=[cert(3, {"1": "v3", "2": "pending"})])
    assert client.readiness_missing("certs", pending) == [
        "DPC 2 holds certificate segw pending (current v3)"
    ]
    old = snapshot(certificates=[cert(3, {"1": "v3"})])
    assert "DPC 2 holds certificate segw not at all (current v3)" in client.certs_missing(old)
    # a failed card is not in service: it is not waited for
    failed = snapshot(
        slots=[slot(1), slot(2, state="failed"), slot(5, "mio")],
        certificates=[cert(3, {"1": "v3", "2": "v2"})],
    )
    assert client.certs_missing(failed) == []


def test_certs_level_needs_the_templates_ready_and_a_certificate():
    refusing = snapshot(cards=[card(1), card(2, templates={"segw/t": "refusing: no key"})])
    assert client.certs_missing(refusing) == ["DPC 2 crypto template segw/t: refusing: no key"]
    silent = snapshot(cards=[card(1)])
    assert client.certs_missing(silent) == ["DPC 2 has not reported its crypto templates"]
    none = snapshot(certificates=[{**cert(), "is_ca": True}])
    assert client.certs_missing(none) == [
        "no certificate in the store yet (show certificate lists none)"
    ]
    cli_down = snapshot(errors=["supervisor CLI: timed out"])
    del cli_down["cards"]
    assert client.certs_missing(cli_down) == ["supervisor CLI: timed out"]


def test_certs_level_on_asr9000_is_the_rsp_store():
    snap = snapshot(
        platform="asr9000",
        certificates=[cert(1, {})],
        slots=[slot(0, "vsm"), slot(8, "rsp")],
        cards=[card(0, templates={})],
    )
    assert client.certs_missing(snap) == []
    assert client.certs_missing({**snap, "certificates": []})


def test_tunnels_level_reads_the_lab_fleet():
    assert client.readiness_missing("tunnels", snapshot()) == []  # no fleet: nothing to wait for
    lab = {"fleet": {"pid": 9, "status": fleet_status(up=3, children_up=6)}}
    assert client.readiness_missing("tunnels", snapshot(lab=lab)) == [
        "lab fleet: 3 of 4 expected tunnels up",
        "lab fleet: 6 of 8 expected child SAs up",
    ]
    lab = {"fleet": {"pid": 9, "status": fleet_status(up=4, children_up=7)}}
    assert client.tunnels_missing(snapshot(lab=lab)) == ["lab fleet: 7 of 8 expected child SAs up"]
    assert client.tunnels_missing(snapshot(lab={"fleet": {"pid": None, "status": None}})) == [
        "the lab fleet is not running"
    ]
    assert client.tunnels_missing(snapshot(lab={"fleet": {"pid": 9, "status": None}})) == [
        "the lab fleet has not reported yet"
    ]
    # certs first: a pending card is named before the fleet
    pending = snapshot(certificates=[cert(3, {"1": "v3", "2": "pending"})], lab=lab)
    assert client.readiness_missing("tunnels", pending)[0].startswith("DPC 2 holds")


def test_expected_tunnels_leaves_the_revoked_enodebs_out():
    assert client.expected_tunnels({"configured": 50}) == 50
    assert client.expected_tunnels({"configured": 50, "revoked": 1}) == 49
    assert client.expected_tunnels({"configured": 50, "revoked": ["enb0050"]}) == 49
    assert client.expected_tunnels({"configured": 50, "expected": 47, "revoked": 1}) == 47
    one_revoked = fleet_status(up=3, children_up=6, revoked=1)
    assert client.tunnels_missing(snapshot(lab={"fleet": {"pid": 9, "status": one_revoked}})) == []
    assert client.expected_children(one_revoked) == 6  # 2 per eNodeB, 3 expected
    # a fleet that says what it expects counts only those eNodeBs' children
    reported = fleet_status(
        configured=50,
        up=48,
        children_up=98,
        children_wanted=98,
        expected=49,
        revoked=["enb0050.lab.example"],
    )
    assert client.expected_children(reported) == 98
    assert client.tunnels_missing(snapshot(lab={"fleet": {"pid": 9, "status": reported}})) == [
        "lab fleet: 48 of 49 expected tunnels up"
    ]


def test_wait_rejects_an_unknown_level(tmp_path):
    ch = object.__new__(client.Chassis)
    ch.manifest = {"name": "x"}
    with pytest.raises(ChassisError, match="expected one of cards, certs, tunnels"):
        client.Chassis.wait(ch, "sessions", 1.0)


# ------------------------------------------------------------------ events
def line(source_time: str, who: str, level: str, msg: str) -> str:
    return f"2026-11-29 {source_time},123 {who} {level} {msg}"


def test_log_events_of_the_cards():
    refused = live.log_event(
        "dpc-2",
        line(
            "10:00:01",
            "slot2 card",
            "WARNING",
            "revocation of CN=enb0050.lab.example,O=SeGW Lab: REFUSED: OCSP revoked by OCSP "
            "http://127.0.0.1:1/ocsp (keyCompromise)",
        ),
    )
    assert refused["kind"] == "ocsp" and refused["verdict"] == "refused" and not refused["quiet"]
    assert refused["text"].startswith("DPC 2: enb0050.lab.example REFUSED: OCSP revoked")
    good = live.log_event(
        "dpc-1",
        line(
            "10:00:02",
            "slot1 card",
            "INFO",
            "revocation of CN=enb0001.lab.example,O=SeGW Lab: not revoked: CRL lab-issuing #3",
        ),
    )
    assert good["kind"] == "crl" and good["verdict"] == "ok" and good["quiet"]
    auth = live.log_event(
        "dpc-1",
        line(
            "10:00:03",
            "slot1 card",
            "WARNING",
            "IKE_AUTH from 127.0.0.1:4500 refused: bad signature",
        ),
    )
    assert auth["kind"] == "auth" and "127.0.0.1:4500 refused: bad signature" in auth["text"]
    revoked = live.log_event(
        "dpc-1",
        line(
            "10:00:03",
            "slot1 card",
            "WARNING",
            "IKE_AUTH from 127.0.0.1:4500 refused: certificate revoked or unverifiable: OCSP revoked",
        ),
    )
    assert revoked is None  # the verdict line before it says it, with the subject
    assert auth["wall"] == time.mktime(time.strptime("2026-11-29 10:00:03", "%Y-%m-%d %H:%M:%S"))
    assert live.log_event("dpc-1", line("10:00:04", "slot1 card", "INFO", "IKE SA up")) is None


def test_log_events_of_the_others():
    warn = live.log_event("mio-5", line("10:00:01", "slot5 supervisor", "WARNING", "stepping down"))
    assert warn == {"wall": warn["wall"], "kind": "warning", "text": "MIO 5: stepping down"}
    crl = live.log_event("mio-6", line("10:00:01", "slot6 crl", "WARNING", "fetch failed"))
    assert crl["kind"] == "crl"
    err = live.log_event("lab-ca", line("10:00:01", "lab-ca", "ERROR", "boom"))
    assert err["kind"] == "error" and err["text"] == "lab-ca: boom"
    assert (
        live.log_event("lab-fleet", line("10:00:01", "lab-fleet", "INFO", "enb1: failed")) is None
    )
    # takeovers come from the status (mgmt_takeovers), not twice from the log
    assert (
        live.log_event(
            "backplane",
            line("10:00:01", "backplane", "WARNING", "MIO 5 missed 3 heartbeats: MIO 6 takes over"),
        )
        is None
    )
    assert live.log_event("dpc-1", "Traceback (most recent call last):") is None
    assert live.revocation_source("CRL lab-issuing, OCSP not reached") == "crl"
    assert live.revocation_source("OCSP good, CRL not needed") == "ocsp"
    assert live.revocation_source("no source") == "revocation"


def texts(events) -> list[str]:
    return [e["text"] for e in events]


def test_the_first_snapshot_gives_the_cmp_history_and_takeovers():
    first = snapshot(mgmt_takeovers=[{"from": 5, "to": 6, "why": "crash", "epoch": 2}])
    got = live.diff_events(None, first)
    assert texts(got) == [
        "CMP ir segw from lab-root: success",
        "management takeover: MIO 5 -> 6 (crash), epoch 2",
    ]
    assert got[0]["wall"] == pytest.approx(1795946518.0)  # the history's own time


def test_diff_events_between_two_snapshots():
    before = snapshot(
        lab={
            "fleet": {"pid": 9, "status": fleet_status()},
            "ocsp": {"pid": 8, "status": {"behaviour": {"counts": {"good": 4}}}},
            "crl": {"pid": 6, "status": {"crls": {"issuing": {"number": 1}}}},
        },
        crls=[{"name": "lab-issuing", "number": 1, "count": 0, "version": 1, "last_result": "ok"}],
    )
    after = snapshot(
        slots=[
            slot(
                1,
                state="failed",
                failed_at=5.0,
                failed_reason="process exited (-9)",
                detection_ms=3.0,
            ),
            slot(2, role="active", state="active", restarts=1),
            slot(5, "mio"),
        ],
        mgmt_takeovers=[{"from": 5, "to": 6, "why": "missed 3 heartbeats", "epoch": 2}],
        faults=[{"fault": "kill slot-1"}],
        certificates=[cert(3, {"1": "v3", "2": "pending"})],
        crls=[
            {
                "name": "lab-issuing",
                "number": 2,
                "count": 1,
                "version": 2,
                "last_result": "HTTP 500",
            }
        ],
        cmp_history=snapshot()["cmp_history"]
        + [
            {
                "time": "2026-11-29T11:00:00+00:00",
                "type": "kur",
                "cert": "segw",
                "ca": "lab-root",
                "result": "failure",
                "reason": "CA down",
            }
        ],
        cards=[card(1, ike_sas=3), card(2, templates={"segw/segw-tmpl": "refusing: no key"})],
        lab={
            "fleet": {"pid": 9, "status": fleet_status(up=2, lost=2, losses={"dpd": 2})},
            "ocsp": {"pid": 8, "status": {"behaviour": {"counts": {"good": 4, "revoked": 1}}}},
            "crl": {"pid": None, "status": {"crls": {"issuing": {"number": 2, "revoked": 1}}}},
        },
    )
    got = texts(live.diff_events(before, after))
    assert got == [
        "CMP kur segw from lab-root: failure (CA down)",
        "management takeover: MIO 5 -> 6 (missed 3 heartbeats), epoch 2",
        "DPC 1 failed: process exited (-9), detected in 3 ms",
        "DPC 1 active -> failed",
        "DPC 2 restarted (pid 1002)",
        "DPC 2 role standby -> active",
        "DPC 2 standby -> active",
        "fault in force: kill slot-1",
        "certificate segw v3: serial ABCDEF012345, until 2027-11-29T10:01:58+00:00",
        "certificate segw v3 on card(s) 1",
        "CRL lab-issuing #2 (1 revoked), version 2",
        "CRL lab-issuing fetch: HTTP 500",
        "DPC 2 crypto template segw/segw-tmpl: refusing: no key",
        "lab crl stopped",
        "fleet: 2 tunnel(s) lost (dpd: 2 in all)",
        "lab OCSP responder answered revoked 1 time(s)",
        "lab CRL publisher: issuing CRL #2, 1 revoked",
    ]
    kinds = {e["text"]: e["kind"] for e in live.diff_events(before, after)}
    assert kinds["DPC 1 active -> failed"] == "failure"
    assert kinds["fault in force: kill slot-1"] == "fault"
    assert kinds["DPC 2 standby -> active"] == "takeover"
    # a CRL fetched from a CDP has no name: its URL names it
    cdp = {"name": None, "url": "http://ca/x.crl", "number": 1, "count": 0, "version": 1}
    assert texts(live.diff_events(after, {**after, "crls": after["crls"] + [cdp]})) == [
        "CRL http://ca/x.crl #1 (0 revoked), version 1"
    ]
    lifted = texts(live.diff_events(after, {**after, "faults": []}))
    assert lifted == ["fault lifted: kill slot-1"]
    assert live.diff_events(after, after) == []


# ------------------------------------------------------------------ the tracker
def test_tracker_rates_readiness_and_verdicts():
    tr = live.Tracker("certs", started=NOW - 5, timeout=30)
    pending = snapshot(
        certificates=[cert(3, {"1": "v3", "2": "pending"})],
        ipsec=[
            {"card": 1, "packets_in": 10, "packets_out": 10, "bytes_in": 1000, "bytes_out": 1000}
        ],
        log=[
            (
                "dpc-1",
                line(
                    "10:00:02", "slot1 card", "INFO", "revocation of CN=e1: not revoked: OCSP good"
                ),
            ),
            (
                "dpc-1",
                line(
                    "10:00:01",
                    "slot1 card",
                    "WARNING",
                    "revocation of CN=e2: REFUSED: OCSP revoked",
                ),
            ),
        ],
    )
    v1 = tr.update(pending)
    assert v1["readiness"]["ready_at"] is None
    assert v1["readiness"]["missing"] == ["DPC 2 holds certificate segw pending (current v3)"]
    assert v1["verdicts"] == {"ocsp/ok": 1, "ocsp/refused": 1}
    assert [e["kind"] for e in v1["new_events"]] == ["ocsp", "cmp"]  # sorted by time
    assert v1["traffic"] == {
        1: {"packets_in": 10, "packets_out": 10, "bytes_in": 1000, "bytes_out": 1000}
    }
    ready = snapshot(
        wall=NOW + 2,
        mono=102.0,
        certificates=[cert(3, {"1": "v3", "2": "v3"})],
        cards=[card(1, npu_rx=700), card(2)],
        ipsec=[
            {"card": 1, "packets_in": 30, "packets_out": 50, "bytes_in": 3000, "bytes_out": 5000}
        ],
    )
    v2 = tr.update(ready)
    assert v2["readiness"]["ready_at"] == NOW + 2 and v2["readiness"]["missing"] == []
    assert v2["rates"]["cards"][1] == {
        "npu_rx": 100.0,  # (700 - 500) / 2 s
        "packets_in": 10.0,
        "packets_out": 20.0,
        "bytes_in": 1000.0,
        "bytes_out": 2000.0,
    }
    assert texts(v2["new_events"]) == ["certificate segw v3 on card(s) 2"]
    # readiness, once reached, stays reached
    v3 = tr.update(snapshot(wall=NOW + 3, mono=103.0, certificates=[]))
    assert v3["readiness"]["ready_at"] == NOW + 2
    assert live.readiness_text({**v3, "readiness": {**v3["readiness"], "started": NOW}}) == (
        "ready (certs) in 2.0 s"
    )


def test_tracker_keeps_the_last_data_a_poll_could_not_read():
    tr = live.Tracker()
    tr.update(snapshot())
    blind = {
        "wall": NOW + 1,
        "mono": 101.0,
        "name": "lab",
        "platform": "asr5500",
        "errors": ["backplane: not running", "supervisor CLI: timed out"],
    }
    v = tr.update(blind)
    assert v["cards"] == snapshot()["cards"] and v["slots"] == snapshot()["slots"]
    assert v["stale"] == [
        "cards",
        "certificates",
        "cmp_history",
        "cmp_statistics",
        "crls",
        "status",
    ]
    assert v["new_events"] == []
    out = console_text(live.render(v))
    assert "not read this time: supervisor CLI: timed out" in out
    assert "shown from the last poll: cards" in out


def test_tracker_rates_of_the_fleet_flows_and_npu():
    tr = live.Tracker("tunnels")
    lab = {"fleet": {"pid": 9, "status": fleet_status()}}
    tr.update(snapshot(lab=lab))
    later = fleet_status()
    later["flows"] = [{**later["flows"][0], "packets_sent": 150, "packets_received": 139}]
    v = tr.update(
        snapshot(
            wall=NOW + 2,
            mono=102.0,
            lab={"fleet": {"pid": 9, "status": later}},
            cards=[card(1, npu_rx=600), card(2), card(5, "mio")],
        )
    )
    assert v["rates"]["flows"] == [{"sent_pps": 25.0, "received_pps": 20.0}]
    assert v["rates"]["cards"][1]["npu_rx"] == 50.0
    assert live._rate(5, 10, 1.0) is None  # a restarted counter is no negative rate


# ------------------------------------------------------------------ rendering
def console_text(renderable, width=200) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def view_of(*snaps, level="certs") -> dict:
    tr = live.Tracker(level, started=NOW - 10, timeout=30)
    view = None
    for s in snaps:
        view = tr.update(s)
    return view


def test_render_shows_cards_certificates_traffic_and_events():
    lab = {"ca": {"pid": 7}, "fleet": {"pid": 9, "status": fleet_status()}}
    view = view_of(
        snapshot(lab=lab),
        snapshot(
            wall=NOW + 1,
            mono=101.0,
            lab=lab,
            slots=[
                slot(1),
                slot(2, role="standby", state="failed", failed_reason="hung"),
                slot(5, "mio"),
            ],
            cards=[card(1, ike_sas=3, child_sas=6, npu_rx=540), card(2), card(5, "mio")],
            ipsec=[
                {
                    "card": 1,
                    "packets_in": 1200,
                    "packets_out": 1100,
                    "bytes_in": 5_000_000,
                    "bytes_out": 4_000_000,
                }
            ],
        ),
    )
    out = console_text(live.render(view))
    lines = out.splitlines()
    assert lines[0].startswith("chassis lab (asr5500), epoch 1, up 11 s - ready (certs) in 10.0 s")
    row1 = next(x for x in lines if x.strip().startswith("1  DPC"))
    assert "segw v2" in row1 and "1/1" in row1 and " 3 " in row1 and " 6 " in row1
    assert "40" in row1 and "1.2k/1.1k" in row1 and "9.0MB" in row1  # 40 datagrams/s
    row2 = next(x for x in lines if x.strip().startswith("2  DPC"))
    assert "failed" in row2
    assert "store" in next(x for x in lines if x.strip().startswith("5  MIO"))
    assert "fleet: 4/4 tunnels up, child SAs 8/8" in out
    assert "certificate segw v2: CN=segw.lab.example" in out and "on 2/2 packet cards" in out
    assert "CMP: ir 1 ok/0 failed" in out
    assert "DPC 2 standby -> failed" in out and "CMP ir segw from lab-root: success" in out
    assert "Ctrl-C stops the chassis." in out


def test_render_while_waiting_and_without_events():
    v = view_of(snapshot(certificates=[], cmp_history=[]))
    out = console_text(live.render(v))
    assert "waiting for certs: no certificate in the store yet" in out
    assert "(none yet)" in out
    many = [f"slot {n} booting" for n in range(5)]
    text = live.readiness_text({"readiness": {"level": "cards", "missing": many}})
    assert text == "waiting for cards: slot 0 booting; slot 1 booting; slot 2 booting (+2 more)"


def test_plain_lines():
    lab = {"fleet": {"pid": 9, "status": fleet_status()}}
    view = view_of(
        snapshot(lab=lab),
        snapshot(
            wall=NOW + 1,
            mono=101.0,
            lab=lab,
            slots=[
                slot(1),
                slot(2, role="standby", state="failed", failed_reason="hung"),
                slot(5, "mio"),
            ],
        ),
    )
    lines = live.plain_summary(view)
    assert lines[0].startswith("chassis lab (asr5500), epoch 1")
    assert lines[1].startswith("  DPC 1: active/active pid 1001 cert segw v2 tmpl 1/1 ike 3")
    assert "FAILED: hung" in lines[2]
    assert any(x.startswith("  fleet: 4/4 tunnels up") for x in lines)
    events = live.plain_events(view["new_events"])
    assert events and all(e.startswith("event ") for e in events)
    assert any("DPC 2 standby -> failed" in e for e in events)
    assert live._num(1234) == "1.2k" and live._num(None) == "-" and live._num(2.5) == "2.5"
    assert live._num(3_400_000, "B") == "3.4MB"


# ------------------------------------------------------------------ I/O against fakes
def test_log_tail_reads_what_the_logs_gained(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    old = "2000-01-01 00:00:00,000 backplane WARNING an older run\n"
    (logs / "backplane.log").write_text(old)
    tail = live.LogTail(logs, since=time.time() - 60)
    assert tail.read() == []
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(logs / "dpc-1.log", "w") as f:
        f.write(f"{stamp},001 slot1 card WARNING one\n{stamp},002 slot1 card WARNING tw")
    assert [s for s, _ in tail.read()] == ["dpc-1"]
    with open(logs / "dpc-1.log", "a") as f:
        f.write("o\n")
    assert tail.read() == [("dpc-1", f"{stamp},002 slot1 card WARNING two")]
    (logs / "dpc-1.log").write_text(f"{stamp},003 slot1 card WARNING new file\n")
    assert tail.read() == [("dpc-1", f"{stamp},003 slot1 card WARNING new file")]


def test_log_tail_skips_a_burst_past_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(live, "LOG_READ_MAX", 100)
    tail = live.LogTail(tmp_path)
    (tmp_path / "dpc-1.log").write_text(
        "".join(f"2026-01-01 00:00:00,000 x INFO {i:04}\n" for i in range(20))
    )
    got = tail.read()
    assert got[-1][1].endswith("0019") and len(got) <= 3 and tail.skipped > 0


class FakeChassis:
    """status() and exec() as a running chassis answers them (or fails)."""

    name = "fake"
    manifest = {"platform": "asr5500"}

    def __init__(self, tmp_path: Path, polls: int = 3, fail_cli: bool = False):
        self.run = type("Run", (), {"logs": tmp_path})()
        self.polls, self.fail_cli, self.calls = polls, fail_cli, 0

    def running(self) -> bool:
        self.calls += 1
        return self.calls <= self.polls

    def status(self, timeout=3.0) -> dict:
        base = snapshot()
        return {
            k: base[k]
            for k in (
                "name",
                "platform",
                "epoch",
                "slots",
                "mgmt_takeovers",
                "faults",
                "npu",
                "lab",
            )
        }

    def exec(self, *commands, timeout=30.0, stop_on_error=True):
        self.asked = getattr(self, "asked", []) + [commands]
        if self.fail_cli:
            raise TimeoutError("no answer from the supervisor")
        base = snapshot()
        data = {
            "show card table": {"cards": base["cards"]},
            "show certificate": {"items": base["certificates"]},
            "show cmp history": {"history": base["cmp_history"]},
            "show cmp statistics": base["cmp_statistics"],
            "show ca-crl all": None,
            live.IPSEC_DETAIL: {"sas": [{"card": 1, "packets_in": 5}]},
        }
        return [
            CommandResult(
                c, "Failure: busy" if data[c] is None else "", data[c], data[c] is None, "#"
            )
            for c in commands
        ]


def test_gather_maps_the_commands_and_reports_what_failed(tmp_path):
    snap = live.gather(FakeChassis(tmp_path), live.LogTail(tmp_path))
    assert snap["cards"] == snapshot()["cards"]
    assert snap["certificates"][0]["generation"] == 2
    assert snap["cmp_statistics"]["transactions"]["ir"]["success"] == 1
    assert snap["ipsec"] == [{"card": 1, "packets_in": 5}]
    assert snap["errors"] == ["show ca-crl all: Failure: busy"] and "crls" not in snap
    assert snap["log"] == [] and snap["slots"]
    blind = live.gather(FakeChassis(tmp_path, fail_cli=True), detail=False)
    assert blind["errors"] == ["supervisor CLI: no answer from the supervisor"]
    assert "cards" not in blind and blind["epoch"] == 1


def test_run_prints_plain_lines_until_the_chassis_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(live, "MIN_POLL_S", 0.0)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    seen, ready = [], []

    class Exporter:
        def update(self, view):
            seen.append(view)

    got = live.run(
        FakeChassis(tmp_path, polls=3),
        level="certs",
        timeout=30,
        interval=0.0,
        started=time.time(),
        console=console,
        exporter=Exporter(),
        on_ready=ready.append,
    )
    text = out.getvalue()
    assert got == "exited" and len(seen) == 3 and len(ready) == 1
    assert text.count("chassis lab (asr5500)") == 1  # one summary block per PLAIN_SUMMARY_S
    assert "event " in text and "DPC 1: active/active" in text


def test_run_raises_when_readiness_is_not_reached_in_time(tmp_path, monkeypatch):
    monkeypatch.setattr(live, "MIN_POLL_S", 0.0)
    console = Console(file=io.StringIO(), force_terminal=False)
    with pytest.raises(
        live.ReadinessTimeout, match="--wait certs not reached after 1 s: supervisor CLI: no answer"
    ):
        live.run(
            FakeChassis(tmp_path, polls=5, fail_cli=True),
            level="certs",
            timeout=1,
            interval=0.0,
            started=time.time() - 2,
            console=console,
        )


def test_run_renders_the_rich_view_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(live, "MIN_POLL_S", 0.0)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    live.run(FakeChassis(tmp_path, polls=2), level="cards", interval=0.0, console=console)
    assert "latest events" in out.getvalue() and "Ctrl-C stops the chassis." in out.getvalue()


def test_poller_asks_for_per_child_counters_only_while_they_are_few(tmp_path, monkeypatch):
    fake = FakeChassis(tmp_path)
    poller = live.Poller(fake, "cards")
    first = poller.poll()
    assert live.IPSEC_DETAIL not in fake.asked[-1] and first["traffic"] == {}
    second = poller.poll()  # the card table counted 6 child SAs: few
    assert live.IPSEC_DETAIL in fake.asked[-1] and second["traffic"] == {
        1: {"packets_in": 5, "packets_out": 0, "bytes_in": 0, "bytes_out": 0}
    }
    monkeypatch.setattr(live, "DETAIL_MAX_CHILDREN", 5)
    poller.poll()
    poller.poll()
    assert live.IPSEC_DETAIL not in fake.asked[-1]
