"""Topology loading: shipped files, error positions, schema, and robustness against any input."""

import json
import pathlib
import textwrap
import types

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chassis import topology
from chassis.topology import Card, Problem, Timers, Topology, TopologyError, load, loads

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOPOLOGIES = ROOT / "topologies"
SCHEMA_PATH = pathlib.Path(topology.__file__).with_name("topology.schema.json")

MINIMAL = """\
name: lab
cards:
  5: {type: mio, role: active}
  1: {type: dpc}
"""


def problems(text: str, **kw) -> list[Problem]:
    with pytest.raises(TopologyError) as info:
        loads(textwrap.dedent(text), **kw)
    assert str(info.value) == "\n".join(map(str, info.value.problems))
    return info.value.problems


def only(text: str, **kw) -> Problem:
    found = problems(text, **kw)
    assert len(found) == 1, found
    return found[0]


# --- shipped topologies ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "asr5500", "asr9000"])
def test_shipped_topologies_load(name):
    topo = load(TOPOLOGIES / f"{name}.yaml")
    assert topo.name == name
    assert topo.source == str(TOPOLOGIES / f"{name}.yaml")
    assert [c.role for c in topo.management_cards] == ["active", "standby"]
    assert any(c.role == "active" for c in topo.packet_cards)
    assert any(c.role == "standby" for c in topo.packet_cards)
    assert [c.slot for c in topo.cards] == sorted(c.slot for c in topo.cards)
    assert "system hostname" in topo.startup_config
    assert topo.startup_config.lstrip().startswith("config")
    assert "\nend\n" in topo.startup_config + "\n"  # exec lines (cmp initialize) may follow


def test_default_path_is_the_shipped_default():
    path = topology.default_path()
    assert path == TOPOLOGIES / "default.yaml"
    assert path.is_file()
    topo = load(path)
    assert topo.platform == "asr5500"
    assert [(c.slot, c.label, c.role) for c in topo.cards] == [
        (1, "DPC", "active"),
        (2, "DPC", "active"),
        (3, "DPC", "active"),
        (4, "DPC", "standby"),
        (5, "MIO", "active"),
        (6, "MIO", "standby"),
    ]
    assert "ca" in topo.lab and "cmp initialize" in topo.startup_config


def test_asr5500_boot_config_comes_from_its_file():
    topo = load(TOPOLOGIES / "asr5500.yaml")
    assert topo.startup_config_path == str(TOPOLOGIES / "asr5500.cfg")
    assert topo.startup_config == (TOPOLOGIES / "asr5500.cfg").read_text()
    assert [c.slot for c in topo.packet_cards] == [1, 2, 3, 4]
    assert topo.card(4).role == "standby"


def test_asr9000_cards_and_inline_boot_config():
    topo = load(TOPOLOGIES / "asr9000.yaml")
    assert topo.platform == "asr9000"
    assert topo.startup_config_path is None
    assert "system hostname asr9000" in topo.startup_config
    assert [(c.slot, c.label) for c in topo.management_cards] == [(8, "RSP"), (9, "RSP")]
    assert [c.slot for c in topo.packet_cards] == [0, 1, 2, 3]
    assert topo.card(8).is_management and not topo.card(0).is_management
    with pytest.raises(KeyError):
        topo.card(10)


def test_defaults():
    topo = loads(MINIMAL)
    assert (topo.platform, topo.transport) == ("asr5500", "ipc")
    assert topo.timers == Timers(heartbeat_interval_ms=100, heartbeat_liveness=3)
    assert topo.card(1) == Card(1, "dpc", "active")
    assert (topo.startup_config, topo.startup_config_path) == ("", None)
    assert topo.lab == {}
    assert topo.source == "<string>"


def test_timers_transport_and_lab():
    topo = loads(
        MINIMAL
        + "transport: tcp\ntimers: {heartbeat-interval-ms: 250, heartbeat-liveness: 5}\n"
        + "lab:\n  ca: {url: http://127.0.0.1:8080/pkix/, profiles: [enb, segw]}\n"
    )
    assert topo.transport == "tcp"
    assert topo.timers == Timers(250, 5)
    assert topo.lab["ca"]["profiles"] == ("enb", "segw")
    with pytest.raises(TypeError):
        topo.lab["ca"]["url"] = "elsewhere"  # read-only, also when nested


