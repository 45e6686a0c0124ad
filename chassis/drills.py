"""Drills: seeded fault-injection scenarios against a running chassis, with a timeline report.

A drill is a YAML file (topologies/drills/*.yaml):

    name: dpc-kill-no-standby
    description: A DPC dies; its tunnels are lost and counted, the fleet brings them back.
    seed: 7                       # replays the fault schedule (targets, times, rates)
    topology: fleet-topology.yaml # optional: the chassis to bring up (relative to this file)
    metrics: [detection, recovery, tunnels_lost]
    steps:
      - wait_for: {tunnels: {at_least: 20}}
        timeout: 60
      - inject: {fault: kill, target: random-card}
        at: 1.0                   # seconds after the previous step ends ...
        jitter: 0.5               # ... plus up to this much more, drawn from the seed
      - expect: {card: {slot: $target, state: failed}}
        within: 1
      - run: show card table      # one command, or a list run in one CLI session
      - sleep: 2

Steps: ``wait_for`` CONDITION (``timeout``, default 60 s; the drill stops when it never
holds), ``inject`` FAULT (the fault dict of chassis/faults.py, plus ``revoke`` of an eNodeB's
certificate), ``run`` COMMAND(S) (Chassis.exec, the shell's command path; ``${lab.X.Y}`` and
``$target`` are substituted), ``expect`` CONDITION (``within`` seconds, default 0: now;
``hold`` seconds: it must then keep holding that long; a failed expectation is reported and
the drill goes on), ``sleep`` SECONDS (``jitter``). Every step takes an optional ``label``.
In conditions and commands, ``$target`` is the card (slot) of the latest fault that named
one, or the latest revoked eNodeB; ``$target_tunnels`` the tunnels that card held and
``$baseline`` the eNodeBs up just before that fault.

Injected through Chassis.fault (chassis/faults.py) when the client has it; without it only
``warp`` and ``lab`` run (Chassis.warp, Chassis.lab_set) and any other fault stops the drill,
reported as blocked. ``warp`` also takes ``seconds`` and ``before_expiry: {certificate, days}``
(the runner reads notAfter and the supervisor's wall clock); ``revoke`` revokes the eNodeB's
certificates in the lab CA's database (Chassis.lab_revoke: OCSP says revoked from then on,
the CRL publisher publishes at once).

The seed drives everything random in the schedule: ``target: random-card`` (one of the
topology's active packet cards), ``enodeb: random``, ``{random: [LOW, HIGH]}`` for any
number (integers give integers), ``{choice: [...]}``, the ``at``/``jitter`` delays, the
``seed`` handed to IPC/UDP impairments. ``plan()`` computes it before anything runs, so
the same seed gives the same fault schedule (``chassis drill --schedule``). Key material
(IKE nonces, DH and certificate keys) stays random.

Conditions (a mapping; every key must hold) read what the chassis reports: the fleet's
status and the backplane's slots (``chassis status``), ``show card table``, ``show
certificate``, ``show cmp history``, ``show crypto ikev2-ikesa security-associations``,
the cards' logs, and the SNMP traps the runner receives (it adds itself as an ``snmp
target`` when a condition or metric asks for traps). See CONDITIONS below.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import glob
import json
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chassis.logread import read_new
from chassis.topology import Problem

KINDS = ("wait_for", "inject", "run", "expect", "sleep")
STEP_OPTIONS = {
    "wait_for": ("timeout", "label"),
    "inject": ("at", "jitter", "label"),
    "run": ("label", "allow_error"),
    "expect": ("within", "hold", "label"),
    "sleep": ("jitter", "label"),
}
TOP_KEYS = ("name", "description", "seed", "topology", "metrics", "steps")
FAULT_ACTIONS = ("kill", "hang", "resume", "ipc", "udp", "lab", "warp", "clear")
DRILL_ACTIONS = ("revoke",)  # done by the runner through the lab CA (chassis lab revoke)
RECOVERY_ACTIONS = ("resume", "clear")  # plotted as recoveries, not faults
IPC_MODES = ("drop", "delay", "duplicate", "partition", "heal")
UDP_MODES = ("drop", "delay", "heal")
METRICS = {
    "detection": "detection time: fault -> the supervisor declares the card failed",
    "recovery": "recovery time: fault -> tunnels back to the pre-fault count",
    "tunnels_lost": "tunnels lost (up at the eNodeB, then gone), as the fleet counts them",
    "cmp_lost": "CMP transactions started and neither finished nor outstanding",
    "revoked_accepted": "authentications wrongly accepted: revoked eNodeBs that got a tunnel",
    "renewal": "fault -> every card in service holds the renewed certificate",
    "traps": "SNMP traps received, by name",
    "takeover": "takeover time: a standby card took a card's SAs over, the management card's "
    "record (the SAs active at the standby, the NPU steering to it)",
    "datagrams_lost": "datagrams of established SAs the NPU could not hand to a card (no card "
    "in service owns their SPI, or the card's path is gone or full); new SAs refused, "
    "keepalives and a udp fault's own drops are not counted",
}
CARD_STATES = ("offline", "booting", "active", "standby", "unreachable", "failed")
IN_SERVICE = ("active", "standby")
# states in which a card still holds its tunnels (unreachable: cut off from the supervisor,
# alive on the backplane, serving what it has)
HOLDING = ("active", "standby", "unreachable")
TRAPS = {"cert-expiry": "1.3.6.1.3.8164.1.1"}  # supervisor/snmp.py TRAP_EXPIRY
SEED_NOTE = (
    "The seed replays the fault schedule: targets, delays and jitter, drop rates, the "
    "impairments' own seeds. Key material (IKE nonces, Diffie-Hellman and certificate keys) "
    "stays random, so no two runs put the same bytes on the wire."
)
SAMPLE_S = 0.1  # the timeline's sampling period
CERT_SAMPLE_S = 0.1  # `show certificate` costs ~1 ms: every sample
TRAP_TARGET = "drill-traps"
_VAR = re.compile(r"^\$(target|baseline|target_tunnels)$")
# supervisor/recovery.py: `slot N: WHY: card M took over K IKE SAs (C children) in X ms`
_TAKEOVER = re.compile(r"slot (\d+): (\w+): card (\d+) took over (\d+) IKE SAs "
                       r"\((\d+) children\) in ([\d.]+) ms")  # fmt: skip


class DrillError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line, p.column, p.field))
        super().__init__("\n".join(map(str, self.problems)))


# ------------------------------------------------------------------ the file
@dataclass(frozen=True)
class Step:
    index: int  # 0-based
    kind: str
    body: Any  # condition / fault dict / command list / seconds
    line: int
    options: dict = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        return self.options.get("label") or describe_step(self)

    @property
    def number(self) -> int:
        return self.index + 1


@dataclass(frozen=True)
class Drill:
    name: str
    seed: int
    steps: tuple[Step, ...]
    metrics: tuple[str, ...]
    description: str = ""
    topology: str | None = None  # absolute path
    source: str = "<string>"


def load(path) -> Drill:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise DrillError([Problem(str(path), 1, 1, "(document)", f"cannot read: {exc}")]) from None
    return loads(text, source=str(path), base_dir=path.parent)


def loads(text: str, source: str = "<string>", base_dir=None) -> Drill:
    r = _Reader(source)
    data = r.read(text)
    if data is None:
        raise DrillError(r.problems)
    for key in data:
        if key not in TOP_KEYS:
            r.problem((key,), f"unknown key (one of {', '.join(TOP_KEYS)})", key=True)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        r.problem(("name",), "required: the drill's name (a string)")
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        r.problem(("seed",), "required: an integer that replays the fault schedule")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        r.problem(("description",), "expected a string")
    topo = data.get("topology")
    topo_path = None
    if topo is not None:
        if not isinstance(topo, str) or not topo:
            r.problem(("topology",), "expected a path to a topology file")
        else:
            topo_path = os.path.abspath(Path(base_dir or ".") / topo)
            if not os.path.isfile(topo_path):
                r.problem(("topology",), f"no such file: {topo_path}")
    metrics = data.get("metrics", list(METRICS))
    if not isinstance(metrics, list):
        r.problem(("metrics",), f"expected a list of: {', '.join(METRICS)}")
        metrics = []
    for i, m in enumerate(metrics):
        if m not in METRICS:
            r.problem(("metrics", i), f"unknown metric {m!r} (one of {', '.join(METRICS)})")
    steps_data = data.get("steps")
    steps = []
    if not isinstance(steps_data, list) or not steps_data:
        r.problem(("steps",), "required: a list of steps (wait_for, inject, run, expect, sleep)")
    else:
        for i, raw in enumerate(steps_data):
            step = r.step(i, raw)
            if step is not None:
                steps.append(step)
    if r.problems:
        raise DrillError(r.problems)
    return Drill(
        name=name.strip(),
        seed=seed,
        steps=tuple(steps),
        metrics=tuple(metrics),
        description=desc.strip(),
        topology=topo_path,
        source=source,
    )


class _Reader:
    """YAML -> plain data, remembering the position of every value and key (file:line)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.marks: dict[tuple, yaml.Mark] = {}
        self.key_marks: dict[tuple, yaml.Mark] = {}

    def problem(self, path: tuple, message: str, key: bool = False) -> None:
        mark = (self.key_marks if key else self.marks).get(path)
        probe = path
        while mark is None and probe:  # a missing field: point at its parent
            probe = probe[:-1]
            mark = self.marks.get(probe)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        name = ".".join(map(str, path)) or "(document)"
        self.problems.append(Problem(self.source, line, col, name, message))

    def read(self, text: str):
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            self.marks[()] = mark
            self.problem((), f"YAML: {exc.problem or exc.context}")
            return None
        except yaml.YAMLError as exc:
            self.problem((), f"YAML: {exc}")
            return None
        if not isinstance(node, yaml.MappingNode):
            if node is not None:
                self.marks[()] = node.start_mark
            self.problem((), "expected a mapping of drill fields (name, seed, steps, ...)")
            return None
        try:
            return self.convert(node, ())
        except RecursionError:
            self.problem((), "YAML: nested too deeply")
            return None

    def convert(self, node, path):
        self.marks[path] = node.start_mark
        if isinstance(node, yaml.ScalarNode):
            try:
                return yaml.SafeLoader("").construct_object(node)
            except (ValueError, yaml.YAMLError):
                self.problem(path, f"not a valid {node.tag.rsplit(':', 1)[-1]}")
                return node.value
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(n, path + (i,)) for i, n in enumerate(node.value)]
        out = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                self.marks[path + ("?",)] = knode.start_mark
                self.problem(path + ("?",), "keys must be plain scalars")
                continue
            key = knode.value
            if key in out:
                first = self.key_marks[path + (key,)].line + 1
                self.key_marks[path + (key, "dup")] = knode.start_mark
                self.problem(path + (key, "dup"), f"duplicate key (first on line {first})", True)
                continue
            self.key_marks[path + (key,)] = knode.start_mark
            out[key] = self.convert(vnode, path + (key,))
        return out

    # --- steps ---------------------------------------------------------------------------
    def step(self, i: int, raw) -> Step | None:
        at = ("steps", i)
        if not isinstance(raw, dict):
            self.problem(at, f"a step is a mapping with one of: {', '.join(KINDS)}")
            return None
        kinds = [k for k in raw if k in KINDS]
        if len(kinds) != 1:
            what = "none" if not kinds else ", ".join(kinds)
            self.problem(at, f"a step has exactly one of {', '.join(KINDS)} (found {what})")
            return None
        kind = kinds[0]
        allowed = STEP_OPTIONS[kind]
        for key in raw:
            if key != kind and key not in allowed:
                hint = f"{kind} takes {', '.join(allowed)}"
                self.problem(at + (key,), f"unknown key for a {kind} step ({hint})", key=True)
        options = {k: raw[k] for k in allowed if k in raw}
        for key in ("timeout", "within", "hold", "at", "jitter"):
            if key in options:
                v = options[key]
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    self.problem(at + (key,), "expected a number of seconds >= 0")
        if "label" in options and not isinstance(options["label"], str):
            self.problem(at + ("label",), "expected a string")
        if "allow_error" in options and not isinstance(options["allow_error"], bool):
            self.problem(at + ("allow_error",), "expected true or false")
        body = raw[kind]
        where = at + (kind,)
        if kind in ("wait_for", "expect"):
            check_condition(body, where, self.problem)
        elif kind == "inject":
            check_fault(body, where, self.problem)
        elif kind == "run":
            if isinstance(body, str):
                body = [body]
            if (
                not isinstance(body, list)
                or not body
                or not all(isinstance(c, str) and c.strip() for c in body)
            ):
                self.problem(where, "expected a CLI command or a list of them")
        elif kind == "sleep":
            if isinstance(body, bool) or not isinstance(body, int | float) or body < 0:
                self.problem(where, "expected a number of seconds >= 0")
        mark = self.key_marks.get(where) or self.marks.get(at)
        return Step(i, kind, body, mark.line + 1 if mark else 1, options)


