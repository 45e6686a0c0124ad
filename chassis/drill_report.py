"""A drill's report: the figures from its timeline, report.json and a self-contained HTML page.

The timeline is what the runner sampled every ~100 ms: per packet card its state, its tunnels
(IKE SAs, the gateway's view; a card out of service holds none) and, from the supervisor's
card table, when it entered that state (CLOCK_MONOTONIC, relative to the drill's start);
the fleet's counters (the eNodeBs' view). Figures per fault:

    detection_ms   fault -> the supervisor declares the target card failed (its own
                   timestamp, `state_since`; else the first sample that shows it)
    recovery_s     fault -> tunnels back to the pre-fault count, at the gateway and at the
                   eNodeBs, after a dip (no dip: nothing to recover)
    card_back_s    fault -> the failed card in service again
    tunnels_lost   tunnels the fleet saw go, until the next fault (and, drill-wide,
                   gateway_drop: the largest fall of the gateway's own count after a fault)
    renewal_s      fault -> a certificate renewed and held by every card in service
    datagrams_lost datagrams of established SAs the NPU could not hand to a card, until the
                   next fault (no card in service owns the SPI; the card's path gone or full)
    takeover_ms    a standby card took the failed card's SAs over: the management card's own
                   time from its takeover order to every SA active at the standby and the NPU
                   told to steer to it (supervisor/recovery.py's record, from its log);
                   takeover_done_ms: fault -> that record logged

The HTML page draws tunnels per card (and the gateway's and fleet's totals) with an inline
SVG (no plotting library), a mark for each fault and each recovery, and the cards' states.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

IN_SERVICE = ("active", "standby")
DETECTED = ("failed", "unreachable")  # the supervisor's verdicts on a silent card
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#d62728")  # fmt: skip
STATE_COLOURS = {"active": "#4caf50", "standby": "#8bc34a", "booting": "#ffc107",
                 "unreachable": "#7e57c2", "failed": "#e53935", "offline": "#9e9e9e"}  # fmt: skip


def _fleet(sample: dict, key: str):
    return (sample.get("fleet") or {}).get(key)


def fault_figures(
    fault: dict,
    timeline: list[dict],
    until: float | None = None,
    revoked: tuple = (),
    takeovers: list | tuple = (),
) -> dict:
    """The figures of one fault from the samples taken after it (``until``: the next fault,
    where its tunnel losses stop counting). ``revoked``: when eNodeBs were revoked (drill
    seconds); a revoked eNodeB is not expected back, the pre-fault count drops by one.
    ``takeovers``: the management card's takeover records (chassis.drills.takeovers_in)."""
    t = fault["t"]
    after = [s for s in timeline if s["t"] >= t]
    out: dict = {}
    slot = fault.get("target_slot")
    if slot is not None and not fault.get("recovery_action"):
        for rec in takeovers:  # the standby took this card's SAs over
            done = rec.get("t")
            if rec.get("failed") != slot or done is None or done < t - 0.05:
                continue
            if until is not None and done >= until:
                break
            out.update(takeover_ms=rec["took_ms"], takeover_by=rec["by"],
                       takeover_sas=rec["sas"], takeover_children=rec["children"],
                       takeover_done_ms=round(max(0.0, done - t) * 1000, 1))  # fmt: skip
            break
    if slot is not None and not fault.get("recovery_action"):
        key = str(slot)
        for s in after:
            card = (s.get("cards") or {}).get(key) or {}
            if card.get("state") not in DETECTED:
                continue
            out["detected_as"] = card["state"]
            since = card.get("since")
            if since is not None and since >= t - 0.005:
                out["detection_ms"] = round(max(0.0, since - t) * 1000, 1)
                out["detection_source"] = "supervisor (state_since)"
                out["detected_t"] = round(since, 4)
            else:
                out["detection_ms"] = round((s["t"] - t) * 1000, 1)
                out["detection_source"] = "sampled"
                out["detected_t"] = s["t"]
            break
        if "detected_t" in out:
            for s in after:
                card = (s.get("cards") or {}).get(key) or {}
                if s["t"] > out["detected_t"] and card.get("state") in IN_SERVICE:
                    out["card_back_s"] = round(s["t"] - t, 3)
                    break
    before = fault.get("before") or {}
    gw0, fl0 = before.get("gateway"), before.get("fleet_up")
    if slot is not None:
        out["tunnels_on_target"] = ((before.get("cards") or {}).get(str(slot)) or {}).get("tunnels")
    dip = None
    lowest = None
    for s in after:
        gw, up = s.get("gateway"), _fleet(s, "up")
        low = (gw is not None and gw0 is not None and gw < gw0) or (
            up is not None and fl0 is not None and up < fl0
        )
        if low and dip is None:
            dip = s["t"]
        if dip is not None:
            pair = (gw if gw is not None else -1, up if up is not None else -1)
            lowest = pair if lowest is None else (min(lowest[0], pair[0]), min(lowest[1], pair[1]))
            gone = sum(1 for r in revoked if r <= s["t"])
            back = (gw0 is None or (gw is not None and gw >= gw0 - gone)) and (
                fl0 is None or (up is not None and up >= fl0 - gone)
            )
            if back and s["t"] > dip:
                out["recovery_s"] = round(s["t"] - t, 3)
                out["recovered_t"] = s["t"]
                break
    if slot is not None and fault.get("recovery_action"):
        was_out = ((before.get("cards") or {}).get(str(slot)) or {}).get("state") not in IN_SERVICE
        for s in after:  # a resume or heal: how long until the card serves again
            if was_out and ((s.get("cards") or {}).get(str(slot)) or {}).get("state") in IN_SERVICE:
                out["card_back_s"] = round(s["t"] - t, 3)
                break
    if dip is None and "card_back_s" in out and not fault.get("recovery_action"):
        # no tunnel went: the recovery is the card serving again
        out["recovery_s"] = out["card_back_s"]
        out["recovered_t"] = round(t + out["card_back_s"], 3)
        out["recovery_basis"] = "the card in service again"
    if dip is not None:
        out["recovery_basis"] = "tunnels back to the pre-fault count"
        out["dip_s"] = round(dip - t, 3)
        out["lowest"] = {"gateway": lowest[0] if lowest else None,
                         "fleet_up": lowest[1] if lowest else None}  # fmt: skip
        out.setdefault("recovery_s", None)  # a dip, never recovered within the drill
    window = [s for s in after if until is None or s["t"] < until]
    lost0 = before.get("fleet_lost")
    ends = [_fleet(s, "lost") for s in window if _fleet(s, "lost") is not None]
    if lost0 is not None and ends:
        out["tunnels_lost"] = ends[-1] - lost0
    npu0 = before.get("npu_lost")
    counts = [s["npu_lost"] for s in window if s.get("npu_lost") is not None]
    if npu0 is not None and counts:
        out["datagrams_lost"] = counts[-1] - npu0
    certs0 = before.get("certs") or {}
    for name, c0 in certs0.items():
        gen0 = c0.get("generation") or 0
        for s in after:
            c = (s.get("certs") or {}).get(name)
            if not c or (c.get("generation") or 0) <= gen0:
                continue
            serving = [k for k, v in (s.get("cards") or {}).items() if v.get("state") in IN_SERVICE]
            held = c.get("cards") or {}
            if serving and all(held.get(k) == f"v{c['generation']}" for k in serving):
                out.setdefault("renewal_s", {})[name] = round(s["t"] - t, 3)
                break
    return out