def test_startup_config_file_is_relative_to_the_topology(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "x.cfg").write_text("config\n  system hostname x\nend\n")
    path = tmp_path / "x.yaml"
    path.write_text(MINIMAL + "startup-config: boot/x.cfg\n")
    topo = load(path)
    assert topo.startup_config == "config\n  system hostname x\nend\n"
    assert topo.startup_config_path == str(tmp_path / "boot" / "x.cfg")
    # loads() resolves against base_dir
    topo = loads(MINIMAL + "startup-config: x.cfg\n", base_dir=tmp_path / "boot")
    assert topo.startup_config_path == str(tmp_path / "boot" / "x.cfg")


def test_inline_startup_config():
    topo = loads(MINIMAL + "startup-config: |\n  config\n    system hostname lab\n  end\n")
    assert topo.startup_config == "config\n  system hostname lab\nend\n"
    assert topo.startup_config_path is None


# --- errors: file:line:column and field -----------------------------------------------------


def test_unknown_top_level_key():
    p = only(MINIMAL + "platfrom: asr9000\n")
    assert (p.file, p.line, p.column, p.field) == ("<string>", 5, 1, "platfrom")
    assert "did you mean 'platform'" in p.message
    assert str(p).startswith("<string>:5:1: platfrom: unknown key")


def test_unknown_card_key():
    p = only(
        """\
        name: lab
        cards:
          5: {type: mio, role: active}
          1:
            type: dpc
            colour: red
        """
    )
    assert (p.line, p.column, p.field) == (6, 5, "cards.1.colour")
    assert "unknown key" in p.message


@pytest.mark.parametrize(
    "platform, slot, card_type, line, wanted",
    [
        ("asr5500", 7, "mio", 5, "dpc"),
        ("asr5500", 6, "dpc", 5, "mio"),
        ("asr9000", 9, "vsm", 5, "rsp"),
        ("asr9000", 2, "rsp", 5, "vsm"),
    ],
)
def test_wrong_slot_type_pair(platform, slot, card_type, line, wanted):
    mgmt, packet = {"asr5500": (5, 1), "asr9000": (8, 0)}[platform]
    mtype, ptype = topology.PLATFORMS[platform]
    p = only(
        f"""\
        name: lab
        platform: {platform}
        cards:
          {mgmt}: {{type: {mtype}, role: active}}
          {slot}: {{type: {card_type}, role: standby}}
          {packet}: {{type: {ptype}}}
        """
    )
    assert (p.line, p.column, p.field) == (line, 13, f"cards.{slot}.type")
    assert card_type in p.message and f"slot {slot}" in p.message and wanted in p.message


@pytest.mark.parametrize(
    "platform, slot, card_type, other",
    [("asr5500", 2, "vsm", "asr9000"), ("asr9000", 5, "mio", "asr5500")],
)
def test_card_type_of_the_other_platform(platform, slot, card_type, other):
    mgmt, packet = {"asr5500": (5, 1), "asr9000": (8, 0)}[platform]
    mtype, ptype = topology.PLATFORMS[platform]
    p = only(
        f"""\
        name: lab
        platform: {platform}
        cards:
          {mgmt}: {{type: {mtype}, role: active}}
          {packet}: {{type: {ptype}}}
          {slot}: {{type: {card_type}, role: standby}}
        """
    )
    assert (p.line, p.field) == (6, f"cards.{slot}.type")
    for word in (card_type, other, platform, f"slot {slot}"):
        assert word in p.message


def test_slot_that_does_not_exist():
    found = problems(MINIMAL + "  11: {type: dpc}\n")
    assert [(p.line, p.column, p.field) for p in found] == [(5, 3, "cards.11")]
    assert "no slot 11 on asr5500" in found[0].message
    p = only(MINIMAL.replace("5: {type: mio", "8: {type: rsp") + "platform: asr9000\n")
    assert p.field == "cards.1.type"  # slot 1 exists on asr9000; dpc does not
    assert "dpc is an asr5500 card" in p.message


