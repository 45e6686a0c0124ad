"""Exec-mode commands: mode changes, session settings, show commands, card operations."""

from __future__ import annotations

from typing import Any

from . import show
from .grammar import Grammar
from .result import CommandFailure, Deferred, Result

CTX_NAME = "NAME(1-79)"

HELP = {
    "configure": "Enters the configuration mode",
    "config": "Enters the configuration mode",
    "context": "Changes the current context",
    "show": "Displays information",
    "card": "Performs card operations",
    "reboot": "Reboots a card",
    "slot": "Card slot number",
    "-force": "Reboots even if it affects service",
    "-noconfirm": "Executes the command without a confirmation prompt",
    "table": "Displays the card table",
    "version": "Displays software version information",
    "all": "Displays all contexts",
    "configuration": "Displays the running configuration",
    "errors": "Displays configuration errors",
    "verbose": "Displays more detail",
    "terminal": "Sets terminal characteristics for this session",
    "length": "Sets the number of lines per screen (0 = no paging)",
    "width": "Sets the number of characters per line",
    "lines": "Lines per screen",
    "columns": "Characters per line",
    "timestamps": "Prints a timestamp line before each command's output",
    "name": "Context name",
}
SHOW_HELP = {
    **HELP,
    "card": "Displays card information",
    "context": "Displays context information",
    "context_name": "Context name",
}


def _context(args: dict, ctx: Any) -> None:
    name = args["name"]
    if ctx.engine.config.context(name) is None:
        raise CommandFailure(f"context {name} does not exist")
    ctx.later(lambda: setattr(ctx.session, "exec_context", name))


def _show_card_table(args: dict, ctx: Any) -> Result:
    text, data = show.card_table(ctx.system.card_table())
    return Result(text, data)


def _show_version(args: dict, ctx: Any) -> Result:
    text, data = show.version(ctx.system.version())
    return Result(text, data)


def _show_context_all(args: dict, ctx: Any) -> Result:
    text, data = show.context_all(ctx.engine.config)
    return Result(text, data)


def _show_configuration(args: dict, ctx: Any) -> Result:
    config = ctx.engine.config
    block = None
    if "context" in args and isinstance(args["context"], str):
        block = config.context(args["context"])
        if block is None:
            raise CommandFailure(f"context {args['context']} does not exist")
    if args.get("errors"):
        text, data = show.config_errors(config, block, bool(args.get("verbose")))
        return Result(text, data)
    tree = config.tree(include_errored=True)
    if block is not None:
        tree = {"context": {block.name: tree["context"][block.name]}}
    errored = [show.where(b) for b in config.errored_blocks(block)]
    return Result(config.render(block), {"config": tree, "errored": errored})


def _card_reboot(args: dict, ctx: Any) -> Result:
    def run() -> Result:
        return Result(ctx.system.card_reboot(args["slot"], bool(args.get("-force"))) or "")

    return run() if args.get("-noconfirm") else ctx.confirm(run)


def _card_migrate(args: dict, ctx: Any) -> Any:
    system = ctx.system

    def run() -> Deferred:
        async def work():
            return await system.card_migrate(args["src"], args["dst"])

        return Deferred(work, lambda text: Result(text))

    return run() if args.get("-noconfirm") else ctx.confirm(run)


def _card_halt(args: dict, ctx: Any) -> Any:
    system = ctx.system

    def run() -> Deferred:
        async def work():
            return await system.card_halt(args["slot"], bool(args.get("-force")))

        return Deferred(work, lambda text: Result(text))

    return run() if args.get("-noconfirm") else ctx.confirm(run)


def _card_switch(args: dict, ctx: Any) -> Any:
    system = ctx.system

    def run() -> Deferred:
        async def work():
            return await system.card_switch(args.get("src"), args.get("dst"))

        return Deferred(work, lambda text: Result(text))

    return run() if args.get("-noconfirm") else ctx.confirm(run)


def _session_flag(attr: str, value: Any):
    def handler(args: dict, ctx: Any) -> None:
        ctx.later(lambda: setattr(ctx.session, attr, args.get(value, value)))

    return handler


def register(g: Grammar) -> None:
    enter_config = lambda args, ctx: ctx.enter("config", ctx.engine.config.root)  # noqa: E731
    g.command("exec", "configure", enter_config, help=HELP)
    g.command("exec", "config", enter_config, help=HELP, hidden=True)  # unicon sends `config`
    g.command("exec", f"context <name:{CTX_NAME}>", _context, help=HELP)
    g.command("exec", "show card table", _show_card_table, help=SHOW_HELP)
    g.command("exec", "show version", _show_version, help=SHOW_HELP)
    g.command("exec", "show context all", _show_context_all, help=SHOW_HELP)
    g.command(
        "exec",
        f"show configuration [ context <context:{CTX_NAME}> ] [ errors [ verbose ] ]",
        _show_configuration,
        help={**SHOW_HELP, "context": "Displays the configuration of one context"},
    )
    g.command(
        "exec",
        "card reboot <slot:INT(0-18)> [ { -force | -noconfirm } ]...",
        _card_reboot,
        help=HELP,
    )
    g.command(
        "exec",
        "card migrate from <src:INT(0-18)> to <dst:INT(0-18)> [ -noconfirm ]",
        _card_migrate,
        help={
            **HELP,
            "migrate": "Moves every session of an active card to the standby card",
            "from": "The active card",
            "to": "The standby card",
        },  # fmt: skip
    )
    g.command(
        "exec",
        "card halt <slot:INT(0-18)> [ { -force | -noconfirm } ]...",
        _card_halt,
        help={
            **HELP,
            "halt": "Migrates an active card's sessions to the standby, then takes "
            "the card offline",
        },  # fmt: skip
    )
    g.command(
        "exec",
        "card switch from <src:INT(0-18)> to <dst:INT(0-18)> [ -noconfirm ]",
        _card_switch,
        help={
            **HELP,
            "switch": "Switches the management cards over (planned)",
            "from": "The active card",
            "to": "The standby card",
        },  # fmt: skip
    )
    g.command(
        "exec",
        "card smc switchover [ -noconfirm ]",
        _card_switch,
        help={**HELP, "smc": "The management cards", "switchover": "Makes the standby active"},
    )
    # Automation sends these at login; accepted and remembered, paging is the client's job.
    g.command(
        "exec",
        "terminal length <lines:INT(0-512)>",
        _session_flag("terminal_length", "lines"),
        help=HELP,
    )
    g.command(
        "exec",
        "terminal width <columns:INT(80-512)>",
        _session_flag("terminal_width", "columns"),
        help=HELP,
    )
    g.command(
        "exec",
        "timestamps",
        _session_flag("timestamps", True),
        help=HELP,
        no="timestamps",
        no_handler=_session_flag("timestamps", False),
    )
