"""`chassis graph`: a picture of a topology's cards, the lab peers and their links.

`build(topology)` is a pure function from a loaded topology to a `Graph` (nodes and links);
`to_dot`, `to_svg` and `to_html` render it. The SVG is laid out here (no Graphviz needed): the
lab peers on top, the chassis below them with its cards in slot order, the backplane and its NPU
under the cards, the eNodeB fleet under the NPU. With Graphviz's `dot` on the PATH, `write`
also renders the dot file with it (NAME.dot.svg), as an extra.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from chassis.topology import Topology

# link kinds: (colour, dash pattern, what the legend says)
KINDS = {
    "backplane": ("#888888", "", "backplane: slot power, heartbeats, epochs"),
    "control": ("#1f6fb2", "", "control + state (CURVE ZeroMQ): config, credentials, CRLs"),
    "ha": ("#7b3fa0", "6,3", "management-card redundancy (HA sync)"),
    "checkpoint": ("#2e8b57", "4,3", "session-recovery checkpoints (via the management card)"),
    "datapath": ("#d2691e", "", "IKE / ESP datagrams steered by SPI (NPU <-> packet card)"),
    "cmp": ("#b22222", "", "CMPv2 over HTTP (enrolment, key update)"),
    "ocsp": ("#008b8b", "3,3", "OCSP requests from the packet cards"),
    "crl": ("#4169e1", "3,3", "CRL fetch (http / ldap / file)"),
    "fleet": ("#c71585", "", "eNodeBs: IKEv2 + ESP-in-UDP to the gateway address"),
    "issue": ("#b22222", "2,4", "eNodeB certificates issued by the lab CA"),
}
TYPE_NAMES = {
    "mio": "Management & I/O",
    "dpc": "Data Processing Card",
    "rsp": "Route Switch Processor",
    "vsm": "Virtualized Services Module",
}
LAB_NAMES = {
    "ca": "lab CA / RA (CMP server)",
    "ocsp": "lab OCSP responder",
    "crl": "lab CRL publisher",
    "fleet": "lab eNodeB fleet",
}
_BIND = re.compile(r"^[ \t]*bind address (\S+)(?: port (\d+))?", re.MULTILINE)


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str  # management | packet | backplane | npu | lab
    slot: int | None = None
    type: str = ""
    role: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Link:
    src: str
    dst: str
    kind: str
    label: str = ""


@dataclass
class Graph:
    name: str
    platform: str
    nodes: list[Node] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


def gateway_addresses(startup_config: str) -> list[str]:
    """The addresses the boot configuration binds (wsg-service, crypto map), as HOST:PORT."""
    out = []
    for host, port in _BIND.findall(startup_config or ""):
        text = f"[{host}]" if ":" in host else host
        out.append(f"{text}:{port or 500}")
    return list(dict.fromkeys(out))


def build(topo: Topology) -> Graph:
    """The cards (by slot, type, role), the backplane and NPU, the lab peers and the links."""
    g = Graph(topo.name, topo.platform)
    cards = sorted(topo.cards, key=lambda c: c.slot)
    for c in cards:
        kind = "management" if c.is_management else "packet"
        g.nodes.append(
            Node(
                f"slot{c.slot}",
                f"{c.label} {c.slot}",
                kind,
                c.slot,
                c.type,
                c.role,
                TYPE_NAMES.get(c.type, c.type),
            )
        )
    addresses = gateway_addresses(topo.startup_config)
    g.nodes.append(Node("backplane", "backplane", "backplane", detail="chassis process"))
    g.nodes.append(Node("npu", "NPU", "npu", detail=", ".join(addresses) or "no bind address"))
    mgmt = [c for c in cards if c.is_management]
    packet = [c for c in cards if not c.is_management]
    active_mgmt = next((c for c in mgmt if c.role == "active"), mgmt[0] if mgmt else None)
    for c in cards:
        g.links.append(Link("backplane", f"slot{c.slot}", "backplane"))
    g.links.append(Link("backplane", "npu", "backplane", "steering table"))
    if active_mgmt is not None:
        for c in mgmt:
            if c is not active_mgmt:
                g.links.append(Link(f"slot{active_mgmt.slot}", f"slot{c.slot}", "ha", "HA sync"))
        what = "control, config" + (
            ", credentials pushed" if topo.platform == "asr5500" else ", cmp fetch"
        )
        for c in packet:
            g.links.append(Link(f"slot{active_mgmt.slot}", f"slot{c.slot}", "control", what))
    standbys = [c for c in packet if c.role == "standby"]
    for c in packet:
        g.links.append(Link(f"slot{c.slot}", "npu", "datapath", "IKE / ESP"))
        if c.role == "active":
            for s in standbys:
                g.links.append(Link(f"slot{c.slot}", f"slot{s.slot}", "checkpoint", "checkpoints"))
    lab = dict(topo.lab or {})
    for name in ("ca", "ocsp", "crl", "fleet", *sorted(set(lab) - set(LAB_NAMES))):
        if name not in lab:
            continue
        conf = lab[name] or {}
        detail = ""
        if name == "fleet":
            count = conf.get("count", "?") if hasattr(conf, "get") else "?"
            children = conf.get("children", 1) if hasattr(conf, "get") else 1
            revoked = conf.get("revoked", 0) if hasattr(conf, "get") else 0
            detail = f"{count} eNodeBs, {children} child SA(s) each" + (
                f", {revoked} revoked" if revoked else ""
            )
        g.nodes.append(
            Node(f"lab-{name}", LAB_NAMES.get(name, f"lab {name}"), "lab", type=name, detail=detail)
        )
        target = f"slot{active_mgmt.slot}" if active_mgmt is not None else "backplane"
        if name == "ca":
            g.links.append(Link("lab-ca", target, "cmp", "CMPv2"))
        elif name == "ocsp":
            for c in packet:
                if c.role == "active":
                    g.links.append(Link(f"slot{c.slot}", "lab-ocsp", "ocsp", "OCSP"))
        elif name == "crl":
            g.links.append(Link("lab-crl", target, "crl", "CRL fetch"))
        elif name == "fleet":
            g.links.append(Link("lab-fleet", "npu", "fleet", "IKEv2 + ESP"))
            if "ca" in lab:
                g.links.append(Link("lab-ca", "lab-fleet", "issue", "certificates"))
    return g


# ------------------------------------------------------------------ dot
def _dot_id(text: str) -> str:
    """A quoted dot ID; line breaks become dot's centred \\n."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{quoted}"'


