"""The live view of `chassis up` in the foreground, and the snapshots it (and the metrics) read.

One poll (`gather`) takes a snapshot of a running chassis through the same command path as
`chassis status --json` and `chassis exec --json`: the backplane's status (slots, lab peers and
the fleet's report, management takeovers, faults), one CLI session for `show card table`,
`show certificate`, `show cmp history`, `show cmp statistics`, `show ca-crl all` (and
`show crypto ipsec security-associations` while the chassis holds few child SAs: per-card ESP
counters), and the lines the processes' logs gained since the last poll (bounded).

`Tracker.update(snapshot)` turns successive snapshots into a view: rates, the events that
happened in between (a slot failed, a takeover, a CMP transaction, a certificate version
reaching the cards, a CRL, a revocation refusal, an IKE_AUTH refusal, ...) and the readiness
level. `render(view)` (rich) and `plain_summary(view)` / `plain_events(events)` (one line each,
for a stdout that is not a terminal) are pure functions of a view: dicts in, text out.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from pathlib import Path

from chassis.logread import read_new

POLL_S = 1.0  # default time between two snapshots
MIN_POLL_S = 0.25  # at most four polls a second
PLAIN_SUMMARY_S = 5.0  # non-TTY: a summary block this often (events as they come)
DETAIL_MAX_CHILDREN = 500  # per-child ESP counters only while the chassis holds this few
EVENTS_KEPT = 200
EVENTS_SHOWN = 12
LOG_READ_MAX = 1 << 20  # bytes read from one log per poll at most (the rest is skipped)
COMMANDS = (
    "show card table",
    "show certificate",
    "show cmp history",
    "show cmp statistics",
    "show ca-crl all",
)
IPSEC_DETAIL = "show crypto ipsec security-associations"
_KEYS = {  # command -> (snapshot key, key inside its data)
    "show card table": ("cards", "cards"),
    "show certificate": ("certificates", "items"),
    "show cmp history": ("cmp_history", "history"),
    "show cmp statistics": ("cmp_statistics", None),
    "show ca-crl all": ("crls", "items"),
    IPSEC_DETAIL: ("ipsec", "sas"),
}
STALE_KEYS = ("cards", "certificates", "cmp_history", "cmp_statistics", "crls")


# ------------------------------------------------------------------ gathering (I/O)
class LogTail:
    """The lines the chassis's logs (RUN/logs/*.log) gained since the last read. Lines logged
    before `since` (wall clock, seconds) are dropped: a run directory keeps older runs' logs."""

    def __init__(self, logs_dir: Path | str, since: float | None = None) -> None:
        self.dir = Path(logs_dir)
        self.since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
        self.offsets: dict[Path, int] = {}
        self.skipped = 0  # bytes not read (a log grew by more than LOG_READ_MAX in one poll)

    def read(self) -> list[tuple[str, str]]:
        """[(source, line)]: source is the log's name without .log (dpc-1, mio-5, lab-ca...)."""
        out = []
        for path in sorted(self.dir.glob("*.log")):
            try:
                text, skipped = read_new(path, self.offsets, LOG_READ_MAX)
            except OSError:
                continue
            self.skipped += skipped
            for line in text.splitlines():
                if line[:19] >= self.since:
                    out.append((path.stem, line))
        return out


def gather(chassis, logs: LogTail | None = None, detail: bool = True, timeout=3.0) -> dict:
    """One snapshot of a running chassis: its status at the top level (as `chassis status
    --json`), the CLI's data under "cards", "certificates", "cmp_history", "cmp_statistics",
    "crls" (and "ipsec" with `detail`), new log lines under "log", what failed under
    "errors". Never raises for a chassis that does not answer: the errors say it."""
    from chassis.client import ChassisError

    snap: dict = {"wall": time.time(), "mono": time.monotonic(), "errors": []}
    try:
        snap.update(chassis.status(timeout=timeout))
    except (ChassisError, TimeoutError, OSError) as exc:
        snap["errors"].append(f"backplane: {exc or type(exc).__name__}")
        snap.setdefault("name", chassis.name)
        snap.setdefault("platform", chassis.manifest.get("platform", "?"))
    commands = list(COMMANDS) + ([IPSEC_DETAIL] if detail else [])
    try:
        results = chassis.exec(*commands, timeout=timeout, stop_on_error=False)
    except (ChassisError, TimeoutError, OSError) as exc:
        snap["errors"].append(f"supervisor CLI: {exc or type(exc).__name__}")
        results = []
    for r in results:
        key, inner = _KEYS[r.command]
        if r.error:
            snap["errors"].append(f"{r.command}: {r.output.strip()}")
        else:
            data = r.data or {}
            snap[key] = data if inner is None else data.get(inner, [])
    if logs is not None:
        snap["log"] = logs.read()
    return snap