def build(*, drill, seed, schedule, steps, faults, timeline, traps, revocations, accepted,
          cmp_lost, cmp, started, duration_s, chassis, notes, takeovers=()) -> dict:  # fmt: skip
    """The report (report.json) from what a run recorded."""
    revoked_times = tuple(r["t"] for r in revocations)
    for i, fault in enumerate(faults):
        nxt = next((f["t"] for f in faults[i + 1 :] if not f.get("recovery_action")), None)
        fault["figures"] = fault_figures(fault, timeline, nxt, revoked_times, takeovers)
    end_lost = next((_fleet(s, "lost") for s in reversed(timeline)
                     if _fleet(s, "lost") is not None), None)  # fmt: skip
    start_lost = next((_fleet(s, "lost") for s in timeline if _fleet(s, "lost") is not None), None)
    npu = [s["npu_lost"] for s in timeline if s.get("npu_lost") is not None]
    detections = [f["figures"]["detection_ms"] for f in faults if "detection_ms" in f["figures"]]
    recoveries = [f["figures"]["recovery_s"] for f in faults if "recovery_s" in f["figures"]]
    renewals = {}
    for f in faults:
        renewals.update(f["figures"].get("renewal_s") or {})
    trap_counts: dict[str, int] = {}
    for trap in traps:
        name = "cert-expiry" if trap.get("oid") == "1.3.6.1.3.8164.1.1" else str(trap.get("oid"))
        trap_counts[name] = trap_counts.get(name, 0) + 1
    drops = [
        f["before"]["gateway"] - f["figures"]["lowest"]["gateway"]
        for f in faults
        if (f.get("before") or {}).get("gateway") is not None
        and (f["figures"].get("lowest") or {}).get("gateway", -1) >= 0
    ]
    figures = {
        "detection_ms": max(detections) if detections else None,
        "detection_ms_each": detections,
        "recovery_s": (None if None in recoveries else max(recoveries)) if recoveries else None,
        "recovery_s_each": recoveries,
        "tunnels_lost": (end_lost - start_lost) if None not in (end_lost, start_lost) else None,
        "datagrams_lost": npu[-1] - npu[0] if npu else None,
        "datagrams_lost_each": [
            f["figures"].get("datagrams_lost") for f in faults if not f.get("recovery_action")
        ],
        "gateway_drop": max(drops) if drops else 0,  # the largest fall of the gateway's count
        "cmp_lost": cmp_lost,
        "revoked_accepted": len(accepted),
        "renewal_s": renewals or None,
        "traps": trap_counts,
        # every takeover (failures, `card migrate`, `card halt`): the management card's record
        "takeover_ms": max((r["took_ms"] for r in takeovers), default=None),
        "takeovers": list(takeovers),
    }
    passed = bool(steps) and all(s.get("ok") for s in steps)
    return {
        "drill": drill.name,
        "description": drill.description,
        "file": drill.source,
        "topology": drill.topology,
        "seed": seed,
        "seed_note": (
            "The seed replays the fault schedule: targets, delays and jitter, drop rates, the "
            "impairments' own seeds. Key material (IKE nonces, Diffie-Hellman and certificate "
            "keys) stays random, so no two runs put the same bytes on the wire."
        ),
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "result": "passed" if passed else "failed",
        "metrics": list(drill.metrics),
        "figures": figures,
        "schedule": schedule,
        "steps": steps,
        "faults": faults,
        "traps": traps,
        "revocations": revocations,
        "accepted_after_revocation": accepted,
        "cmp": cmp,
        "chassis": chassis,
        "notes": notes,
        "timeline": timeline,
    }