def test_unknown_card_type():
    p = only(MINIMAL + "  2: {type: dpx}\n")
    assert (p.line, p.column, p.field) == (5, 13, "cards.2.type")
    assert "unknown card type 'dpx'" in p.message


def test_slot_must_be_an_integer():
    p = only(MINIMAL + "  two: {type: dpc}\n")
    assert (p.line, p.column, p.field) == (5, 3, "cards.two")


def test_bad_role():
    p = only(MINIMAL + "  2: {type: dpc, role: primary}\n")
    assert (p.line, p.column, p.field) == (5, 24, "cards.2.role")
    assert "primary" in p.message and "active" in p.message


def test_management_card_needs_a_role():
    p = only(MINIMAL + "  6: {type: mio}\n")
    assert (p.line, p.field) == (5, "cards.6.role")


def test_two_active_mios():
    p = only(MINIMAL + "  6:\n    type: mio\n    role: active\n")
    assert (p.line, p.column, p.field) == (7, 11, "cards.6.role")
    assert "MIO 5 is already active" in p.message


def test_two_standby_management_cards():
    # Both platforms have two management slots, so two standbys always leave no active one.
    found = problems(
        MINIMAL.replace("role: active", "role: standby") + "  6: {type: mio, role: standby}\n"
    )
    assert [(p.line, p.column, p.field) for p in found] == [
        (3, 3, "cards"),
        (5, 24, "cards.6.role"),
    ]
    assert "no active management card" in found[0].message
    assert "MIO 5 is already standby" in found[1].message


def test_no_active_management_card():
    p = only(MINIMAL.replace("role: active", "role: standby"))
    assert (p.line, p.column, p.field) == (3, 3, "cards")
    assert "no active management card" in p.message


def test_no_active_packet_card():
    p = only(MINIMAL.replace("1: {type: dpc}", "1: {type: dpc, role: standby}"))
    assert (p.line, p.column, p.field) == (3, 3, "cards")
    assert "no active packet card" in p.message


def test_empty_cards():
    p = only("name: lab\ncards: {}\n")
    assert (p.line, p.field) == (2, "cards")


def test_duplicate_keys():
    found = problems(MINIMAL + "name: again\ncards: {}\n")
    assert [(p.line, p.column, p.field) for p in found] == [(5, 1, "name"), (6, 1, "cards")]
    assert "duplicate key (first on line 1)" in found[0].message
    p = only(MINIMAL + "  1: {type: dpc, role: standby}\n")
    assert (p.line, p.column, p.field) == (5, 3, "cards.1")
    assert "first on line 4" in p.message


def test_yaml_syntax_error():
    p = only("name: lab\ncards:\n  5: {type: mio, role: active\n  1: [\n")
    assert p.field == "(document)"
    assert p.message.startswith("YAML: ")
    assert (p.line, p.column) == (4, 4)
    p = only("name: lab\ncards: [\n  a: b: c\n")
    assert (p.line, p.column) == (3, 7)


def test_bad_character():
    p = only("name: lab\ncards: \x07\n")
    assert (p.line, p.column, p.field) == (2, 8, "(document)")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a list\n", "just text\n"])
def test_not_a_mapping(text):
    p = only(text)
    assert (p.line, p.field) == (1, "(document)")
    assert "mapping" in p.message


def test_missing_name():
    p = only(MINIMAL.replace("name: lab\n", "platform: asr5500\n"))
    assert (p.line, p.column, p.field) == (1, 1, "name")
    assert "required" in p.message


@pytest.mark.parametrize("name", ["a b", "-lead", "x" * 64, "lab\n", ""])
def test_bad_name(name):
    p = only(MINIMAL.replace("name: lab", f"name: {json.dumps(name)}"))
    assert (p.line, p.column, p.field) == (1, 7, "name")