def to_dot(g: Graph) -> str:
    """Graphviz source: a cluster for the chassis, one for the lab."""
    fills = {
        "management": "#dbe9f6",
        "packet": "#e3f4e1",
        "backplane": "#eeeeee",
        "npu": "#fde9d9",
        "lab": "#fff5cc",
    }
    lines = [
        f"digraph {_dot_id(g.name)} {{",
        '  graph [rankdir=TB, fontname="Helvetica", label='
        + _dot_id(f"chassis {g.name} ({g.platform})")
        + ", labelloc=t];",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8];',
    ]

    def node_line(n: Node) -> str:
        label = "\n".join(t for t in (n.label, n.role, n.detail) if t)
        style = "rounded,filled,dashed" if n.role == "standby" else "rounded,filled"
        return (
            f"    {_dot_id(n.id)} [label={_dot_id(label)}, "
            f'fillcolor="{fills.get(n.kind, "#ffffff")}", style="{style}"];'
        )

    lab = [n for n in g.nodes if n.kind == "lab"]
    if lab:
        lines.append('  subgraph cluster_lab { label="lab"; style=dashed;')
        lines += [node_line(n) for n in lab]
        lines.append("  }")
    lines.append(f'  subgraph cluster_chassis {{ label="{g.platform} chassis"; style=rounded;')
    cards = [n for n in g.nodes if n.kind in ("management", "packet")]
    lines.append("    { rank=same; " + " ".join(_dot_id(n.id) for n in cards) + " }")
    lines += [node_line(n) for n in g.nodes if n.kind not in ("lab",)]
    lines.append("  }")
    for link in g.links:
        colour, dash, _ = KINDS[link.kind]
        style = "dashed" if dash else "solid"
        both = link.kind in ("datapath", "fleet", "ha", "ocsp", "cmp")
        lines.append(
            f"  {_dot_id(link.src)} -> {_dot_id(link.dst)} [label={_dot_id(link.label)}, "
            f'color="{colour}", fontcolor="{colour}", style={style}'
            + (", dir=both" if both else "")
            + "];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ svg
CARD_W, CARD_H, GAP = 118, 120, 18
LAB_W, LAB_H = 190, 52
FILL = {"management": "#dbe9f6", "packet": "#e3f4e1", "lab": "#fff5cc", "npu": "#fde9d9"}


def layout(g: Graph) -> dict[str, tuple[float, float, float, float]]:
    """Node id -> (x, y, width, height) of its box."""
    cards = [n for n in g.nodes if n.kind in ("management", "packet")]
    lab = [n for n in g.nodes if n.kind == "lab" and n.type != "fleet"]
    inner = max(len(cards) * (CARD_W + GAP) + GAP, len(lab) * (LAB_W + GAP) + GAP, 620)
    x0, width = 40, inner
    box: dict[str, tuple[float, float, float, float]] = {}
    lab_x = x0 + (width - (len(lab) * (LAB_W + GAP) - GAP)) / 2
    for i, n in enumerate(lab):
        box[n.id] = (lab_x + i * (LAB_W + GAP), 50, LAB_W, LAB_H)
    dy = 0 if lab else -110  # no lab peer above the chassis: move it up
    card_x = x0 + (width - (len(cards) * (CARD_W + GAP) - GAP)) / 2
    for i, n in enumerate(cards):
        box[n.id] = (card_x + i * (CARD_W + GAP), 230 + dy, CARD_W, CARD_H)
    box["chassis"] = (x0, 160 + dy, width, 340)
    box["backplane"] = (x0 + 14, 400 + dy, width - 28, 26)
    box["npu"] = (x0 + width / 2 - 110, 440 + dy, 220, 44)
    bottom = 500 + dy
    for n in g.nodes:
        if n.kind == "lab" and n.type == "fleet":
            box[n.id] = (x0 + width / 2 - LAB_W / 2, 550 + dy, LAB_W, LAB_H)
            bottom = 602 + dy
    box["legend"] = (x0, bottom + 30, 0, 0)
    return box


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _anchor(box, side: str) -> tuple[float, float]:
    x, y, w, h = box
    return {"top": (x + w / 2, y), "bottom": (x + w / 2, y + h)}[side]


def _path(g: Graph, box: dict, link: Link, index: int) -> str:
    """An SVG path for one link (kinds take different routes so they stay apart)."""
    a, b = box[link.src], box[link.dst]
    if link.kind in ("control", "ha"):  # arcs above the cards, inside the chassis
        (x1, y1), (x2, y2) = _anchor(a, "top"), _anchor(b, "top")
        lift = 40 + 6 * (index % 5) if link.kind == "control" else 58
        return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 - lift:.1f} {x2:.1f},{y2 - lift:.1f} {x2:.1f},{y2:.1f}"
    if link.kind == "checkpoint":  # arcs under the cards
        (x1, y1), (x2, y2) = _anchor(a, "bottom"), _anchor(b, "bottom")
        return f"M{x1 - 20:.1f},{y1:.1f} C{x1 - 20:.1f},{y1 + 36:.1f} {x2 - 20:.1f},{y2 + 36:.1f} {x2 - 20:.1f},{y2:.1f}"
    if link.kind == "backplane":
        if link.dst == "npu":
            (x1, y1), (x2, y2) = _anchor(a, "bottom"), _anchor(b, "top")
            return f"M{x2 - 80:.1f},{y1:.1f} L{x2 - 80:.1f},{y2:.1f}"
        x, y, w, h = b
        return f"M{x + 14:.1f},{y + h:.1f} L{x + 14:.1f},{a[1]:.1f}"
    if link.kind == "datapath":
        (x1, y1), (x2, y2) = _anchor(a, "bottom"), _anchor(b, "top")
        return f"M{x1 + 20:.1f},{y1:.1f} C{x1 + 20:.1f},{y1 + 60:.1f} {x2:.1f},{y2 - 40:.1f} {x2:.1f},{y2:.1f}"
    if link.kind == "ocsp":  # from the card's top to the responder's bottom
        (x1, y1), (x2, y2) = _anchor(a, "top"), _anchor(b, "bottom")
        return f"M{x1 + 24:.1f},{y1:.1f} C{x1 + 24:.1f},{y1 - 90:.1f} {x2:.1f},{y2 + 50:.1f} {x2:.1f},{y2:.1f}"
    if link.kind == "issue":  # CA -> fleet: around the chassis, on its left
        x1, y1 = a[0], a[1] + a[3] / 2
        x2, y2 = b[0], b[1] + b[3] / 2
        left = box["chassis"][0] - 20
        return f"M{x1:.1f},{y1:.1f} H{left:.1f} V{y2:.1f} H{x2:.1f}"
    (x1, y1), (x2, y2) = _anchor(a, "bottom"), _anchor(b, "top")
    if y1 > y2:  # going up (fleet -> npu is down-up)
        (x1, y1), (x2, y2) = _anchor(a, "top"), _anchor(b, "bottom")
    return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{(y1 + y2) / 2:.1f} {x2:.1f},{(y1 + y2) / 2:.1f} {x2:.1f},{y2:.1f}"