# ------------------------------------------------------------------ faults in a drill
def _is_random(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("random", "choice")


def _check_random(v, path, problem) -> None:
    ((kind, arg),) = v.items()
    if kind == "random":
        if (
            not isinstance(arg, list)
            or len(arg) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in arg)
            or arg[0] > arg[1]
        ):
            problem(path + ("random",), "expected [LOW, HIGH], two numbers with LOW <= HIGH")
    elif not isinstance(arg, list) or not arg:
        problem(path + ("choice",), "expected a non-empty list to choose from")


def check_fault(body, path, problem) -> None:
    """The shape of a fault (chassis/faults.py validates it again when it is injected)."""
    if not isinstance(body, dict):
        problem(path, "expected a fault mapping, e.g. {fault: kill, target: slot-2}")
        return
    action = body.get("fault")
    known = FAULT_ACTIONS + DRILL_ACTIONS
    if action not in known:
        problem(path + ("fault",), f"one of {', '.join(known)}, not {action!r}")
        return
    for key, value in body.items():
        if _is_random(value):
            _check_random(value, path + (key,), problem)
    target = body.get("target")
    if action in ("kill", "hang", "resume", "ipc"):
        if not isinstance(target, str) and not _is_random(target):
            problem(path + ("target",), "expected slot-N, random-card, supervisor or $target")
        elif isinstance(target, str) and not re.fullmatch(
            r"slot-\d+|random-card|supervisor|\$target|lab:(ca|ocsp|crl|fleet)", target
        ):
            problem(path + ("target",), f"{target!r}: expected slot-N, random-card, supervisor, "
                    "lab:PEER or $target")  # fmt: skip
    if action == "ipc" and body.get("mode") not in IPC_MODES:
        problem(path + ("mode",), f"one of {', '.join(IPC_MODES)}")
    if action == "udp" and body.get("mode") not in UDP_MODES:
        problem(path + ("mode",), f"one of {', '.join(UDP_MODES)}")
    if action == "lab":
        if not isinstance(target, str) or not target.startswith("lab:"):
            problem(path + ("target",), "expected lab:ca, lab:ocsp, lab:crl or lab:fleet")
        if not isinstance(body.get("set"), dict) or not body.get("set"):
            problem(path + ("set",), "expected the behaviours to set, e.g. {down: true}")
    if action == "warp":
        expiry = body.get("before_expiry")
        if expiry is not None:
            if (
                not isinstance(expiry, dict)
                or not isinstance(expiry.get("certificate"), str)
                or not isinstance(expiry.get("days"), int | float)
            ):
                problem(path + ("before_expiry",), "expected {certificate: NAME, days: N}")
        elif not any(isinstance(body.get(k), int | float) or _is_random(body.get(k))
                     for k in ("days", "hours", "seconds")):  # fmt: skip
            problem(path, "a warp needs days, hours, seconds or before_expiry")
    if action == "revoke":
        enb = body.get("enodeb")
        if not (enb == "random" or enb == "$target" or _is_random(enb)
                or (isinstance(enb, int) and not isinstance(enb, bool) and enb >= 1)):  # fmt: skip
            problem(path + ("enodeb",), "expected the eNodeB's number (1 = enb0001), random, "
                    "{random: [LOW, HIGH]} or $target")  # fmt: skip
        reason = body.get("reason", "keyCompromise")
        if not isinstance(reason, str):
            problem(path + ("reason",), "expected a CRLReason name, e.g. keyCompromise")


@dataclass(frozen=True)
class Planned:
    """One seeded decision of the schedule: a fault to inject, or a sleep."""

    step: int  # the step's number (1-based)
    kind: str  # inject | sleep
    delay: float  # seconds to wait first (inject: at + jitter; sleep: its length)
    fault: dict | None = None

    def describe(self) -> str:
        if self.kind == "sleep":
            return f"step {self.step}: sleep {self.delay:g} s"
        return f"step {self.step}: after {self.delay:.3f} s, {describe_fault(self.fault)}"

    def to_dict(self) -> dict:
        return {"step": self.step, "kind": self.kind, "delay_s": round(self.delay, 3),
                "fault": self.fault, "text": self.describe()}  # fmt: skip


def _draw(value, rng: random.Random):
    if not _is_random(value):
        return value
    ((kind, arg),) = value.items()
    if kind == "choice":
        return rng.choice(arg)
    low, high = arg
    if isinstance(low, int) and isinstance(high, int):
        return rng.randint(low, high)
    return round(rng.uniform(low, high), 3)


