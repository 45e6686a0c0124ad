"""Crypto template, IKEv2 transform-set and SecGW service configuration (StarOS syntax).

    context NAME
      ikev2-ikesa transform-set NAME                      (cfg-ctx-ikev2ikesa-tran-set, confirmed)
        encryption { aes-cbc-128 | aes-cbc-256 | aes-gcm-128 | aes-gcm-256 }
        group { 14 | 19 | 20 | 31 }      hmac { sha2-256-128 | sha2-384-192 | sha2-512-256 }
        prf { sha2-256 | sha2-384 | sha2-512 }     lifetime SECONDS
      crypto template NAME ikev2-dynamic                  (cfg-crypto-tmpl-ikev2-tunnel)
        authentication { local | remote } certificate
        certificate name CERT                             (unconfirmed syntax)
        ca-certificate list ca-cert-name CA [ ca-cert-name CA ]...
        ikev2-ikesa transform-set list T1 [ T2 ... T6 ]
        ikev2-ikesa setup-timer SECONDS | retransmission-timeout MSEC | max-retransmissions N
        ikev2-ikesa rekey [ disallow-param-change ]       (rekey at ~90% of the lifetime)
        dpd interval N [ retry-interval R ] [ maximum-retry M ]    (unconfirmed form)
        allow-cert-enc cert-hash-url                      (confirmed, S1)
        ocsp [ nonce ]     ocsp responder-address URL     (reference keywords; unconfirmed form)
        ca-crl list ca-crl-name CRL [ ca-crl-name CRL ]... (confirmed, S5)
        revocation setup-timer SECONDS                    (ours: per OCSP answer or CRL fetch)
        ipsec sink { count | echo }                       (ours: decrypted packets)
    test ipsec traffic spi SPI [ count N ] [ size BYTES ] (exec, ours: inner UDP to the peer)
        max-childsa N [ overload-action { ignore | terminate } ]
      wsg-service NAME                                    (cfg-ctx-wsg-service)
        bind address ADDRESS [ port PORT ] crypto-template TEMPLATE   (unconfirmed form)
        ip address pool name POOL   (up to 16, IPv4 `ip pool` or `ipv6 pool`; unconfirmed form)
      ipv6 pool NAME prefix X:X::X:X/N                    (unconfirmed form)
      crypto map NAME { ikev2-ipv4 | ikev2-ipv6 }         (cfg-crypto-ikev2-ipv4-map, confirmed)
        peer ADDRESS [ port PORT ]                        (unconfirmed)
        bind address ADDRESS [ port PORT ]                (ours: the gateway's side)
        authentication, certificate name, ca-certificate list, ikev2-ikesa ...: as in a template
Child-SA payloads and IPsec transform sets: payloads.py.
Where no public Cisco text confirms the syntax, the form above is ours;
the README lists it. Values and ranges follow the confirmed reference pages: transform-set
list at most 6 names, max-retransmissions 1-8 (default 5), retransmission-timeout
300-15000 ms (default 500), max-childsa 1-5 (default 2).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from supervisor.cli import CommandFailure, Deferred, EnterBlock, Result, SetLine
from supervisor.cli.grammar import Grammar
from supervisor.ike import payloads

TMPL_MODE = "cfg-crypto-tmpl-ikev2-tunnel"
MAP_MODES = {"ipv4": "cfg-crypto-ikev2-ipv4-map", "ipv6": "cfg-crypto-ikev2-ipv6-map"}
POLICY_MODES = (TMPL_MODE, *MAP_MODES.values())  # what a template and a crypto map share
TSET_MODE = "cfg-ctx-ikev2ikesa-tran-set"
WSG_MODE = "cfg-ctx-wsg-service"
NAME = "NAME(1-127)"
HELP = {
    "crypto": "Configures cryptographic settings",
    "template": "A crypto template (the IKEv2 policy of a service)",
    "ikev2-dynamic": "A template for dynamically connecting IKEv2 peers",
    "authentication": "How the peers prove their identity",
    "local": "The gateway's own authentication",
    "remote": "The peer's authentication",
    "certificate": "X.509 certificates (RFC 7427 digital signatures)",
    "name": "Name",
    "ca-certificate": "Trust anchors for the peers' certificates",
    "list": "A list",
    "ca-cert-name": "A configured ca-certificate",
    "ikev2-ikesa": "IKE SA settings",
    "transform-set": "IKE SA transform sets",
    "setup-timer": "Seconds an IKE SA may take to come up",
    "retransmission-timeout": "First retransmission after this many milliseconds",
    "max-retransmissions": "Retransmissions before giving up",
    "max-childsa": "Child SAs per IKE SA",
    "rekey": "Rekey the IKE SA at about 90% of its lifetime",
    "disallow-param-change": "A rekey keeps the negotiated transforms",
    "dpd": "Dead peer detection",
    "allow-cert-enc": "Certificate encodings accepted and sent besides X.509",
    "cert-hash-url": "Hash and URL of X.509 certificates (RFC 7296 3.6)",
    "interval": "Seconds without traffic before a liveness check",
    "retry-interval": "Seconds between liveness retries",
    "maximum-retry": "Liveness retries before the peer is declared dead",
    "overload-action": "What to do with a request beyond the maximum",
    "encryption": "Encryption algorithm",
    "group": "Diffie-Hellman group",
    "hmac": "Integrity algorithm",
    "prf": "Pseudo-random function",
    "lifetime": "Lifetime in seconds",
    "wsg-service": "A security gateway service",
    "bind": "Binds the service to an address",
    "address": "The gateway's address for IKE",
    "port": "UDP port (default 500)",
    "crypto-template": "The crypto template the service uses",
    "map": "A crypto map: the gateway initiates an IKE SA to a peer",
    "ikev2-ipv4": "IKEv2 over IPv4",
    "ikev2-ipv6": "IKEv2 over IPv6",
    "peer": "The peer's address",
    "ipv6": "IPv6 settings",
    "pool": "An address pool for the eNodeBs' inner addresses",
    "prefix": "The pool's IPv6 prefix (X:X::X:X/N)",
    "ip": "IP settings",
    "ocsp": "Check the peer's certificate with OCSP (RFC 6960)",
    "nonce": "Send a nonce and require the responder to echo it",
    "responder-address": "Ask this responder instead of the certificate's AIA URL",
    "ca-crl": "CRLs the peer's certificate is checked against",
    "ca-crl-name": "A configured ca-crl",
    "revocation": "Revocation checking of the peer's certificate",
}
# An IKE_AUTH waits for at most one OCSP answer and one CRL fetch, each bounded by the
# revocation setup timer: both must fit in the IKE SA setup timer with room to spare.
REVOCATION_TIMER_MAX = 10


def _crl_list(args: dict, ctx: Any) -> None:
    names = args["crl"]
    if len(set(names)) != len(names):
        raise CommandFailure("a ca-crl is listed twice")
    root = ctx.block.parent.parent
    missing = [n for n in names if root.get("ca-crl", n) is None]
    if missing:  # the reference: the CRL must already exist
        raise CommandFailure(
            f"ca-crl {missing[0]} is not configured (ca-crl name {missing[0]} ...)"
        )
    SetLine("ca-crl-list", data=lambda a: list(names))(args, ctx)


def _revocation_timer(args: dict, ctx: Any) -> None:
    setup = ctx.block.get("ikesa-setup-timer")
    limit = int(setup.data) if setup is not None else 30
    if 2 * args["value"] >= limit:
        raise CommandFailure(
            f"revocation setup-timer {args['value']} s: an OCSP answer and a CRL fetch must "
            f"fit in the IKE SA setup timer ({limit} s); use at most {(limit - 1) // 2} s"
        )
    SetLine("revocation-setup-timer", data=lambda a: a["value"])(args, ctx)


def _tset_line(field: str):
    return SetLine(field, data=lambda a: a[field])


def _ca_list(args: dict, ctx: Any) -> None:
    names = args["ca"]
    if len(set(names)) != len(names):
        raise CommandFailure("a ca-certificate is listed twice")
    SetLine("ca-certificate-list", data=lambda a: list(names))(args, ctx)


def _tset_list(args: dict, ctx: Any) -> None:
    names = args["tset"]
    if len(names) > 6:
        raise CommandFailure("at most 6 transform sets")
    SetLine("ikesa-transform-set-list", data=lambda a: list(names))(args, ctx)


def _address_in_use(ctx: Any, address: str, port: int) -> None:
    """A UDP address of the gateway serves one template or one crypto map, chassis-wide."""
    ip = ipaddress.ip_address(address)
    root = ctx.block.parent.parent
    for context in root.all("context"):
        for kind in ("wsg-service", "crypto-map"):
            for block in context.all(kind):
                bind = block.get("bind")
                if block is ctx.block or bind is None:
                    continue
                if (
                    ipaddress.ip_address(bind.data["address"]) == ip
                    and int(bind.data["port"]) == port
                ):
                    raise CommandFailure(
                        f"{address} port {port} is already bound by {kind} {block.name} "
                        f"in context {context.name}"
                    )


def _bind(args: dict, ctx: Any) -> None:
    context = ctx.block.parent
    if context is None or context.get("crypto-template", args["template"]) is None:
        raise CommandFailure(
            f"crypto template {args['template']} is not configured in this context"
        )
    _address_in_use(ctx, args["address"], args.get("port") or 500)
    SetLine(
        "bind",
        data=lambda a: {
            "address": a["address"],
            "port": a.get("port") or 500,
            "template": a["template"],
        },
    )(args, ctx)


IPV6_PREFIX = "STRING(3-43)"


def _prefix(text: str, version: int) -> str:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise CommandFailure(f"invalid prefix {text}: {exc}") from None
    if net.version != version:
        raise CommandFailure(f"{text} is not an IPv{version} prefix")
    return str(net)


def _service_pool(args: dict, ctx: Any) -> None:
    """`ip address pool name P`: up to 16 pools per service, tried in order (S17)."""
    context, name = ctx.block.parent, args["pool"]
    if context.get("ip-pool", name) is None and context.get("ipv6-pool", name) is None:
        raise CommandFailure(f"ip pool {name} is not configured in this context")
    if (
        ctx.block.get("ip-address-pool", name) is None
        and len(ctx.block.all("ip-address-pool")) >= 16
    ):
        raise CommandFailure("at most 16 pools per service")
    SetLine("ip-address-pool", "pool", data=lambda a: name)(args, ctx)


def _enter_map(args: dict, ctx: Any) -> None:
    family = args["family"].removeprefix("ikev2-")
    existing = ctx.block.get("crypto-map", args["name"])
    if existing is not None and existing.data["family"] != family:
        raise CommandFailure(
            f"crypto map {args['name']} is {existing.data['family']}; remove it first"
        )
    EnterBlock("crypto-map", "name", MAP_MODES[family], data=lambda a: {"family": family})(
        args, ctx
    )


def _family_address(ctx: Any, address: str, what: str) -> None:
    family = ctx.block.data["family"]
    if f"ipv{ipaddress.ip_address(address).version}" != family:
        raise CommandFailure(
            f"{what} {address} is not an {family} address (crypto map {ctx.block.name})"
        )


def _peer(args: dict, ctx: Any) -> None:
    _family_address(ctx, args["address"], "peer")
    SetLine("peer", data=lambda a: {"address": a["address"], "port": a.get("port") or 500})(
        args, ctx
    )


def _map_bind(args: dict, ctx: Any) -> None:
    _family_address(ctx, args["address"], "bind address")
    _address_in_use(ctx, args["address"], args.get("port") or 500)
    SetLine("bind", data=lambda a: {"address": a["address"], "port": a.get("port") or 500})(
        args, ctx
    )


def _card_rows(by_card: dict) -> tuple[dict, list[dict], list[int]]:
    """The cards that answered (slot -> rows), every row tagged with its card, and the slots
    of the cards that did not answer in time."""
    silent = sorted(slot for slot, sas in by_card.items() if sas is None)
    answered = {slot: sas for slot, sas in by_card.items() if sas is not None}
    rows = [{"card": slot, **row} for slot, sas in sorted(answered.items()) for row in sas]
    return answered, rows, silent


def _show_ikesa(args: dict, ctx: Any) -> Deferred:
    system, summary = ctx.system, "summary" in args

    async def work():
        return await system.ike_sas()

    def show(by_card: dict) -> Result:
        by_card, rows, silent = _card_rows(by_card)
        up = sum(1 for r in rows if r["state"] == "ESTABLISHED")
        counts = {
            str(slot): sum(1 for r in sas if r["state"] == "ESTABLISHED")
            for slot, sas in by_card.items()
        }
        if summary:
            lines = [f"IKEv2 SAs established: {up} (of {len(rows)})"]
            lines += [
                f"  card {slot}: {n}"
                for slot, n in sorted(counts.items(), key=lambda kv: int(kv[0]))
            ]
            lines += [f"  card {slot}: did not answer" for slot in silent]
            # what the cards refused, as each card counted since its process started
            card_counters = [r.get("counters") or {} for r in system.card_table()]
            refused = sum(c.get("ike_authfailed", 0) for c in card_counters)
            revoked = sum(c.get("ike_refused_revoked", 0) for c in card_counters)
            lines.append(f"IKE_AUTH refused: {refused} (revoked certificate: {revoked})")
            return Result(
                "\n".join(lines),
                {"established": up, "total": len(rows), "per_card": counts, "silent": silent,
                 "refused": refused, "refused_revoked": revoked},
            )  # fmt: skip
        lines = [
            f"{'Card':>4} {'Local':<21} {'Remote':<21} {'State':<12} {'Role':<9} {'Child':>5}  Peer ID / suite"
        ]
        for r in rows:
            lines.append(
                f"{r['card']:>4} {r['local']:<21} {r['remote']:<21} {r['state']:<12} {r['role']:<9} "
                f"{r['children']:>5}  {r['peer_id']} {r['suite']}"
                + (f" inner {r['address']}" if r.get("address") else "")
            )
        lines.append(f"Total IKEv2 SAs: {len(rows)}, established {up}")
        lines += [f"Card {slot} did not answer: its SAs are not listed" for slot in silent]
        return Result("\n".join(lines), {"sas": rows, "silent": silent})

    return Deferred(work, show)


def _show_ipsec(args: dict, ctx: Any) -> Deferred:
    system, summary = ctx.system, "summary" in args

    async def work():
        return await system.ike_sas("ipsec.sas")

    def show(by_card: dict) -> Result:
        by_card, rows, silent = _card_rows(by_card)
        per_card = {str(slot): len(sas) for slot, sas in sorted(by_card.items())}
        if summary:
            lines = [f"IPsec child SAs: {len(rows)}"]
            lines += [f"  card {slot}: {n}" for slot, n in per_card.items()]
            lines += [f"  card {slot}: did not answer" for slot in silent]
            return Result(
                "\n".join(lines), {"total": len(rows), "per_card": per_card, "silent": silent}
            )
        lines = []
        for r in rows:
            life = f"{r['lifetime_s']} s" if r.get("lifetime_s") is not None else "-"
            lines += [
                f"Card {r['card']}  peer {r['peer']} ({r['peer_id']})  payload {r['payload']}",
                f"  SPI in {r['spi_in']}  out {r['spi_out']}  {r['suite']}  lifetime {life}",
                f"  TSi {r['tsi']}  TSr {r['tsr']}",
                f"  packets in {r.get('packets_in', 0)} out {r.get('packets_out', 0)}  "
                f"bytes in {r.get('bytes_in', 0)} out {r.get('bytes_out', 0)}  "
                f"dropped {sum(v for k, v in r.items() if k.startswith('dropped_'))}",
            ]
        lines.append(f"Total IPsec child SAs: {len(rows)}")
        lines += [f"Card {slot} did not answer: its child SAs are not listed" for slot in silent]
        return Result("\n".join(lines), {"sas": rows, "silent": silent})

    return Deferred(work, show)


def _inject(args: dict, ctx: Any) -> Deferred:
    system = ctx.system
    try:
        spi = bytes.fromhex(args["spi"])
    except ValueError:
        spi = b""
    if len(spi) != 4:
        raise CommandFailure(f"{args['spi']} is not an ESP SPI (8 hex digits)")
    count, size = args.get("count") or 1, args.get("size") or 100

    async def work():
        return await system.ipsec_inject(spi, count, size)

    def show(sent: int) -> Result:
        return Result(f"Sent {sent} packet(s) through child SA {spi.hex()}", {"sent": sent})

    return Deferred(work, show)


def register(g: Grammar) -> None:
    g.command(
        "exec",
        "show crypto ikev2-ikesa security-associations [ summary ]",
        _show_ikesa,
        help={
            "show": "Displays information",
            "crypto": "Cryptographic state",
            "ikev2-ikesa": "IKEv2 security associations",
            "security-associations": "The IKE SAs of every packet card",
            "summary": "Counts only",
        },
    )
    g.command(
        "exec",
        "show crypto ipsec security-associations [ summary ]",
        _show_ipsec,
        help={
            "show": "Displays information",
            "crypto": "Cryptographic state",
            "ipsec": "IPsec (child) security associations",
            "security-associations": "The child SAs of every packet card",
            "summary": "Counts only",
        },
    )
    g.command(
        "exec",
        "test ipsec traffic spi <spi:STRING(8-8)> [ count <count:INT(1-100000)> ]"
        " [ size <size:INT(4-1400)> ]",
        _inject,
        help={
            "test": "Test traffic",
            "ipsec": "Through a child SA",
            "traffic": "Inner UDP packets toward the peer",
            "spi": "The child's inbound SPI (show crypto ipsec security-associations)",
            "count": "Packets",
            "size": "UDP payload bytes",
        },  # fmt: skip
    )
    g.mode(TMPL_MODE, TMPL_MODE, "config-ctx")
    for mode in MAP_MODES.values():
        g.mode(mode, mode, "config-ctx")
    g.mode(TSET_MODE, TSET_MODE, "config-ctx")
    g.mode(WSG_MODE, WSG_MODE, "config-ctx")

    g.command(
        "config-ctx",
        f"crypto template <name:{NAME}> ikev2-dynamic",
        EnterBlock("crypto-template", "name", TMPL_MODE),
        no=f"crypto template <name:{NAME}>",
        help=HELP,
    )
    g.command(
        "config-ctx",
        f"ikev2-ikesa transform-set <name:{NAME}>",
        EnterBlock("ikesa-transform-set", "name", TSET_MODE),
        no=f"ikev2-ikesa transform-set <name:{NAME}>",
        help=HELP,
    )
    g.command(
        "config-ctx",
        f"wsg-service <name:{NAME}>",
        EnterBlock("wsg-service", "name", WSG_MODE),
        no=f"wsg-service <name:{NAME}>",
        help=HELP,
    )

    # --- the template
    g.command(
        POLICY_MODES,
        "authentication { local | remote }@side certificate",
        SetLine("authentication", "side", data=lambda a: "certificate"),
        no="authentication { local | remote }@side",
        help=HELP,
    )
    g.command(POLICY_MODES, f"certificate name <cert:{NAME}>", SetLine("certificate", data=lambda a: a["cert"]),
              no="certificate", help=HELP)  # fmt: skip
    g.command(
        POLICY_MODES,
        "ca-certificate list ca-cert-name <ca:NAME(1-129)> [ ca-cert-name <ca:NAME(1-129)> ]...",
        _ca_list,
        no="ca-certificate",
        no_handler=lambda a, ctx: SetLine("ca-certificate-list").remove(a, ctx),
        help=HELP,
    )
    g.command(
        POLICY_MODES,
        f"ikev2-ikesa transform-set list <tset:{NAME}> [ <tset:{NAME}> ]...",
        _tset_list,
        no="ikev2-ikesa transform-set list",
        no_handler=lambda a, ctx: SetLine("ikesa-transform-set-list").remove(a, ctx),
        help=HELP,
    )
    for word, typ in (
        ("setup-timer", "INT(1-3600)"),
        ("retransmission-timeout", "INT(300-15000)"),
        ("max-retransmissions", "INT(1-8)"),
    ):
        g.command(
            POLICY_MODES,
            f"ikev2-ikesa {word} <value:{typ}>",
            SetLine(f"ikesa-{word}", data=lambda a: a["value"]),
            no=f"ikev2-ikesa {word}",
            help=HELP,
        )
    g.command(
        POLICY_MODES,
        "ikev2-ikesa rekey [ disallow-param-change ]",
        SetLine(
            "ikesa-rekey", data=lambda a: {"disallow-param-change": "disallow-param-change" in a}
        ),
        no="ikev2-ikesa rekey",
        help=HELP,
    )
    g.command(
        POLICY_MODES,
        "dpd interval <interval:INT(10-3600)> [ retry-interval <retry:INT(1-100)> ]"
        " [ maximum-retry <tries:INT(1-100)> ]",
        SetLine(
            "dpd",
            data=lambda a: {
                "interval": a["interval"],
                "retry-interval": a.get("retry", 2),
                "maximum-retry": a.get("tries", 3),
            },
        ),  # fmt: skip
        no="dpd",
        help=HELP,
    )
    g.command(
        POLICY_MODES,
        "ipsec sink { count | echo }@mode",
        SetLine("ipsec-sink", data=lambda a: a["mode"]),
        no="ipsec sink",
        help={
            **HELP,
            "ipsec": "IPsec data plane",
            "sink": "What the card does with decrypted packets (ours)",
            "count": "Count them",
            "echo": "Count them and send them back through the same child, addresses swapped",
        },  # fmt: skip
    )
    g.command(
        POLICY_MODES,
        "allow-cert-enc cert-hash-url",
        SetLine("allow-cert-enc", data=lambda a: "cert-hash-url"),
        no="allow-cert-enc cert-hash-url",
        help=HELP,
    )
    g.command(
        POLICY_MODES,
        "ocsp [ nonce ]",
        SetLine("ocsp", data=lambda a: {"nonce": "nonce" in a}),
        no="ocsp",
        help=HELP,
    )
    g.command(
        POLICY_MODES,
        "ocsp responder-address <url:URL>",
        SetLine("ocsp-responder-address", data=lambda a: a["url"]),
        no="ocsp responder-address",
        help=HELP,
    )
    g.command(
        POLICY_MODES,
        "ca-crl list ca-crl-name <crl:NAME(1-129)> [ ca-crl-name <crl:NAME(1-129)> ]...",
        _crl_list,
        no="ca-crl",
        no_handler=lambda a, ctx: SetLine("ca-crl-list").remove(a, ctx),
        help=HELP,
    )
    g.command(
        POLICY_MODES,
        f"revocation setup-timer <value:INT(1-{REVOCATION_TIMER_MAX})>",
        _revocation_timer,
        no="revocation setup-timer",
        no_handler=lambda a, ctx: SetLine("revocation-setup-timer").remove(a, ctx),
        help=HELP,
    )
    g.command(
        TMPL_MODE,
        "max-childsa <count:INT(1-5)> [ overload-action { ignore | terminate }@action ]",
        SetLine(
            "max-childsa",
            data=lambda a: {"count": a["count"], "action": a.get("action") or "ignore"},
        ),
        no="max-childsa",
        help=HELP,
    )

    # --- IKE SA transform sets
    g.command(TSET_MODE, "encryption { aes-cbc-128 | aes-cbc-256 | aes-gcm-128 | aes-gcm-256 }@encryption",
              _tset_line("encryption"), no="encryption", help=HELP)  # fmt: skip
    g.command(
        TSET_MODE, "group { 14 | 19 | 20 | 31 }@group", _tset_line("group"), no="group", help=HELP
    )
    g.command(TSET_MODE, "hmac { sha2-256-128 | sha2-384-192 | sha2-512-256 }@hmac", _tset_line("hmac"),
              no="hmac", help=HELP)  # fmt: skip
    g.command(
        TSET_MODE,
        "prf { sha2-256 | sha2-384 | sha2-512 }@prf",
        _tset_line("prf"),
        no="prf",
        help=HELP,
    )
    g.command(
        TSET_MODE,
        "lifetime <lifetime:INT(60-86400)>",
        _tset_line("lifetime"),
        no="lifetime",
        help=HELP,
    )

    # --- crypto maps (the gateway initiates)
    g.command(
        "config-ctx",
        f"crypto map <name:{NAME}> {{ ikev2-ipv4 | ikev2-ipv6 }}@family",
        _enter_map,
        no=f"crypto map <name:{NAME}>",
        no_handler=lambda a, ctx: EnterBlock("crypto-map", "name", TMPL_MODE).remove(a, ctx),
        help=HELP,
    )
    g.command(tuple(MAP_MODES.values()), "peer <address:IPADDR> [ port <port:INT(1-65535)> ]",
              _peer, no="peer", no_handler=lambda a, ctx: SetLine("peer").remove(a, ctx), help=HELP)  # fmt: skip
    g.command(tuple(MAP_MODES.values()), "bind address <address:IPADDR> [ port <port:INT(1-65535)> ]",
              _map_bind, no="bind address", no_handler=lambda a, ctx: SetLine("bind").remove(a, ctx),
              help=HELP)  # fmt: skip
    payloads.register(g, TMPL_MODE, MAP_MODES)

    # --- inner addresses for the eNodeBs (CP): IPv6 pools and the service's pool list
    g.command(
        "config-ctx",
        f"ipv6 pool <name:NAME(1-31)> prefix <prefix:{IPV6_PREFIX}>",
        SetLine("ipv6-pool", "name", data=lambda a: {"prefix": _prefix(a["prefix"], 6)}),
        no="ipv6 pool <name:NAME(1-31)>",
        help=HELP,
    )
    g.command(
        WSG_MODE,
        "ip address pool name <pool:NAME(1-31)>",
        _service_pool,
        no="ip address pool name <pool:NAME(1-31)>",
        no_handler=lambda a, ctx: SetLine("ip-address-pool", "pool").remove(a, ctx),
        help=HELP,
    )

    # --- the service
    g.command(
        WSG_MODE,
        f"bind address <address:IPADDR> [ port <port:INT(1-65535)> ] crypto-template <template:{NAME}>",
        _bind,
        no="bind address",
        no_handler=lambda a, ctx: SetLine("bind").remove(a, ctx),
        help=HELP,
    )
