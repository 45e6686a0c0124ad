"""Child-SA configuration: IPsec transform sets and the payloads of templates and crypto maps.

    context NAME
      ipsec transform-set NAME                            (cfg-ctx-ipsec-tran-set, unconfirmed)
        encryption { aes-cbc-128 | aes-cbc-256 | aes-gcm-128 | aes-gcm-256 }
        hmac { sha2-256-128 | sha2-384-192 | sha2-512-256 }   (not used with AES-GCM)
        group { none | 14 | 19 | 20 | 31 }                (PFS in CREATE_CHILD_SA)
        lifetime SECONDS
      crypto template NAME ikev2-dynamic
        payload NAME match childsa [ match { any | ipv4 | ipv6 } ]
                                                (cfg-crypto-tmpl-ikev2-tunnel-payload)
          ipsec transform-set list T1 [ T2 T3 T4 ]
          tsi start-address A end-address B [ protocol P ] [ start-port X end-port Y ]
          tsr start-address A end-address B [ protocol P ] [ start-port X end-port Y ]
          lifetime SECONDS
          lifetime-bytes N | lifetime-packets N           (ours: ESP volume, rekey at 90%)
          rekey
      crypto map NAME ikev2-ipv4                          (see crypto_map.py)
        payload NAME match ipv4                           (cfg-crypto-ikev2-ipv4-payload)

TSi is the initiator's side: in a template (the gateway responds) the eNodeB's, in a crypto
map (the gateway initiates) the gateway's. Several `tsi`/`tsr` lines add selectors. Without
them a payload covers every address of its `match` family. A template or map has at most 5
payloads (MCSA). A `tsi`/`tsr` line that makes its payload overlap another on both sides is
refused, since a peer's request could not be matched to one of them (the check runs when
selectors are set: a payload just created has none yet).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from supervisor.cli import CommandFailure, EnterBlock, SetLine
from supervisor.cli.grammar import Grammar

IPSEC_MODE = "cfg-ctx-ipsec-tran-set"
TMPL_PAYLOAD_MODE = "cfg-crypto-tmpl-ikev2-tunnel-payload"
MAP_PAYLOAD_MODES = {
    "ipv4": "cfg-crypto-ikev2-ipv4-payload",
    "ipv6": "cfg-crypto-ikev2-ipv6-payload",
}
PAYLOAD_MODES = (TMPL_PAYLOAD_MODE, *MAP_PAYLOAD_MODES.values())
MAX_PAYLOADS = 5
MAX_SELECTORS = 8
NAME = "NAME(1-127)"
TS_SYNTAX = (
    "start-address <start:IPADDR> end-address <end:IPADDR> [ protocol <protocol:INT(0-255)> ]"
    " [ start-port <sport:INT(0-65535)> end-port <eport:INT(0-65535)> ]"
)
HELP = {
    "ipsec": "IPsec (child SA) settings",
    "transform-set": "IPsec transform sets",
    "payload": "A child-SA payload: its transform sets and traffic selectors",
    "match": "Which child SAs the payload describes",
    "childsa": "Child SAs",
    "any": "IPv4 and IPv6",
    "ipv4": "IPv4 only",
    "ipv6": "IPv6 only",
    "tsi": "Traffic selector of the initiator's side",
    "tsr": "Traffic selector of the responder's side",
    "start-address": "First address",
    "end-address": "Last address",
    "protocol": "IP protocol number (0: any)",
    "start-port": "First port",
    "end-port": "Last port",
    "rekey": "Rekey the child SA before its lifetime ends",
    "group": "Diffie-Hellman group for PFS (none: no PFS)",
    "none": "No PFS",
}


# ------------------------------------------------------------------ selectors
def selector(args: dict) -> dict:
    """A `tsi`/`tsr` line as projected to the cards; CommandFailure names what is wrong."""
    start, end = ipaddress.ip_address(args["start"]), ipaddress.ip_address(args["end"])
    if start.version != end.version:
        raise CommandFailure("start-address and end-address are of different IP versions")
    if start > end:
        raise CommandFailure(f"start-address {start} is after end-address {end}")
    sport, eport = args.get("sport", 0), args.get("eport", 65535)
    if sport > eport:
        raise CommandFailure(f"start-port {sport} is after end-port {eport}")
    return {
        "start": str(start),
        "end": str(end),
        "protocol": args.get("protocol", 0),
        "ports": [sport, eport],
    }


def _key(ts: dict) -> str:
    return f"{ts['start']}-{ts['end']}/{ts['protocol']}/{ts['ports'][0]}-{ts['ports'][1]}"


def family_selectors(family: str) -> list[dict]:
    """What a payload without selectors covers: every address of its `match` family."""
    v4 = {"start": "0.0.0.0", "end": "255.255.255.255", "protocol": 0, "ports": [0, 65535]}
    v6 = {**v4, "start": "::", "end": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}
    return {"ipv4": [v4], "ipv6": [v6]}.get(family, [v4, v6])


def _meets(a: dict, b: dict) -> bool:
    sa, ea = ipaddress.ip_address(a["start"]), ipaddress.ip_address(a["end"])
    sb, eb = ipaddress.ip_address(b["start"]), ipaddress.ip_address(b["end"])
    if sa.version != sb.version or (
        a["protocol"] and b["protocol"] and a["protocol"] != b["protocol"]
    ):
        return False
    return max(sa, sb) <= min(ea, eb) and max(a["ports"][0], b["ports"][0]) <= min(
        a["ports"][1], b["ports"][1]
    )


def payload_selectors(payload: dict, side: str) -> list[dict]:
    return list(payload.get(side, {}).values()) or family_selectors(payload.get("family", "any"))


def overlapping(a: dict, b: dict) -> bool:
    """Two payloads overlap when some traffic fits both: both sides' selectors meet."""
    return all(
        any(_meets(x, y) for x in payload_selectors(a, side) for y in payload_selectors(b, side))
        for side in ("tsi", "tsr")
    )


