"""ESP through one card, the NPU included (issue #7). Reports figures; asserts nothing.

    python tests/benchmarks/bench_dataplane.py [--rates 5000,10000,...] [--seconds 2] [--size 1400]

A chassis with one DPC (bench_ike.py's topology and credentials) serves a template whose
payload takes AES-GCM-128 ESP, sink `count`. One eNodeB (a cards.ike initiator in this
process) brings its IKE SA and child up; then, for each offered rate, this process seals
--seconds worth of inner UDP packets of --size bytes with the child's keys (before the clock
starts) and sends them as ESP-in-UDP at that rate. Delivered = packets the card decrypted (its
child counters); the figure is the best delivered rate with at most 1% loss. The CPU of each
chassis process per delivered packet is read before and after. The ratio to a bare AES-GCM-128 encrypt
loop of the same size, in this process and in the same run, is reported too.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ike as b  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from cards.esp import EspSa, build_udp  # noqa: E402
from cards.ike.config import ChildPolicy, ChildProposal  # noqa: E402
from cards.ike.const import Encr  # noqa: E402
from cards.ike.engine import Endpoint  # noqa: E402
from cards.ike.events import ChildEstablished, Send  # noqa: E402
from chassis import client  # noqa: E402
from chassis.randomness import SystemRandom  # noqa: E402

GCM128 = ChildProposal(Encr.AES_GCM_16, 128)


def configure(ch, p: dict, port: int) -> None:
    b.configure(ch, p, port)
    res = ch.exec(
        "configure", "context segw", "ipsec transform-set esp128", "encryption aes-gcm-128",
        "exit", "crypto template tmpl ikev2-dynamic", "ipsec sink count",
        "payload data match childsa match ipv4", "ipsec transform-set list esp128", "end",
    )  # fmt: skip
    bad = [f"{r.command}: {r.output}" for r in res if r.error]
    if bad:
        raise RuntimeError(f"configuration refused: {bad}")


def tunnel(p: dict, gw: tuple[str, int]):
    """One eNodeB's IKE SA and child; returns (socket, its EspSa)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    local = sock.getsockname()
    cfg = replace(b.enodeb_config(p), children=(ChildPolicy(proposals=(GCM128,)),))
    ep = Endpoint(cfg, rand=SystemRandom(), wall_clock=b.utcnow, local=local)
    queue, deadline = list(ep.initiate(gw, time.monotonic(), local=local)), time.monotonic() + 15
    while time.monotonic() < deadline:
        for o in queue:
            if isinstance(o, Send):
                sock.sendto(o.data, o.dst)
            elif isinstance(o, ChildEstablished):
                (sa,) = ep.sas.values()
                return sock, EspSa.from_child(sa.children[o.our_spi])
        queue = []
        if select.select([sock], [], [], 0.1)[0]:
            data, src = sock.recvfrom(65536)
            queue = ep.receive(data, src, local, time.monotonic())
        queue += ep.handle_timer(time.monotonic())
    raise SystemExit("no tunnel")


def delivered(ch) -> int:
    rows = ch.exec("show crypto ipsec security-associations")[0].data["sas"]
    return sum(r.get("packets_in", 0) for r in rows)


def bare_gcm(size: int, n: int = 20000) -> float:
    aead, nonce, data = AESGCM(os.urandom(16)), os.urandom(12), os.urandom(size)
    t = time.process_time()
    for _ in range(n):
        aead.encrypt(nonce, data, b"12345678")
    return n / (time.process_time() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=lambda v: [int(x) for x in v.split(",")],
                    default=[10000, 20000, 30000, 40000])  # fmt: skip
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=1400)
    args = ap.parse_args()
    p = b.make_pki()
    with tempfile.TemporaryDirectory() as tmp:
        topo = Path(tmp) / "dp.yaml"
        topo.write_text(b.TOPOLOGY)
        ch = client.up(topo, Path(tmp) / "run", timeout=60)
        try:
            port = b.free_udp_port()
            configure(ch, p, port)
            gw = ("127.0.0.1", port)
            time.sleep(1.0)
            sock, esp = tunnel(p, gw)
            procs = b.chassis_processes(ch)
            inner_src = "10.8.0.1"
            payload = bytes(args.size - 28)  # inner IPv4 + UDP headers: 28 bytes
            rates, cpus = [], []
            for offered in args.rates:
                n = int(offered * args.seconds)
                packets = [esp.seal(build_udp(inner_src, "10.99.0.1", 2152, 2152, payload),
                                    os.urandom) for _ in range(n)]  # fmt: skip
                base, cpu0 = delivered(ch), b.snapshot(procs)
                t0 = time.monotonic()
                for i, pkt in enumerate(packets):  # paced: 100 packets per slot
                    if i % 100 == 0:
                        delay = t0 + i / offered - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    sock.sendto(pkt, gw)
                last, still = base, time.monotonic()
                while time.monotonic() - still < 0.5:  # until the counters stop moving
                    now = delivered(ch)
                    if now != last:
                        last, still = now, time.monotonic()
                    time.sleep(0.05)
                got, wall = last - base, max(still - t0, args.seconds)
                cpu1 = b.snapshot(procs)
                rates.append((offered, got / wall, 1 - got / n))
                cpus.append({k: (cpu1[k] - cpu0[k]) / max(got, 1) * 1e6 for k in procs})
                print(f"offered {offered:,} pps: {got}/{n} delivered, {got / wall:,.0f} pps, "
                      f"loss {1 - got / n:.1%}")  # fmt: skip
            sock.close()
        finally:
            ch.down()
    bare = bare_gcm(args.size)
    clean = [(o, r) for o, r, loss in rates if loss <= 0.01]
    best = max((r for _, r in clean), default=0.0)
    per = {k: statistics.median(c[k] for c in cpus) for k in cpus[0]}
    breakdown = ", ".join(f"{k} {v:.1f} us" for k, v in per.items() if v == v and v > 0.05)
    print("\n| figure | target | measured |\n| --- | --- | --- |")
    print(f"| ESP through one card, NPU included (AES-GCM-128, {args.size}-byte packets) | "
          f">= 20,000 packets/s | {best:,.0f} packets/s with <= 1% loss (offered "
          f"{', '.join(f'{o:,}' for o, _, _ in rates)}); CPU per packet (median): {breakdown}; "
          f"bare AES-GCM-128 encrypt loop {bare:,.0f}/s, ratio {best / bare:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
