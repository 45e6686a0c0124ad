"""A 1,000,000-entry CRL from the MIO to four DPCs on a live chassis (issue #8). Reports
figures; asserts nothing.

    python tests/benchmarks/bench_crl_fanout.py [--entries 1000000] [--runs 3] [--cache DIR]

The CRL of bench_crl.py (cached, RSA-2048 CA) is put on the MIO's /flash; `ca-crl name big
der url /flash/big.crl` is configured and timed until:
1. the MIO holds it (`show ca-crl`: fetched, verified, parsed and indexed in the worker);
2. every one of the four DPCs acked the configuration update that carries the index.
Each run configures it again under a new name (a fresh fetch and fan-out). Card memory is
the RSS of each DPC process (/proc/PID/status) before the first CRL and after the last,
divided by the CRLs they hold; the MIO's RSS the same way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_crl

from bench_crl import prepare  # noqa: E402

from chassis import client  # noqa: E402

TOPOLOGY = """\
name: crl-fanout
platform: asr5500
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
  3: {type: dpc, role: active}
  4: {type: dpc, role: active}
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pids(ch) -> dict[int, int]:
    return {s["slot"]: s["pid"] for s in ch.status()["slots"] if s.get("pid")}


def run_once(ch, name: str) -> tuple[float, float]:
    """Seconds to the MIO holding the CRL, and to every DPC holding it."""
    start = time.perf_counter()
    res = ch.exec("configure", f"ca-crl name {name} der url /flash/big.crl", "end")
    assert not any(r.error for r in res), [r.output for r in res]
    mio = None
    while True:
        rows = ch.exec(f"show ca-crl name {name}")[0].data["items"]
        row = rows[0] if rows else {}
        if mio is None and row.get("last_result") == "ok":
            mio = time.perf_counter() - start
        if row.get("last_result") not in (None, "ok"):
            raise SystemExit(f"CRL refused: {row['last_result']}")
        cards = row.get("cards") or {}
        if len(cards) == 4 and set(cards.values()) == {"v1"}:
            return mio or time.perf_counter() - start, time.perf_counter() - start
        if time.perf_counter() - start > 120:
            raise SystemExit(f"no fan-out after 120 s: {row}")
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", default="/tmp/segw-bench-crl")
    args = ap.parse_args()
    crl, _tiny, ca_pem = prepare(Path(args.cache), args.entries)
    with tempfile.TemporaryDirectory() as tmp:
        topo = Path(tmp) / "t.yaml"
        topo.write_text(TOPOLOGY)
        ch = client.up(topo, Path(tmp) / "run", timeout=60)
        try:
            (ch.run.flash / "big.crl").write_bytes(crl.read_bytes())
            (ch.run.flash / "ca.pem").write_bytes(ca_pem.read_bytes())
            res = ch.exec("configure", "ca-certificate name bench-ca pem url /flash/ca.pem", "end")
            assert not any(r.error for r in res), [r.output for r in res]
            time.sleep(1)
            before = {slot: rss(pid) for slot, pid in pids(ch).items()}
            to_mio, to_cards = [], []
            for n in range(args.runs):
                a, b = run_once(ch, f"big-{n}")
                to_mio.append(a)
                to_cards.append(b)
                print(f"  run {n + 1}: MIO {a:.2f} s, all four DPCs {b:.2f} s", file=sys.stderr)
            time.sleep(1)
            after = {slot: rss(pid) for slot, pid in pids(ch).items()}
            cards = [s for s in (1, 2, 3, 4) if s in after]
            failed = [c for c in ch.exec("show card table")[0].data["cards"]
                      if c["type"] == "dpc" and c["state"] != "active"]  # fmt: skip
        finally:
            ch.down()
    size = crl.stat().st_size
    per_card = [(after[s] - before[s]) / args.runs / 2**20 for s in cards]
    print(f"1M-entry CRL fan-out, {size / 1e6:.1f} MB DER, medians of {args.runs} runs")
    print(
        f"  configure -> MIO holds it (fetch, verify, parse, index) {statistics.median(to_mio):6.2f} s"
    )
    print(
        f"  configure -> every DPC acked it (4 cards)              {statistics.median(to_cards):6.2f} s"
    )
    print(f"  fan-out alone (MIO -> 4 DPCs)                          "
          f"{statistics.median(b - a for a, b in zip(to_mio, to_cards, strict=True)):6.2f} s")  # fmt: skip
    print(f"  DPC RSS per CRL held: {', '.join(f'{m:.1f}' for m in per_card)} MiB (target <= 32)")
    print(f"  MIO RSS per CRL held: {(after[5] - before[5]) / args.runs / 2**20:.1f} MiB")
    print(f"  cards not active afterwards: {failed or 'none'}")


if __name__ == "__main__":
    main()
