"""Configuration commands: global (config), context (config-ctx), interface (config-if-eth)."""

from __future__ import annotations

import ipaddress
from typing import Any

from .actions import EnterBlock, SetLine
from .grammar import Grammar
from .result import CommandFailure

HELP = {
    "system": "Configures system-wide parameters",
    "hostname": "Sets the system host name shown in the prompt",
    "context": "Creates or enters a context",
    "interface": "Creates or enters an IP interface",
    "ip": "Configures IP parameters",
    "pool": "Configures an IP address pool",
    "address": "Configures the IP address",
    "mask": "Subnet mask",
    "public": "Public pool: addresses handed out to remote peers",
    "private": "Private pool: addresses handed out only on static request",
    "priority": "Pool priority, 0 is the highest",
    "description": "Sets a description",
    "text": "Description text",
    "name": "Name",
}


def _check_mask(args: dict, ctx: Any) -> None:
    inverse = int(ipaddress.IPv4Address(args["mask"])) ^ 0xFFFFFFFF
    if inverse & (inverse + 1):  # ones must be contiguous from the left
        raise CommandFailure(f"{args['mask']} is not a valid subnet mask")


def _no_context(args: dict, ctx: Any) -> Any:
    if args["name"] == "local":
        raise CommandFailure("the local context cannot be removed")
    return EnterBlock("context", "name", "config-ctx").remove(args, ctx)


def register(g: Grammar) -> None:
    g.mode("config-ctx", "config-ctx", "config")
    g.mode("config-if-eth", "config-if-eth", "config-ctx")

    hostname = SetLine("hostname", data=lambda a: a["name"], first=True)
    g.command(
        "config",
        "system hostname <name:NAME(1-63)>",
        hostname,
        no="system hostname",
        help={**HELP, "name": "Host name"},
    )
    g.command(
        "config",
        "context <name:NAME(1-79)>",
        EnterBlock("context", "name", "config-ctx"),
        no="context <name:NAME(1-79)>",
        no_handler=_no_context,
        help={**HELP, "name": "Context name"},
    )

    g.command(
        "config-ctx",
        "interface <name:NAME(1-79)>",
        EnterBlock("interface", "name", "config-if-eth"),
        no="interface <name:NAME(1-79)>",
        help={**HELP, "name": "Interface name"},
    )
    g.command(
        "config-ctx",
        "ip pool <name:NAME(1-31)> <address:IPV4> <mask:IPV4>"
        " [ { public | private }@scope <priority:INT(0-10)> ]",
        SetLine("ip-pool", "name", check=_check_mask),
        no="ip pool <name:NAME(1-31)>",
        help={**HELP, "name": "Pool name", "address": "Network address"},
    )

    g.command(
        "config-if-eth",
        "ip address <address:IPV4> <mask:IPV4>",
        SetLine("ip-address", check=_check_mask),
        no="ip address",
        help=HELP,
    )
    g.command(
        "config-if-eth",
        "description <text:STRING(1-79)>",
        SetLine("description", data=lambda a: a["text"]),
        no="description",
        help=HELP,
    )