def write(report: dict, directory: Path | str) -> tuple[Path, Path]:
    """report.json, report.html and, beside them, the timeline alone as report.svg (the
    picture the page embeds, standalone: for a slide or a README). Returns (json, html)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    html_path.write_text(render_html(report))
    (directory / "report.svg").write_text(render_svg(report) + "\n")
    return json_path, html_path


# ------------------------------------------------------------------ figures as text
def figure_lines(report: dict) -> list[tuple[str, str]]:
    """(figure, value) for the drill's metrics, in the order it names them."""
    fig = report["figures"]
    out = []
    for metric in report.get("metrics") or []:
        if metric == "detection":
            each = ", ".join(f"{v:g}" for v in fig["detection_ms_each"])
            out.append(("detection time", f"{fig['detection_ms']:g} ms" + (
                f" (each fault: {each})" if len(fig["detection_ms_each"]) > 1 else "")
                if fig["detection_ms"] is not None else "no card declared failed"))  # fmt: skip
        elif metric == "recovery":
            each = fig["recovery_s_each"]
            if not each:
                text = "nothing to recover (no dip in tunnels)"
            elif fig["recovery_s"] is None:
                text = "NOT recovered within the drill"
            else:
                text = f"{fig['recovery_s']:g} s"
            out.append(("recovery time", text))
        elif metric == "tunnels_lost":
            text = "-" if fig["tunnels_lost"] is None else str(fig["tunnels_lost"])
            drop = fig.get("gateway_drop") or 0
            if drop:
                text += f" (counted by the eNodeBs); the gateway's count fell by {drop} at most"
            out.append(("tunnels lost", text))
        elif metric == "datagrams_lost":
            n, each = fig.get("datagrams_lost"), fig.get("datagrams_lost_each") or []
            text = "-" if n is None else str(n)
            if n and len(each) > 1:
                text += " (after each fault: " + ", ".join(
                    "-" if v is None else str(v) for v in each) + ")"  # fmt: skip
            out.append(("datagrams lost at the NPU", text))
        elif metric == "cmp_lost":
            out.append(("CMP transactions lost", "-" if fig["cmp_lost"] is None
                        else str(fig["cmp_lost"])))  # fmt: skip
        elif metric == "revoked_accepted":
            out.append(("authentications wrongly accepted", str(fig["revoked_accepted"])))
        elif metric == "renewal":
            r = fig["renewal_s"]
            out.append(("certificate renewed on every card", ", ".join(
                f"{k} {v:g} s" for k, v in r.items()) if r else "no renewal seen"))  # fmt: skip
        elif metric == "takeover":
            each = fig.get("takeovers") or []
            text = "; ".join(f"{r['took_ms']:g} ms: card {r['by']} took over card {r['failed']}'s "
                             f"{r['sas']} IKE SAs ({r['children']} children, {r['why']})"
                             for r in each) or "no takeover"  # fmt: skip
            out.append(("takeover time", text))
        elif metric == "traps":
            t = fig["traps"]
            out.append(("SNMP traps", ", ".join(f"{k} x{v}" for k, v in t.items()) or "none"))
    return out