def _check_overlap(owner, name: str, mine: dict) -> None:
    """Refuse payload ``name`` of ``owner`` (a template or map) looking like ``mine`` when it
    overlaps a sibling: MCSA needs mutually exclusive payloads."""
    for other in owner.all("payload"):
        if other.name != name and overlapping(mine, other.projection()):
            raise CommandFailure(
                f"payload {name} overlaps payload {other.name}: their traffic selectors "
                "must be mutually exclusive"
            )


def _ts_line(side: str):
    def handler(args: dict, ctx: Any) -> None:
        ts = selector(args)
        family = ctx.block.data.get("family", "any")
        version = ipaddress.ip_address(ts["start"]).version
        if family != "any" and family != f"ipv{version}":
            raise CommandFailure(f"an IPv{version} selector in a payload that matches {family}")
        if len(ctx.block.all(side)) >= MAX_SELECTORS and ctx.block.get(side, _key(ts)) is None:
            raise CommandFailure(f"at most {MAX_SELECTORS} {side} selectors per payload")
        mine = ctx.block.projection()
        mine.setdefault(side, {})[_key(ts)] = ts
        _check_overlap(ctx.block.parent, ctx.block.name, mine)
        SetLine(side, lambda a: _key(ts), data=lambda a: ts)(args, ctx)

    def remove(args: dict, ctx: Any):
        return SetLine(side, lambda a: _key(selector(a))).remove(args, ctx)

    handler.remove = remove
    return handler


def _enter_payload(family_of):
    def handler(args: dict, ctx: Any) -> None:
        family = family_of(args)
        existing = ctx.block.get("payload", args["name"])
        if existing is None and len(ctx.block.all("payload")) >= MAX_PAYLOADS:
            raise CommandFailure(f"at most {MAX_PAYLOADS} payloads (child SAs) per crypto template")
        if existing is not None and existing.data.get("family") != family:
            raise CommandFailure(
                f"payload {args['name']} matches {existing.data.get('family')}; remove it first"
            )
        mode = (
            TMPL_PAYLOAD_MODE if ctx.block.kind == "crypto-template" else MAP_PAYLOAD_MODES[family]
        )
        EnterBlock("payload", "name", mode, data=lambda a: {"family": family})(args, ctx)

    handler.remove = EnterBlock("payload", "name", TMPL_PAYLOAD_MODE).remove
    return handler