# ------------------------------------------------------------------ events (pure)
def event(wall: float, kind: str, text: str) -> dict:
    return {"wall": wall, "kind": kind, "text": text}


_LOG = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ (?:slot\d+ )?(?P<logger>\S+) "
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<msg>.*)$"
)
_REVOCATION = re.compile(
    r"^revocation of (?P<subject>.*?): (?P<verdict>not revoked|REFUSED): (?P<why>.*)$"
)
_AUTH = re.compile(r"^IKE_AUTH from (?P<peer>\S+) refused: (?P<why>.*)$")
_CN = re.compile(r"CN=([^,]+)")


def _log_wall(text: str) -> float:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return 0.0


def revocation_source(reason: str) -> str:
    """ "ocsp" or "crl" (or "revocation") from a card's verdict text."""
    low = reason.lower()
    if "ocsp" in low and ("crl" not in low or low.index("ocsp") < low.index("crl")):
        return "ocsp"
    return "crl" if "crl" in low else "revocation"


def log_event(source: str, line: str) -> dict | None:
    """An event from one log line, or None for the lines the view does not show. Card
    revocation verdicts carry "verdict" ("ok" or "refused") and "source" (ocsp / crl); the
    accepted ones are counted, not shown ("quiet")."""
    m = _LOG.match(line)
    if m is None:
        return None
    wall, level, msg, who = _log_wall(m["time"]), m["level"], m["msg"], _who(source)
    if source.startswith(("dpc-", "vsm-")):
        r = _REVOCATION.match(msg)
        if r is not None:
            ok = r["verdict"] == "not revoked"
            src = revocation_source(r["why"])
            cn = _CN.search(r["subject"])
            subject = cn.group(1) if cn else r["subject"]
            verdict = "good" if ok else "REFUSED"
            ev = event(wall, src, f"{who}: {subject} {verdict}: {r['why']}")
            return {**ev, "verdict": "ok" if ok else "refused", "source": src, "quiet": ok}
        a = _AUTH.match(msg)
        if a is not None and "revoked or unverifiable" in a["why"]:
            return None  # the revocation verdict just before says it (with the subject)
        if a is not None:
            return event(wall, "auth", f"{who}: IKE_AUTH from {a['peer']} refused: {a['why']}")
    if source == "backplane" and "takes over" in msg:
        return None  # the status's mgmt_takeovers say it (see diff_events)
    if source.startswith("lab-fleet") and level == "INFO":
        return None  # the fleet's own retries: its counters say it (see diff_events)
    if level in ("WARNING", "ERROR", "CRITICAL"):
        kind = "error" if level != "WARNING" else "warning"
        if m["logger"] in ("crl",):
            kind = "crl"
        elif m["logger"] in ("cmp",):
            kind = "cmp"
        return event(wall, kind, f"{who}: {msg}")
    return None


def _who(source: str) -> str:
    kind, _, slot = source.partition("-")
    if kind in ("dpc", "vsm", "mio", "rsp") and slot.isdigit():
        return f"{kind.upper()} {slot}"
    return source


def _slot_label(s: dict) -> str:
    return f"{s.get('label') or s.get('type', '?').upper()} {s['slot']}"