def to_svg(g: Graph) -> str:
    """A self-contained SVG picture (hover a box or a link for its details)."""
    box = layout(g)
    used = [k for k in KINDS if any(link.kind == k for link in g.links)]
    cx, cy, cw, ch = box["chassis"]
    width = cx * 2 + cw
    legend_y = box["legend"][1]
    height = legend_y + 20 * len(used) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" '
        f'role="img" aria-label="{_esc(f"chassis {g.name}")}">',
        f"<title>{_esc(f'chassis {g.name} ({g.platform})')}</title>",
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="{cx}" y="26" font-size="16" font-weight="bold">'
        f"{_esc(f'chassis {g.name} ({g.platform})')}</text>",
        f'<rect x="{cx}" y="{cy}" width="{cw}" height="{ch}" rx="10" fill="#fafafa" '
        'stroke="#444" stroke-width="1.5" class="chassis"/>',
        f'<text x="{cx + 10}" y="{cy + 18}" font-size="11" fill="#444">{_esc(g.platform)} '
        "chassis</text>",
    ]
    bx, by, bw, bh = box["backplane"]
    out.append(
        f'<g class="node backplane" id="backplane"><title>backplane: the chassis process '
        f"(slot power, heartbeats, epochs; the NPU runs inside it)</title>"
        f'<rect x="{bx}" y="{by}" width="{bw}" height="{bh}" rx="4" fill="#dddddd" stroke="#888"/>'
        f'<text x="{bx + bw / 2}" y="{by + 17}" font-size="11" text-anchor="middle">backplane'
        "</text></g>"
    )
    for i, link in enumerate(g.links):
        colour, dash, what = KINDS[link.kind]
        src, dst = g.node(link.src), g.node(link.dst)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<path class="link {link.kind}" d="{_path(g, box, link, i)}" fill="none" '
            f'stroke="{colour}" stroke-width="1.6"{dash_attr} opacity="0.85">'
            f"<title>{_esc(f'{src.label} -> {dst.label}: {link.label or what}')}</title></path>"
        )
    for n in g.nodes:
        if n.id not in box or n.kind == "backplane":
            continue
        x, y, w, h = box[n.id]
        dash = ' stroke-dasharray="5,3"' if n.role == "standby" else ""
        stroke = (
            "#1b5e20" if n.kind == "packet" else "#0d47a1" if n.kind == "management" else "#666"
        )
        tip = f"{n.label}: {n.detail}" + (f", {n.role}" if n.role else "")
        out.append(f'<g class="node {n.kind}" id="{_esc(n.id)}"><title>{_esc(tip)}</title>')
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w}" height="{h}" rx="6" '
            f'fill="{FILL.get(n.kind, "#fff")}" stroke="{stroke}" stroke-width="1.8"{dash}/>'
        )
        mid = x + w / 2
        if n.kind in ("management", "packet"):
            texts = [
                (f"Slot {n.slot}", 12, "bold"),
                (n.type.upper(), 14, "bold"),
                (n.role, 12, "normal"),
                (_short(n.detail, 22), 9, "normal"),
            ]
            ty = y + 24
            for text, size, weight in texts:
                out.append(
                    f'<text x="{mid:.1f}" y="{ty:.1f}" font-size="{size}" font-weight="{weight}" '
                    f'text-anchor="middle">{_esc(text)}</text>'
                )
                ty += 24
        else:
            out.append(
                f'<text x="{mid:.1f}" y="{y + 21:.1f}" font-size="12" font-weight="bold" '
                f'text-anchor="middle">{_esc(n.label)}</text>'
            )
            if n.detail:
                out.append(
                    f'<text x="{mid:.1f}" y="{y + 38:.1f}" font-size="10" text-anchor="middle">'
                    f"{_esc(_short(n.detail, 34))}</text>"
                )
        out.append("</g>")
    for i, kind in enumerate(used):
        colour, dash, what = KINDS[kind]
        y = legend_y + 20 * i
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<g class="legend"><line x1="{cx}" y1="{y}" x2="{cx + 40}" y2="{y}" stroke="{colour}" '
            f'stroke-width="2"{dash_attr}/><text x="{cx + 50}" y="{y + 4}" font-size="11">'
            f"{_esc(what)}</text></g>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