def _ipsec_list(args: dict, ctx: Any) -> None:
    names = args["tset"]
    if len(names) > 4:
        raise CommandFailure("at most 4 IPsec transform sets per payload")
    if len(set(names)) != len(names):
        raise CommandFailure("an IPsec transform set is listed twice")
    SetLine("ipsec-transform-set-list", data=lambda a: list(names))(args, ctx)


# ------------------------------------------------------------------ registration
def register(g: Grammar, template_mode: str, map_modes: dict[str, str]) -> None:
    g.mode(IPSEC_MODE, IPSEC_MODE, "config-ctx")
    g.mode(TMPL_PAYLOAD_MODE, TMPL_PAYLOAD_MODE, template_mode)
    for family, mode in MAP_PAYLOAD_MODES.items():
        g.mode(mode, mode, map_modes[family])

    g.command(
        "config-ctx",
        f"ipsec transform-set <name:{NAME}>",
        EnterBlock("ipsec-transform-set", "name", IPSEC_MODE),
        no=f"ipsec transform-set <name:{NAME}>",
        help=HELP,
    )
    for syntax, field in (
        (
            "encryption { aes-cbc-128 | aes-cbc-256 | aes-gcm-128 | aes-gcm-256 }@encryption",
            "encryption",
        ),
        ("hmac { sha2-256-128 | sha2-384-192 | sha2-512-256 }@hmac", "hmac"),
        ("group { none | 14 | 19 | 20 | 31 }@group", "group"),
        ("lifetime <lifetime:INT(60-86400)>", "lifetime"),
    ):
        g.command(
            IPSEC_MODE, syntax, SetLine(field, data=lambda a, f=field: a[f]), no=field, help=HELP
        )

    g.command(
        template_mode,
        f"payload <name:{NAME}> match childsa [ match {{ any | ipv4 | ipv6 }}@family ]",
        _enter_payload(lambda a: a.get("family") or "any"),
        no=f"payload <name:{NAME}>",
        help=HELP,
    )
    for family, mode in map_modes.items():
        g.command(
            mode,
            f"payload <name:{NAME}> match {family}",
            _enter_payload(lambda a, f=family: f),
            no=f"payload <name:{NAME}>",
            help=HELP,
        )
    g.command(
        PAYLOAD_MODES,
        f"ipsec transform-set list <tset:{NAME}> [ <tset:{NAME}> ]...",
        _ipsec_list,
        no="ipsec transform-set list",
        no_handler=lambda a, ctx: SetLine("ipsec-transform-set-list").remove(a, ctx),
        help=HELP,
    )
    for side in ("tsi", "tsr"):
        g.command(
            PAYLOAD_MODES,
            f"{side} {TS_SYNTAX}",
            _ts_line(side),
            no=f"{side} {TS_SYNTAX}",
            help=HELP,
        )
    g.command(
        PAYLOAD_MODES,
        "lifetime <lifetime:INT(60-86400)>",
        SetLine("lifetime", data=lambda a: a["lifetime"]),
        no="lifetime",
        help=HELP,
    )
    g.command(PAYLOAD_MODES, "rekey", SetLine("rekey", data=lambda a: True), no="rekey", help=HELP)
    for unit, typ in (("bytes", "INT(1024-1000000000000)"), ("packets", "INT(100-4000000000)")):
        g.command(
            PAYLOAD_MODES,
            f"lifetime-{unit} <value:{typ}>",
            SetLine(f"lifetime-{unit}", data=lambda a: a["value"]),
            no=f"lifetime-{unit}",
            help={**HELP, f"lifetime-{unit}": f"Rekey at 90% of this many {unit} (ours)"},
        )
