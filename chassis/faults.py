"""The fault vocabulary (issue #9): what `chassis fault ...` and the drill runner inject.

One frozen Fault per injection; the drill file's dict form and the CLI build the same thing:

    from chassis.faults import Fault, FaultError
    f = Fault.from_dict({"fault": "ipc", "target": "slot-2", "mode": "partition"})
    f.describe()                      # 'ipc partition slot-2'
    chassis.fault(f)                  # chassis.client.Chassis: applies it (a dict works too)
    chassis.faults()                  # the faults in force (also in `chassis status --json`)

Fault(action, target, params):

    action  target                              params
    kill    slot-N | N | supervisor | lab:P     -            SIGKILL through the backplane
    hang    slot-N | N | supervisor | lab:P     -            SIGSTOP
    resume  slot-N | N | supervisor | lab:P     -            SIGCONT (an error if not hung)
    ipc     slot-N (a packet card)              mode: drop | delay | duplicate | partition | heal,
                                                rate (0..1, default 1), ms (delay), seed
    udp     slot-N (a packet card), or None     mode: drop | delay | heal, rate, ms, seed,
            with params peer "ip[:port]"        peer (instead of a card); heal with neither
                                                heals every udp fault
    lab     lab:ca | lab:ocsp | lab:crl | lab:fleet   set: {"down": true, "slow": 2,
                                                "error": "internalError", "stale": true, ...}
                                                (the keys of `chassis lab set`)
    warp    None                                days, hours, seconds (the wall clock)
    clear   None                                -            heals every ipc/udp/lab fault,
                                                             resumes hung processes, restarts
                                                             killed lab peers

"supervisor" is the active management card (MIO/RSP); a slot number names any card, a
management card included. P is ca, ocsp, crl or fleet.

Drill-file form: {"fault": ACTION, "target": ..., PARAM: ...}; params may also be nested
under "params". Fault.from_dict checks everything and raises FaultError naming the field.
`seed` makes the random drop/delay/duplicate decisions of ipc and udp faults replayable
(default DEFAULT_SEED); key material stays random whatever the seed.

Where each is applied: kill, hang, resume, ipc and udp by the backplane (it owns the
processes, the NPU and a channel to every card; chassis/backplane.py), lab and warp by the
client through the lab peers' admin endpoints and the supervisor (Chassis.lab_set, warp).
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass, field

ACTIONS = ("kill", "hang", "resume", "ipc", "udp", "lab", "warp", "clear")
PROCESS_ACTIONS = ("kill", "hang", "resume")
IPC_MODES = ("drop", "delay", "duplicate", "partition", "heal")
UDP_MODES = ("drop", "delay", "heal")
LAB_PEERS = ("ca", "ocsp", "crl", "fleet")
DEFAULT_SEED = 9
MAX_DELAY_MS = 60_000

# the params each action takes (anything else is refused, named)
PARAMS = {
    "kill": (),
    "hang": (),
    "resume": (),
    "ipc": ("mode", "rate", "ms", "seed"),
    "udp": ("mode", "rate", "ms", "seed", "peer"),
    "lab": ("set",),
    "warp": ("days", "hours", "seconds"),
    "clear": (),
}


class FaultError(Exception):
    """A fault that cannot be built or applied; the message names the field or the cause."""


@dataclass(frozen=True)
class Fault:
    action: str
    target: str | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked = _check(self.action, self.target, dict(self.params or {}))
        object.__setattr__(self, "target", checked[0])
        object.__setattr__(self, "params", checked[1])

    __hash__ = None  # params is a dict

    # --- forms ---------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict) -> Fault:
        """The drill-file form: {"fault": "kill", "target": "slot-2"},
        {"fault": "ipc", "target": "slot-2", "mode": "partition"}, {"fault": "warp", "days": 30}."""
        if isinstance(d, Fault):
            return d
        if not isinstance(d, dict):
            raise FaultError(f"a fault is a mapping with a 'fault' field, not {type(d).__name__}")
        d = dict(d)
        if "fault" not in d and "action" in d:
            d["fault"] = d.pop("action")
        action = d.pop("fault", None)
        if action is None:
            raise FaultError(f"fault: missing (one of {', '.join(ACTIONS)})")
        target = d.pop("target", None)
        params = d.pop("params", None)
        if params is not None and not isinstance(params, dict):
            raise FaultError("params: a mapping")
        params = dict(params or {})
        for key, value in d.items():
            if key in params:
                raise FaultError(f"{key}: given twice (at the top and under params)")
            params[key] = value
        return cls(action, target, params)

    def to_dict(self) -> dict:
        """The drill-file form (from_dict(f.to_dict()) == f)."""
        out: dict = {"fault": self.action}
        if self.target is not None:
            out["target"] = self.target
        out.update(self.params)
        return out

    # --- what it names -----------------------------------------------------------

    @property
    def slot(self) -> int | None:
        """The slot a slot-N target names (None for supervisor, lab peers, no target)."""
        if self.target and self.target.startswith("slot-"):
            return int(self.target[5:])
        return None

    @property
    def lab_peer(self) -> str | None:
        if self.target and self.target.startswith("lab:"):
            return self.target[4:]
        return None

    @property
    def warp_seconds(self) -> float:
        p = self.params
        return p.get("days", 0) * 86400 + p.get("hours", 0) * 3600 + p.get("seconds", 0)

    def describe(self) -> str:
        """One line for logs and reports, e.g. 'ipc drop slot-2 rate 0.3 seed 7'."""
        p = self.params
        words = [self.action]
        if self.action in ("ipc", "udp"):
            words.append(p["mode"])
        if self.target is not None:
            words.append(self.target)
        if self.action == "udp" and "peer" in p:
            words.append(f"peer {p['peer']}")
        if self.action in ("ipc", "udp") and "rate" in p:
            if p["mode"] == "delay":
                words.append(f"{p['ms']:g} ms")
            if p["rate"] != 1:
                words.append(f"rate {p['rate']:g}")
            if p["rate"] not in (0, 1):
                words.append(f"seed {p['seed']}")
        elif self.action == "lab":
            words += [f"{k}={_json_word(v)}" for k, v in p["set"].items()]
        elif self.action == "warp":
            words.append(_duration(self.warp_seconds))
        return " ".join(words)


# --- checks -----------------------------------------------------------------------


def parse_target(value, action: str = "") -> str:
    """'slot-2', '2', 2 -> 'slot-2'; 'supervisor'; 'lab:ca' (and, for lab faults, 'ca')."""
    if isinstance(value, bool):
        raise FaultError(f"target: {value!r} is not a slot, 'supervisor' or lab:PEER")
    if isinstance(value, int):
        if value < 0:
            raise FaultError(f"target: no slot {value}")
        return f"slot-{value}"
    if not isinstance(value, str) or not value.strip():
        raise FaultError("target: a slot (slot-N or N), 'supervisor' or lab:PEER")
    text = value.strip().lower()
    if text.isdigit():
        return f"slot-{int(text)}"
    if text.startswith("slot-") and text[5:].isdigit():
        return f"slot-{int(text[5:])}"
    if text in ("supervisor", "mgmt"):
        return "supervisor"
    peer = text[4:] if text.startswith("lab:") else (text if action == "lab" else None)
    if peer is not None:
        if peer not in LAB_PEERS:
            raise FaultError(f"target: no lab peer {peer!r} (one of {', '.join(LAB_PEERS)})")
        return f"lab:{peer}"
    raise FaultError(f"target: {value!r} is not a slot (slot-N or N), 'supervisor' or lab:PEER")


def parse_peer(value) -> str:
    """'ip', 'ip:port', '[v6]:port' or a bare IPv6 address -> the canonical text."""
    if not isinstance(value, str) or not value.strip():
        raise FaultError("peer: an address, ip[:port]")
    host, port = peer_address(value)
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_address(text: str) -> tuple[str, int | None]:
    """(address, port or None) of a peer text (parse_peer's forms)."""
    text = text.strip()
    port_text = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise FaultError(f"peer: {text!r} is not [ADDRESS]:PORT")
        port_text = rest[1:] or None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        raise FaultError(f"peer: {host!r} is not an IP address") from None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise FaultError(f"peer: port {port_text!r} is not 1..65535")
        port = int(port_text)
    return host, port


def _number(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        if isinstance(value, str):
            try:
                return _number(name, float(value), low, high)
            except ValueError:
                pass
        raise FaultError(f"{name}: {value!r} is not a number")
    if not low <= value <= high:
        raise FaultError(f"{name}: {value:g} is outside {low:g}..{high:g}")
    return value


def _check(action, target, params: dict) -> tuple[str | None, dict]:
    if action not in ACTIONS:
        raise FaultError(f"fault: {action!r} is not one of {', '.join(ACTIONS)}")
    for key in params:
        if key not in PARAMS[action]:
            allowed = ", ".join(PARAMS[action]) or "none"
            raise FaultError(f"{key}: not a parameter of a {action} fault (allowed: {allowed})")
    if action in ("warp", "clear"):
        if target is not None:
            raise FaultError(f"target: a {action} fault takes none")
    elif action == "udp" and target is None:
        if "peer" not in params and params.get("mode") != "heal":  # heal alone: every one
            raise FaultError("target: a udp fault names a packet card (slot-N) or a peer")
    elif target is None:
        raise FaultError(f"target: missing (a {action} fault names what it acts on)")
    if target is not None:
        target = parse_target(target, action)
    out: dict = {}
    if action in ("ipc", "udp"):
        modes = IPC_MODES if action == "ipc" else UDP_MODES
        mode = params.get("mode")
        if mode is None:
            raise FaultError(f"mode: missing (one of {', '.join(modes)})")
        if mode not in modes:
            raise FaultError(f"mode: {mode!r} is not one of {', '.join(modes)}")
        out["mode"] = mode
        if target is not None and not target.startswith("slot-"):
            raise FaultError(
                f"target: an {action} fault names a packet card (slot-N), not {target}"
            )
        if action == "udp" and "peer" in params:
            if target is not None:
                raise FaultError("peer: give a card (target) or a peer, not both")
            out["peer"] = parse_peer(params["peer"])
        if mode in ("heal", "partition"):
            for key in ("rate", "ms", "seed"):
                if key in params:
                    raise FaultError(f"{key}: {mode} takes no {key}")
        else:
            out["rate"] = _number("rate", params.get("rate", 1.0), 0, 1)
            if mode == "delay":
                if "ms" not in params:
                    raise FaultError("ms: a delay fault needs the delay (ms)")
                out["ms"] = _number("ms", params["ms"], 1, MAX_DELAY_MS)
            elif "ms" in params:
                raise FaultError(f"ms: only a delay fault takes ms (this one is {mode})")
            seed = params.get("seed", DEFAULT_SEED)
            if isinstance(seed, bool) or not isinstance(seed, int | str):
                raise FaultError(f"seed: {seed!r} is not an integer or a string")
            out["seed"] = seed
    elif action == "lab":
        if not target.startswith("lab:"):
            raise FaultError(f"target: a lab fault names a lab peer (lab:PEER), not {target}")
        changes = params.get("set")
        if not isinstance(changes, dict) or not changes:
            raise FaultError('set: the behaviours to set, e.g. {"down": true}')
        for key in changes:
            if not isinstance(key, str) or not key:
                raise FaultError(f"set: {key!r} is not a behaviour name")
        out["set"] = dict(changes)
    elif action == "warp":
        for key, most in (("days", 36500), ("hours", 36500 * 24), ("seconds", 36500 * 86400)):
            if key in params:
                out[key] = _number(key, params[key], -most, most)
        if not any(out.values()):
            raise FaultError("days: a warp needs days, hours or seconds (not zero)")
    return target, out


def _json_word(value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    parts = []
    if days:
        parts.append(f"{days:g} day{'s' if days != 1 else ''}")
    if rest and (rest < 3600 or rest % 60):
        parts.append(f"{rest:g} s")
    elif rest:
        parts.append(f"{rest / 3600:g} hour{'s' if rest != 3600 else ''}")
    return sign + " ".join(parts)


def timestamp() -> dict:
    """When a fault was applied: CLOCK_MONOTONIC (comparable with the card table's and the
    backplane's timestamps on this host) and the real wall clock (unwarped)."""
    return {"monotonic": time.monotonic(), "wall": time.time()}