# ------------------------------------------------------------------ html
def to_html(g: Graph, dot: str | None = None) -> str:
    """A self-contained page: the SVG picture, the cards and links as tables, the dot source."""
    title = f"chassis {g.name} ({g.platform})"
    rows = "\n".join(
        f"<tr><td>{n.slot}</td><td>{_esc(n.type.upper())}</td><td>{_esc(n.role)}</td>"
        f"<td>{_esc(n.detail)}</td></tr>"
        for n in g.nodes
        if n.kind in ("management", "packet")
    )
    peers = "\n".join(
        f"<tr><td>{_esc(n.label)}</td><td>{_esc(n.detail)}</td></tr>"
        for n in g.nodes
        if n.kind in ("lab", "npu")
    )
    links = "\n".join(
        f"<tr><td>{_esc(g.node(link.src).label)}</td><td>{_esc(g.node(link.dst).label)}</td>"
        f'<td style="color:{KINDS[link.kind][0]}">{_esc(link.kind)}</td>'
        f"<td>{_esc(link.label or KINDS[link.kind][2])}</td></tr>"
        for link in g.links
    )
    dot_block = (
        f"<details><summary>Graphviz source</summary><pre>{_esc(dot)}</pre></details>"
        if dot
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; text-align: left; }}
th {{ background: #f0f0f0; }}
.picture svg {{ max-width: 100%; height: auto; }}
pre {{ background: #f7f7f7; padding: 8px; font-size: 12px; overflow-x: auto; }}
</style></head>
<body>
<h1>{_esc(title)}</h1>
<div class="picture">
{to_svg(g)}</div>
<h2>Cards</h2>
<table><tr><th>Slot</th><th>Type</th><th>Role</th><th>Card</th></tr>
{rows}
</table>
<h2>Gateway address and lab peers</h2>
<table><tr><th>Peer</th><th>Detail</th></tr>
{peers}
</table>
<h2>Links</h2>
<table><tr><th>From</th><th>To</th><th>Kind</th><th>What</th></tr>
{links}
</table>
{dot_block}
</body></html>
"""


def write(topo: Topology, out_dir: Path | str, *, use_dot: bool = True) -> dict[str, Path]:
    """NAME.dot, NAME.svg and NAME.html in `out_dir` (and NAME.dot.svg when Graphviz's `dot`
    is installed and `use_dot`); returns them by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = build(topo)
    dot = to_dot(g)
    paths = {
        "dot": out / f"{g.name}.dot",
        "svg": out / f"{g.name}.svg",
        "html": out / f"{g.name}.html",
    }
    paths["dot"].write_text(dot, "utf-8")
    paths["svg"].write_text(to_svg(g), "utf-8")
    paths["html"].write_text(to_html(g, dot), "utf-8")
    exe = shutil.which("dot") if use_dot else None
    if exe:
        target = out / f"{g.name}.dot.svg"
        try:
            subprocess.run(
                [exe, "-Tsvg", "-o", str(target), str(paths["dot"])],
                check=True,
                capture_output=True,
                timeout=30,
            )
            paths["graphviz"] = target
        except (subprocess.SubprocessError, OSError):
            target.unlink(missing_ok=True)
    return paths