def diff_events(prev: dict | None, cur: dict) -> list[dict]:
    """The events between two snapshots (the first one: its CMP history only)."""
    at, out = cur.get("wall", 0.0), []
    prev = prev or {}
    # CMP: the transactions not in the previous history
    seen = {_cmp_key(h) for h in prev.get("cmp_history") or []}
    history = cur.get("cmp_history") or []
    fresh = [h for h in history if _cmp_key(h) not in seen] if "cmp_history" in prev else history
    for h in fresh[-EVENTS_SHOWN:]:
        why = f" ({h['reason']})" if h.get("reason") else ""
        out.append(
            event(
                _iso_wall(h.get("time")) or at,
                "cmp",
                f"CMP {h['type']} {h['cert']} from {h['ca']}: {h['result']}{why}",
            )
        )
    takeovers = cur.get("mgmt_takeovers") or []
    for t in takeovers[len(prev.get("mgmt_takeovers") or []) :]:
        out.append(
            event(
                at,
                "takeover",
                f"management takeover: MIO {t['from']} -> {t['to']} "
                f"({t['why']}), epoch {t['epoch']}",
            )
        )
    if not prev:
        return out
    # slots
    before = {s["slot"]: s for s in prev.get("slots") or []}
    for s in cur.get("slots") or []:
        p = before.get(s["slot"])
        if p is None:
            continue
        who = _slot_label(s)
        if s.get("failed_at") and s.get("failed_at") != p.get("failed_at"):
            took = f", detected in {s['detection_ms']:.0f} ms" if s.get("detection_ms") else ""
            out.append(event(at, "failure", f"{who} failed: {s.get('failed_reason') or '?'}{took}"))
        if (s.get("restarts") or 0) > (p.get("restarts") or 0):
            out.append(event(at, "failure", f"{who} restarted (pid {s.get('pid') or '-'})"))
        if s["role"] != p["role"]:
            out.append(event(at, "takeover", f"{who} role {p['role']} -> {s['role']}"))
        if s["state"] != p["state"]:
            kind = "failure" if s["state"] not in ("active", "standby", "booting") else "card"
            if (p["state"], s["state"]) == ("standby", "active"):
                kind = "takeover"
            out.append(event(at, kind, f"{who} {p['state']} -> {s['state']}"))
    # faults
    faults_before = {f.get("fault") for f in prev.get("faults") or []}
    faults_now = {f.get("fault") for f in cur.get("faults") or []}
    for f in sorted(faults_now - faults_before, key=str):
        out.append(event(at, "fault", f"fault in force: {f}"))
    for f in sorted(faults_before - faults_now, key=str):
        out.append(event(at, "fault", f"fault lifted: {f}"))
    # certificates: a new version, then the cards that reached it
    certs_before = {c["name"]: c for c in prev.get("certificates") or []}
    for c in cur.get("certificates") or []:
        p = certs_before.get(c["name"])
        if p is None or p.get("generation") != c.get("generation"):
            out.append(
                event(
                    at,
                    "cert",
                    f"certificate {c['name']} v{c.get('generation')}: "
                    f"serial {str(c.get('serial', ''))[:12]}, until "
                    f"{c.get('not_after', '?')}",
                )
            )
        want = f"v{c.get('generation')}"
        reached = [
            slot
            for slot, held in (c.get("cards") or {}).items()
            if held.startswith(want) and (p is None or (p.get("cards") or {}).get(slot) != held)
        ]
        if reached:
            out.append(
                event(
                    at,
                    "cert",
                    f"certificate {c['name']} {want} on card(s) "
                    f"{', '.join(sorted(reached, key=int))}",
                )
            )
    # the MIO's CRLs (configured by name, or fetched from a CDP: by URL)
    crls_before = {crl_label(c): c for c in prev.get("crls") or []}
    for c in cur.get("crls") or []:
        p = crls_before.get(crl_label(c)) or {}
        if p.get("number") != c.get("number") or p.get("version") != c.get("version"):
            out.append(
                event(
                    at,
                    "crl",
                    f"CRL {crl_label(c)} #{c.get('number')} ({c.get('count')} "
                    f"revoked), version {c.get('version')}",
                )
            )
        if c.get("last_result") != p.get("last_result") and c.get("last_result") not in (
            None,
            "ok",
        ):
            out.append(event(at, "crl", f"CRL {crl_label(c)} fetch: {c['last_result']}"))
    # packet cards' templates
    tables = {c["slot"]: c for c in prev.get("cards") or []}
    for c in cur.get("cards") or []:
        old = (tables.get(c["slot"]) or {}).get("templates") or {}
        for name, state in sorted((c.get("templates") or {}).items()):
            if old.get(name) != state and c["slot"] in tables:
                out.append(
                    event(
                        at,
                        "card",
                        f"{c['type'].upper()} {c['slot']} crypto template {name}: {state}",
                    )
                )
    # the lab: fleet losses and failures, OCSP answers, published CRLs
    out += _lab_events(at, prev.get("lab") or {}, cur.get("lab") or {})
    return out


