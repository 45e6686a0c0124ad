"""The engine: one grammar, one running configuration, any number of sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from . import commands_config, commands_exec
from .config import Block, Config
from .grammar import Grammar
from .result import BootError, ConfigError
from .session import Session
from .system import System

Plugin = Callable[[Grammar], None]


def default_grammar(plugins: Iterable[Plugin] = ()) -> Grammar:
    grammar = Grammar()
    for register in (commands_exec.register, commands_config.register, *plugins):
        register(grammar)
    return grammar


class Engine:
    def __init__(
        self,
        system: System,
        hostname: str | None = None,
        plugins: Iterable[Plugin] = (),
        grammar: Grammar | None = None,
    ):
        self.system = system
        self.grammar = grammar or default_grammar(plugins)
        self.config = Config()
        root = self.config.root
        if hostname:
            root.set_line("hostname", None, f"system hostname {hostname}", hostname, first=True)
        root.child("context", "local", "context local", {})
        self.config.version = 0

    @property
    def version(self) -> int:
        return self.config.version

    @property
    def hostname(self) -> str:
        node = self.config.root.get("hostname")
        return str(node.data) if node is not None else self.system.platform

    def new_session(self, now: Callable[[], datetime] | None = None) -> Session:
        return Session(self, now)

    def config_text(self, context: str | None = None, secrets: bool = False) -> str:
        block = self.config.context(context) if context else None
        if context and block is None:
            raise KeyError(f"context {context} does not exist")
        return self.config.render(block, secrets=secrets)

    def projection(self) -> dict[str, Any]:
        """The running configuration for the packet cards: errored blocks and secrets removed."""
        return {"version": self.version, "hostname": self.hostname, "config": self.config.tree()}

    def errors(self) -> list[tuple[Block, ConfigError]]:
        return [(b, e) for b in self.config.errored_blocks() for e in b.errors]

    def apply_boot(self, text: str, now: Callable[[], datetime] | None = None) -> list[BootError]:
        """apply_boot_async for configurations that need no I/O (tests, tools)."""
        steps = self.apply_boot_async(text, now)
        try:
            steps.send(None)
        except StopIteration as done:
            return done.value
        steps.close()
        raise RuntimeError(
            "this boot configuration needs I/O: run apply_boot_async in an event loop"
        )

    async def apply_boot_async(
        self, text: str, now: Callable[[], datetime] | None = None
    ) -> list[BootError]:
        """Run a configuration file line by line. A bad line is reported and not applied, the
        block it was in is marked errored (out of service), and the rest still applies. When
        the bad line opened a block (its following lines are indented deeper), that indented
        body is skipped too, so its lines cannot land in the wrong mode."""
        session = Session(self, now, boot=True)
        errors: list[BootError] = []
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            raw, line_no = lines[i], i + 1
            i += 1
            block = session.frames[-1].block
            result = session.execute(raw)
            if result.pending is not None:  # a URL to fetch, a key to generate
                result = await result.pending()
            if session.closed:
                session = Session(self, now, boot=True)
            if not result.error:
                continue
            skipped, i = _skip_body(lines, i, _indent(raw))
            message, column = _summary(result.output)
            if skipped:
                message += f" ({skipped} nested line(s) skipped)"
            errors.append(BootError(line_no, raw.strip(), message, column))
            if block.attached:
                block.add_error(ConfigError(line_no, raw.strip(), message))
        return errors


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _skip_body(lines: list[str], i: int, indent: int) -> tuple[int, int]:
    """Skip the deeper-indented lines after line i-1 and the `#exit` closing them."""
    j = i
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
        j += 1
    if j == i or not any(lines[k].strip() for k in range(i, j)):
        return 0, i  # nothing nested: only the bad line itself failed
    if j < len(lines) and lines[j].strip() == "#exit" and _indent(lines[j]) == indent:
        j += 1
    return sum(1 for k in range(i, j) if lines[k].strip()), j


def _summary(output: str) -> tuple[str, int | None]:
    """One-line reason from an error output; the caret column for parse errors."""
    lines = output.splitlines()
    if len(lines) >= 3 and lines[-2].strip() == "^":
        return lines[-1], len(lines[-2]) - 1
    return (lines[-1] if lines else "error"), None