def test_missing_startup_config_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(MINIMAL + "startup-config: nowhere.cfg\n")
    with pytest.raises(TopologyError) as info:
        load(path)
    [p] = info.value.problems
    assert (p.file, p.line, p.column, p.field) == (str(path), 5, 17, "startup-config")
    assert str(tmp_path / "nowhere.cfg") in p.message


def test_missing_topology_file(tmp_path):
    with pytest.raises(TopologyError) as info:
        load(tmp_path / "absent.yaml")
    [p] = info.value.problems
    assert p.file == str(tmp_path / "absent.yaml")
    assert "No such file" in p.message


@pytest.mark.parametrize(
    "timers, column, field",
    [
        ("{heartbeat-interval-ms: 5}", 33, "timers.heartbeat-interval-ms"),
        ("{heartbeat-interval-ms: 10001}", 33, "timers.heartbeat-interval-ms"),
        ("{heartbeat-liveness: 0}", 30, "timers.heartbeat-liveness"),
        ("{heartbeat-liveness: fast}", 30, "timers.heartbeat-liveness"),
        ("{heartbeat-liveness: true}", 30, "timers.heartbeat-liveness"),
        ("{heartbeat-interval: 100}", 10, "timers.heartbeat-interval"),
        ("100", 9, "timers"),
    ],
)
def test_bad_timers(timers, column, field):
    p = only(MINIMAL + f"timers: {timers}\n")
    assert (p.line, p.column, p.field) == (5, column, field)


def test_bad_platform_and_transport():
    found = problems(MINIMAL + "platform: asr1000\ntransport: udp\n")
    assert [(p.line, p.field) for p in found] == [(5, "platform"), (6, "transport")]


def test_all_problems_are_reported_in_line_order():
    found = problems(
        """\
        name: "bad name"
        platfrom: asr5500
        timers:
          heartbeat-liveness: 0
        cards:
          5: {type: mio, role: active}
          7: {type: mio, role: standby}
          2: {type: dpc, role: primary}
          2: {type: dpc}
        startup-config: missing.cfg
        """,
        base_dir="/nonexistent",
    )
    assert [(p.line, p.field) for p in found] == [
        (1, "name"),
        (2, "platfrom"),
        (4, "timers.heartbeat-liveness"),
        (7, "cards.7.type"),
        (8, "cards.2.role"),
        (9, "cards.2"),
        (10, "startup-config"),
    ]


# --- schema ---------------------------------------------------------------------------------


def test_schema_copies_are_identical():
    assert (TOPOLOGIES / "schema.json").read_bytes() == SCHEMA_PATH.read_bytes()


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def schema_errors(doc: dict) -> list:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    return list(validator.iter_errors(doc))


def test_schema_alone_accepts_a_valid_topology_and_rejects_unknown_keys():
    doc = {"name": "x", "cards": {"5": {"type": "mio", "role": "active"}, "1": {"type": "dpc"}}}
    assert schema_errors(doc) == []
    assert schema_errors({**doc, "colour": "red"})
    doc["cards"]["1"]["colour"] = "red"
    assert schema_errors(doc)
    assert schema_errors({**doc, "timers": {"beat": 1}})


def test_schema_alone_rejects_a_wrong_slot_type_pair():
    doc = {"name": "x", "cards": {"5": {"type": "dpc"}}}
    assert [list(e.absolute_path) for e in schema_errors(doc)] == [["cards", "5", "type"]]
    doc = {"name": "x", "platform": "asr9000", "cards": {"8": {"type": "mio", "role": "active"}}}
    assert schema_errors(doc)


@pytest.mark.parametrize("platform", ["asr5500", "asr9000"])
def test_schema_slots_match_the_platform_table(platform):
    types_ = ("mio", "dpc", "rsp", "vsm")
    for slot in range(-1, 12):
        for card_type in types_:
            doc = {"name": "x", "platform": platform, "cards": {str(slot): {"type": card_type}}}
            doc["cards"][str(slot)]["role"] = "active"
            fits = slot in topology.PLATFORMS[platform].get(card_type, ())
            assert (schema_errors(doc) == []) == fits, (slot, card_type)