def _iso_wall(text) -> float | None:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def crl_label(c: dict) -> str:
    """A CRL of `show ca-crl all`: its name, or the URL of a CDP it was fetched from."""
    return str(c.get("name") or c.get("url") or c.get("issuer") or "?")


def _cmp_key(h: dict) -> tuple:
    return (h.get("time"), h.get("type"), h.get("cert"), h.get("result"), h.get("reason"))


def _lab_events(at: float, prev: dict, cur: dict) -> list[dict]:
    out = []
    for name, peer in cur.items():
        p = prev.get(name) or {}
        if bool(p.get("pid")) != bool(peer.get("pid")) and p:
            out.append(
                event(at, "lab", f"lab {name} {'running' if peer.get('pid') else 'stopped'}")
            )
    fleet, pfleet = _fleet(cur), _fleet(prev)
    if fleet and pfleet:
        for key, text in (
            ("lost", "tunnel(s) lost"),
            ("failed", "attempt(s) failed"),
            ("re_established", "tunnel(s) re-established"),
        ):
            n = (fleet.get(key) or 0) - (pfleet.get(key) or 0)
            if n > 0:
                why = fleet.get("losses" if key == "lost" else "failures") or {}
                detail = (
                    f" ({', '.join(f'{k}: {v}' for k, v in why.items())} in all)"
                    if why and key != "re_established"
                    else ""
                )
                out.append(event(at, "fleet", f"fleet: {n} {text}{detail}"))
    ocsp, pocsp = _counts(cur, "ocsp"), _counts(prev, "ocsp")
    n = ocsp.get("revoked", 0) - pocsp.get("revoked", 0)
    if n > 0 and pocsp is not None:
        out.append(event(at, "ocsp", f"lab OCSP responder answered revoked {n} time(s)"))
    crls = (((cur.get("crl") or {}).get("status")) or {}).get("crls") or {}
    pcrls = (((prev.get("crl") or {}).get("status")) or {}).get("crls") or {}
    for name, c in crls.items():
        if name in pcrls and pcrls[name].get("number") != c.get("number"):
            out.append(
                event(
                    at,
                    "crl",
                    f"lab CRL publisher: {name} CRL #{c.get('number')}, {c.get('revoked')} revoked",
                )
            )
    return out


def _fleet(lab: dict) -> dict:
    return ((lab.get("fleet") or {}).get("status")) or {}


def _counts(lab: dict, peer: str) -> dict:
    status = (lab.get(peer) or {}).get("status") or {}
    return (status.get("behaviour") or {}).get("counts") or {}


# ------------------------------------------------------------------ the view (pure)
def card_traffic(sas: list[dict]) -> dict[int, dict]:
    """Per packet card, the sums of its child SAs' ESP counters."""
    out: dict[int, dict] = {}
    for sa in sas or []:
        t = out.setdefault(int(sa["card"]), Counter())
        for k in ("packets_in", "packets_out", "bytes_in", "bytes_out"):
            t[k] += int(sa.get(k) or 0)
    return {slot: dict(t) for slot, t in out.items()}


def _rate(cur: float | None, old: float | None, dt: float) -> float | None:
    if cur is None or old is None or dt <= 0 or cur < old:
        return None
    return (cur - old) / dt


