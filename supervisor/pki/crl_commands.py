"""CRL commands (reference: "IPSec Certificates", CRL Fetching), registered as a CLI plugin.

Global configuration:
  ca-crl name NAME { der | pem } url URL [ refresh-interval MINUTES ]     no ca-crl name NAME
Exec:
  show ca-crl { all | name NAME }

URL is a /flash, /usb1 or /hd-raid path, or a tftp, ftp, sftp, http or ldap URL (ldap:
the entry's certificateRevocationList;binary). A configured CRL is fetched at once, then
again when its nextUpdate passes or its refresh interval (default 60 minutes) elapses,
whichever comes first; the management card verifies it against the configured CA
certificates and sends every packet card a compact index of its serial numbers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from supervisor.cli import CommandFailure, Result, SetLine
from supervisor.cli.grammar import Grammar

NAME = "NAME(1-129)"
HELP = {
    "ca-crl": "Configures a certificate revocation list (CRL) to fetch",
    "name": "CRL name",
    "der": "The CRL is DER-encoded",
    "pem": "The CRL is PEM-encoded",
    "url": "Where to fetch it: /flash|/usb1|/hd-raid path, tftp, ftp, sftp, http or ldap URL",
    "refresh-interval": "Minutes between fetches when nextUpdate is later (default 60)",
    "all": "Every CRL, configured or learned from a certificate's CDP",
}


def _crl_line(args: dict, ctx: Any) -> None:
    """Store the line; the CRL is fetched at once, also when the same line is entered again
    (the way to pick up a CRL published before its predecessor's nextUpdate)."""
    SetLine(
        "ca-crl",
        "name",
        data=lambda a: {
            "encoding": a["encoding"],
            "url": a["url"],
            "refresh-interval": a.get("minutes", 60),
        },
    )(args, ctx)
    refetch = getattr(ctx.system, "crl_refetch", None)
    if refetch is not None:
        refetch(args["name"])


def _referenced_by(root, name: str) -> str | None:
    for context in root.all("context"):
        for kind in ("crypto-template", "crypto-map"):
            for block in context.all(kind):
                line = block.get("ca-crl-list")
                if line is not None and name in line.data:
                    return f"{kind} {block.name} in context {context.name}"
    return None


def _no_crl(args: dict, ctx: Any) -> None:
    user = _referenced_by(ctx.block, args["name"])
    if user is not None:
        raise CommandFailure(f"ca-crl {args['name']} is in use by {user}")
    SetLine("ca-crl", "name").remove(args, ctx)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _show(args: dict, ctx: Any) -> Result:
    name = args.get("name")
    rows = ctx.system.crl_report(name)
    if name is not None and not rows:
        raise CommandFailure(f"ca-crl {name} is not configured")
    out = []
    for r in rows:
        cards = ", ".join(f"{slot}: {held}" for slot, held in r["cards"].items()) or "none"
        out += [
            f"CRL name: {r['name'] or '(from a certificate CDP)'}",
            f"  Source URL   : {r['url']}",
            f"  Issuer       : {r['issuer'] or '-'}",
            f"  This update  : {_when(r['this_update'])}",
            f"  Next update  : {_when(r['next_update'])}",
            f"  CRL number   : {r['number'] if r['number'] is not None else '-'}",
            f"  Entries      : {r['count'] if r['count'] is not None else '-'}",
            f"  Version      : {r['version']}",
            f"  Last fetch   : {_when(r['last_fetch'])}: {r['last_result']}",
            f"  Next fetch   : {_when(r['next_fetch'])}",
            f"  Cards        : {cards}",
        ]
    return Result("\n".join(out) or "No CRL configured", {"items": rows})


def register(g: Grammar) -> None:
    g.command(
        "config",
        f"ca-crl name <name:{NAME}> {{ der | pem }}@encoding url <url:URL>"
        " [ refresh-interval <minutes:INT(1-10080)> ]",
        _crl_line,
        no=f"ca-crl name <name:{NAME}>",
        no_handler=_no_crl,
        help=HELP,
    )
    g.command("exec", f"show ca-crl {{ all | name <name:{NAME}> }}", _show, help=HELP)