# ------------------------------------------------------------------ HTML and SVG
def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _nice(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at least `value`."""
    scale = 1.0
    while value > 10 * scale:
        scale *= 10
    while value <= scale / 10 and scale > 1e-3:
        scale /= 10
    for m in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10):
        if value <= m * scale:
            return m * scale
    return 10 * scale


def _ticks(top: float, count: int = 6) -> list[float]:
    step = _nice(top / count) if top > 0 else 1
    return [round(i * step, 6) for i in range(int(top / step + 1e-9) + 1)]


def _step_path(points: list[tuple[float, float]]) -> str:
    if not points:
        return ""
    parts = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for x, y in points[1:]:
        parts.append(f"H{x:.1f}V{y:.1f}")
    return "".join(parts)


def _mark_label(at: float, y: float, colour: str, text: str, right: float) -> str:
    """A label beside a vertical mark at x `at`: on its right, or on its left when it would
    run past `right`, the plot's edge (a mark near the end of the drill)."""
    if at + 3 + 7 * len(text) > right:  # 7 px a character is generous at font-size 11
        return (f'<text x="{at - 3:.1f}" y="{y}" fill="{colour}" text-anchor="end">'
                f"{_e(text)}</text>")  # fmt: skip
    return f'<text x="{at + 3:.1f}" y="{y}" fill="{colour}">{_e(text)}</text>'


def render_svg(report: dict, width: int = 960, height: int = 320) -> str:
    """Tunnels per card over time (step lines), the gateway's and the fleet's totals, fault
    marks (red, numbered), recoveries (green: a resume/heal, and the computed recovery
    point), detections (orange), and one state strip per card under the plot."""
    timeline = report.get("timeline") or []
    faults = report.get("faults") or []
    duration = max([report.get("duration_s") or 0] + [s["t"] for s in timeline] + [1.0])
    cards = sorted({k for s in timeline for k in (s.get("cards") or {})}, key=int)
    left, right, top, bottom = 56, 20, 36, 36
    strip_h = 14
    plot_h = height - top - bottom
    total_h = height + len(cards) * (strip_h + 4) + 24
    peak = 1
    for s in timeline:
        for c in (s.get("cards") or {}).values():
            peak = max(peak, c.get("tunnels") or 0)
        peak = max(peak, s.get("gateway") or 0, _fleet(s, "up") or 0)
    step = _nice(peak / 5)
    ymax = step * (int(peak * 1.05 / step) + 1)
    w = width - left - right

    def x(t: float) -> float:
        return left + w * t / duration

    def y(v: float) -> float:
        return top + plot_h * (1 - v / ymax)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {total_h}" '
           f'width="{width}" height="{total_h}" font-family="sans-serif" font-size="11">',
           f'<rect x="{left}" y="{top}" width="{w}" height="{plot_h}" fill="#fafafa" '
           'stroke="#ccc"/>']  # fmt: skip
    for v in _ticks(ymax):
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#e6e6e6"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{v:g}</text>')  # fmt: skip
    for t in _ticks(duration, 10):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top + plot_h}" '
                   f'y2="{top + plot_h + 4}" stroke="#999"/><text x="{x(t):.1f}" '
                   f'y="{top + plot_h + 16}" text-anchor="middle">{t:g}</text>')  # fmt: skip
    out.append(f'<text x="{left + w / 2}" y="{top + plot_h + 30}" text-anchor="middle">'
               "seconds since the drill started</text>"
               f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2})">tunnels up</text>')  # fmt: skip
    legend = []
    for i, card in enumerate(cards):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(x(s["t"]), y(s["cards"][card].get("tunnels") or 0)) for s in timeline
               if card in (s.get("cards") or {})]  # fmt: skip
        out.append(f'<path d="{_step_path(pts)}" fill="none" stroke="{colour}" '
                   'stroke-width="1.8"/>')  # fmt: skip
        legend.append((colour, f"card {card}", ""))
    gw = [(x(s["t"]), y(s["gateway"])) for s in timeline if s.get("gateway") is not None]
    if gw:
        out.append(f'<path d="{_step_path(gw)}" fill="none" stroke="#555" stroke-width="1.2" '
                   'stroke-dasharray="2,2"/>')  # fmt: skip
        legend.append(("#555", "gateway total", "2,2"))
    fl = [(x(s["t"]), y(_fleet(s, "up"))) for s in timeline if _fleet(s, "up") is not None]
    if fl:
        out.append(f'<path d="{_step_path(fl)}" fill="none" stroke="#000" stroke-width="1.2" '
                   'stroke-dasharray="6,3"/>')  # fmt: skip
        legend.append(("#000", "eNodeBs up (fleet)", "6,3"))
    for n, fault in enumerate(faults, 1):
        fx = x(fault["t"])
        colour = "#2e7d32" if fault.get("recovery_action") else "#c62828"
        out.append(f'<line x1="{fx:.1f}" x2="{fx:.1f}" y1="{top}" y2="{top + plot_h}" '
                   f'stroke="{colour}" stroke-width="1.5"><title>{_e(fault["description"])}'
                   f'</title></line><circle cx="{fx:.1f}" cy="{top - 10}" r="8" '
                   f'fill="{colour}"/><text x="{fx:.1f}" y="{top - 6}" fill="#fff" '
                   f'text-anchor="middle" font-weight="bold">{n}</text>')  # fmt: skip
        figs = fault.get("figures") or {}
        if figs.get("detected_t") is not None:
            dx = x(figs["detected_t"])
            out.append(f'<line x1="{dx:.1f}" x2="{dx:.1f}" y1="{top}" y2="{top + plot_h}" '
                       'stroke="#ef6c00" stroke-dasharray="3,2"><title>card '
                       f'{fault.get("target_slot")} declared failed: '
                       f'{figs["detection_ms"]:g} ms</title></line>')  # fmt: skip
        if figs.get("recovered_t") is not None:
            rx = x(figs["recovered_t"])
            label = _mark_label(rx, top + 12, "#2e7d32", f"recovered ({n})", left + w)
            out.append(f'<line x1="{rx:.1f}" x2="{rx:.1f}" y1="{top}" y2="{top + plot_h}" '
                       'stroke="#2e7d32" stroke-dasharray="6,3"><title>recovered after '
                       f'{figs["recovery_s"]:g} s</title></line>{label}')  # fmt: skip
        for name, seconds in (figs.get("renewal_s") or {}).items():
            nx = x(fault["t"] + seconds)
            label = _mark_label(nx, top + 24, "#1565c0", f"{name} renewed", left + w)
            out.append(f'<line x1="{nx:.1f}" x2="{nx:.1f}" y1="{top}" y2="{top + plot_h}" '
                       'stroke="#1565c0" stroke-dasharray="4,2"><title>certificate '
                       f'{_e(name)} on every card after {seconds:g} s</title></line>'
                       f"{label}")  # fmt: skip
    if legend:
        lx = left
        for colour, name, dash in legend:
            dashed = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="12" y2="12" stroke="{colour}" '
                       f'stroke-width="2"{dashed}/><text x="{lx + 22}" y="16">{_e(name)}'
                       "</text>")  # fmt: skip
            lx += 30 + 7 * len(name)
    base = height + 4
    for i, card in enumerate(cards):
        ry = base + i * (strip_h + 4)
        out.append(f'<text x="{left - 6}" y="{ry + 11}" text-anchor="end">card {card}</text>')
        spans = []
        for s in timeline:
            state = (s.get("cards") or {}).get(card, {}).get("state")
            if spans and spans[-1][1] == state:
                continue
            spans.append((s["t"], state))
        for j, (t0, state) in enumerate(spans):
            t1 = spans[j + 1][0] if j + 1 < len(spans) else duration
            colour = STATE_COLOURS.get(state, "#bdbdbd")
            out.append(f'<rect x="{x(t0):.1f}" y="{ry}" width="{max(0.5, x(t1) - x(t0)):.1f}" '
                       f'height="{strip_h}" fill="{colour}"><title>card {card} {_e(state)} '
                       f'from {t0:g} s</title></rect>')  # fmt: skip
    ly = base + len(cards) * (strip_h + 4) + 14
    lx = left
    for state, colour in STATE_COLOURS.items():
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{lx + 14}" y="{ly}">{state}</text>')  # fmt: skip
        lx += 24 + 7 * len(state)
    out.append("</svg>")
    return "".join(out)


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{margin-bottom:4px} .sub{color:#666;margin-top:0}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:bold}
.passed{background:#2e7d32}.failed{background:#c62828}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top;font-size:13px}th{background:#f3f3f3}
.ok{color:#2e7d32;font-weight:bold}.bad{color:#c62828;font-weight:bold}.skip{color:#999}
.note{background:#fff8e1;border-left:4px solid #ffb300;padding:6px 10px}
code,pre{font-size:12px}pre{background:#f6f6f6;padding:6px;overflow-x:auto}
"""


def render_html(report: dict) -> str:
    result = report["result"]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in figure_lines(report))
    steps = []
    for s in report["steps"]:
        mark = {True: ('<span class="ok">ok</span>'), False: '<span class="bad">FAILED</span>',
                None: '<span class="skip">not run</span>'}[s.get("ok")]  # fmt: skip
        steps.append(f"<tr><td>{s['step']}</td><td>{_e(s.get('t', ''))}</td><td>{_e(s['kind'])}"
                     f"</td><td>{_e(s['label'])}</td><td>{mark}</td><td>{_e(s.get('detail', ''))}"
                     "</td></tr>")  # fmt: skip
    faults = []
    for n, f in enumerate(report["faults"], 1):
        figs = f.get("figures") or {}
        shown = ", ".join(f"{k} {json.dumps(v)}" for k, v in figs.items()
                          if k not in ("detected_t", "recovered_t"))  # fmt: skip
        kind = "recovery" if f.get("recovery_action") else "fault"
        faults.append(f"<tr><td>{n}</td><td>{f['t']:g}</td><td>{kind}</td>"
                      f"<td>{_e(f['description'])}</td><td>{_e(shown)}</td></tr>")  # fmt: skip
    schedule = "".join(f"<li>{_e(p['text'])}</li>" for p in report["schedule"]) or "<li>none</li>"
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in report.get("notes") or [])
    revocations = ""
    if report.get("revocations"):
        items = "".join(f"<li>{_e(r['fqdn'])} at {r['t']:g} s (serial "
                        f"{_e(', '.join(r['serials']))})</li>" for r in report["revocations"])  # fmt: skip
        wrong = "".join(f"<li><code>{_e(a['line'])}</code></li>"
                        for a in report.get("accepted_after_revocation") or [])  # fmt: skip
        revocations = (f"<h2>Revocations</h2><ul>{items}</ul>" + (
            f"<p class='bad'>Accepted after revocation:</p><ul>{wrong}</ul>" if wrong
            else "<p>No revoked eNodeB got a tunnel after its revocation.</p>"))  # fmt: skip
    chassis = report.get("chassis") or {}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>drill {_e(report["drill"])}</title>
<style>{CSS}</style></head><body>
<h1>Drill {_e(report["drill"])} <span class="badge {result}">{result}</span></h1>
<p class="sub">{_e(report.get("description") or "")}</p>
<p>Started {_e(report["started"])}, {report["duration_s"]:g} s, chassis {_e(chassis.get("name"))}
({_e(chassis.get("platform"))}, active packet cards {_e(chassis.get("active_packet_cards"))},
{_e(chassis.get("enodebs"))} eNodeBs), run directory <code>{_e(chassis.get("run_dir"))}</code>.</p>
<p><b>Seed {_e(report["seed"])}.</b> {_e(report["seed_note"])}</p>
{notes}
<h2>Figures</h2><table>{rows}</table>
<h2>Timeline</h2>
{render_svg(report)}
<h2>Faults and recoveries</h2>
<table><tr><th>#</th><th>t (s)</th><th></th><th>what</th><th>figures</th></tr>{"".join(faults)}
</table>
<h2>Fault schedule (seed {_e(report["seed"])})</h2><ol>{schedule}</ol>
{revocations}
<h2>Steps</h2>
<table><tr><th>#</th><th>t (s)</th><th>kind</th><th>step</th><th>result</th><th>seen</th></tr>
{"".join(steps)}</table>
<p class="sub">Drill file <code>{_e(report["file"])}</code>; the full timeline is in
report.json next to this page. Generated {_e(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))}.</p>
</body></html>
"""