class Tracker:
    """Successive snapshots -> views (rates, events, readiness). No I/O: tests feed dicts."""

    def __init__(
        self, level: str = "cards", started: float | None = None, timeout: float | None = None
    ) -> None:
        self.level, self.started, self.timeout = level, started, timeout
        self.prev: dict | None = None
        self.events: deque = deque(maxlen=EVENTS_KEPT)
        self.verdicts: Counter = Counter()
        self.ready_at: float | None = None
        self.missing: list[str] = []

    def update(self, snap: dict) -> dict:
        from chassis.client import readiness_missing

        snap = dict(snap)
        stale = []
        if self.prev is not None:  # what this poll could not read: the last known, marked
            for key in STALE_KEYS:
                if key not in snap and key in self.prev:
                    snap[key], _ = self.prev[key], stale.append(key)
            if "slots" not in snap and "slots" in self.prev:
                for key in ("slots", "lab", "mgmt_takeovers", "faults", "npu", "epoch"):
                    if key in self.prev:
                        snap[key] = self.prev[key]
                stale.append("status")
        snap["stale"] = stale
        new = diff_events(self.prev, snap)
        for source, line in snap.pop("log", None) or []:
            ev = log_event(source, line)
            if ev is None:
                continue
            if "verdict" in ev:
                self.verdicts[(ev["source"], ev["verdict"])] += 1
            if not ev.get("quiet"):
                new.append(ev)
        new.sort(key=lambda ev: ev.get("wall") or 0)
        self.events.extend(new)
        snap["traffic"] = card_traffic(snap.get("ipsec") or []) if "ipsec" in snap else {}
        snap["rates"] = self._rates(snap)
        if self.ready_at is None:
            self.missing = readiness_missing(self.level, snap)
            if not self.missing:
                self.ready_at = snap.get("wall")
        snap["readiness"] = {
            "level": self.level,
            "ready_at": self.ready_at,
            "started": self.started,
            "timeout": self.timeout,
            "missing": list(self.missing),
        }
        snap["events"] = list(self.events)
        snap["new_events"] = new
        snap["verdicts"] = {f"{s}/{v}": n for (s, v), n in sorted(self.verdicts.items())}
        self.prev = snap
        return snap

    def _rates(self, cur: dict) -> dict:
        prev = self.prev
        out: dict = {"cards": {}, "flows": []}
        if prev is None:
            return out
        dt = cur.get("mono", 0) - prev.get("mono", 0)
        before = {c["slot"]: c for c in prev.get("cards") or []}
        for c in cur.get("cards") or []:
            p = before.get(c["slot"]) or {}
            r = {
                "npu_rx": _rate(
                    (c.get("counters") or {}).get("npu_rx"),
                    (p.get("counters") or {}).get("npu_rx"),
                    dt,
                )
            }
            t, pt = cur["traffic"].get(c["slot"]), (prev.get("traffic") or {}).get(c["slot"])
            if t and pt:
                for k in ("packets_in", "packets_out", "bytes_in", "bytes_out"):
                    r[k] = _rate(t.get(k), pt.get(k), dt)
            out["cards"][c["slot"]] = r
        flows, pflows = (
            _fleet(cur.get("lab") or {}).get("flows") or [],
            _fleet(prev.get("lab") or {}).get("flows") or [],
        )
        for i, f in enumerate(flows):
            p = pflows[i] if i < len(pflows) else {}
            out["flows"].append(
                {
                    "sent_pps": _rate(f.get("packets_sent"), p.get("packets_sent"), dt),
                    "received_pps": _rate(f.get("packets_received"), p.get("packets_received"), dt),
                }
            )
        return out


# ------------------------------------------------------------------ rendering (pure)
def _clock(wall: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall)) if wall else "--:--:--"


def _num(v, unit: str = "") -> str:
    if v is None:
        return "-"
    v = float(v)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.1f}{suffix}{unit}"
    return f"{v:.0f}{unit}" if v == int(v) or abs(v) >= 10 else f"{v:.1f}{unit}"