# --- round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "asr5500", "asr9000"])
def test_to_dict_from_dict_round_trip(name):
    topo = load(TOPOLOGIES / f"{name}.yaml")
    d = json.loads(json.dumps(topo.to_dict()))  # JSON-able, as handed to child processes
    again = Topology.from_dict(d)
    assert again == topo
    assert again.to_dict() == topo.to_dict()
    assert hash(again) == hash(topo)


def test_round_trip_keeps_lab_read_only():
    topo = loads(MINIMAL + "lab:\n  enodebs: {count: 3, names: [a, b]}\n")
    again = Topology.from_dict(json.loads(json.dumps(topo.to_dict())))
    assert again.lab == topo.lab
    assert isinstance(again.lab, types.MappingProxyType)
    assert again.to_dict()["lab"] == {"enodebs": {"count": 3, "names": ["a", "b"]}}


# --- robustness -----------------------------------------------------------------------------


def loads_or_topology_error(text: str) -> None:
    try:
        topo = loads(text, base_dir="/nonexistent")
    except TopologyError as exc:
        assert exc.problems
        assert all(p.line >= 1 and p.column >= 1 for p in exc.problems)
        return
    # anything accepted is a sound chassis
    assert sum(c.is_management and c.role == "active" for c in topo.management_cards) == 1
    assert any(c.role == "active" for c in topo.packet_cards)
    json.dumps(topo.to_dict())


ROBUST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.sampled_from(
    ["name", "platform", "transport", "timers", "cards", "startup-config", "lab", "type", "role"]
    + ["heartbeat-interval-ms", "heartbeat-liveness"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-2, 12)
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["asr5500", "asr9000", "mio", "dpc", "rsp", "vsm", "active", "standby"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(KEYS | st.integers(-1, 12) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
CARD = st.fixed_dictionaries(
    {"type": st.sampled_from(["mio", "dpc", "rsp", "vsm"])},
    optional={"role": st.sampled_from(["active", "standby"])},
)
PLAUSIBLE = st.fixed_dictionaries(
    {"name": st.sampled_from(["lab", "x"]), "cards": st.dictionaries(st.integers(0, 10), CARD)},
    optional={
        "platform": st.sampled_from(["asr5500", "asr9000"]),
        "timers": st.fixed_dictionaries({}, optional={"heartbeat-liveness": st.integers(0, 5)}),
    },
)


# Plain st.text() rarely forms YAML; these pieces reach the scanner, tags, anchors and keys.
YAMLISH = st.lists(
    st.sampled_from(list("abc:-[]{},&*!?|>'\"#%@ \n\t12~\ufeff\x07"))
    | st.sampled_from(
        ["name: ", "cards:\n", "  5: ", "{type: mio}", "!!int ", "<<: ", "*a", "&a "]
    ),
    max_size=30,
).map("".join)


@ROBUST
@given(st.text() | YAMLISH)
def test_any_text_loads_or_raises_topology_error(text):
    loads_or_topology_error(text)


@ROBUST
@given(st.dictionaries(KEYS | st.text(max_size=6), VALUES, max_size=8))
def test_any_yaml_mapping_loads_or_raises_topology_error(doc):
    loads_or_topology_error(yaml.safe_dump(doc, sort_keys=False))


@ROBUST
@given(PLAUSIBLE)
def test_plausible_topologies_load_or_raise_topology_error(doc):
    loads_or_topology_error(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [*a]\n",
        "name: &n {x: [*n]}\n",
        "a: " + "[" * 5000,
        "a: !!int abc\nb: !!float x\nc: !!bool maybe\nd: !foo {}\n",
        "a: !!int\nb: !!float ''\nc: !!bool\n",
        "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
            for p, n in zip("abcdef", "bcdefg", strict=True)
        ),
        "cards: {[1]: {type: mio}}\n",
        "<<: {name: x}\n",
        "name: x\ncards: {1: {type: [dpc]}}\n",
        "\ufeffname: x\n",
        "--- a\n--- b\n",
    ],
)
def test_hostile_yaml_is_a_topology_error(text):
    with pytest.raises(TopologyError):
        loads(text)
