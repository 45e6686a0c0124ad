"""Packet-card failover at scale (issue #10's benchmark: the dpc-failover drill with 10,000
tunnels). Reports figures; asserts nothing.

    python tests/benchmarks/bench_failover.py [--tunnels 10000] [--sample 200] [--inflight 64]
        [--sweep-wave 500] [--busy-at-kill 0] [--liveness 30] [--no-refill] [--seed 1]
        [--run-dir DIR]

An ASR 5500 with MIO 5, DPC 1 active and DPC 2 its standby (heartbeats every 100 ms, a card
failed after --liveness missed: 30 by default, as bench_ike.py, because a card's loop stalls
while it works through a wave of IKE_AUTHs, and on a small shared host a card failed by the
supervisor mid-setup ends the run; the crash itself is seen by the backplane's child watch
whatever the liveness. With --liveness 3, the chassis's default, the standby's loop stalls
while it adopts 10,000 SAs at the takeover: the table then shows whether the supervisor
failed the new active card). The gateway's certificate and the eNodeB's are EC P-256 from
one root (ECDSA: cheap to bring 10,000 tunnels up); IKE SA AES-CBC-256, HMAC-SHA2-256-128,
PRF-SHA2-256, group 19; one CHILD_SA (AES-GCM-256) per tunnel. The eNodeBs are one initiator
in this process (a cards.ike Endpoint holding every IKE SA, one UDP socket), as in
bench_ike.py: the lab fleet gives no per-tunnel liveness check to sample.

1. Setup: --tunnels IKE SAs through DPC 1, --inflight at a time (waves). DPC 1 checkpoints
   each SA to DPC 2 through the MIO as it comes up: the time from the last tunnel up to DPC 2
   holding all of them (`held_sas` in the card table) is the checkpoint lag.
2. Memory: each DPC's RSS (/proc/PID/statm) before the tunnels (the service configured) and
   once DPC 2 holds them all: DPC 2's growth / SAs held is the standby's memory per
   checkpointed tunnel (the checkpoint and the SA restored from it: the standby holds them
   restored and ready), DPC 1's growth / SAs its memory per live tunnel.
3. `kill -9` of DPC 1 (Chassis.fault: the backplane sends SIGKILL and says when):
   - detection through the backplane's child watch: its slot's failed_at (pidfd readable,
     CLOCK_MONOTONIC) minus the kill; detection by the supervisor: the card table's failed_at
     (the MIO's verdict, same clock) minus the kill;
   - takeover, from internal timestamps: the MIO's record (supervisor/recovery.py logs
     `card 2 took over N IKE SAs (C children) in X ms`: from its order to DPC 2 until DPC 2
     answered with every SA adopted and active, the roles swapped and the NPU confirmed it
     steers DPC 1's SPI slot bits to DPC 2), and its log time minus the detection; DPC 2's
     own log line (`took over N IKE SAs`) too, and when DPC 2 had handed every RFC 6311
     sync to the NPU (the MIO's `sent N Message ID syncs` line). Then the remap is seen live
     from outside: the
     first and last RFC 6311 Message ID syncs DPC 2 sends (one per SA, through the NPU) as
     this process receives them, and DPC 2's live IKE SAs in the card table.
4. Tunnels lost: an INFORMATIONAL liveness check on --sample SAs drawn at random (--seed), all
   at once, retransmitted by the engine as usual: answered = alive. Then a full sweep: every
   SA, --sweep-wave at a time (reported apart: it is 10,000 exchanges through one card).
5. --busy-at-kill N (default 0): N other SAs send a liveness check just before the kill, so
   that their request is in flight when DPC 1 dies (an eNodeB's DPD or rekey at the wrong
   moment); how many of them come through the failover is shown apart.
6. Refill (skip with --no-refill): `card reboot 1`: DPC 1 comes back as the standby and DPC 2
   sends it every checkpoint at once (a full batch): time until DPC 1 holds them all, DPC 1's
   RSS then, and whether every card stayed in service meanwhile.

Timing targets (issue #10): detection <= 300 ms from the kill (<= 50 ms through the child
watch), takeover <= 1 s after detection, 0 tunnels lost in the sample.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import select
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ike as b  # noqa: E402

from cards.ike.engine import Endpoint  # noqa: E402
from cards.ike.events import (  # noqa: E402
    Alive,
    AuthFailed,
    ChildEstablished,
    Deleted,
    Established,
    InternalError,
    MidSynced,
    Rejected,
    Send,
)
from chassis import client  # noqa: E402
from chassis.randomness import SystemRandom  # noqa: E402

COMMAND = "python tests/benchmarks/bench_failover.py"
TOPOLOGY = """\
name: failoverbench
platform: asr5500
timers: {{heartbeat-interval-ms: 100, heartbeat-liveness: {liveness}}}
cards:
  5: {{type: mio, role: active}}
  1: {{type: dpc, role: active}}
  2: {{type: dpc, role: standby}}
