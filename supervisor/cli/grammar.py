"""Grammar: modes, command registration and matching (parse, complete, help).

All commands of a mode are compiled into one token graph (see syntax.py). Matching a word:

1. a keyword spelled out in full wins;
2. otherwise a unique prefix of the keywords possible here is accepted (`sh card tab`);
   a prefix of several different keywords is ambiguous, unless an argument accepts the word;
3. otherwise the argument types possible here are tried.

Registration from other modules::

    def register(g: Grammar) -> None:
        g.command("config-ctx", "ip pool <name:NAME(1-31)> <address:IPV4> <mask:IPV4>",
                  SetLine("ip-pool", "name"), no="ip pool <name:NAME(1-31)>",
                  help={"ip": "IP configuration", "pool": "Configures an IP address pool"})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .argtypes import BUILTIN_TYPES, ArgType, TypeFactory
from .syntax import ARG, END, EPS, KW, GrammarError, Node, compile_syntax, list_vars, parse_syntax
from .tokens import Token

Handler = Callable[[dict, Any], Any]

DEFAULT_HELP = {
    "no": "Negates a command or restores its default",
    "show": "Displays information",
    "exit": "Exits the current mode",
    "end": "Returns to Exec mode",
}


@dataclass(frozen=True)
class Mode:
    name: str
    label: str | None  # prompt suffix, e.g. "config-ctx" -> host(config-ctx)#; None for Exec
    parent: str | None


@dataclass(eq=False)
class Command:
    mode: str
    syntax: str
    handler: Handler
    vars: set[str]
    multi: set[str]
    hidden: bool = False
    entry: Node | None = None


@dataclass(frozen=True)
class ParseError:
    kind: str  # "invalid" | "ambiguous" | "incomplete" | "unterminated"
    column: int
    token: int | None = None  # index of the offending word

    @property
    def message(self) -> str:
        return {
            "invalid": "Invalid input detected at '^' marker.",
            "ambiguous": "Ambiguous command at '^' marker.",
            "incomplete": "Incomplete command.",
            "unterminated": "Unterminated quoted string at '^' marker.",
        }[self.kind]

    def render(self, line: str) -> str:
        if self.kind == "incomplete":
            return self.message
        shown = line.replace("\t", " ").rstrip("\r\n")
        return f"{shown}\n{' ' * self.column}^\n{self.message}"


@dataclass
class Match:
    command: Command
    args: dict  # variables (lists for repeated ones), labels, and matched keywords -> True
    values: dict  # variables and labels only (the default projection data)
    words: tuple[str, ...]  # canonical words: keywords in full, arguments rendered
    line: str  # " ".join(words): the canonical line stored in the configuration


Positions = list[tuple[Node, Any]]  # (token/END node, trace of matched (node, value) pairs)


@dataclass
class Grammar:
    modes: dict[str, Mode] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    types: dict[str, TypeFactory] = field(default_factory=lambda: dict(BUILTIN_TYPES))
    keyword_help: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_HELP))
    _roots: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mode("exec", None, None)
        self.mode("config", "config", "exec")

    # -- registration --------------------------------------------------------------------------

    def register_type(self, name: str, factory: TypeFactory) -> None:
        self.types[name] = factory

    def resolve_type(self, name: str, params: str | None) -> ArgType:
        return self.types[name](params)

    def mode(self, name: str, label: str | None, parent: str | None) -> Mode:
        """Declare a mode; `exit` (up one mode) and `end` (to Exec) come with it."""
        if name in self.modes:
            return self.modes[name]
        if parent is not None and parent not in self.modes:
            raise GrammarError(f"unknown parent mode {parent!r}")
        mode = self.modes[name] = Mode(name, label, parent)
        self.command(name, "exit", lambda args, ctx: ctx.exit())
        self.command(name, "end", lambda args, ctx: ctx.end())
        return mode

    def command(
        self,
        mode: str | Iterable[str],
        syntax: str,
        handler: Handler,
        *,
        help: dict[str, str] | None = None,
        no: str | None = None,
        no_handler: Handler | None = None,
        hidden: bool = False,
    ) -> Command:
        """Register `syntax` in one or more modes. `no` is the syntax of the negated form
        without the leading `no`; its handler is `no_handler` or `handler.remove`."""
        modes = [mode] if isinstance(mode, str) else list(mode)
        help = {**self.keyword_help, **(help or {})}
        first = None
        for m in modes:
            cmd = self._add(m, syntax, handler, help, hidden)
            first = first or cmd
            if no is not None:
                undo = no_handler or getattr(handler, "remove", None)
                if undo is None:
                    raise GrammarError(f"`no {no}` needs no_handler= or a handler with .remove")
                self._add(m, f"no {no}", undo, help, hidden)
        assert first is not None
        return first

    def _add(self, mode: str, syntax: str, handler: Handler, help: dict, hidden: bool) -> Command:
        if mode not in self.modes:
            raise GrammarError(f"unknown mode {mode!r}")
        ast = parse_syntax(syntax, self.resolve_type)
        names, multi = list_vars(ast)
        cmd = Command(mode, syntax, handler, names, multi, hidden)
        cmd.entry, _ = compile_syntax(ast, cmd, help, multi)
        self.commands.append(cmd)
        self._roots.pop(mode, None)
        return cmd

    def root(self, mode: str) -> Node:
        if mode not in self._roots:
            entries = [c.entry for c in self.commands if c.mode == mode and c.entry]
            self._roots[mode] = Node(EPS, entries)
        return self._roots[mode]

    # -- matching ------------------------------------------------------------------------------

    def walk(self, mode: str, tokens: Iterable[Token]) -> Positions | ParseError:
        """Consume `tokens`; return the positions reachable after them, or the first error."""
        positions = _closure([(self.root(mode), None)])
        for i, tok in enumerate(tokens):
            positions, kind = _step(positions, tok)
            if kind:
                return ParseError(kind, tok.start, i)
        return positions

    def parse(self, mode: str, tokens: tuple[Token, ...], line_end: int) -> Match | ParseError:
        positions = self.walk(mode, tokens)
        if isinstance(positions, ParseError):
            return positions
        for node, trace in positions:
            if node.kind == END:
                return _match(node.command, trace)
        return ParseError("incomplete", line_end)

    def complete(self, mode: str, tokens: tuple[Token, ...], partial: str) -> list[str]:
        positions = self.walk(mode, tokens)
        if isinstance(positions, ParseError):
            return []
        p = partial.lower()
        return sorted(
            {n.word for n, _ in positions if n.kind == KW and n.word.startswith(p) and _shown(n)}
        )

    def help(
        self, mode: str, tokens: tuple[Token, ...], partial: Token | None
    ) -> list[tuple[str, str]] | ParseError:
        positions = self.walk(mode, tokens)
        if isinstance(positions, ParseError):
            return positions
        p = partial.text.lower() if partial and not partial.quoted else ""
        keywords: dict[str, str] = {}
        args: dict[str, str] = {}
        can_end = False
        for node, _ in positions:
            if node.kind == KW and _shown(node) and node.word.startswith(p):
                if not (partial and partial.quoted):
                    keywords[node.word] = keywords.get(node.word) or node.help
            elif node.kind == ARG and _shown(node) and (partial is None or _accepts(node, partial)):
                text = " ".join(s for s in (node.help, node.type.describe) if s)
                args.setdefault(f"<{node.var}>", text)
            elif node.kind == END and partial is None:
                can_end = True
        out = sorted(keywords.items()) + list(args.items())
        return out + [("<cr>", "")] if can_end else out


def _shown(node: Node) -> bool:
    return not (node.command is not None and node.command.hidden)


def _accepts(node: Node, tok: Token) -> bool:
    try:
        node.type.parse(tok)
    except ValueError:
        return False
    return True


def _closure(starts: Positions) -> Positions:
    out: Positions = []
    seen: set[int] = set()
    stack = list(reversed(starts))
    while stack:
        node, trace = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.kind == EPS:
            stack.extend((n, trace) for n in reversed(node.next))
        else:
            out.append((node, trace))
    return out


def _step(positions: Positions, tok: Token) -> tuple[Positions, str | None]:
    matched: Positions = []
    ambiguous = False
    if not tok.quoted:
        word = tok.text.lower()
        kws = [(n, t) for n, t in positions if n.kind == KW]
        exact = [(n, t) for n, t in kws if n.word == word]
        if not exact:  # hidden commands (aliases) never match by abbreviation
            exact = [(n, t) for n, t in kws if n.word.startswith(word) and _shown(n)]
            if len({n.word for n, _ in exact}) > 1:
                ambiguous, exact = True, []
        matched = [(n, (t, n, n.word)) for n, t in exact]
    if not matched:
        for node, trace in positions:
            if node.kind == ARG:
                try:
                    matched.append((node, (trace, node, node.type.parse(tok))))
                except ValueError:  # ArgError, or a plugin type's own ValueError
                    continue
    if not matched:
        return [], "ambiguous" if ambiguous else "invalid"
    return _closure([(n, trace) for node, trace in matched for n in node.next]), None


def _match(cmd: Command, trace: Any) -> Match:
    items = []
    while trace is not None:
        trace, node, value = trace
        items.append((node, value))
    items.reverse()
    args: dict = {v: [] for v in cmd.multi}
    values: dict = {v: [] for v in cmd.multi}
    words = []
    for node, value in items:
        if node.kind == KW:
            words.append(node.word)
            if node.label:
                args[node.label] = values[node.label] = node.word
            args.setdefault(node.word, True)
        else:
            words.append(node.type.render(value))
            for d in (args, values):
                if node.multi:
                    d[node.var] = [*d.get(node.var, []), value]
                else:
                    d[node.var] = value
    return Match(cmd, args, values, tuple(words), " ".join(words))
