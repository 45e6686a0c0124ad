"""Card memory per live tunnel (issue #7: <= 8 KiB at 20,000 tunnels). Reports; asserts nothing.

    python tests/benchmarks/bench_memory.py [--tunnels 1000,5000,20000] [--no-trace]
        [--no-traffic] [--warmup 200]

A fresh interpreter that imports the card's modules (cards.gateway, cards.runner) builds a
card's Gateway the way a DPC does (Gateway.configure with a crypto template, the credentials
pushed by the supervisor and a wsg-service with an IP pool and `ipsec sink echo`), then
brings up tunnels (IKE SA + first CHILD_SA) one after the other with an in-memory eNodeB
initiator. The gateway's answers go through Gateway.receive as on a card, so its data plane
(Gateway.dp) builds each child's ESP state; Gateway.next_timer/handle_timer run every 64
tunnels (the runner's 100 ms tick at 640 tunnels/s of simulated time). Unless --no-traffic,
each eNodeB then sends one ESP packet through its child, which the card opens and echoes
(both directions of the ESP state used once).

Credentials: EC P-256 everywhere (an RSA-2048 signature costs ~0.3 ms on each side, which
would make 20,000 tunnels slow): root -> intermediate -> gateway (the gateway sends its
intermediate), and a certificate and key of its own for every eNodeB under the root (as the
lab fleet gives them), each eNodeB from an outer address of its own (10.x.y.z:4500). IKE SA
AES-CBC-256 / HMAC-SHA2-256-128 / PRF-SHA2-256 / ECP-256, ESP AES-GCM-256, one IPv4 inner
address per eNodeB from the pool (CP).

Only the gateway's memory is counted: the initiator keeps nothing once a tunnel is up (its
IKE SA and ESP SPI are forgotten, its per-eNodeB credentials dropped), which the report
checks. Two runs, each in its own interpreter:

- RSS: /proc/self/statm after gc.collect() at 21 points up to the largest count; bytes per
  tunnel at each requested count ((RSS - RSS after the warm-up) / tunnels) and the slope by
  least squares over all points. RSS counts what tracemalloc cannot see: OpenSSL's cipher
  contexts (an AESGCM object keeps an encryption and a decryption context; its RSS is
  measured at the end of the run), allocator slack.
- tracemalloc (started after the warm-up, 1 frame): at each requested count, the Python
  memory allocated since and still held, per tunnel, by file and by line (top lines); then
  RSS per tunnel split into Python allocations and the rest.

The whole run (20,000 tunnels twice) takes about 5 minutes on one core.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ike as b  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from cards.ike.config import (  # noqa: E402
    ChildPolicy,
    ChildProposal,
    Credentials,
    IkeConfig,
)
from cards.ike.const import Encr  # noqa: E402
from cards.ike.events import (  # noqa: E402
    AuthFailed,
    ChildEstablished,
    ChildRefused,
    Deleted,
    Established,
    InternalError,
    Rejected,
    Send,
)
from chassis.randomness import SystemRandom  # noqa: E402

ROOT = b.ROOT
GW = b.GW_MEM
TICK_EVERY = 64  # tunnels between two runner ticks (next_timer / handle_timer)
POOL = ("10.64.0.0", "255.192.0.0")  # 4M inner addresses


# ---------------------------------------------------------------------- PKI (EC P-256)
def make_pki() -> dict:
    key = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
    ca_key, int_key, gw_key = key(), key(), key()
    ca = b._cert("Lab Root", ca_key, "Lab Root", ca_key, ca=True)
    inter = b._cert("Lab Intermediate", int_key, "Lab Root", ca_key, ca=True)
    gw = b._cert("segw.example.net", gw_key, "Lab Intermediate", int_key, san="segw.example.net")
    return {"ca": ca, "ca_key": ca_key, "int": inter, "gw": gw, "gw_key": gw_key}


def enodeb_credentials(p: dict, i: int) -> Credentials:
    """eNodeB ``i``'s own key and certificate under the root."""
    k = ec.generate_private_key(ec.SECP256R1())
    name = f"enb{i:05d}.lab.example"
    return Credentials(b._cert(name, k, "Lab Root", p["ca_key"], san=name), k)


