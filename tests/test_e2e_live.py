"""`chassis up` end to end: readiness levels, the live view, metrics and `chassis graph`.

A small ASR 5500 (one MIO, an active and a standby DPC) enrolls its certificate from the lab CA
with CMPv2 at boot. `chassis up --detach --wait certs` returns only once both DPCs hold it (and
serve their template), with a detached metrics exporter on loopback that exits with the
chassis. In the foreground, with stdout a pipe, `chassis up --wait tunnels` prints plain lines
(readiness, a summary per card, events) while two lab eNodeBs bring their tunnels up; a scrape
shows the tunnels; SIGINT tears everything down: no process it started is left, by PID.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from helpers import BASIC, LAB_SEGW_CONFIG, ROOT, wait_until, write_topology

from chassis import procs

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPOLOGY = (
    """\
name: {name}
platform: asr5500
cards:
  5: {{type: mio, role: active}}
  1: {{type: dpc, role: active}}
  2: {{type: dpc, role: standby}}
lab:
  ca: {{psk: lab-secret}}
{fleet}"""
    + LAB_SEGW_CONFIG
)
FLEET = """\
  fleet:
    count: 2
    children: 1
    rate: 20
    traffic:
      - {proto: udp, port: 2152, pps: 5, size: 200}
"""


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topology(tmp_path, name: str, fleet: bool) -> str:
    body = TOPOLOGY.format(name=name, port=free_port(), fleet=FLEET if fleet else "")
    return str(write_topology(tmp_path, body, f"{name}.yaml"))


def chassis(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chassis", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop(proc: subprocess.Popen, run) -> None:
    """Whatever a test left: its `chassis up` process group killed, its chassis down."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    if (run / "pids.json").exists():
        chassis("down", "--run-dir", run)


def recorded(run) -> list[tuple[str, int, int]]:
    """(name, pid, start) of every process the chassis recorded (backplane, cards, lab)."""
    pids = json.loads((run / "pids.json").read_text())
    return [(name, r["pid"], r["start"]) for name, r in pids.items()]