def readiness_text(view: dict) -> str:
    r = view.get("readiness") or {}
    level = r.get("level", "cards")
    if r.get("ready_at") is not None:
        took = r["ready_at"] - r["started"] if r.get("started") else None
        return f"ready ({level})" + (f" in {took:.1f} s" if took is not None else "")
    missing = r.get("missing") or []
    return (
        f"waiting for {level}: "
        + ("; ".join(missing[:3]) or "...")
        + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
    )


def header_text(view: dict) -> str:
    started = (view.get("readiness") or {}).get("started")
    up = f", up {view['wall'] - started:.0f} s" if started and view.get("wall") else ""
    return (
        f"chassis {view.get('name', '?')} ({view.get('platform', '?')}), epoch "
        f"{view.get('epoch', '?')}{up} - {readiness_text(view)}"
    )


def card_rows(view: dict) -> list[dict]:
    """One row per slot, in slot order: what the card table and the status say of it."""
    table = {c["slot"]: c for c in view.get("cards") or []}
    rates = (view.get("rates") or {}).get("cards") or {}
    certs = view.get("certificates") or []
    rows = []
    for s in view.get("slots") or []:
        c, slot = table.get(s["slot"]) or {}, s["slot"]
        counters = c.get("counters") or {}
        held = [
            f"{cert['name']} {(cert.get('cards') or {}).get(str(slot), '-')}"
            for cert in certs
            if str(slot) in (cert.get("cards") or {})
        ]
        templates = c.get("templates") or {}
        ready = sum(1 for st in templates.values() if st == "ready")
        traffic = (view.get("traffic") or {}).get(slot) or {}
        r = rates.get(slot) or {}
        rows.append(
            {
                "slot": slot,
                "type": s.get("label") or s["type"].upper(),
                "role": s["role"],
                "state": s["state"],
                "pid": s.get("pid"),
                "cert": ", ".join(held)
                if held
                else ("store" if s["type"] in ("mio", "rsp") and certs else "-"),
                "templates": f"{ready}/{len(templates)}" if templates else "-",
                "ike_sas": counters.get("ike_sas"),
                "child_sas": counters.get("child_sas"),
                "npu_rx": counters.get("npu_rx"),
                "npu_rx_rate": r.get("npu_rx"),
                "esp_in": traffic.get("packets_in"),
                "esp_out": traffic.get("packets_out"),
                "esp_bytes": (traffic.get("bytes_in", 0) + traffic.get("bytes_out", 0))
                if traffic
                else None,
                "esp_rate": (r["packets_in"] + r["packets_out"])
                if r.get("packets_in") is not None and r.get("packets_out") is not None
                else None,
                "restarts": s.get("restarts") or 0,
                "failure": s.get("failed_reason") or c.get("failure") or "",
            }
        )
    return rows