def plan(
    drill: Drill, cards: tuple[int, ...] = (), enodebs: int = 0, seed: int | None = None
) -> list[Planned]:
    """The fault schedule the seed gives (default: the drill's seed), computed before any
    fault runs: ``cards`` are the slots ``random-card`` picks from (the topology's active
    packet cards), ``enodebs`` the fleet's size (``enodeb: random``)."""
    rng = random.Random(drill.seed if seed is None else seed)
    out: list[Planned] = []
    target: str | None = None
    enodeb: int | None = None
    for step in drill.steps:
        if step.kind == "sleep":
            jitter = float(step.options.get("jitter") or 0)
            extra = rng.uniform(0, jitter) if jitter else 0.0
            out.append(Planned(step.number, "sleep", round(float(step.body) + extra, 3)))
            continue
        if step.kind != "inject":
            continue
        fault = {k: _draw(v, rng) for k, v in step.body.items()}
        if fault.get("target") == "random-card":
            if not cards:
                raise DrillError([Problem("<schedule>", step.line, 1, f"steps.{step.index}",
                                          "random-card: the topology has no active packet card")])  # fmt: skip
            fault["target"] = f"slot-{rng.choice(sorted(cards))}"
        if fault.get("target") == "$target":
            if target is None:
                raise DrillError([Problem("<schedule>", step.line, 1, f"steps.{step.index}",
                                          "$target: no earlier fault has a card target")])  # fmt: skip
            fault["target"] = target
        if fault["fault"] == "revoke":
            if fault.get("enodeb") == "random":
                if enodebs < 1:
                    raise DrillError([Problem("<schedule>", step.line, 1, f"steps.{step.index}",
                                              "enodeb: random needs a fleet (lab: fleet:)")])  # fmt: skip
                fault["enodeb"] = rng.randint(1, enodebs)
            elif fault.get("enodeb") == "$target":
                fault["enodeb"] = enodeb
            fault.setdefault("reason", "keyCompromise")
            enodeb = fault["enodeb"]
        if fault["fault"] in ("ipc", "udp") and fault.get("mode") in ("drop", "delay", "duplicate"):
            fault.setdefault("seed", rng.randrange(2**31))
        if isinstance(fault.get("target"), str) and fault["target"].startswith("slot-"):
            target = fault["target"]
        at = float(step.options.get("at") or 0)
        jitter = float(step.options.get("jitter") or 0)
        delay = at + (rng.uniform(0, jitter) if jitter else 0.0)
        out.append(Planned(step.number, "inject", round(delay, 3), fault))
    return out


