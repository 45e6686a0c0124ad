"""Load and validate a chassis topology (YAML) into frozen dataclasses.

The JSON Schema (topology.schema.json) checks shape, slots and card types; the code adds what
a schema cannot say well (card counts, startup-config files) and points every problem at
file:line:column and the field path, e.g. ``cards.7.type``.
"""

from __future__ import annotations

import difflib
import json
import os
import pathlib
import re
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import jsonschema
import yaml

from chassis.lab import fleet_settings

SCHEMA = json.loads(pathlib.Path(__file__).with_name("topology.schema.json").read_text("utf-8"))
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
# Kept next to the schema's slot patterns (a test checks they agree); used for messages and roles.
PLATFORMS = {
    "asr5500": {"mio": (5, 6), "dpc": (1, 2, 3, 4, 7, 8, 9, 10)},
    "asr9000": {"rsp": (8, 9), "vsm": (0, 1, 2, 3, 4, 5, 6, 7)},
}
MANAGEMENT_TYPES = ("mio", "rsp")
_TAG = "tag:yaml.org,2002:"
_MAX_NODES = 100_000  # aliases can expand exponentially ("billion laughs")


@dataclass(frozen=True)
class Card:
    slot: int
    type: str
    role: str

    @property
    def is_management(self) -> bool:
        return self.type in MANAGEMENT_TYPES

    @property
    def label(self) -> str:
        return self.type.upper()


@dataclass(frozen=True)
class Timers:
    heartbeat_interval_ms: int = 100
    heartbeat_liveness: int = 3


@dataclass(frozen=True)
class Topology:
    name: str
    platform: str
    transport: str
    timers: Timers
    cards: tuple[Card, ...]
    startup_config: str
    startup_config_path: str | None
    lab: Mapping = field(hash=False)  # read-only; MappingProxyType is unhashable
    source: str

    def card(self, slot: int) -> Card:
        for card in self.cards:
            if card.slot == slot:
                return card
        raise KeyError(slot)

    @property
    def management_cards(self) -> tuple[Card, ...]:
        return tuple(c for c in self.cards if c.is_management)

    @property
    def packet_cards(self) -> tuple[Card, ...]:
        return tuple(c for c in self.cards if not c.is_management)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "platform": self.platform,
            "transport": self.transport,
            "timers": asdict(self.timers),
            "cards": [asdict(c) for c in self.cards],
            "startup_config": self.startup_config,
            "startup_config_path": self.startup_config_path,
            "lab": _thaw(self.lab),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d) -> Topology:
        return cls(
            name=str(d["name"]),
            platform=str(d["platform"]),
            transport=str(d["transport"]),
            timers=Timers(**d["timers"]),
            cards=tuple(sorted((Card(**c) for c in d["cards"]), key=lambda c: c.slot)),
            startup_config=str(d.get("startup_config", "")),
            startup_config_path=d.get("startup_config_path"),
            lab=_freeze(d.get("lab", {})),
            source=str(d.get("source", "<string>")),
        )


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}"


class TopologyError(Exception):
    def __init__(self, problems: list[Problem]):
        # set(): jsonschema may report one cause twice (e.g. enum and const on a card type)
        self.problems = sorted(set(problems), key=lambda p: (p.line, p.column, p.field, p.message))
        super().__init__("\n".join(map(str, self.problems)))


def default_path() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[1] / "topologies" / "default.yaml"


def load(path) -> Topology:
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8
        raise TopologyError(
            [Problem(str(path), 1, 1, "(document)", f"cannot read: {exc}")]
        ) from None
    return loads(text, source=str(path), base_dir=path.parent)


def loads(text: str, source: str = "<string>", base_dir=None) -> Topology:
    r = _Reader(source)
    data = r.read(text)
    if data is None:  # not YAML, or not a mapping: nothing more to check
        raise TopologyError(r.problems)
    for err in _VALIDATOR.iter_errors(data):
        r.schema_problem(err, data)
    if not any(p.field.startswith("cards") for p in r.problems):  # counts need sound cards
        r.check_roles(data)
    boot, boot_path = r.startup_config(data, pathlib.Path(base_dir or "."))
    r.check_fleet(data, boot)
    r.check_revocation_peers(data)
    if r.problems:
        raise TopologyError(r.problems)
    timers = {k.replace("-", "_"): int(v) for k, v in data.get("timers", {}).items()}
    return Topology(
        name=data["name"],
        platform=data.get("platform", "asr5500"),
        transport=data.get("transport", "ipc"),
        timers=Timers(**timers),
        cards=_cards(data),
        startup_config=boot,
        startup_config_path=boot_path,
        lab=_freeze(data.get("lab", {})),
        source=source,
    )