def enodeb_config(p: dict) -> IkeConfig:
    return IkeConfig(
        Credentials(p["gw"], p["gw_key"]),  # replaced per eNodeB
        (p["ca"],),
        proposals=(b.PROPOSAL,),
        children=(ChildPolicy(proposals=(ChildProposal(Encr.AES_GCM_16, 256),)),),
        request_addresses=(4,),
    )


def card_gateway(p: dict):
    """The Gateway a DPC builds (cards.gateway) for a wsg-service on GW with a pool."""
    from cards.credentials import Credentials as CardCredentials
    from cards.gateway import Gateway

    creds = CardCredentials()
    creds.pushed = {
        "certificate/segw": {"cert_pem": b.pem(p["gw"]).decode(),
                             "key_pem": b.pem(p["gw_key"]).decode(), "generation": 1},
        "ca-certificate/lab-root": {"cert_pem": b.pem(p["ca"]).decode(), "generation": 1},
        "ca-certificate/lab-int": {"cert_pem": b.pem(p["int"]).decode(), "generation": 1},
    }  # fmt: skip
    tree = {"context": {"segw": {
        "ikesa-transform-set": {"ts19": dict(b.TSET)},
        "ipsec-transform-set": {"esp": {"encryption": "aes-gcm-256"}},
        "ip-pool": {"enb": {"address": POOL[0], "mask": POOL[1]}},
        "crypto-template": {"tmpl": {
            "authentication": {"local": "certificate", "remote": "certificate"},
            "certificate": "segw", "ca-certificate-list": ["lab-root"],
            "ikesa-transform-set-list": ["ts19"], "ipsec-sink": "echo",
            "payload": {"all": {"family": "ipv4", "ipsec-transform-set-list": ["esp"]}}}},
        "wsg-service": {"svc": {"bind": {"address": GW[0], "port": GW[1], "template": "tmpl"},
                                "ip-address-pool": {"enb": "enb"}}},
    }}}  # fmt: skip
    gateway = Gateway(1, SystemRandom(), b.utcnow, os.urandom(32))
    gateway.configure(tree, creds)
    if GW not in gateway.endpoints:
        raise RuntimeError("the gateway did not bind the service")
    return gateway


# ---------------------------------------------------------------------- one tunnel
class Bringup:
    """Tunnels one at a time: an eNodeB Endpoint that forgets each SA once it is up."""

    def __init__(self, p: dict, gateway, traffic: bool) -> None:
        from cards.ike.engine import Endpoint

        self.p, self.gateway, self.traffic = p, gateway, traffic
        self.base = enodeb_config(p)
        self.enb = Endpoint(
            self.base, rand=SystemRandom(), wall_clock=b.utcnow, local=("0.0.0.0", 0)
        )
        self.count = self.up = self.children = self.delivered = self.echoed = 0
        self.failures: list[str] = []
        self.now = 0.0

    def tunnel(self) -> None:
        from cards.esp import EspSa, build_udp

        i, self.count = self.count, self.count + 1
        self.now += 1 / 640
        now, gw, enb = self.now, self.gateway, self.enb
        src = (str(ipaddress.IPv4Address(0x0A000000 + i + 1)), 4500)
        enb.config = replace(self.base, credentials=enodeb_credentials(self.p, i))
        queue = list(enb.initiate(GW, now, local=src))
        (sa,) = enb.sas.values()
        while queue:
            o = queue.pop(0)
            if isinstance(o, Send):
                if o.dst == GW:
                    queue += gw.receive(o.dst, o.src, o.data, now) or []
                else:
                    queue += enb.receive(o.data, o.src, o.dst, now)
            elif isinstance(o, Established) and not o.initiator:
                self.up += 1
            elif isinstance(o, ChildEstablished) and o.our_spi in gw.dp.tunnels:
                self.children += 1  # the card's (the eNodeB's SPI is not in its data plane)
            elif isinstance(o, AuthFailed | Deleted | Rejected | InternalError | ChildRefused):
                if len(self.failures) < 5:
                    self.failures.append(repr(o))
        children = list(sa.children.values())
        if self.traffic and children:
            child = children[0]
            esp = EspSa.from_child(child)
            inner = build_udp(child.tsi[0].start_addr, "10.200.0.9", 2152, 2152, bytes(64))
            for o in gw.receive(GW, src, esp.seal(inner, os.urandom), now) or []:
                if isinstance(o, Send) and esp.open(o.data) is not None:
                    self.echoed += 1
            self.delivered += gw.dp.tunnels[child.their_spi].delivered
        # The initiator keeps nothing of it: the SA, its ESP SPI, its credentials.
        enb.sas.pop(sa.spi_i, None)
        enb.esp_spis.difference_update(sa.children)
        enb.config = self.base
        if self.count % TICK_EVERY == 0:  # the card runner's tick
            due = gw.next_timer()
            if due is not None and due <= now:
                gw.handle_timer(now)
            if enb.get_timer() is None:
                enb.timers.clear()


