"""Credential fan-out benchmarks (issue #3). Reports figures; asserts nothing.

    python tests/benchmarks/bench_fanout.py [--updates 40] [--certs 100]

1. A certificate update published -> the last of 8 packet cards has acked it, from the
   supervisor's own timestamps (after validation and fsync, which are excluded), and
   the same with 1 card for the 8-card / 1-card ratio.
2. A DPC restarted with --certs certificates and keys in the store: registration ->
   ready (the resync) and process start -> ready, from the supervisor's timestamps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for pki_material

from pki_material import lab  # noqa: E402

from chassis import client  # noqa: E402


def topology(dpcs: int) -> str:
    slots = [1, 2, 3, 4, 7, 8, 9, 10][:dpcs]
    cards = "\n".join(f"  {s}: {{type: dpc, role: active}}" for s in slots)
    return (
        f"name: fan{dpcs}\nplatform: asr5500\ncards:\n  5: {{type: mio, role: active}}\n{cards}\n"
    )


def start(base: Path, dpcs: int):
    topo = base / f"fan{dpcs}.yaml"
    topo.write_text(topology(dpcs))
    ch = client.up(topo, base / f"run{dpcs}", timeout=60)
    for name, data in lab().items():
        (ch.run.flash / name).write_bytes(data)
    return ch


def propagation(base: Path, dpcs: int, updates: int) -> list[float]:
    ch = start(base, dpcs)
    try:
        ch.exec("configure", "ca-certificate name root pem url /flash/ca.crt")
        for i in range(updates):
            v = 1 + i % 2
            ch.exec(
                "configure",
                f"certificate name segw pem url /flash/gw{v}.crt private-key pem url /flash/gw{v}.key",
            )
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                data = ch.exec("show certificate propagation")[0].data
                if len(data["samples_ms"]) >= i + 2:  # the CA's update, then one per round
                    break
                time.sleep(0.005)
        return ch.exec("show certificate propagation")[0].data["samples_ms"][1:]
    finally:
        ch.down()


def restart(base: Path, certs: int, rounds: int = 5) -> tuple[list[float], list[float]]:
    ch = start(base, 2)
    try:
        ch.exec("configure", "ca-certificate name root pem url /flash/ca.crt")
        batch = ["configure"]
        for i in range(certs):
            v = 1 + i % 2
            batch.append(
                f"certificate name c{i:03d} pem url /flash/gw{v}.crt private-key pem url /flash/gw{v}.key"
            )
        ch.exec(*batch, timeout=120)
        resync, boot = [], []
        for _ in range(rounds):
            ch.exec("card reboot 1 -noconfirm")
            ch.wait("cards", 30)
            time.sleep(0.05)
            row = next(r for r in ch.exec("show card table")[0].data["cards"] if r["slot"] == 1)
            resync.append(row["resync_ms"])
            boot.append(row["boot_ms"])
        return resync, boot
    finally:
        ch.down()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--certs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segw-fan-") as tmp:
        base = Path(tmp)
        eight = propagation(base, 8, args.updates)
        one = propagation(base, 1, args.updates)
        resync, boot = restart(base, args.certs)
    med8, med1 = statistics.median(eight), statistics.median(one)
    p99 = sorted(eight)[min(len(eight) - 1, int(0.99 * len(eight)))]
    print("| figure | target | measured |")
    print("| --- | --- | --- |")
    print(
        f"| Certificate update published -> last of 8 DPCs acked ({len(eight)} updates) | p50 <= 5 ms | "
        f"p50 {med8:.2f} ms, p99 {p99:.2f} ms; 1 DPC p50 {med1:.2f} ms; 8/1 ratio {med8 / med1:.2f} |"
    )
    print(
        f"| DPC restart with {args.certs} certificates and keys, resynced ({len(resync)} restarts) | <= 200 ms | "
        f"registration -> ready median {statistics.median(resync):.1f} ms; "
        f"process start -> ready median {statistics.median(boot):.1f} ms |"
    )


if __name__ == "__main__":
    main()