def _cards(data) -> tuple[Card, ...]:
    cards = (Card(int(s), c["type"], c.get("role", "active")) for s, c in data["cards"].items())
    return tuple(sorted(cards, key=lambda c: c.slot))


class _Reader:
    """Turns YAML text into plain JSON-like data, remembering where each field came from."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []
        self.marks: dict[tuple, yaml.Mark] = {}  # path -> value position
        self.key_marks: dict[tuple, yaml.Mark] = {}  # path -> key position
        self.budget = _MAX_NODES
        self.open: set[int] = set()  # ids of collections being converted, to catch cycles

    def problem(self, mark, path, message: str) -> None:
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        name = ".".join(map(str, path)) or "(document)"
        self.problems.append(Problem(self.source, line, col, name, message))

    def read(self, text: str):
        loader = None
        try:
            loader = yaml.SafeLoader(text)  # checks for unprintable characters already
            node = loader.get_single_node()
            if not isinstance(node, yaml.MappingNode):
                self.problem(node and node.start_mark, (), "expected a mapping of topology fields")
                return None
            return self.convert(loader, node, ())
        except yaml.MarkedYAMLError as exc:
            self.problem(
                exc.problem_mark or exc.context_mark, (), f"YAML: {exc.problem or exc.context}"
            )
        except yaml.reader.ReaderError as exc:  # bad character: has a position, not a mark
            line = text.count("\n", 0, exc.position)
            col = exc.position - (text.rfind("\n", 0, exc.position) + 1)
            reason = f"YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
            self.problem(yaml.Mark("", 0, line, col, None, None), (), reason)
        except RecursionError:
            self.problem(None, (), "YAML: nested too deeply")
        except _TooBig:
            self.problem(None, (), f"YAML: aliases expand to more than {_MAX_NODES} values")
        finally:
            if loader:
                loader.dispose()
        return None

    def convert(self, loader, node, path):
        self.budget -= 1
        if self.budget < 0:
            raise _TooBig
        self.marks[path] = node.start_mark
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(loader, node, path)
        if id(node) in self.open:  # an alias inside its own anchor: &a [*a]
            self.problem(node.start_mark, path, "recursive alias")
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(loader, n, path + (i,)) for i, n in enumerate(node.value)]
            return self.mapping(loader, node, path)
        finally:
            self.open.discard(id(node))

    def mapping(self, loader, node, path) -> dict:
        result = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode) or knode.tag == _TAG + "merge":
                self.problem(knode.start_mark, path, "keys must be plain scalars (no '<<' merges)")
                continue
            key = knode.value
            if knode.tag == _TAG + "int":
                key = str(self.scalar(loader, knode, path + (key,)))
            elif path == ("cards",):
                self.problem(knode.start_mark, path + (key,), "slot must be an integer")
                continue
            if key in result:
                first = self.key_marks[path + (key,)].line + 1
                self.problem(
                    knode.start_mark, path + (key,), f"duplicate key (first on line {first})"
                )
                continue
            self.key_marks[path + (key,)] = knode.start_mark
            result[key] = self.convert(loader, vnode, path + (key,))
        return result

    def scalar(self, loader, node, path):
        # JSON types only; timestamps, binary and custom tags stay as the text written.
        if node.tag not in (_TAG + "null", _TAG + "bool", _TAG + "int", _TAG + "float"):
            return node.value
        try:
            return loader.construct_object(node)
        except (ValueError, LookupError, yaml.YAMLError):  # e.g. "!!int abc", "!!float"
            self.problem(node.start_mark, path, f"not a valid {node.tag.rsplit(':', 1)[-1]}")
            return node.value

    def schema_problem(self, err: jsonschema.ValidationError, data) -> None:
        path, kind, inst = tuple(err.absolute_path), err.validator, err.instance
        platform = data.get("platform", "asr5500")
        platform = platform if isinstance(platform, str) else "?"
        mark = self.marks.get(path)
        if kind == "additionalProperties":
            known = list(err.schema.get("properties", {}))
            patterns = err.schema.get("patternProperties", {})
            for key in inst:
                if key in known or any(re.search(p, key) for p in patterns):
                    continue
                if path == ("cards",):
                    msg = f"no slot {key} on {platform} (slots: {_slots(platform)})"
                else:
                    close = difflib.get_close_matches(key, known, 1)
                    msg = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
                self.problem(self.key_marks.get(path + (key,)), path + (key,), msg)
        elif kind == "required":  # the error names no key; repeats are deduplicated later
            for key in err.validator_value:
                if not isinstance(inst, dict) or key not in inst:
                    self.problem(mark, path + (key,), "required field is missing")
        elif (
            len(path) == 3
            and path[0] == "cards"
            and path[2] == "type"
            and kind in ("enum", "const")
        ):
            self.problem(mark, path, _type_message(platform, path[1], inst))
        elif kind == "enum":
            allowed = ", ".join(map(str, err.validator_value))
            self.problem(mark, path, f"must be one of {allowed}, not {inst!r}")
        elif kind == "type":
            self.problem(mark, path, f"expected {err.validator_value}, got {_json_type(inst)}")
        elif kind == "pattern":
            self.problem(mark, path, f"{inst!r} is not valid: {err.schema.get('description')}")
        else:
            self.problem(mark, path, err.message)

    def check_roles(self, data) -> None:
        cards = _cards(data)
        mgmt = [c for c in cards if c.is_management]
        label = mgmt[0].label if mgmt else "management"
        for role in ("active", "standby"):
            same = [c for c in mgmt if c.role == role]
            for extra in same[1:]:
                at = ("cards", str(extra.slot), "role")
                self.problem(
                    self.marks.get(at), at, f"{label} {same[0].slot} is already {role}; one allowed"
                )
        if not any(c.role == "active" for c in mgmt):
            self.problem(self.marks.get(("cards",)), ("cards",), "no active management card")
        if not any(c.role == "active" for c in cards if not c.is_management):
            self.problem(self.marks.get(("cards",)), ("cards",), "no active packet card")

    def check_fleet(self, data, boot: str) -> None:
        lab = data.get("lab")
        if not isinstance(lab, dict) or "fleet" not in lab:
            return
        known = {p.field for p in self.problems}  # what the schema said already
        for sub, message in fleet_settings.problems(lab["fleet"], boot):
            at = ("lab", "fleet", *sub)
            name = ".".join(map(str, at))
            if any(name == k or name.startswith(k + ".") for k in known):
                continue
            # a problem of the whole section points at its key, others at their value
            mark = (self.marks.get(at) if sub else None) or self.key_marks.get(("lab", "fleet"))
            self.problem(mark, at, message)

    def check_revocation_peers(self, data) -> None:
        """The OCSP responder and the CRL publisher answer for the lab CA: no CA, nothing to
        answer for."""
        lab = data.get("lab")
        if not isinstance(lab, dict) or "ca" in lab:
            return
        for peer, what in (("ocsp", "the OCSP responder"), ("crl", "the CRL publisher")):
            if peer in lab:
                at = ("lab", peer)
                self.problem(self.key_marks.get(at), at,
                             f"{what} answers for the lab CA: add lab.ca too")  # fmt: skip

    def startup_config(self, data, base_dir: pathlib.Path) -> tuple[str, str | None]:
        value = data.get("startup-config")
        if not isinstance(value, str) or not value:
            return "", None
        if "\n" in value:  # multi-line: the configuration itself, like containerlab
            return value, None
        path = os.path.abspath(base_dir / value)  # pure string work: cannot raise
        try:
            return pathlib.Path(path).read_text(encoding="utf-8"), path
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or NUL in the path
            reason = getattr(exc, "strerror", None) or exc
            at = ("startup-config",)
            self.problem(self.marks.get(at), at, f"cannot read {path}: {reason}")
            return "", None


class _TooBig(Exception):
    pass


def _slots(platform: str) -> str:
    return ", ".join(f"{t} {'/'.join(map(str, s))}" for t, s in PLATFORMS[platform].items())


def _type_message(platform: str, slot: str, card_type) -> str:
    slots = PLATFORMS.get(platform, {})
    wanted = next((t for t, s in slots.items() if slot in map(str, s)), None)
    owner = next((p for p, t in PLATFORMS.items() if card_type in tuple(t)), None)
    if owner is None:
        msg = f"unknown card type {card_type!r}"
    elif owner != platform:
        msg = f"{card_type} is an {owner} card, not {platform}"
    else:
        msg = f"{card_type} does not fit slot {slot}"
    return msg + (f"; slot {slot} on {platform} takes {wanted}" if wanted else "")


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "integer" if isinstance(value, int) else "number")


def _freeze(value):
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value