"""
TOOK_OVER = re.compile(r"^(\S+ \S+) .*slot 1: failure: card 2 took over (\d+) IKE SAs "
                       r"\((\d+) children\) in ([\d.]+) ms")  # fmt: skip
SYNCED = re.compile(r"^(\S+ \S+) .*slot 1: card 2 sent (\d+) Message ID syncs, ([\d.]+) ms")
CARD_TOOK = re.compile(r"^(\S+ \S+) .*took over (\d+) IKE SAs of card 1$")  # cards/runner.py


def log_wall(stamp: str) -> float:
    """A log line's asctime (local time, milliseconds) as a Unix time."""
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def make_pki() -> dict:
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "gw", "enb")}
    ca = b._cert("Lab Root", keys["ca"], "Lab Root", keys["ca"], ca=True)
    gw = b._cert("segw.example.net", keys["gw"], "Lab Root", keys["ca"], san="segw.example.net")
    enb = b._cert("enb1.example.net", keys["enb"], "Lab Root", keys["ca"], san="enb1.example.net")
    return {"ca": ca, "gw": gw, "gw_key": keys["gw"], "enb": enb, "enb_key": keys["enb"]}


def card_rows(ch) -> dict[int, dict]:
    return {r["slot"]: r for r in ch.exec("show card table")[0].data["cards"]}


def counter(row: dict, name: str) -> int:
    return int((row.get("counters") or {}).get(name, 0))