def describe_fault(fault: dict) -> str:
    action, target = fault.get("fault"), fault.get("target")
    if action != "warp" or not {"seconds", "before_expiry"} & set(fault):
        try:  # the faults module's own wording, once it exists
            from chassis.faults import Fault

            if action in FAULT_ACTIONS:
                return Fault.from_dict(_fault_api_dict(fault)).describe()
        except Exception:  # noqa: BLE001 - not there yet, or not valid: our wording
            pass
    if action == "revoke":
        enb = fault.get("enodeb")
        who = f"enb{enb:04d}'s" if isinstance(enb, int) else f"eNodeB {json.dumps(enb)}'s"
        return f"revoke {who} certificate ({fault.get('reason', 'keyCompromise')})"
    if action == "warp":
        if "before_expiry" in fault:
            e = fault["before_expiry"]
            return f"warp the wall clock to {e['days']:g} days before {e['certificate']} expires"
        if any(_is_random(fault.get(k)) for k in ("days", "hours", "seconds")):
            return f"warp the wall clock ({json.dumps(fault)})"
        seconds = sum(float(fault.get(k) or 0) * m
                      for k, m in (("days", 86400), ("hours", 3600), ("seconds", 1)))  # fmt: skip
        amount = f"{seconds / 86400:.3f} days" if seconds >= 86400 else f"{seconds:g} s"
        return f"warp the wall clock by +{amount}"
    if action == "lab":
        settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in fault["set"].items())
        return f"{target}: {settings}"
    extra = {k: v for k, v in fault.items() if k not in ("fault", "target")}
    text = f"{action} {target}" if target else str(action)
    return text + (" " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def describe_step(step: Step) -> str:
    if step.kind == "inject":
        return describe_fault(step.body)
    if step.kind == "run":
        return "run " + "; ".join(step.body)
    if step.kind == "sleep":
        return f"sleep {step.body:g} s"
    return describe_condition(step.body)


def describe_condition(cond: dict) -> str:
    return ", ".join(f"{k} {json.dumps(v, separators=(', ', ': '))}" for k, v in cond.items())


def is_recovery(fault: dict) -> bool:
    """Faults that undo others (resume, heal, clear, a lab peer set back to normal)."""
    action = fault.get("fault")
    if action in RECOVERY_ACTIONS or fault.get("mode") == "heal":
        return True
    if action == "lab":
        values = list((fault.get("set") or {}).values())
        return bool(values) and all(v in (False, 0, None) for v in values)
    return False


def target_slot(fault: dict) -> int | None:
    target = fault.get("target")
    if isinstance(target, str) and target.startswith("slot-"):
        return int(target[5:])
    return None


# ------------------------------------------------------------------ conditions
COMPARE = ("at_least", "at_most", "equals")
CONDITIONS = {
    "tunnels": "tunnels up: {at_least|at_most|equals: N|$baseline|$target_tunnels, "
    "card: SLOT|$target, view: fleet|gateway|held} (fleet: the eNodeBs' count; gateway: the "
    "packet cards' IKE SAs, a card out of service counting 0; held: the SAs' checkpoints a "
    "standby card holds)",
    "children": "child SAs up at the eNodeBs: {at_least|at_most|equals: N}",
    "card": "a slot's state: {slot: N|$target, state: STATE or [STATES]}",
    "cli": "a CLI command's output: {command: ..., contains|not_contains|matches: ...}",
    "revoked_accepted": "authentications wrongly accepted so far: N or {at_most: N}",
    "trap": "SNMP traps received: {name: cert-expiry|OID, certificate: NAME, count|at_least: N}",
    "certificate": "{name: NAME, version_at_least: N, renewed: true, on_all_cards: true}",
    "cmp": "CMP transactions in `show cmp history` since the drill began: "
    "{type: ir|cr|kur|any, result: success|failure|any, at_least|at_most|equals: N}",
    "enodeb": "an eNodeB's tunnel at the gateway: {id: N|$target, tunnel: true|false}",
    "fleet": "fields of the fleet's status: {FIELD: N or {at_least|at_most|equals: N}}",
    "tunnels_lost": "tunnels lost since the drill began (fleet count): N or {at_most: N}",
    "tunnels_reestablished": "tunnels that came up again since the drill began (after a loss "
    "or a reconnect; fleet count): N or {at_least: N}",
    "detection_ms": "the latest fault's detection time: {at_most: MS}",
    "recovery_s": "the latest fault's recovery time: {at_most: S}",
    "log": "a line in the chassis's logs since the drill began: {file: GLOB, contains: TEXT}",
    "takeover": "a standby card took a card's SAs over since the drill began (the management "
    "card's record): {failed: SLOT|$target, by: SLOT, why: failure|migrate|halt, "
    "sas|children|took_ms: N or {at_least|at_most|equals: N}}",
    "fleet_change": "how much fleet counters grew since the latest inject or run step (the "
    "drill's start before any): a status field or one of its counts, e.g. attempts, "
    "established: {FIELD: N or {at_most: N}}",
}
TAKEOVER_WHY = ("failure", "migrate", "halt")


def _check_number(v, path, problem, what="a number") -> None:
    if isinstance(v, str) and _VAR.match(v):
        return
    if isinstance(v, bool) or not isinstance(v, int | float):
        problem(path, f"expected {what} (or $baseline, $target_tunnels)")


def _check_compare(arg, path, problem, plain_ok=True, extra=()) -> None:
    if plain_ok and not isinstance(arg, dict):
        _check_number(arg, path, problem)
        return
    if not isinstance(arg, dict):
        problem(path, f"expected a mapping with one of {', '.join(COMPARE)}")
        return
    if not any(k in arg for k in COMPARE):
        problem(path, f"expected one of {', '.join(COMPARE)}")
    for k, v in arg.items():
        if k in COMPARE:
            _check_number(v, path + (k,), problem)
        elif k not in extra:
            allowed = ", ".join(COMPARE + tuple(extra))
            problem(path + (k,), f"unknown key (one of {allowed})", key=True)


def check_condition(cond, path, problem) -> None:
    if not isinstance(cond, dict) or not cond:
        problem(path, f"expected a condition mapping: {', '.join(CONDITIONS)}")
        return
    for name, arg in cond.items():
        at = path + (name,)
        if name not in CONDITIONS:
            problem(at, f"unknown condition (one of {', '.join(CONDITIONS)})", key=True)
        elif name == "tunnels":
            _check_compare(arg, at, problem, plain_ok=False, extra=("card", "view"))
            if isinstance(arg, dict):
                if arg.get("view", "fleet") not in ("fleet", "gateway", "held"):
                    problem(at + ("view",), "fleet, gateway or held")
                if "card" in arg and arg["card"] != "$target" and not isinstance(arg["card"], int):
                    problem(at + ("card",), "expected a slot number or $target")
        elif name in ("children", "detection_ms", "recovery_s"):
            _check_compare(arg, at, problem, plain_ok=False)
        elif name in ("revoked_accepted", "tunnels_lost", "tunnels_reestablished"):
            _check_compare(arg, at, problem)
        elif name == "card":
            if not isinstance(arg, dict) or "slot" not in arg or "state" not in arg:
                problem(at, "expected {slot: N, state: STATE}")
                continue
            if arg["slot"] != "$target" and not isinstance(arg["slot"], int):
                problem(at + ("slot",), "expected a slot number or $target")
            states = arg["state"] if isinstance(arg["state"], list) else [arg["state"]]
            for s in states:
                if s not in CARD_STATES:
                    problem(at + ("state",), f"one of {', '.join(CARD_STATES)}, not {s!r}")
        elif name == "cli":
            tests = ("contains", "not_contains", "matches")
            if not isinstance(arg, dict) or not isinstance(arg.get("command"), str):
                problem(at, "expected {command: CLI COMMAND, contains: TEXT}")
                continue
            if not any(k in arg for k in tests):
                problem(at, f"expected one of {', '.join(tests)}")
            for k, v in arg.items():
                if k != "command" and k not in tests:
                    problem(at + (k,), f"unknown key (command, {', '.join(tests)})", key=True)
                elif not isinstance(v, str):
                    problem(at + (k,), "expected a string")
                elif k == "matches":
                    try:
                        re.compile(v)
                    except re.error as exc:
                        problem(at + (k,), f"not a regular expression: {exc}")
        elif name == "trap":
            if not isinstance(arg, dict) or not isinstance(arg.get("name"), str):
                problem(at, "expected {name: cert-expiry, count: N}")
                continue
            counts = {k: v for k, v in arg.items() if k in ("count", "at_least", "at_most")}
            if not counts:
                problem(at, "expected count, at_least or at_most")
            for k, v in arg.items():
                if k in ("count", "at_least", "at_most"):
                    _check_number(v, at + (k,), problem)
                elif k not in ("name", "certificate"):
                    problem(at + (k,), "unknown key (name, certificate, count, at_least, at_most)",
                            key=True)  # fmt: skip
        elif name == "certificate":
            if not isinstance(arg, dict) or not isinstance(arg.get("name"), str):
                problem(at, "expected {name: NAME, ...}")
                continue
            for k, v in arg.items():
                if k == "version_at_least":
                    _check_number(v, at + (k,), problem)
                elif k in ("renewed", "on_all_cards"):
                    if not isinstance(v, bool):
                        problem(at + (k,), "expected true or false")
                elif k != "name":
                    problem(at + (k,), "unknown key (name, version_at_least, renewed, "
                            "on_all_cards)", key=True)  # fmt: skip
        elif name == "cmp":
            if not isinstance(arg, dict):
                problem(at, "expected {type: kur, result: failure, at_least: N}")
                continue
            if arg.get("type", "any") not in ("ir", "cr", "kur", "any"):
                problem(at + ("type",), "ir, cr, kur or any")
            if arg.get("result", "any") not in ("success", "failure", "any"):
                problem(at + ("result",), "success, failure or any")
            _check_compare(arg, at, problem, plain_ok=False, extra=("type", "result"))
        elif name == "enodeb":
            if not isinstance(arg, dict) or "id" not in arg or not isinstance(arg.get("tunnel"),
                                                                               bool):  # fmt: skip
                problem(at, "expected {id: N, tunnel: true|false}")
            elif arg["id"] != "$target" and not isinstance(arg["id"], int):
                problem(at + ("id",), "expected the eNodeB's number or $target")
        elif name == "fleet":
            if not isinstance(arg, dict) or not arg:
                problem(at, "expected {FIELD: N}, e.g. {lost: 0}")
                continue
            for k, v in arg.items():
                _check_compare(v, at + (k,), problem)
        elif name == "takeover":
            if not isinstance(arg, dict):
                problem(at, "expected {failed: SLOT, by: SLOT, sas: N, took_ms: {at_most: MS}}")
                continue
            for k, v in arg.items():
                if k in ("failed", "by"):
                    if v != "$target" and (isinstance(v, bool) or not isinstance(v, int)):
                        problem(at + (k,), "expected a slot number or $target")
                elif k == "why":
                    if v not in TAKEOVER_WHY:
                        problem(at + (k,), f"one of {', '.join(TAKEOVER_WHY)}")
                elif k in ("sas", "children", "took_ms"):
                    _check_compare(v, at + (k,), problem)
                else:
                    problem(at + (k,), "unknown key (failed, by, why, sas, children, took_ms)",
                            key=True)  # fmt: skip
        elif name == "fleet_change":
            if not isinstance(arg, dict) or not arg:
                problem(at, "expected {FIELD: N}, e.g. {attempts: 0}")
                continue
            for k, v in arg.items():
                _check_compare(v, at + (k,), problem)
        elif name == "log":
            if not isinstance(arg, dict) or not isinstance(arg.get("contains"), str):
                problem(at, "expected {file: GLOB, contains: TEXT}")
            elif not isinstance(arg.get("file", "*.log"), str):
                problem(at + ("file",), "expected a file name pattern, e.g. dpc-*.log")


@dataclass
class Observation:
    """What a condition reads. The runner fills it from the live chassis; tests from canned
    dicts. ``cli``: command -> {"output", "data", "error"} (a dict or a function);
    ``logs``: glob -> text since the drill began (a dict or a function)."""

    status: dict = field(default_factory=dict)  # chassis status (backplane): slots, lab.fleet
    cards: list = field(default_factory=list)  # `show card table` data["cards"]
    cli: Any = field(default_factory=dict)
    traps: list = field(default_factory=list)  # {"oid", "certificate", ...}
    revoked_accepted: int = 0
    logs: Any = field(default_factory=dict)
    figures: dict = field(default_factory=dict)  # the latest fault's figures
    vars: dict = field(default_factory=dict)  # $target, $baseline, $target_tunnels
    start: dict = field(default_factory=dict)  # at the drill's start: fleet_lost, certs, cmp
    takeovers: list = field(default_factory=list)  # since the drill began (takeovers_in)
    fleet_mark: dict = field(default_factory=dict)  # fleet counters at the latest inject/run

    def run(self, command: str) -> dict:
        if callable(self.cli):
            return self.cli(command)
        if command not in self.cli:
            return {"output": f"(no canned output for {command!r})", "data": None, "error": True}
        return self.cli[command]

    def log(self, pattern: str) -> str:
        if callable(self.logs):
            return self.logs(pattern)
        return "".join(t for name, t in self.logs.items() if fnmatch.fnmatch(name, pattern))

    @property
    def fleet(self) -> dict:
        return ((self.status.get("lab") or {}).get("fleet") or {}).get("status") or {}

    def card_tunnels(self) -> dict[int, int]:
        """The gateway's view: IKE SAs per packet card; a card out of service holds none."""
        out = {}
        for row in self.cards:
            if row.get("type") in ("mio", "rsp"):
                continue
            up = row.get("state") in HOLDING
            out[int(row["slot"])] = int((row.get("counters") or {}).get("ike_sas", 0)) if up else 0
        return out

    def card_held(self) -> dict[int, int]:
        """The SAs' checkpoints each packet card in service holds (a standby's `held_sas`)."""
        return {int(row["slot"]): int((row.get("counters") or {}).get("held_sas", 0))
                for row in self.cards if row.get("type") not in ("mio", "rsp")
                and row.get("state") in IN_SERVICE}  # fmt: skip

    def fleet_count(self, key: str):
        """A fleet status field, or one of its counts (attempts, established, ...)."""
        fleet = self.fleet
        value = fleet.get(key)
        return value if value is not None else (fleet.get("counts") or {}).get(key)

    def card_state(self, slot: int) -> str | None:
        for row in self.cards:
            if int(row["slot"]) == slot:
                return row.get("state")
        for row in self.status.get("slots", []):
            if int(row["slot"]) == slot:
                return row.get("state")
        return None


class ConditionError(Exception):
    """A condition refers to something the drill does not have yet ($target before a fault)."""


def _value(v, obs: Observation):
    if isinstance(v, str):
        m = _VAR.match(v)
        if not m:
            raise ConditionError(f"{v!r} is not a number")
        if obs.vars.get(m.group(1)) is None:
            raise ConditionError(f"{v} is not known yet (no fault injected before)")
        return obs.vars[m.group(1)]
    return v


def _compare(actual, arg, obs, plain: str = "equals") -> tuple[bool, str]:
    if not isinstance(arg, dict):
        arg = {plain: arg}
    ok, want = True, []
    for k in COMPARE:
        if k not in arg:
            continue
        v = _value(arg[k], obs)
        if k == "at_least":
            ok &= actual is not None and actual >= v
            want.append(f">= {v}")
        elif k == "at_most":
            ok &= actual is not None and actual <= v
            want.append(f"<= {v}")
        else:
            ok &= actual == v
            want.append(f"== {v}")
    return bool(ok), " and ".join(want)


def _slot(v, obs) -> int:
    if v == "$target":
        if obs.vars.get("target") is None:
            raise ConditionError("$target is not known yet (no fault with a card target)")
        return int(obs.vars["target"])
    return int(v)


def evaluate(cond: dict, obs: Observation) -> tuple[bool, str]:
    """(every part holds, what was seen: one clause per part)."""
    ok_all, texts = True, []
    for name, arg in cond.items():
        try:
            ok, text = _evaluate_one(name, arg, obs)
        except ConditionError as exc:
            ok, text = False, f"{name}: {exc}"
        ok_all &= ok
        texts.append(("" if ok else "NOT ") + text)
    return ok_all, "; ".join(texts)


def _evaluate_one(name: str, arg, obs: Observation) -> tuple[bool, str]:
    if name == "tunnels":
        view = arg.get("view", "fleet")
        if view == "held":
            held = obs.card_held()
            if "card" in arg:
                slot = _slot(arg["card"], obs)
                actual, where = held.get(slot, 0), f"held by card {slot}"
            else:
                actual, where = sum(held.values()), "held by the standby"
        elif "card" in arg:
            slot = _slot(arg["card"], obs)
            actual = obs.card_tunnels().get(slot, 0)
            where = f"on card {slot}"
        elif view == "gateway":
            actual, where = sum(obs.card_tunnels().values()), "at the gateway"
        else:
            actual, where = obs.fleet.get("up"), "at the eNodeBs"
        ok, want = _compare(actual, arg, obs)
        return ok, f"tunnels {where} {actual} (want {want})"
    if name == "children":
        actual = obs.fleet.get("children_up")
        ok, want = _compare(actual, arg, obs)
        return ok, f"child SAs {actual} (want {want})"
    if name == "card":
        slot = _slot(arg["slot"], obs)
        states = arg["state"] if isinstance(arg["state"], list) else [arg["state"]]
        actual = obs.card_state(slot)
        return actual in states, f"card {slot} {actual} (want {' or '.join(states)})"
    if name == "cli":
        res = obs.run(arg["command"])
        out = res.get("output") or ""
        if res.get("error"):
            return False, f"`{arg['command']}` failed: {out.strip()[:200]}"
        ok, parts = True, []
        if "contains" in arg:
            ok &= arg["contains"] in out
            parts.append(f"contains {arg['contains']!r}")
        if "not_contains" in arg:
            ok &= arg["not_contains"] not in out
            parts.append(f"does not contain {arg['not_contains']!r}")
        if "matches" in arg:
            ok &= re.search(arg["matches"], out, re.MULTILINE) is not None
            parts.append(f"matches /{arg['matches']}/")
        text = f"`{arg['command']}` " + " and ".join(parts)
        if not ok:  # what it printed instead, so a failed step shows why
            shown = out.strip()
            text += f" (it printed: {shown[:600]!r}{'...' if len(shown) > 600 else ''})"
        return bool(ok), text
    if name == "revoked_accepted":
        ok, want = _compare(obs.revoked_accepted, arg, obs)
        return ok, f"revoked eNodeBs accepted {obs.revoked_accepted} (want {want})"
    if name == "trap":
        oid = TRAPS.get(arg["name"], arg["name"])
        got = [t for t in obs.traps if t.get("oid") == oid
               and ("certificate" not in arg or t.get("certificate") == arg["certificate"])]  # fmt: skip
        spec = {"equals" if k == "count" else k: v for k, v in arg.items()
                if k in ("count", "at_least", "at_most")}  # fmt: skip
        ok, want = _compare(len(got), spec, obs)
        return ok, f"{arg['name']} traps {len(got)} (want {want})"
    if name == "certificate":
        return _certificate(arg, obs)
    if name == "cmp":
        res = obs.run("show cmp history")
        history = ((res.get("data") or {}).get("history")) or []
        skip = int(obs.start.get("cmp_history", 0))
        rows = [h for h in history[skip:]
                if arg.get("type", "any") in ("any", h.get("type"))
                and arg.get("result", "any") in ("any", h.get("result"))]  # fmt: skip
        ok, want = _compare(len(rows), arg, obs)
        what = f"{arg.get('type', 'any')} {arg.get('result', 'any')}"
        return ok, f"CMP transactions ({what}) since the start {len(rows)} (want {want})"
    if name == "enodeb":
        enb = _value(arg["id"], obs) if arg["id"] != "$target" else obs.vars.get("enodeb")
        if enb is None:
            raise ConditionError("$target: no eNodeB revoked yet")
        fqdn = enodeb_fqdn(int(enb))
        res = obs.run("show crypto ikev2-ikesa security-associations")
        data = res.get("data") or {}
        if res.get("error") or data.get("silent"):
            return False, f"{fqdn}: the SA table is incomplete (silent cards {data.get('silent')})"
        sas = [s for s in data.get("sas", []) if s.get("peer_id") == fqdn
               and s.get("state") == "ESTABLISHED"]  # fmt: skip
        has = bool(sas)
        cards = ", ".join(str(s.get("card")) for s in sas)
        seen = f"a tunnel on card {cards}" if has else "no tunnel"
        want = "one" if arg["tunnel"] else "none"
        return has == arg["tunnel"], f"{fqdn} has {seen} (want {want})"
    if name == "fleet":
        ok_all, parts = True, []
        for key, spec in arg.items():
            actual = obs.fleet.get(key)
            ok, want = _compare(actual, spec, obs)
            ok_all &= ok
            parts.append(f"fleet {key} {actual} (want {want})")
        return ok_all, ", ".join(parts)
    if name == "tunnels_lost":
        lost = obs.fleet.get("lost")
        actual = None if lost is None else lost - int(obs.start.get("fleet_lost", 0))
        ok, want = _compare(actual, arg, obs)
        return ok, f"tunnels lost since the start {actual} (want {want})"
    if name == "tunnels_reestablished":
        again = obs.fleet.get("re_established")
        actual = None if again is None else again - int(obs.start.get("fleet_reestablished", 0))
        ok, want = _compare(actual, arg, obs)
        return ok, f"tunnels re-established since the start {actual} (want {want})"
    if name in ("detection_ms", "recovery_s"):
        actual = obs.figures.get(name)
        ok, want = _compare(actual, arg, obs)
        return ok, f"{name.replace('_', ' ')} {actual} (want {want})"
    if name == "takeover":
        return _takeover(arg, obs)
    if name == "fleet_change":
        ok_all, parts = True, []
        for key, spec in arg.items():
            now, then = obs.fleet_count(key), obs.fleet_mark.get(key)
            actual = None if now is None or then is None else now - then
            ok, want = _compare(actual, spec, obs)
            ok_all &= ok
            parts.append(f"fleet {key} +{actual} (want {want})")
        return ok_all, ", ".join(parts)
    if name == "log":
        pattern = arg.get("file", "*.log")
        found = arg["contains"] in obs.log(pattern)
        return found, f"{pattern} contains {arg['contains']!r}"
    raise ConditionError(f"unknown condition {name}")


def _takeover(arg: dict, obs: Observation) -> tuple[bool, str]:
    """The latest takeover since the drill began that matches failed/by/why, then its
    figures against sas/children/took_ms."""
    want = {k: _slot(arg[k], obs) for k in ("failed", "by") if k in arg}
    seen = [t for t in obs.takeovers if all(t[k] == v for k, v in want.items())
            and arg.get("why", t["why"]) == t["why"]]  # fmt: skip
    who = " ".join(f"{k} {v}" for k, v in want.items()) or "any card"
    if not seen:
        return False, f"no takeover ({who}) since the start ({len(obs.takeovers)} in all)"
    t = seen[-1]
    ok_all, parts = True, []
    for key in ("sas", "children", "took_ms"):
        if key in arg:
            ok, w = _compare(t[key], arg[key], obs)
            ok_all &= ok
            parts.append(f"{key} {t[key]:g} (want {w})")
    text = f"card {t['by']} took over card {t['failed']}'s SAs ({t['why']})"
    return ok_all, text + (": " + ", ".join(parts) if parts else "")


def takeovers_in(text: str, wall0: float) -> list[dict]:
    """The management card's takeover records (supervisor/recovery.py's log line), ``t``: when
    it was logged (the takeover done), in seconds from ``wall0`` (the drill's start)."""
    out = []
    for line in text.splitlines():
        m = _TAKEOVER.search(line)
        if not m:
            continue
        when = _LOG_TIME.match(line)
        wall = (dt.datetime.strptime(when.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if when else None)  # fmt: skip
        failed, why, by, sas, children, took = m.groups()
        out.append({"failed": int(failed), "why": why, "by": int(by), "sas": int(sas),
                    "children": int(children), "took_ms": float(took),
                    "t": round(wall - wall0, 3) if wall is not None else None})  # fmt: skip
    return out


def _certificate(arg: dict, obs: Observation) -> tuple[bool, str]:
    res = obs.run(f"show certificate name {arg['name']}")
    items = (res.get("data") or {}).get("items") or []
    if res.get("error") or not items:
        return False, f"certificate {arg['name']}: not installed"
    item = items[0]
    gen = int(item.get("generation", 0))
    ok, parts = True, [f"certificate {arg['name']} v{gen}"]
    if "version_at_least" in arg:
        want = _value(arg["version_at_least"], obs)
        ok &= gen >= want
        parts.append(f"want >= v{want}")
    if arg.get("renewed"):
        before = (obs.start.get("certificates") or {}).get(arg["name"])
        ok &= before is not None and gen > before
        parts.append(f"renewed from v{before}")
    if arg.get("on_all_cards"):
        serving = [int(r["slot"]) for r in obs.cards
                   if r.get("type") not in ("mio", "rsp") and r.get("state") in IN_SERVICE]  # fmt: skip
        held = {int(k): v for k, v in (item.get("cards") or {}).items()}
        behind = [s for s in serving if held.get(s) != f"v{gen}"]
        ok &= not behind and bool(serving)
        parts.append("on every card in service" + (f" (not on {behind})" if behind else ""))
    return bool(ok), ", ".join(parts)


def enodeb_fqdn(index: int) -> str:
    return f"enb{index:04d}.lab.example"  # chassis/lab/fleet.py fqdn()


# ------------------------------------------------------------------ authentications after a revocation
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _card_logs(logs_dir: Path) -> list[str]:
    return [p for p in sorted(glob.glob(str(Path(logs_dir) / "*.log")))
            if Path(p).name.startswith(("dpc-", "vsm-"))]  # fmt: skip


def _accepted_in(text: str, name: str, wanted: dict[str, float]) -> list[dict]:
    out = []
    for line in text.splitlines():
        if "IKE SA up with " not in line:
            continue
        peer = line.split("IKE SA up with ", 1)[1].split(" ", 1)[0]
        since = wanted.get(peer)
        m = _LOG_TIME.match(line)
        if since is None or not m:
            continue
        when = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if when > since:
            out.append({"card_log": name, "peer": peer, "wall": when, "line": line.strip()})
    return out


def accepted_after(logs_dir: Path, revocations: list[dict]) -> list[dict]:
    """IKE SAs a packet card brought up (after IKE_AUTH: `IKE SA up with ID`) for a revoked
    eNodeB after its revocation returned: authentications wrongly accepted. Log times are
    the cards' local wall time (logging's asctime), compared with ours."""
    if not revocations:
        return []
    wanted = {r["fqdn"]: r["wall"] for r in revocations}
    out = []
    for path in _card_logs(logs_dir):
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        out += _accepted_in(text, Path(path).name, wanted)
    return out


class AcceptedScanner:
    """accepted_after, read incrementally: each poll reads only what the cards' logs gained
    (a line logged before a revocation can never count against it)."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = Path(logs_dir)
        self.offsets = {p: os.path.getsize(p) for p in _card_logs(self.logs_dir)}
        self.found: list[dict] = []

    def scan(self, revocations: list[dict]) -> list[dict]:
        wanted = {r["fqdn"]: r["wall"] for r in revocations}
        for path in _card_logs(self.logs_dir):
            try:
                if not wanted:  # nothing revoked yet: what is logged now can never count
                    self.offsets[path] = os.path.getsize(path)
                    continue
                text, _ = read_new(path, self.offsets)
            except OSError:
                continue
            self.found += _accepted_in(text, Path(path).name, wanted)
        return list(self.found)


def find_serials(run_root: Path, fqdn: str) -> list[int]:
    """The lab CA's database (RUN/lab/ca/issued.jsonl): serials of unrevoked certificates
    whose subject is the eNodeB's (a restart of the fleet issues new ones: all of them)."""
    path = Path(run_root) / "lab" / "ca" / "issued.jsonl"
    latest: dict[int, dict] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
            latest[int(entry["serial"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    cn = f"CN={fqdn}"
    return [s for s, e in latest.items()
            if cn in str(e.get("subject", "")).split(",") and not e.get("revoked_at")]  # fmt: skip


# ------------------------------------------------------------------ SNMP traps
class TrapReceiver:
    """A UDP socket on loopback that the supervisor sends its SNMPv2c traps to."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.traps: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="drill-traps", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            trap = decode_trap(data)
            trap["t"] = round(time.monotonic() - self.t0, 3)
            self.traps.append(trap)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def decode_trap(data: bytes) -> dict:
    """An SNMPv2c trap -> {"oid": snmpTrapOID, "varbinds": {oid: text}, "certificate"}."""
    try:
        from pyasn1.codec.ber import decoder
        from pysnmp.proto import api

        mod = api.PROTOCOL_MODULES[int(api.decodeMessageVersion(data))]
        msg, _ = decoder.decode(data, asn1Spec=mod.Message())
        pdu = mod.apiMessage.get_pdu(msg)
        binds = {str(o.prettyPrint()): str(v.prettyPrint())
                 for o, v in mod.apiTrapPDU.get_varbinds(pdu)}  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a datagram we cannot read is reported as such
        return {"oid": None, "error": f"{type(exc).__name__}: {exc}", "varbinds": {}}
    return {
        "oid": binds.get("1.3.6.1.6.3.1.1.4.1.0"),
        "varbinds": binds,
        "certificate": binds.get("1.3.6.1.3.8164.1.2.1"),
    }


# ------------------------------------------------------------------ the runner
class Progress:
    """What the runner tells its audience (chassis/drill_cli.py draws it)."""

    def step_started(self, step: Step, text: str) -> None: ...

    def step_finished(self, step: Step, result: dict) -> None: ...

    def sample(self, sample: dict) -> None: ...

    def note(self, text: str) -> None: ...


@dataclass
class Fixed:
    """What a drill needs to know about the chassis before it starts (for the schedule)."""

    cards: tuple[int, ...]  # active packet cards
    enodebs: int  # the fleet's size
    labs: tuple[str, ...]


def chassis_facts(topology_dict: dict) -> Fixed:
    cards = tuple(
        sorted(int(c["slot"]) for c in topology_dict.get("cards", [])
               if c["type"] not in ("mio", "rsp") and c.get("role", "active") == "active")
    )  # fmt: skip
    lab = topology_dict.get("lab") or {}
    fleet = lab.get("fleet") or {}
    return Fixed(cards, int(fleet.get("count", 0) or 0), tuple(lab))


def fleet_counters(fleet: dict) -> dict:
    """The fleet status's numbers (its counts, then its top-level fields) for fleet_change."""
    numbers = {k: v for k, v in fleet.items() if isinstance(v, int | float)}
    return {**(fleet.get("counts") or {}), **numbers}


def _lab_placeholders(text: str, lab: dict) -> str:
    def value(m: re.Match) -> str:
        return str((lab.get(m.group(1)) or {}).get(m.group(2), m.group(0)))

    return re.sub(r"\$\{lab\.(\w+)\.(\w+)\}", value, text)


class Runner:
    """Runs one drill against a running chassis (chassis.client.Chassis)."""

    def __init__(self, drill: Drill, chassis, seed: int | None = None,
                 progress: Progress | None = None) -> None:  # fmt: skip
        self.drill, self.chassis = drill, chassis
        self.seed = drill.seed if seed is None else seed
        self.progress = progress or Progress()
        self.facts = chassis_facts(chassis.manifest.get("topology") or {})
        self.schedule = plan(drill, self.facts.cards, self.facts.enodebs, self.seed)
        self.t0 = time.monotonic()
        self.samples: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.faults: list[dict] = []
        self.revocations: list[dict] = []
        self.vars: dict = {}
        self.start: dict = {}
        self.traps: TrapReceiver | None = None
        self.step_results: list[dict] = []
        self.notes: list[str] = []
        self.certs_watched = self._certificates_named()
        self._sampler: threading.Thread | None = None
        self.latest: dict | None = None
        self._scanner: AcceptedScanner | None = None
        self.wall0 = time.time()
        self.fleet_mark: dict = {}  # the fleet's counters at the latest inject or run step

    # --- what the drill reads ---------------------------------------------------------
    def _certificates_named(self) -> set[str]:
        names = set()
        for step in self.drill.steps:
            if step.kind in ("wait_for", "expect") and "certificate" in step.body:
                names.add(step.body["certificate"]["name"])
            if step.kind == "inject" and "before_expiry" in step.body:
                names.add(step.body["before_expiry"]["certificate"])
        return names

    def _wants_traps(self) -> bool:
        return "traps" in self.drill.metrics or any(
            step.kind in ("wait_for", "expect") and "trap" in step.body for step in self.drill.steps
        )

    def exec(self, *commands: str) -> list:
        return self.chassis.exec(*commands, timeout=15.0, stop_on_error=True)

    def cli(self, command: str) -> dict:
        try:
            res = self.exec(command)[0]
        except Exception as exc:  # noqa: BLE001 - the supervisor may be what the drill killed
            return {"output": f"{type(exc).__name__}: {exc}", "data": None, "error": True}
        return {"output": res.output, "data": res.data, "error": res.error}

    def logs(self, pattern: str) -> str:
        out = []
        for path in sorted(glob.glob(str(self.chassis.run.logs / pattern))):
            try:
                with open(path, "rb") as f:
                    f.seek(self.start.get("log_sizes", {}).get(path, 0))
                    out.append(f.read().decode(errors="replace"))
            except OSError:
                continue
        return "".join(out)

    def takeovers(self) -> list[dict]:
        """Takeovers the management cards logged since the drill began (supervisor/recovery.py;
        the backplane grants both MIOs one log each)."""
        seen = []
        for pattern in ("mio-*.log", "rsp-*.log"):
            for item in takeovers_in(self.logs(pattern), self.wall0):
                if item not in seen:
                    seen.append(item)
        return seen

    def accepted(self) -> list[dict]:
        if self._scanner is None:
            self._scanner = AcceptedScanner(self.chassis.run.logs)
        return self._scanner.scan(self.revocations)

    # --- the timeline --------------------------------------------------------------------
    def _take_sample(self, session_box: list, certs_due: list) -> dict:
        now = time.monotonic()
        sample: dict = {"t": round(now - self.t0, 3), "mono": now}
        try:
            status = self.chassis.status(timeout=2.0)
        except Exception as exc:  # noqa: BLE001
            status = {"error": str(exc)}
        sample["status"] = status
        rows = []
        try:
            if session_box[0] is None:
                session_box[0] = self.chassis.session(timeout=2.0)
            rows = session_box[0].execute("show card table").data["cards"]
            if self.certs_watched and now >= certs_due[0]:
                certs_due[0] = now + CERT_SAMPLE_S
                certs = {}
                for name in sorted(self.certs_watched):
                    res = session_box[0].execute(f"show certificate name {name}")
                    items = (res.data or {}).get("items") or []
                    if items:
                        certs[name] = {"generation": items[0].get("generation"),
                                       "cards": items[0].get("cards") or {}}  # fmt: skip
                sample["certs"] = certs
        except Exception as exc:  # noqa: BLE001 - the supervisor may be down: slots only
            sample["cli_error"] = str(exc)
            if session_box[0] is not None:
                try:
                    session_box[0].client.close()
                except Exception:  # noqa: BLE001
                    pass
            session_box[0] = None
        sample["rows"] = rows
        return sample

    def compact(self, sample: dict) -> dict:
        """What the timeline keeps of a sample: per card state and tunnels, the fleet."""
        obs = Observation(status=sample.get("status") or {}, cards=sample.get("rows") or [])
        cards = {}
        tunnels = obs.card_tunnels()
        for row in obs.cards:
            if row.get("type") in ("mio", "rsp"):
                continue
            slot = int(row["slot"])
            since = row.get("state_since") or 0.0
            cards[str(slot)] = {"state": row.get("state"), "tunnels": tunnels.get(slot, 0),
                                "since": round(since - self.t0, 4) if since else None}  # fmt: skip
            if row.get("failed_at"):  # the supervisor's verdict time (CLOCK_MONOTONIC)
                cards[str(slot)]["failed_at"] = round(row["failed_at"] - self.t0, 4)
        if not obs.cards:  # no card table (supervisor down): the backplane's slot states
            for row in obs.status.get("slots", []):
                if row.get("type") not in ("mio", "rsp"):
                    cards[str(row["slot"])] = {"state": row.get("state"), "tunnels": None,
                                               "since": None}  # fmt: skip
        fleet = obs.fleet
        out = {
            "t": sample["t"],
            "cards": cards,
            "gateway": sum(tunnels.values()) if obs.cards else None,
            # the backplane's count (None: no status in this sample)
            "npu_lost": obs.status["npu"].get("lost", 0) if "npu" in obs.status else None,
            "fleet": {
                k: fleet.get(k) for k in ("up", "establishing", "lost", "failed", "children_up")
            }
            if fleet
            else None,  # fmt: skip
        }
        if "certs" in sample:
            out["certs"] = sample["certs"]
        return out

    def _sample_loop(self) -> None:
        box: list = [None]
        certs_due = [0.0]
        try:
            while not self.stop.is_set():
                began = time.monotonic()
                sample = self._take_sample(box, certs_due)
                with self.lock:
                    self.latest = sample
                    self.samples.append(self.compact(sample))
                self.progress.sample(self.samples[-1])
                self.stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - began)))
        finally:
            if box[0] is not None:
                try:
                    box[0].close()
                except Exception:  # noqa: BLE001
                    pass

    def fresh(self, timeout: float = 3.0) -> dict:
        """A sample taken after this call began (bounded wait; else the newest one)."""
        asked = time.monotonic()
        deadline = asked + timeout
        while time.monotonic() < deadline:
            with self.lock:
                latest = self.latest
            if latest is not None and latest["mono"] >= asked:
                return latest
            time.sleep(0.01)
        return self.latest or {"status": {}, "rows": []}

    def observe(self) -> Observation:
        from chassis import drill_report

        sample = self.fresh()
        figures = {}
        takeovers = self.takeovers()
        if self.faults:
            with self.lock:
                timeline = list(self.samples)
            revoked = tuple(r["t"] for r in self.revocations)
            figures = drill_report.fault_figures(self.faults[-1], timeline, None, revoked,
                                                 takeovers)  # fmt: skip
        return Observation(
            status=sample.get("status") or {},
            cards=sample.get("rows") or [],
            cli=self.cli,
            traps=list(self.traps.traps) if self.traps else [],
            revoked_accepted=len(self.accepted()),
            logs=self.logs,
            figures=figures,
            vars=dict(self.vars),
            start=self.start,
            takeovers=takeovers,
            fleet_mark=dict(self.fleet_mark),
        )

    # --- steps ---------------------------------------------------------------------------
    def _poll(self, cond: dict, seconds: float) -> tuple[bool, str, float]:
        began = time.monotonic()
        deadline = began + seconds
        while True:
            ok, seen = evaluate(cond, self.observe())
            if ok or time.monotonic() >= deadline:
                return ok, seen, time.monotonic() - began
            time.sleep(min(SAMPLE_S, max(0.0, deadline - time.monotonic())))

    def _hold(self, cond: dict, seconds: float, seen: str) -> tuple[bool, str]:
        """The condition keeps holding for `seconds` (every sample is checked)."""
        began = time.monotonic()
        while (left := began + seconds - time.monotonic()) > 0:
            time.sleep(min(SAMPLE_S, left))
            ok, seen = evaluate(cond, self.observe())
            if not ok:
                return False, f"held {time.monotonic() - began:.2f} s of {seconds:g}, then: {seen}"
        return True, f"held {seconds:g} s: {seen}"

    def _inject(self, fault: dict) -> dict:
        action = fault["fault"]
        if action == "revoke":
            return self._revoke(fault)
        if action == "warp" and "before_expiry" in fault:
            fault = self._warp_to_expiry(fault)
        if hasattr(self.chassis, "fault"):  # chassis/faults.py (issue #9, part 1)
            return self.chassis.fault(_fault_api_dict(fault))
        if action == "warp":  # the faults that exist without it
            seconds = (float(fault.get("days", 0)) * 86400 + float(fault.get("hours", 0)) * 3600
                       + float(fault.get("seconds", 0)))  # fmt: skip
            return self.chassis.warp(seconds)
        if action == "lab":
            return self.chassis.lab_set(fault["target"].removeprefix("lab:"), dict(fault["set"]))
        raise NotImplementedError(
            f"fault {action!r} needs the faults API (chassis/faults.py, Chassis.fault), which "
            "this tree does not have yet"
        )

    def _warp_to_expiry(self, fault: dict) -> dict:
        spec = fault["before_expiry"]
        res = self.cli(f"show certificate name {spec['certificate']}")
        items = (res.get("data") or {}).get("items") or []
        if not items:
            raise RuntimeError(f"certificate {spec['certificate']} is not installed")
        not_after = dt.datetime.fromisoformat(items[0]["not_after"])
        now = dt.datetime.fromisoformat(self._wall_now())
        seconds = (not_after - now).total_seconds() - float(spec["days"]) * 86400
        if seconds <= 0:
            raise RuntimeError(f"{spec['certificate']} is already within {spec['days']} days "
                               "of its expiry")  # fmt: skip
        resolved = {k: v for k, v in fault.items() if k != "before_expiry"}
        resolved["seconds"] = round(seconds, 3)
        fault.clear()
        fault.update(resolved)
        return resolved

    def _wall_now(self) -> str:
        """The supervisor's wall clock (a warp of 0 s reports it)."""
        return self.chassis.warp(0)["now"]

    def _revoke(self, fault: dict) -> dict:
        index = int(fault["enodeb"])
        fqdn = enodeb_fqdn(index)
        serials = find_serials(self.chassis.run.root, fqdn)
        if not serials:
            raise RuntimeError(f"the lab CA issued no unrevoked certificate to {fqdn}")
        results = [self.chassis.lab_revoke(s, fault.get("reason", "keyCompromise"))
                   for s in serials]  # fmt: skip
        record = {"enodeb": index, "fqdn": fqdn, "serials": [format(s, "X") for s in serials],
                  "wall": time.time(), "t": round(time.monotonic() - self.t0, 3)}  # fmt: skip
        self.revocations.append(record)
        self.vars["enodeb"] = index
        return {"revoked": record["serials"], "crl": results[-1].get("crl"),
                "crl_error": results[-1].get("crl_error")}  # fmt: skip

    def _baseline(self) -> dict:
        raw = self.fresh()
        self.fleet_mark = fleet_counters(Observation(status=raw.get("status") or {}).fleet)
        sample = self.compact(raw)
        fleet = sample.get("fleet") or {}
        return {"gateway": sample.get("gateway"), "fleet_up": fleet.get("up"),
                "fleet_lost": fleet.get("lost"), "cards": sample.get("cards"),
                "certs": sample.get("certs"), "npu_lost": sample.get("npu_lost")}  # fmt: skip

    def _cmp_counts(self) -> dict | None:
        stats = self.cli("show cmp statistics")
        pending = self.cli("show cmp outstanding-req")
        if stats.get("error") or pending.get("error"):
            return None
        data = stats.get("data") or {}
        msgs, tx = data.get("messages") or {}, data.get("transactions") or {}
        return {
            "started": sum((msgs.get(k) or {}).get("sent", 0) for k in ("ir", "cr", "kur")),
            "ended": sum(v.get("success", 0) + v.get("failure", 0) for v in tx.values()),
            "outstanding": len((pending.get("data") or {}).get("requests") or []),
        }

    def run_step(self, step: Step, planned: Planned | None) -> dict:
        began = time.monotonic()
        result: dict = {"step": step.number, "kind": step.kind, "label": step.label,
                        "line": step.line, "t": round(began - self.t0, 3)}  # fmt: skip
        ok, detail = True, ""
        try:
            if step.kind in ("wait_for", "expect"):
                limit = float(step.options.get("timeout", 60) if step.kind == "wait_for"
                              else step.options.get("within", 0))  # fmt: skip
                ok, detail, took = self._poll(step.body, limit)
                result["took_s"] = round(took, 3)
                hold = float(step.options.get("hold") or 0)
                if ok and hold:
                    ok, detail = self._hold(step.body, hold, detail)
            elif step.kind == "sleep":
                time.sleep(planned.delay if planned else float(step.body))
                detail = f"slept {planned.delay if planned else step.body:g} s"
            elif step.kind == "run":
                self.fleet_mark = fleet_counters(Observation(
                    status=self.fresh().get("status") or {}).fleet)  # fmt: skip
                commands = [_lab_placeholders(self._vars_in(c), self.chassis.manifest.get("lab")
                                              or {}) for c in step.body]  # fmt: skip
                results = self.exec(*commands)
                result["output"] = [{"command": r.command, "output": r.output[-2000:],
                                     "error": r.error} for r in results]  # fmt: skip
                failed = [r for r in results if r.error]
                ok = not failed or bool(step.options.get("allow_error"))
                detail = (f"`{failed[0].command}`: {failed[0].output.strip()[:300]}" if failed
                          else f"{len(results)} command(s) ok")  # fmt: skip
            elif step.kind == "inject":
                fault = dict(planned.fault)
                if planned.delay:
                    time.sleep(planned.delay)
                before = self._baseline()
                sent = time.monotonic()
                answer = self._inject(fault)
                done = time.monotonic()
                call_ms = round((done - sent) * 1000, 2)
                at = answer.get("at") if isinstance(answer, dict) else None
                if isinstance(at, dict) and sent <= at.get("monotonic", 0) <= done:
                    sent = at["monotonic"]  # when it took effect (chassis/faults.py)
                slot = target_slot(fault)
                record = {
                    "step": step.number, "fault": fault, "description": describe_fault(fault),
                    "t": round(sent - self.t0, 4), "call_ms": call_ms,
                    "recovery_action": is_recovery(fault), "target_slot": slot,
                    "before": before, "answer": _jsonable(answer),
                }  # fmt: skip
                self.faults.append(record)
                if slot is not None:
                    self.vars["target"] = slot
                    cards = before.get("cards") or {}
                    self.vars["target_tunnels"] = (cards.get(str(slot)) or {}).get("tunnels")
                if not record["recovery_action"]:
                    self.vars["baseline"] = before.get("fleet_up")
                detail = record["description"]
                if not step.options.get("label"):  # what the seed made of it
                    result["label"] = detail
        except NotImplementedError as exc:
            ok, detail, result["blocked"] = False, str(exc), True
        except Exception as exc:  # noqa: BLE001 - a step that breaks fails, the drill reports
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        result.update(ok=bool(ok), detail=detail,
                      duration_s=round(time.monotonic() - began, 3))  # fmt: skip
        return result

    def _vars_in(self, text: str) -> str:
        for name in ("target_tunnels", "target", "baseline"):
            if f"${name}" in text and self.vars.get(name) is not None:
                text = text.replace(f"${name}", str(self.vars[name]))
        return text

    # --- the whole drill ------------------------------------------------------------------
    def run(self) -> dict:
        from chassis import drill_report

        started_wall = dt.datetime.now(dt.UTC)
        self.t0, self.wall0 = time.monotonic(), started_wall.timestamp()
        logs = self.chassis.run.logs
        self.start["log_sizes"] = {p: os.path.getsize(p) for p in glob.glob(str(logs / "*.log"))}
        self._scanner = AcceptedScanner(logs)
        if self._wants_traps():
            self.traps = TrapReceiver(self.t0)
            res = self.exec("configure", f"snmp target {TRAP_TARGET} 127.0.0.1 port "
                            f"{self.traps.port} community public", "end")  # fmt: skip
            if any(r.error for r in res):
                self.notes.append("the trap receiver could not be configured: "
                                  + next(r.output for r in res if r.error))  # fmt: skip
        self._sampler = threading.Thread(target=self._sample_loop, name="drill-sampler",
                                         daemon=True)  # fmt: skip
        self._sampler.start()
        first = self.fresh(5.0)
        fleet = Observation(status=first.get("status") or {}).fleet
        self.fleet_mark = fleet_counters(fleet)
        self.start["fleet_lost"] = fleet.get("lost", 0)
        self.start["fleet_reestablished"] = fleet.get("re_established", 0)
        history = self.cli("show cmp history")
        self.start["cmp_history"] = len(((history.get("data") or {}).get("history")) or [])
        self.start["cmp"] = self._cmp_counts()
        certs = {}
        for name in sorted(self.certs_watched):
            items = (self.cli(f"show certificate name {name}").get("data") or {}).get("items")
            if items:
                certs[name] = int(items[0].get("generation", 0))
        self.start["certificates"] = certs
        planned = {p.step: p for p in self.schedule}
        aborted = None
        try:
            for step in self.drill.steps:
                if aborted:
                    self.step_results.append({"step": step.number, "kind": step.kind,
                                              "label": step.label, "line": step.line,
                                              "ok": None, "detail": "not run"})  # fmt: skip
                    continue
                text = step.label
                p = planned.get(step.number)
                if p is not None and p.kind == "inject":
                    text = f"{describe_fault(p.fault)}" + (f" (after {p.delay:.2f} s)"
                                                           if p.delay else "")  # fmt: skip
                self.progress.step_started(step, text)
                result = self.run_step(step, p)
                self.step_results.append(result)
                self.progress.step_finished(step, result)
                if not result["ok"] and (step.kind == "wait_for" or result.get("blocked")):
                    aborted = f"step {step.number} ({step.kind}) failed: the rest is not run"
                    self.notes.append(aborted)
        finally:
            time.sleep(SAMPLE_S * 2)  # the last changes into the timeline
            self.stop.set()
            if self._sampler is not None:
                self._sampler.join(5)
            end_cmp = self._cmp_counts()
            accepted = self.accepted()
            takeovers = self.takeovers()
            if self.traps is not None:
                self.traps.close()
        duration = time.monotonic() - self.t0
        cmp_lost = None
        if self.start.get("cmp") and end_cmp:
            s, e = self.start["cmp"], end_cmp
            cmp_lost = max(0, (e["started"] - s["started"]) - (e["ended"] - s["ended"])
                           - max(0, e["outstanding"] - s["outstanding"]))  # fmt: skip
        report = drill_report.build(
            drill=self.drill,
            seed=self.seed,
            schedule=[p.to_dict() for p in self.schedule],
            steps=self.step_results,
            faults=self.faults,
            timeline=self.samples,
            traps=self.traps.traps if self.traps else [],
            revocations=self.revocations,
            accepted=accepted,
            cmp_lost=cmp_lost,
            cmp={"start": self.start.get("cmp"), "end": end_cmp},
            takeovers=takeovers,
            started=started_wall,
            duration_s=duration,
            chassis={
                "name": self.chassis.name,
                "run_dir": str(self.chassis.run.root),
                "platform": self.chassis.manifest.get("platform"),
                "active_packet_cards": list(self.facts.cards),
                "enodebs": self.facts.enodebs,
            },  # fmt: skip
            notes=self.notes,
        )
        return report

    def cleanup(self) -> None:
        """On a chassis the drill did not start: take its impairments and trap target away."""
        if self.faults and hasattr(self.chassis, "fault"):
            try:
                self.chassis.fault({"fault": "clear"})
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"clear after the drill failed: {exc}")
        if self.traps is not None:
            try:
                self.exec("configure", f"no snmp target {TRAP_TARGET}", "end")
            except Exception:  # noqa: BLE001
                pass


def _fault_api_dict(fault: dict) -> dict:
    """The dict chassis.faults.Fault.from_dict takes (warp in days/hours only)."""
    out = dict(fault)
    if out.get("fault") == "warp" and "seconds" in out:
        seconds = float(out.pop("seconds"))
        out["hours"] = float(out.get("hours", 0)) + seconds / 3600
    return out


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def run(drill: Drill, chassis, *, seed: int | None = None,
        progress: Progress | None = None) -> tuple[dict, Runner]:  # fmt: skip
    """Run a drill on a running chassis; returns (report, runner)."""
    runner = Runner(drill, chassis, seed, progress)
    return runner.run(), runner


def resolve_drill(name: str) -> Path:
    """A drill file, or the name of a shipped drill (topologies/drills/NAME.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parents[1] / "topologies" / "drills" / f"{name}.yaml"
    return shipped if shipped.is_file() else path


def shipped() -> list[Path]:
    folder = Path(__file__).resolve().parents[1] / "topologies" / "drills"
    return sorted(p for p in folder.glob("*.yaml") if not p.name.endswith("-topology.yaml"))


__all__ = [
    "Drill", "DrillError", "Observation", "Planned", "Runner", "Step", "evaluate", "load",
    "loads", "plan", "run", "resolve_drill", "shipped",
]  # fmt: skip