# ---------------------------------------------------------------------- the child process
def child(mode: str, points: list[int], warmup: int, traffic: bool) -> None:
    """Runs in a fresh interpreter: prints one JSON line."""
    import cards.gateway  # noqa: F401  (the runner loads it once a service is bound)
    import cards.runner  # noqa: F401  (what a card process has loaded)

    p = make_pki()
    gateway = card_gateway(p)
    run = Bringup(p, gateway, traffic)
    t0 = time.monotonic()
    for _ in range(warmup):
        run.tunnel()
    n = max(points)
    samples = sorted(set(points) | {n * k // 20 for k in range(21)})
    out: dict = {"mode": mode, "warmup": warmup, "points": {}, "rss": []}
    if mode == "trace":
        tracemalloc.start(1)
    gc.collect()
    base_rss, base_snap = b.rss_bytes(), tracemalloc.take_snapshot() if mode == "trace" else None
    done = 0
    for target in samples:
        while done < target:
            run.tunnel()
            done += 1
        gc.collect()
        rss = b.rss_bytes() - base_rss
        out["rss"].append((done, rss))
        if done not in points:
            continue
        row: dict = {"rss_per_tunnel": rss / max(1, done)}
        if mode == "trace":
            row.update(traced(base_snap, done))
        out["points"][done] = row
    if mode == "rss":
        xs, ys = [x for x, _ in out["rss"]], [y for _, y in out["rss"]]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        out["slope"] = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
        out["aesgcm"] = aesgcm_rss()
    ep = gateway.endpoints[GW]
    out.update(
        seconds=time.monotonic() - t0,
        tunnels=run.count, up=run.up, children=run.children, delivered=run.delivered,
        echoed=run.echoed, failures=run.failures, card_sas=len(ep.sas),
        card_tunnels=len(gateway.dp.tunnels), card_timers=len(ep.timers),
        initiator={"sas": len(run.enb.sas), "esp_spis": len(run.enb.esp_spis),
                   "timers": len(run.enb.timers), "half_open": len(run.enb.half_open)},
    )  # fmt: skip
    print(json.dumps(out))


def aesgcm_rss(n: int = 4000) -> float:
    """RSS of one AESGCM object (AES-256 key given): OpenSSL's contexts, beyond Python's."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    keys = [os.urandom(32) for _ in range(n)]
    gc.collect()
    before = b.rss_bytes()
    kept = [AESGCM(k) for k in keys]
    gc.collect()
    return (b.rss_bytes() - before) / len(kept)


def _short(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(ROOT))
    except ValueError:
        parts = Path(filename).parts
        return "/".join(parts[-3:])


def traced(base, n: int, top: int = 20) -> dict:
    """Python memory allocated since ``base`` and still held: by file and by line."""
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    )
    files: dict[str, list[float]] = {}
    for st in snap.compare_to(base, "filename"):
        name = _short(st.traceback[0].filename)
        files[name] = [st.size_diff / n, st.count_diff / n]
    lines = []
    for st in snap.compare_to(base, "lineno")[:top]:
        frame = st.traceback[0]
        lines.append([f"{_short(frame.filename)}:{frame.lineno}", st.size_diff / n,
                      st.count_diff / n])  # fmt: skip
    total = sum(v[0] for v in files.values())
    cards = sum(v[0] for k, v in files.items() if k.startswith("cards/"))
    return {"traced_per_tunnel": total, "cards_per_tunnel": cards,
            "files": sorted(files.items(), key=lambda kv: -kv[1][0])[:12],
            "lines": lines}  # fmt: skip


def spawn(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--tunnels", args.tunnels,
           "--warmup", str(args.warmup)] + ([] if args.traffic else ["--no-traffic"])  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tunnels", default="1000,5000,20000", help="counts reported")
    ap.add_argument("--warmup", type=int, default=200, help="tunnels before the baseline")
    ap.add_argument("--no-trace", dest="trace", action="store_false")
    ap.add_argument("--no-traffic", dest="traffic", action="store_false")
    ap.add_argument("--child", choices=("rss", "trace"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    points = sorted({int(x) for x in args.tunnels.split(",")})
    if args.child:
        child(args.child, points, args.warmup, args.traffic)
        return
    rss = spawn("rss", args)
    report_run("RSS run", rss)
    print()
    print("| tunnels on the card | RSS growth per tunnel |")
    print("| --- | --- |")
    for n, row in rss["points"].items():
        print(f"| {n} | {row['rss_per_tunnel']:.0f} B ({row['rss_per_tunnel'] / 1024:.2f} KiB) |")
    print(f"| slope, 0..{max(points)} (least squares, 21 points) | {rss['slope']:.0f} B "
          f"({rss['slope'] / 1024:.2f} KiB) |")  # fmt: skip
    print(f"| (one AESGCM object, for comparison: an EspSa of AES-GCM holds two) | "
          f"{rss['aesgcm']:.0f} B |")  # fmt: skip
    if not args.trace:
        return
    tr = spawn("trace", args)
    print()
    report_run("tracemalloc run", tr)
    for n, row in tr["points"].items():
        print()
        print(f"tracemalloc at {n} tunnels: {row['traced_per_tunnel']:.0f} B per tunnel held "
              f"by Python allocations ({row['cards_per_tunnel']:.0f} B from cards/); RSS in "
              f"this run {row['rss_per_tunnel']:.0f} B (tracemalloc's own traces inflate it)")  # fmt: skip
        print("| file | B per tunnel | blocks per tunnel |")
        print("| --- | --- | --- |")
        for name, (size, count) in row["files"]:
            print(f"| {name} | {size:.0f} | {count:.2f} |")
        print("| line | B per tunnel | blocks per tunnel |")
        print("| --- | --- | --- |")
        for name, size, count in row["lines"]:
            print(f"| {name} | {size:.0f} | {count:.2f} |")
    print()
    print("| tunnels | RSS per tunnel (RSS run) | Python allocations (tracemalloc run) | the rest "
          "(OpenSSL cipher contexts, allocator) |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for n, row in tr["points"].items():
        total, py = rss["points"][n]["rss_per_tunnel"], row["traced_per_tunnel"]
        print(f"| {n} | {total:.0f} B | {py:.0f} B | {total - py:.0f} B |")


def report_run(name: str, r: dict) -> None:
    print(f"{name}: {r['tunnels']} tunnels after a warm-up of {r['warmup']} in "
          f"{r['seconds']:.0f} s; up {r['up']}, children tracked by the data plane "
          f"{r['children']}, ESP packets delivered {r['delivered']} echoed {r['echoed']}; "
          f"card: {r['card_sas']} IKE SAs, {r['card_tunnels']} ESP tunnels, "
          f"{r['card_timers']} timer entries; initiator left holding {r['initiator']}")  # fmt: skip
    if r["failures"]:
        print("failures:", r["failures"])


if __name__ == "__main__":
    main()
