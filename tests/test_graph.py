"""`chassis graph`: the graph of a topology (cards by slot, type and role, the lab peers, the
links), its dot source, the SVG laid out without Graphviz and the self-contained HTML page."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

from click.testing import CliRunner
from helpers import BASIC, TOPOLOGIES, write_topology

from chassis import graph, topology
from chassis.cli import main

SVG = "{http://www.w3.org/2000/svg}"

LAB = """\
name: glab
platform: asr5500
cards:
  5: {type: mio, role: active}
  6: {type: mio, role: standby}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
  3: {type: dpc, role: standby}
lab:
  ca: {psk: lab-secret}
  ocsp: {}
  crl: {}
  fleet: {count: 12, children: 2}
startup-config: |
  config
    context segw
      wsg-service segw-svc
        bind address 127.0.0.1 port 5500 crypto-template segw-tmpl
      #exit
    #exit
  end
"""


def lab_graph(tmp_path) -> graph.Graph:
    return graph.build(topology.load(write_topology(tmp_path, LAB)))


def links(g: graph.Graph, kind: str) -> set[tuple[str, str]]:
    return {(link.src, link.dst) for link in g.links if link.kind == kind}


def test_build_names_cards_lab_peers_and_links(tmp_path):
    g = lab_graph(tmp_path)
    cards = [(n.slot, n.type, n.role) for n in g.nodes if n.kind in ("management", "packet")]
    assert cards == [
        (1, "dpc", "active"),
        (2, "dpc", "active"),
        (3, "dpc", "standby"),
        (5, "mio", "active"),
        (6, "mio", "standby"),
    ]
    assert g.node("npu").detail == "127.0.0.1:5500"
    assert g.node("lab-fleet").detail == "12 eNodeBs, 2 child SA(s) each"
    assert {n.id for n in g.nodes if n.kind == "lab"} == {
        "lab-ca",
        "lab-ocsp",
        "lab-crl",
        "lab-fleet",
    }
    slots = {f"slot{n}" for n in (1, 2, 3, 5, 6)}
    assert links(g, "backplane") == {("backplane", s) for s in slots} | {("backplane", "npu")}
    assert links(g, "control") == {("slot5", "slot1"), ("slot5", "slot2"), ("slot5", "slot3")}
    assert links(g, "ha") == {("slot5", "slot6")}
    assert links(g, "datapath") == {("slot1", "npu"), ("slot2", "npu"), ("slot3", "npu")}
    assert links(g, "checkpoint") == {("slot1", "slot3"), ("slot2", "slot3")}
    assert links(g, "cmp") == {("lab-ca", "slot5")}
    assert links(g, "crl") == {("lab-crl", "slot5")}
    assert links(g, "ocsp") == {("slot1", "lab-ocsp"), ("slot2", "lab-ocsp")}
    assert links(g, "fleet") == {("lab-fleet", "npu")}
    assert links(g, "issue") == {("lab-ca", "lab-fleet")}


def test_build_names_the_revoked_enodebs(tmp_path):
    topo = topology.load(write_topology(tmp_path, LAB))
    lab = {**dict(topo.lab), "fleet": {"count": 50, "children": 2, "revoked": 1}}
    g = graph.build(dataclasses.replace(topo, lab=lab))
    assert g.node("lab-fleet").detail == "50 eNodeBs, 2 child SA(s) each, 1 revoked"


def test_build_asr9000_and_no_lab():
    g = graph.build(topology.load(TOPOLOGIES / "asr9000.yaml"))
    assert [n.label for n in g.nodes if n.kind == "management"] == ["RSP 8", "RSP 9"]
    assert all(link.label.endswith("cmp fetch") for link in g.links if link.kind == "control")
    assert not [n for n in g.nodes if n.kind == "lab"]
    assert g.node("npu").detail == "no bind address"
    basic = graph.build(topology.load(BASIC))
    assert links(basic, "checkpoint") == {("slot1", "slot3"), ("slot2", "slot3")}


def test_gateway_addresses():
    conf = (
        "bind address 127.0.0.1 port 5500 crypto-template t\n  bind address ::1 crypto-template u"
    )
    assert graph.gateway_addresses(conf) == ["127.0.0.1:5500", "[::1]:500"]


def test_dot_declares_every_node_it_links(tmp_path):
    g = lab_graph(tmp_path)
    dot = graph.to_dot(g)
    assert dot.startswith('digraph "glab" {') and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    declared = set(re.findall(r'^\s+"([^"]+)" \[label=', dot, re.M))
    assert declared == {n.id for n in g.nodes}
    edges = re.findall(r'^\s+"([^"]+)" -> "([^"]+)"', dot, re.M)
    assert len(edges) == len(g.links) and {a for e in edges for a in e} <= declared
    assert '"slot3" [label="DPC 3\\nstandby\\nData Processing Card"' in dot
    assert "cluster_chassis" in dot and "cluster_lab" in dot
    assert 'style="rounded,filled,dashed"' in dot  # standby cards


def test_svg_is_well_formed_and_draws_every_card_and_link(tmp_path):
    g = lab_graph(tmp_path)
    root = ET.fromstring(graph.to_svg(g))
    assert root.tag == f"{SVG}svg"
    groups = {el.get("id"): el for el in root.iter(f"{SVG}g") if "node" in (el.get("class") or "")}
    assert set(groups) == {n.id for n in g.nodes}
    texts = ["".join(t.itertext()) for t in groups["slot6"].iter(f"{SVG}text")]
    assert texts[:3] == ["Slot 6", "MIO", "standby"]
    paths = [p for p in root.iter(f"{SVG}path") if "link" in (p.get("class") or "")]
    assert len(paths) == len(g.links)
    assert all(re.fullmatch(r"[MCLHV0-9., -]+", p.get("d")) for p in paths)
    legend = [
        "".join(t.itertext())
        for el in root.iter(f"{SVG}g")
        if el.get("class") == "legend"
        for t in el.iter(f"{SVG}text")
    ]
    assert len(legend) == len({link.kind for link in g.links})
    # boxes do not overlap: cards in slot order left to right
    box = graph.layout(g)
    xs = [box[f"slot{n}"][0] for n in (1, 2, 3, 5, 6)]
    assert xs == sorted(xs) and all(b - a >= graph.CARD_W for a, b in zip(xs, xs[1:], strict=False))


def test_html_is_self_contained(tmp_path):
    g = lab_graph(tmp_path)
    page = graph.to_html(g, graph.to_dot(g))
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</html>" in page
    assert not re.search(r"<(script|link|img)\b|src=|@import", page)
    assert "Graphviz source" in page and "digraph" in page
    assert "<td>6</td><td>MIO</td><td>standby</td>" in page
    escaped = graph.to_html(graph.Graph("<x&y>", "asr5500", [graph.Node("npu", "NPU", "npu")]))
    assert "&lt;x&amp;y&gt;" in escaped and "<x&y>" not in escaped


def test_write_and_the_cli(tmp_path):
    topo = write_topology(tmp_path, LAB)
    paths = graph.write(topology.load(topo), tmp_path / "out", use_dot=False)
    assert {k: p.name for k, p in paths.items()} == {
        "dot": "glab.dot",
        "svg": "glab.svg",
        "html": "glab.html",
    }
    assert all(p.stat().st_size > 500 for p in paths.values())
    res = CliRunner().invoke(main, ["graph", str(topo), "--out", str(tmp_path / "cli"), "--no-dot"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "glab.dot",
        "glab.html",
        "glab.svg",
    ]
    assert "html     " in res.output
    bad = write_topology(tmp_path, "name: x\nplatform: asr5500\ncards: {}\n", "bad.yaml")
    res = CliRunner().invoke(main, ["graph", str(bad), "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "bad.yaml" in res.output


def test_the_default_topology_draws(tmp_path):
    res = CliRunner().invoke(main, ["graph", "--out", str(tmp_path), "--no-dot"])
    assert res.exit_code == 0, res.output
    svg = (tmp_path / "default.svg").read_text()
    assert "lab CA / RA (CMP server)" in svg and "Slot 5" in svg