def lab_lines(view: dict) -> list[str]:
    """The world around the gateway and the gateway's PKI, a line each."""
    lines = []
    lab = view.get("lab") or {}
    if lab:
        lines.append(
            "lab: "
            + ", ".join(f"{n} {'running' if p.get('pid') else 'STOPPED'}" for n, p in lab.items())
        )
    fleet = _fleet(lab)
    if fleet:
        from chassis.client import expected_tunnels

        text = (
            f"fleet: {fleet.get('up', 0)}/{expected_tunnels(fleet)} tunnels up, child SAs "
            f"{fleet.get('children_up', 0)}/{fleet.get('children_wanted', 0)}, "
            f"{fleet.get('establishing', 0)} establishing, {fleet.get('lost', 0)} lost, "
            f"{fleet.get('failed', 0)} failed attempts"
        )
        lines.append(text)
        rates = (view.get("rates") or {}).get("flows") or []
        for i, f in enumerate(fleet.get("flows") or []):
            r = rates[i] if i < len(rates) else {}
            lines.append(
                f"  flow {f.get('flow')}: sent {_num(f.get('packets_sent'))} "
                f"({_num(r.get('sent_pps'), '/s')}), received "
                f"{_num(f.get('packets_received'))} ({_num(r.get('received_pps'), '/s')}), "
                f"{_num(f.get('bytes_received'), 'B')}"
            )
    for c in view.get("certificates") or []:
        cards = c.get("cards") or {}
        held = sum(1 for v in cards.values() if v.startswith(f"v{c.get('generation')}"))
        lines.append(
            f"certificate {c['name']} v{c.get('generation')}: {c.get('subject', '')}, "
            f"until {c.get('not_after', '?')}, on {held}/{len(cards)} packet cards"
        )
    tx = (view.get("cmp_statistics") or {}).get("transactions") or {}
    if tx:
        lines.append(
            "CMP: "
            + ", ".join(
                f"{t} {v.get('success', 0)} ok/{v.get('failure', 0)} failed" for t, v in tx.items()
            )
        )
    for c in view.get("crls") or []:
        lines.append(
            f"CRL {crl_label(c)} #{c.get('number')}: {c.get('count')} revoked, version "
            f"{c.get('version')}, last fetch {c.get('last_result') or '-'}"
        )
    verdicts = view.get("verdicts") or {}
    if verdicts:
        lines.append("revocation verdicts: " + ", ".join(f"{k} {v}" for k, v in verdicts.items()))
    npu = view.get("npu") or {}
    if npu:
        lines.append("NPU: " + ", ".join(f"{k} {_num(v)}" for k, v in npu.items()))
    return lines


def event_line(ev: dict) -> str:
    return f"{_clock(ev.get('wall'))} {ev.get('kind', '?'):<8} {ev.get('text', '')}"


STYLE = {
    "failure": "bold red",
    "error": "red",
    "auth": "red",
    "takeover": "bold yellow",
    "warning": "yellow",
    "fault": "magenta",
    "cmp": "cyan",
    "cert": "green",
    "crl": "blue",
    "ocsp": "blue",
    "fleet": "yellow",
    "card": "white",
    "lab": "magenta",
}
STATE_STYLE = {"active": "green", "standby": "cyan", "booting": "yellow"}