def wait_for(what: str, predicate, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


class Enodebs:
    """Every eNodeB IKE SA in one initiator Endpoint on one UDP socket (the SAs are kept:
    their liveness is checked after the failover)."""

    def __init__(self, p: dict, gw: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.local, self.gw = self.sock.getsockname(), gw
        self.ep = Endpoint(b.enodeb_config(p), rand=SystemRandom(), wall_clock=b.utcnow,
                           local=self.local)  # fmt: skip
        self.up: list[bytes] = []  # our SPI of each established IKE SA
        self.alive: dict[bytes, int] = {}  # liveness answers per SA
        self.synced: list[float] = []  # when each RFC 6311 sync was answered (monotonic)
        self.deleted: dict[bytes, str] = {}
        self.failures: list[str] = []
        self.children = 0
        self.next_timer = 0.0

    def close(self) -> None:
        self.sock.close()

    def handle(self, outs) -> None:
        for o in outs:
            if isinstance(o, Send):
                try:
                    self.sock.sendto(o.data, o.dst)
                except BlockingIOError:  # the engine retransmits
                    pass
            elif isinstance(o, Established):
                self.up.append(o.spi_i)
            elif isinstance(o, ChildEstablished):
                self.children += 1
            elif isinstance(o, Alive):
                self.alive[o.spi_i] = self.alive.get(o.spi_i, 0) + 1
            elif isinstance(o, MidSynced):
                self.synced.append(time.monotonic())
            elif isinstance(o, Deleted):
                self.deleted[o.spi_i] = o.reason
            elif isinstance(o, AuthFailed | Rejected | InternalError):
                if len(self.failures) < 5:
                    self.failures.append(repr(o))

    def pump(self, wait: float = 0.02) -> None:
        """What the socket holds (waiting up to ``wait`` for the first), then due timers."""
        readable, _, _ = select.select([self.sock], [], [], wait)
        while readable:
            try:
                data, src = self.sock.recvfrom(65536)
            except OSError:
                break
            self.handle(self.ep.receive(data, src, self.local, time.monotonic()))
        now = time.monotonic()
        if now >= self.next_timer:
            self.next_timer = now + 0.05
            self.handle(self.ep.handle_timer(now))

    def bring_up(self, n: int, inflight: int, timeout: float) -> float:
        t0 = time.monotonic()
        deadline = t0 + timeout
        started = 0
        while len(self.up) < n and time.monotonic() < deadline:
            done = len(self.up) + len(self.deleted) + len(self.failures)
            if started <= done and started < n:  # the next wave
                for _ in range(min(inflight, n - started)):
                    self.handle(self.ep.initiate(self.gw, time.monotonic(), local=self.local))
                    started += 1
            self.pump()
        return time.monotonic() - t0

    def check(self, spis: list[bytes], timeout: float, wave: int | None = None) -> dict:
        """An INFORMATIONAL liveness check on each SA (``wave`` at a time): answered or not."""
        t0 = time.monotonic()
        want = {s: self.alive.get(s, 0) for s in spis}
        pending = list(spis)
        asked: list[bytes] = []
        deadline = t0 + timeout

        def answered(s):
            return self.alive.get(s, 0) > want[s]

        while time.monotonic() < deadline:
            waiting = sum(1 for s in asked if not answered(s) and s not in self.deleted)
            room = (wave or len(spis)) - waiting
            if pending and room > 0:
                batch, pending = pending[:room], pending[room:]
                for s in batch:
                    self.handle(self.ep.check_liveness(s, time.monotonic()))
                    asked.append(s)
                waiting += len(batch)
            if not pending and not waiting:
                break
            self.pump()
        ok = sum(1 for s in spis if answered(s))
        gone = sorted({self.deleted[s] for s in spis if s in self.deleted})
        return {"checked": len(spis), "alive": ok, "lost": len(spis) - ok,
                "seconds": time.monotonic() - t0, "reasons": gone[:3]}  # fmt: skip


def run(args, base: Path) -> dict:
    topo = base / "failoverbench.yaml"
    topo.write_text(TOPOLOGY.format(liveness=args.liveness))
    p = make_pki()
    ch = client.up(topo, base / "run", timeout=60)
    enbs = None
    out: dict = {"notes": []}
    try:
        port = b.free_udp_port()
        b.configure(ch, p, port)
        wait_for("DPC 2 standby with the template ready", lambda: (
            (r := card_rows(ch)[2])["state"] == "standby"
            and (r.get("templates") or {}) and all(v == "ready" for v in r["templates"].values())
        ), 20)  # fmt: skip
        wait_for("the NPU", lambda: ch.status().get("npu") is not None, 10)
        pids = ch.run.pids()
        dpc1, dpc2 = pids["1"]["pid"], pids["2"]["pid"]
        time.sleep(0.5)
        rss0 = {1: b.rss_bytes(dpc1), 2: b.rss_bytes(dpc2)}

        # 1. setup, and the checkpoint lag
        enbs = Enodebs(p, ("127.0.0.1", port))
        out["setup_s"] = enbs.bring_up(args.tunnels, args.inflight, args.tunnels * 0.05 + 60)
        last_up = time.monotonic()
        out["up"], out["children"] = len(enbs.up), enbs.children
        out["setup_failures"] = enbs.failures + sorted(set(enbs.deleted.values()))[:3]
        n = len(enbs.up)
        if n < args.tunnels:
            out["notes"].append(f"only {n} of {args.tunnels} tunnels came up")
        try:
            wait_for("DPC 2 holding every SA", lambda: counter(card_rows(ch)[2], "held_sas")
                     >= n, 60, every=0.05)  # fmt: skip
            out["ckpt_lag_s"] = time.monotonic() - last_up
        except TimeoutError:
            out["ckpt_lag_s"] = None
        rows = card_rows(ch)
        out["held"] = counter(rows[2], "held_sas")
        out["states_before"] = {s: r["state"] for s, r in rows.items()}
        if (rows[1]["state"], rows[2]["state"]) != ("active", "standby"):
            raise RuntimeError(f"a card left service during the setup: {out['states_before']} "
                               f"({rows[1].get('failure') or rows[2].get('failure')}); a card's "
                               "loop stalls while it works through a wave: try a larger "
                               "--liveness or a smaller --inflight")  # fmt: skip
        out["ckpt"] = {k: v for k, v in (rows[1].get("counters") or {}).items()
                       if k.startswith("ckpt")}  # fmt: skip
        time.sleep(0.5)
        # 2. memory
        rss1 = {1: b.rss_bytes(dpc1), 2: b.rss_bytes(dpc2)}
        out["rss"] = {"before": rss0, "after": rss1}
        out["standby_per_sa"] = (rss1[2] - rss0[2]) / max(1, out["held"])
        out["active_per_sa"] = (rss1[1] - rss0[1]) / max(1, n)

        # 5. (before the kill) requests in flight when DPC 1 dies
        rng = random.Random(args.seed)
        order = list(enbs.up)
        rng.shuffle(order)
        busy, rest = order[: args.busy_at_kill], order[args.busy_at_kill :]
        sample = rest[: args.sample]
        busy_want = {s: enbs.alive.get(s, 0) for s in busy}
        if busy:  # the NPU drops what reaches DPC 1 from now on: these stay unanswered
            ch.fault({"fault": "udp", "target": "slot-1", "mode": "drop"})
            for s in busy:
                enbs.handle(enbs.ep.check_liveness(s, time.monotonic()))
            time.sleep(0.05)

        # 3. kill -9, detection and takeover
        mio_log, dpc2_log = ch.run.logs / "mio-5.log", ch.run.logs / "dpc-2.log"
        mio_at, dpc2_at = mio_log.stat().st_size, dpc2_log.stat().st_size
        killed = ch.fault({"fault": "kill", "target": "slot-1"})
        kill_mono, kill_wall = killed["at"]["monotonic"], killed["at"]["wall"]
        if busy:
            ch.fault({"fault": "udp", "target": "slot-1", "mode": "heal"})
        synced_until = time.monotonic() + 30
        while len(enbs.synced) < n and time.monotonic() < synced_until:
            enbs.pump(0.01)
        out["synced"] = len(enbs.synced)
        if enbs.synced:
            out["first_sync_ms"] = (enbs.synced[0] - kill_mono) * 1000
            out["last_sync_ms"] = (enbs.synced[-1] - kill_mono) * 1000
        slot1 = next(s for s in ch.status()["slots"] if s["slot"] == 1)
        out["backplane_ms"] = ((slot1["failed_at"] - kill_mono) * 1000
                               if slot1.get("failed_at") else None)  # fmt: skip
        rows = card_rows(ch)
        out["detection_ms"] = ((rows[1]["failed_at"] - kill_mono) * 1000
                               if rows[1].get("failed_at") else None)  # fmt: skip
        out["states_after"] = {s: r["state"] for s, r in rows.items()}
        try:  # DPC 2 counts its SAs once per heartbeat interval (cards/runner.py _tick)
            wait_for("DPC 2 counting every SA", lambda: counter(card_rows(ch)[2], "ike_sas")
                     >= n, 5, every=0.02)  # fmt: skip
        except TimeoutError:
            pass
        out["dpc2_sas"] = counter(card_rows(ch)[2], "ike_sas")
        out["dpc2_counted_ms"] = (time.monotonic() - kill_mono) * 1000
        with open(mio_log, "rb") as f:
            f.seek(mio_at)
            text = f.read().decode(errors="replace")
        m = next((m for line in text.splitlines() if (m := TOOK_OVER.match(line))), None)
        if m:
            done_ms = (log_wall(m.group(1)) - kill_wall) * 1000
            out["takeover"] = {"sas": int(m.group(2)), "children": int(m.group(3)),
                               "took_ms": float(m.group(4)), "done_ms": done_ms}  # fmt: skip
        m = next((m for line in text.splitlines() if (m := SYNCED.match(line))), None)
        if m:
            out["syncs_handed_ms"] = (log_wall(m.group(1)) - kill_wall) * 1000
        with open(dpc2_log, "rb") as f:
            f.seek(dpc2_at)
            text = f.read().decode(errors="replace")
        m = next((m for line in text.splitlines() if (m := CARD_TOOK.match(line))), None)
        if m:
            out["card_done_ms"] = (log_wall(m.group(1)) - kill_wall) * 1000

        # 4. tunnels lost: a random sample, then everything
        out["sample"] = enbs.check(sample, timeout=20)
        rows = card_rows(ch)  # the new active still in service? (its heartbeats while it adopts)
        if rows[2]["state"] != "active":
            out["dpc2_out"] = {"state": rows[2]["state"], "why": rows[2].get("failure"),
                               "after_kill_ms": (rows[2]["failed_at"] - kill_mono) * 1000
                               if rows[2].get("failed_at") else None}  # fmt: skip
        everyone = [s for s in rest if s not in enbs.deleted]
        if out["sample"]["alive"]:
            out["sweep"] = enbs.check(everyone, timeout=n * 0.02 + 60, wave=args.sweep_wave)
        else:  # every sampled tunnel went: a sweep would only wait for its timeouts
            out["sweep"] = {"checked": 0, "alive": 0, "lost": len(everyone), "seconds": 0.0,
                            "reasons": ["not run: the whole sample was lost"]}  # fmt: skip
        out["sweep"]["gone_before"] = len(rest) - len(everyone)

        def settled(s):  # answered, or given up (5 retransmissions, then 16 s more)
            return enbs.alive.get(s, 0) > busy_want[s] or s in enbs.deleted

        until = kill_mono + 45  # the engine gives up 31.5 s after its first send
        while busy and not all(settled(s) for s in busy) and time.monotonic() < until:
            enbs.pump(0.05)
        out["busy"] = {
            "checked": len(busy),
            "alive": sum(1 for s in busy if enbs.alive.get(s, 0) > busy_want[s]),
            "reasons": sorted({enbs.deleted[s] for s in busy if s in enbs.deleted}),
        }

        # 6. refill: DPC 1 back as the standby, sent every checkpoint at once
        if args.refill and card_rows(ch)[2]["state"] == "active":
            t0 = time.monotonic()
            res = ch.exec("card reboot 1 -noconfirm")[0]
            refill: dict = {"command": res.output.strip()}
            seen_states: dict[int, set] = {}
            held = 0
            deadline = t0 + 120
            while time.monotonic() < deadline:
                enbs.pump(0.05)  # answer whatever the gateway asks meanwhile
                rows = card_rows(ch)
                for s, r in rows.items():
                    seen_states.setdefault(s, set()).add(r["state"])
                held = counter(rows[1], "held_sas") if rows[1]["state"] == "standby" else 0
                if "standby_s" not in refill and rows[1]["state"] == "standby":
                    refill["standby_s"] = time.monotonic() - t0
                if held >= n - out["sweep"]["lost"]:
                    refill["held_s"] = time.monotonic() - t0
                    break
            refill["held"] = held
            refill["states_seen"] = {s: sorted(v) for s, v in seen_states.items()}
            refill["ckpt"] = {k: v for k, v in (rows[2].get("counters") or {}).items()
                              if k.startswith("ckpt")}  # fmt: skip
            try:
                pid1 = ch.run.pids()["1"]["pid"]
                refill["rss"] = b.rss_bytes(pid1)
            except (KeyError, OSError):
                refill["rss"] = None
            out["refill"] = refill
        mio = (ch.run.logs / "mio-5.log").read_text(errors="replace").splitlines()
        out["log_errors"] = [x for x in mio if " ERROR " in x or "failed:" in x][-5:]
        return out
    finally:
        if enbs is not None:
            enbs.close()
        ch.down()


def _ms(v) -> str:
    return "-" if v is None else f"{v:,.1f} ms"


def report(args, r: dict) -> None:
    n = r["up"]
    t = r.get("takeover") or {}
    detection = r.get("detection_ms")
    after_detection = (t["done_ms"] - detection) if t and detection is not None else None
    mib = 1 << 20
    sw = r["sweep"]
    sweep = (f"{sw['alive']:,} of {sw['checked']:,} alive in {sw['seconds']:.1f} s "
             f"({sw['checked'] / max(1e-9, sw['seconds']):,.0f}/s, {args.sweep_wave} at a "
             f"time); lost {sw['lost']}")  # fmt: skip
    grew = (r["rss"]["after"][2] - r["rss"]["before"][2]) / mib
    standby = f"{r['standby_per_sa'] / 1024:.2f} KiB ({grew:.1f} MiB for {r['held']:,})"
    rows = [
        ("tunnels up (IKE SAs / children)", f"{n:,} / {r['children']:,} in {r['setup_s']:.1f} s "
         f"({n / max(r['setup_s'], 1e-9):,.0f}/s)", "10,000"),
        ("checkpoint lag: last tunnel up -> all held by DPC 2",
         "-" if r["ckpt_lag_s"] is None else f"{r['ckpt_lag_s'] * 1000:,.0f} ms "
         f"({r['held']:,} held)", ""),
        ("detection through the backplane's child watch", _ms(r.get("backplane_ms")), "<= 50 ms"),
        ("detection: the MIO declares DPC 1 failed", _ms(detection), "<= 300 ms"),
        ("takeover: MIO order -> all SAs active on DPC 2, NPU told (MIO's record)",
         _ms(t.get("took_ms")), ""),
        ("takeover done after detection (MIO's log time)", _ms(after_detection), "<= 1,000 ms"),
        ("takeover done after the kill (MIO's log time)", _ms(t.get("done_ms")), ""),
        ("DPC 2 adopted every SA, after the kill (its log time)", _ms(r.get("card_done_ms")), ""),
        ("DPC 2 handed every RFC 6311 sync to the NPU, after the kill (MIO's log time)",
         _ms(r.get("syncs_handed_ms")), ""),
        ("SAs taken over (children)", f"{t.get('sas', '-'):,} ({t.get('children', '-'):,})"
         if t else "-", f"{n:,}"),
        ("RFC 6311 syncs through the NPU: first / last, after the kill",
         f"{_ms(r.get('first_sync_ms'))} / {_ms(r.get('last_sync_ms'))} ({r['synced']:,} SAs)",
         ""),
        ("DPC 2's live IKE SAs in the card table (read after the syncs)",
         f"{r['dpc2_sas']:,} ({r['dpc2_counted_ms']:,.0f} ms after the kill)", f"{n:,}"),
        (f"tunnels lost, liveness on a random sample of {r['sample']['checked']}",
         f"{r['sample']['lost']} (all answered in {r['sample']['seconds'] * 1000:,.0f} ms)"
         if not r["sample"]["lost"] else f"{r['sample']['lost']}: {r['sample']['reasons']}", "0"),
        ("full liveness sweep (every other SA)", sweep, "report"),
        ("standby memory per checkpointed tunnel (DPC 2 RSS growth / SAs held)", standby,
         "report"),
        ("active memory per live tunnel (DPC 1 RSS growth / SAs)",
         f"{r['active_per_sa'] / 1024:.2f} KiB", ""),
    ]  # fmt: skip
    if r.get("dpc2_out"):
        o = r["dpc2_out"]
        rows.append(("DPC 2 (the new active) out of service after the takeover",
                     f"{o['state']} {_ms(o['after_kill_ms'])} after the kill: {o['why']}",
                     "never"))  # fmt: skip
    if r["busy"]["checked"]:
        rows.append((f"requests in flight at the kill ({r['busy']['checked']} SAs' liveness)",
                     f"{r['busy']['alive']} answered, {r['busy']['checked'] - r['busy']['alive']}"
                     f" never (45 s): {r['busy']['reasons']}", "all answered"))  # fmt: skip
    if "refill" in r:
        f = r["refill"]
        held_s = f.get("held_s")
        rows.append(("refill: card reboot 1 -> DPC 1 standby holding every SA",
                     (f"standby after {f.get('standby_s', 0):.1f} s, all {f['held']:,} held after "
                      f"{held_s:.1f} s" if held_s is not None else
                      f"NOT within 120 s: {f['held']:,} held"), ""))  # fmt: skip
        rows.append(("refill: card states seen meanwhile", str(f["states_seen"]), "no failed"))
        if f.get("rss"):
            rows.append(("refill: DPC 1 RSS at the end", f"{f['rss'] / mib:.1f} MiB", ""))
        rows.append(("refill: DPC 2's checkpoint counters", str(f.get("ckpt")), ""))
    width = max(len(k) for k, _, _ in rows)
    print(f"\n{COMMAND} --tunnels {args.tunnels} --sample {args.sample} "
          f"--inflight {args.inflight} --liveness {args.liveness}"
          + (f" --busy-at-kill {args.busy_at_kill}" if args.busy_at_kill else ""))  # fmt: skip
    print(f"{'figure':<{width}}  {'measured':<48}  target")
    for k, v, target in rows:
        print(f"{k:<{width}}  {v:<48}  {target}")
    print(f"card states before the kill {r['states_before']}, after {r['states_after']}")
    print(f"DPC 1's checkpoint counters before the kill: {r['ckpt']}")
    if r["setup_failures"]:
        print(f"setup failures: {r['setup_failures']}")
    for note in r["notes"]:
        print(f"note: {note}")
    for line in r.get("log_errors") or []:
        print(f"MIO: {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tunnels", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--sweep-wave", type=int, default=500)
    ap.add_argument("--busy-at-kill", type=int, default=0)
    ap.add_argument("--liveness", type=int, default=30)
    ap.add_argument("--no-refill", dest="refill", action="store_false")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=None)
    args = ap.parse_args()
    base = args.run_dir or Path(tempfile.mkdtemp(prefix="bench-failover-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, base)
    finally:
        if args.run_dir is None:
            shutil.rmtree(base, ignore_errors=True)
    report(args, result)


if __name__ == "__main__":
    main()
