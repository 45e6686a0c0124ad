"""Ready-made handlers for configuration commands that just store a line or open a block.

    g.command("config-if-eth", "description <text:STRING(1-79)>", SetLine("description"),
              no="description")
    g.command("config-ctx", "interface <name:NAME(1-79)>",
              EnterBlock("interface", "name", "config-if-eth"), no="interface <name:NAME(1-79)>")

`name` is the variable naming the node (None for a singleton line, or a callable(args));
`data(args)` builds the projection value (default: the command's variables and labels);
`check(args, ctx)` may raise CommandFailure before anything changes. The `.remove` method
is the default handler of the `no` form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .result import CommandFailure, Result

NameSpec = str | Callable[[dict], str] | None


def _name(spec: NameSpec, args: dict) -> str | None:
    if spec is None:
        return None
    return spec(args) if callable(spec) else str(args[spec])


class _Node:
    def __init__(
        self,
        kind: str,
        name: NameSpec = None,
        *,
        data: Callable[[dict], Any] | None = None,
        check: Callable[[dict, Any], None] | None = None,
    ):
        self.kind, self.name, self.data, self.check = kind, name, data, check

    def _data(self, args: dict, ctx: Any) -> Any:
        return self.data(args) if self.data else dict(ctx.values)

    def remove(self, args: dict, ctx: Any) -> Result | None:
        name = _name(self.name, args)
        if not ctx.block.remove(self.kind, name) and name is not None:
            return Result(f"Warning: {self.kind} {name} is not configured")
        return None


class SetLine(_Node):
    """Store the command's canonical line; re-issuing it replaces the old one in place."""

    def __init__(
        self,
        kind: str,
        name: NameSpec = None,
        *,
        secret: bool = False,
        display: Callable[[dict], str] | None = None,
        first: bool = False,
        **kw: Any,
    ):
        super().__init__(kind, name, **kw)
        self.secret, self.display, self.first = secret, display, first

    def __call__(self, args: dict, ctx: Any) -> None:
        if self.check:
            self.check(args, ctx)
        try:
            ctx.block.set_line(
                self.kind,
                _name(self.name, args),
                ctx.line,
                self._data(args, ctx),
                secret=self.secret,
                display=self.display(args) if self.display else None,
                first=self.first,
            )
        except ValueError as exc:
            raise CommandFailure(str(exc)) from None


class EnterBlock(_Node):
    """Create the block if missing and enter its mode."""

    def __init__(self, kind: str, name: NameSpec, mode: str, **kw: Any):
        super().__init__(kind, name, **kw)
        self.mode = mode

    def __call__(self, args: dict, ctx: Any) -> None:
        if self.check:
            self.check(args, ctx)
        data = self.data(args) if self.data else {}  # the block's own fields, if any
        try:
            block = ctx.block.child(self.kind, _name(self.name, args), ctx.line, data)
        except ValueError as exc:
            raise CommandFailure(str(exc)) from None
        ctx.enter(self.mode, block)
