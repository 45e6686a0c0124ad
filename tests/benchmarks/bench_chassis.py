"""Chassis foundation benchmarks (issue #2). Reports figures; asserts nothing.

    python tests/benchmarks/bench_chassis.py [--runs 5] [--pings 2000]

1. `chassis up` to all cards ready, ASR 5500 with 2 MIO + 8 DPC (median of --runs),
   and the per-process import floor (`python -X importtime`).
2. Hang detection: SIGSTOP of a DPC -> the supervisor marks it failed.
3. Crash detection: kill -9 of a DPC -> the supervisor marks it failed.
   Both from the kill to the supervisor's own state-change timestamp (CLOCK_MONOTONIC
   is system-wide, so the two processes' readings compare).
4. Request/reply with the real supervisor (asyncio + CURVE + msgpack over ipc) against
   a blocking pyzmq DEALER/ROUTER ping-pong in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from chassis import client
from chassis.ipc import keys as keyring
from chassis.ipc.messages import Request
from chassis.ipc.rpc import Pending
from chassis.ipc.sockets import Node

TOPOLOGY = """\
name: bench
platform: asr5500
cards:
  5: {type: mio, role: active}
  6: {type: mio, role: standby}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
  3: {type: dpc, role: active}
  4: {type: dpc, role: active}
  7: {type: dpc, role: active}
  8: {type: dpc, role: active}
  9: {type: dpc, role: active}
  10: {type: dpc, role: standby}
"""
DPCS = (1, 2, 3, 4, 7, 8, 9)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def import_floor() -> dict:
    out = {}
    for module in ("cards.runner", "supervisor.runner"):
        res = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
        )
        total = 0
        for line in res.stderr.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s?(\S.*)$", line)
            if m and not m.group(2).startswith(" "):
                total += int(m.group(1))  # top-level imports only (cumulative)
        walls = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
            walls.append(time.perf_counter() - t0)
        out[module] = {
            "importtime_ms": total / 1000,
            "process_wall_ms": statistics.median(walls) * 1000,
        }
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - t0)
    out["python -c pass"] = {"process_wall_ms": statistics.median(walls) * 1000}
    return out


def bench_up(topo: Path, base: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        run_dir = base / f"up{i}"
        t0 = time.monotonic()
        ch = client.up(topo, run_dir, wait="cards", timeout=60)
        times.append(time.monotonic() - t0)
        ch.down()
    return times


def card_row(ch, slot):
    rows = ch.exec("show card table")[0].data["cards"]
    return next(r for r in rows if r["slot"] == slot)


def detection(ch, slot: int, sig: int) -> float:
    pid = json.loads(ch.run.pids_path.read_text())[str(slot)]["pid"]
    t0 = time.monotonic()
    os.kill(pid, sig)
    deadline = t0 + 5
    while time.monotonic() < deadline:
        row = card_row(ch, slot)
        if row["state"] == "failed":
            break
        time.sleep(0.01)
    else:
        raise RuntimeError(f"slot {slot} not failed after {sig}")
    if sig == signal.SIGSTOP:
        os.kill(pid, signal.SIGCONT)
    return row["state_since"] - t0


def reboot_all(ch, slots):
    ch.exec(*[f"card reboot {s} -noconfirm" for s in slots])
    ch.wait("cards", 30)


async def ping_async(ch, n: int) -> list[float]:
    run = ch.run
    node = Node(run.keys, "bench", key_name="cli")
    dealer = node.dealer(ch.manifest["endpoints"]["cli"], keyring.public_key(run.keys, "mgmt"))
    pending = Pending()
    dealer.listen(pending.resolve)
    for _ in range(50):  # warm-up (CURVE handshake, allocations)
        await pending.call(dealer, Request("ping", {}), timeout=5)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await pending.call(dealer, Request("ping", {"n": 1}), timeout=5)
        out.append(time.perf_counter() - t0)
    node.close()
    return out


ECHO = """
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.bind(sys.argv[1])
print("ready", flush=True)
while True:
    s.send_multipart(s.recv_multipart())
"""


def ping_blocking(endpoint: str, n: int) -> list[float]:
    server = subprocess.Popen(
        [sys.executable, "-c", ECHO, endpoint], stdout=subprocess.PIPE, text=True
    )
    server.stdout.readline()
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(endpoint)
    for _ in range(50):
        s.send(b"ping")
        s.recv()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.send(b"ping")
        s.recv()
        out.append(time.perf_counter() - t0)
    ctx.destroy(linger=0)
    server.kill()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pings", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segw-bench-") as tmp:
        base = Path(tmp)
        topo = base / "bench.yaml"
        topo.write_text(TOPOLOGY)
        floor = import_floor()
        ups = bench_up(topo, base, args.runs)
        ch = client.up(topo, base / "main", wait="cards", timeout=60)
        try:
            hangs = [detection(ch, s, signal.SIGSTOP) for s in DPCS[: args.runs]]
            reboot_all(ch, DPCS[: args.runs])
            crashes = [detection(ch, s, signal.SIGKILL) for s in DPCS[: args.runs]]
            reboot_all(ch, DPCS[: args.runs])
            rpc = asyncio.run(ping_async(ch, args.pings))
        finally:
            ch.down()
        blocking = ping_blocking(f"ipc://{base}/echo", args.pings)
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    us = lambda v: f"{v * 1e6:.0f} us"  # noqa: E731
    print(f"cpu: {os.cpu_count()} cores, python {sys.version.split()[0]}\n")
    print("| figure | target | measured |")
    print("| --- | --- | --- |")
    print(
        f"| `chassis up` to all cards ready, 2 MIO + 8 DPC ({args.runs} runs) | median <= 2 s | "
        f"median {statistics.median(ups):.2f} s (min {min(ups):.2f}, max {max(ups):.2f}) |"
    )
    for module, f in floor.items():
        extra = f", -X importtime {f['importtime_ms']:.0f} ms" if "importtime_ms" in f else ""
        print(
            f"| import floor `{module}` | report | process {f['process_wall_ms']:.0f} ms{extra} |"
        )
    print(
        f"| Hang detection (SIGSTOP, 100 ms x 3) | <= 300 ms | median {ms(statistics.median(hangs))}, max {ms(max(hangs))} |"
    )
    print(
        f"| Crash detection (kill -9) | <= 50 ms | median {ms(statistics.median(crashes))}, max {ms(max(crashes))} |"
    )
    ratio = statistics.median(rpc) / statistics.median(blocking)
    print(
        f"| Supervisor request/reply (asyncio + CURVE + msgpack, ipc) vs blocking pyzmq ping-pong | p50 <= 3x | "
        f"p50 {us(statistics.median(rpc))}, p99 {us(pct(rpc, 0.99))}; blocking p50 {us(statistics.median(blocking))}, "
        f"p99 {us(pct(blocking, 0.99))}; ratio {ratio:.2f}x |"
    )


if __name__ == "__main__":
    main()