def render(view: dict):
    """The live view as a rich renderable (a Group of a header, the card table, the lab and
    PKI lines, the latest events)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    ready = (view.get("readiness") or {}).get("ready_at") is not None
    parts = [Text(header_text(view), style="bold green" if ready else "bold yellow")]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col, justify in (
        ("Slot", "right"),
        ("Type", "left"),
        ("Role", "left"),
        ("State", "left"),
        ("PID", "right"),
        ("Certificate", "left"),
        ("Tmpl", "right"),
        ("IKE SAs", "right"),
        ("Child SAs", "right"),
        ("NPU rx/s", "right"),
        ("ESP pkts in/out", "right"),
        ("ESP pkt/s", "right"),
        ("ESP bytes", "right"),
        ("Restarts", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)
    for r in card_rows(view):
        esp = f"{_num(r['esp_in'])}/{_num(r['esp_out'])}" if r["esp_in"] is not None else "-"
        table.add_row(
            str(r["slot"]),
            r["type"],
            r["role"],
            Text(r["state"], style=STATE_STYLE.get(r["state"], "bold red")),
            str(r["pid"] or "-"),
            r["cert"],
            r["templates"],
            _num(r["ike_sas"]),
            _num(r["child_sas"]),
            _num(r["npu_rx_rate"]),
            esp,
            _num(r["esp_rate"]),
            _num(r["esp_bytes"], "B"),
            str(r["restarts"]),
        )
    parts.append(table)
    parts += [Text(line) for line in lab_lines(view)]
    parts.append(Text("latest events", style="bold"))
    events = (view.get("events") or [])[-EVENTS_SHOWN:]
    for ev in events:
        text = Text(event_line(ev), style=STYLE.get(ev.get("kind"), ""))
        text.no_wrap, text.overflow = True, "ellipsis"
        parts.append(text)
    if not events:
        parts.append(Text("  (none yet)", style="dim"))
    for err in view.get("errors") or []:
        parts.append(Text(f"not read this time: {err}", style="red"))
    if view.get("stale"):
        parts.append(Text(f"shown from the last poll: {', '.join(view['stale'])}", style="dim"))
    parts.append(Text("Ctrl-C stops the chassis.", style="dim"))
    return Group(*parts)


def plain_summary(view: dict) -> list[str]:
    """A summary block for a stdout that is not a terminal: the header, a line per card, the
    lab and PKI lines."""
    lines = [header_text(view)]
    for r in card_rows(view):
        esp = (
            f" esp {_num(r['esp_in'])}/{_num(r['esp_out'])} pkts" if r["esp_in"] is not None else ""
        )
        fail = f" FAILED: {r['failure']}" if r["failure"] else ""
        lines.append(
            f"  {r['type']} {r['slot']}: {r['role']}/{r['state']} pid {r['pid'] or '-'}"
            f" cert {r['cert']} tmpl {r['templates']} ike {_num(r['ike_sas'])} child "
            f"{_num(r['child_sas'])} rx {_num(r['npu_rx_rate'], '/s')}{esp}{fail}"
        )
    lines += [f"  {line}" for line in lab_lines(view)]
    lines += [f"  not read: {e}" for e in view.get("errors") or []]
    return lines


def plain_events(events: list[dict]) -> list[str]:
    return [f"event {event_line(ev)}" for ev in events]


# ------------------------------------------------------------------ the loop (I/O)
class ReadinessTimeout(Exception):
    pass


class Poller:
    """gather() + Tracker.update() on one chassis. Per-child ESP counters are asked for only
    while the card table counts at most DETAIL_MAX_CHILDREN child SAs (not on the first poll:
    the count is not known yet)."""

    def __init__(
        self,
        chassis,
        level: str = "cards",
        started: float | None = None,
        timeout: float | None = None,
    ) -> None:
        started = started or time.time()
        self.chassis, self.detail = chassis, False
        self.tracker = Tracker(level, started, timeout)
        self.logs = LogTail(chassis.run.logs, since=started - 1)

    def poll(self) -> dict:
        view = self.tracker.update(gather(self.chassis, self.logs, self.detail))
        cards = view.get("cards") or []
        children = sum((c.get("counters") or {}).get("child_sas") or 0 for c in cards)
        self.detail = bool(cards) and children <= DETAIL_MAX_CHILDREN
        return view


def run(
    chassis,
    *,
    level: str = "cards",
    timeout: float = 30.0,
    interval: float = POLL_S,
    started: float | None = None,
    plain: bool | None = None,
    console=None,
    exporter=None,
    on_ready=None,
) -> str:
    """Poll the chassis and show it until it stops (returns "exited") or KeyboardInterrupt.
    Raises ReadinessTimeout when readiness `level` is not reached within `timeout` seconds of
    `started` (wall clock). `exporter`: a metrics.Exporter fed each view."""
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    plain = (not console.is_terminal) if plain is None else plain
    interval = max(MIN_POLL_S, interval)
    started = started or time.time()
    poller, last_summary = Poller(chassis, level, started, timeout), 0.0

    def poll() -> dict:
        view = poller.poll()
        if exporter is not None:
            exporter.update(view)
        return view

    def check(view: dict) -> None:
        nonlocal on_ready
        r = view["readiness"]
        if r["ready_at"] is not None and on_ready is not None:
            on_ready(view)
            on_ready = None
        if r["ready_at"] is None and time.time() - started > timeout:
            raise ReadinessTimeout(
                f"chassis {chassis.name}: --wait {level} not reached after {timeout:g} s: "
                + "; ".join(r["missing"])
            )

    if plain:
        while chassis.running():
            view = poll()
            for line in plain_events(view["new_events"]):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            if view["mono"] - last_summary >= PLAIN_SUMMARY_S:
                last_summary = view["mono"]
                for line in plain_summary(view):
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
            check(view)
            time.sleep(interval)
        return "exited"
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while chassis.running():
            view = poll()
            live.update(render(view), refresh=True)
            check(view)
            time.sleep(interval)
    return "exited"