def series(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=5, trust_env=False).text
    out = {}
    for line in text.splitlines():
        if line.startswith("segw_"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


@pytest.mark.timeout(300)
def test_detach_wait_certs_returns_with_the_certificate_on_every_card(tmp_path):
    run = tmp_path / "run"
    topo = topology(tmp_path, "livecerts", fleet=False)
    up = chassis(
        "up",
        topo,
        "--run-dir",
        run,
        "--detach",
        "--wait",
        "certs",
        "--timeout",
        120,
        "--metrics-port",
        0,
        timeout=180,
    )
    exporter = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert re.search(r"ready in [\d.]+ s \(certs\)", up.stdout), up.stdout
        m = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics) \(pid (\d+);", up.stdout)
        assert m, up.stdout
        url, pid = m.group(1), int(m.group(2))
        exporter = (pid, procs.start_time(pid))
        # at once, without waiting: both DPCs hold the enrolled certificate and serve with it
        out = chassis("exec", "--run-dir", run, "--json", "show certificate", "show card table")
        assert out.returncode == 0, out.stderr
        certs, table = (r["data"] for r in json.loads(out.stdout))
        (segw,) = certs["items"]
        want = f"v{segw['generation']}"
        assert segw["name"] == "segw" and segw["cards"] == {"1": want, "2": want}
        dpcs = [c for c in table["cards"] if c["type"] == "dpc"]
        assert [c["templates"] for c in dpcs] == [{"segw/segw-tmpl": "ready"}] * 2
        # the detached exporter, on loopback
        got = wait_until(
            lambda: (s := series(url)).get('segw_certificate_version{name="segw"}') and s,
            20,
            0.2,
            what="certificate in the metrics",
        )
        gen = float(segw["generation"])
        assert got['segw_certificate_card_version{name="segw",slot="1"}'] == gen
        assert got['segw_certificate_card_version{name="segw",slot="2"}'] == gen
        assert got['segw_cmp_transactions_total{result="success",type="ir"}'] == 1.0
        assert got['segw_card_info{role="standby",slot="2",state="standby",type="dpc"}'] == 1.0
        assert got["segw_up"] == 1.0
        # `--wait certs` is also what a second start on the same run directory is refused with
        again = chassis("up", topo, "--run-dir", run, "--detach", "--wait", "certs")
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        chassis("down", "--run-dir", run)
    if exporter is not None:  # it notices the chassis is gone and exits
        wait_until(lambda: not procs.alive(*exporter), 15, 0.1, what="the exporter's exit")


@pytest.mark.timeout(300)
def test_foreground_plain_view_metrics_and_sigint_teardown(tmp_path):
    run = tmp_path / "run"
    topo = topology(tmp_path, "livefg", fleet=True)
    port = free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chassis",
            "up",
            topo,
            "--run-dir",
            str(run),
            "--wait",
            "tunnels",
            "--timeout",
            "150",
            "--metrics-port",
            str(port),
            "--refresh",
            "0.5",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()

    def read_until(pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            seen.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n" + "\n".join(seen))

    processes: list = []
    try:
        assert (
            read_until(r"^metrics on http://127\.0\.0\.1:\d+/metrics", 60)
            .strip()
            .endswith(f":{port}/metrics")
        )
        read_until(r"Ctrl-C stops it", 60)
        read_until(r"^ready in [\d.]+ s \(tunnels\)$", 150)
        processes = recorded(run)  # backplane, 3 cards, lab CA and fleet
        assert "backplane" in {n for n, _, _ in processes} and len(processes) >= 6, processes
        # the view goes on: summary blocks every few seconds, a line per card
        read_until(r"^chassis livefg \(asr5500\), epoch \d+, up \d+ s - ready \(tunnels\)", 15)
        read_until(r"^  DPC 1: active/active pid \d+ cert segw v\d+ tmpl 1/1 ike \d", 5)
        read_until(r"^  fleet: 2/2 tunnels up, child SAs 2/2", 5)
        read_until(r"^chassis livefg \(asr5500\), epoch \d+, up \d+ s - ready \(tunnels\)", 15)
        text = "\n".join(seen)
        assert (
            re.search(r"^event \d\d:\d\d:\d\d cmp +CMP ir segw from lab-root: success", text, re.M)
            or "certificate segw v" in text
        ), text
        # a scrape over loopback
        url = f"http://127.0.0.1:{port}/metrics"
        got = series(url)
        assert got["segw_fleet_tunnels_up"] == 2.0 and got["segw_fleet_children_up"] == 2.0
        assert got['segw_ike_sas{slot="1"}'] == 2.0 and got['segw_child_sas{slot="1"}'] == 2.0
        assert got['segw_card_in_service{slot="2",type="dpc"}'] == 1.0
        assert got['segw_npu_rx_datagrams_total{slot="1"}'] > 0
        assert 'segw_esp_packets_total{direction="in",slot="1"}' in got
        # SIGINT (Ctrl-C): everything stops
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, "\n".join(seen)
        left = [(n, p) for n, p, start in processes if procs.alive(p, start)]
        assert left == [], left
        assert not (run / "pids.json").exists()
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2, trust_env=False)
    finally:
        stop(proc, run)
    time.sleep(0.2)  # the reader thread sees EOF
    assert "stopping" in "\n".join(seen) + "".join(iter_queue(lines))


def iter_queue(q: queue.Queue):
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return


def test_graph_writes_the_files(tmp_path):
    topo = topology(tmp_path, "livegraph", fleet=True)
    out = chassis("graph", topo, "--out", tmp_path / "pic", "--no-dot", timeout=60)
    assert out.returncode == 0, out.stderr
    files = sorted(p.name for p in (tmp_path / "pic").iterdir())
    assert files == ["livegraph.dot", "livegraph.html", "livegraph.svg"]
    page = (tmp_path / "pic" / "livegraph.html").read_text()
    assert "<svg" in page and "lab eNodeB fleet" in page and "Slot 5" in page
    assert (tmp_path / "pic" / "livegraph.dot").read_text().startswith('digraph "livegraph"')


def test_sigint_while_starting_tears_down(tmp_path):
    """Ctrl-C before the view is up (the cards still booting) stops what `up` started too."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chassis", "up", str(BASIC), "--run-dir", str(run)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: (run / "pids.json").exists() and len(recorded(run)) >= 2,
            30,
            0.01,
            what="the backplane and a card started",
        )
        processes = recorded(run)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode in (0, 130), out
        assert "stopping" in out
        assert [(n, p) for n, p, start in processes if procs.alive(p, start)] == []
        assert not (run / "pids.json").exists()
    finally:
        stop(proc, run)
