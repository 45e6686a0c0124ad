"""Command-syntax DSL: parse a syntax string and compile it into a token graph.

    keyword                 a literal word (lower case); abbreviations are accepted at parse time
    <var:TYPE>              a typed argument, e.g. <slot:INT(0-18)>, <name:NAME(1-79)>, <url:URL>
    { a | b }               exactly one alternative
    [ a | b ]               optional (one alternative or none)
    X...                    X one or more times (`[ X ]...` = zero or more); vars inside become lists
    {...}@label  kw@label   the keyword chosen is also stored as args[label] (e.g. scope=public)

The graph is a Thompson-style NFA: KW/ARG nodes consume one word, EPS nodes branch, END
nodes finish a command. Matching simulates all paths at once, so every command of a mode
lives in one graph and shared prefixes (`show ...`) need no special casing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .argtypes import ArgType


class GrammarError(ValueError):
    """A command definition is malformed (a programming error, raised at registration)."""


# ---- AST -------------------------------------------------------------------------------------


@dataclass
class Kw:
    word: str
    label: str | None = None


@dataclass
class Arg:
    var: str
    type: ArgType


@dataclass
class Seq:
    items: list[Any]


@dataclass
class Alt:
    options: list[Seq]
    optional: bool


@dataclass
class Rep:
    item: Any


_WORD = r"[^\s{}\[\]|<>@.]+(?:\.[^\s{}\[\]|<>@.]+)*"  # inner dots only: `kw...` = kw + repeat
_LEX = re.compile(rf"\s*(<[^>]*>|\.\.\.|[{{}}\[\]|]|@[A-Za-z_][\w-]*|{_WORD})")
_ARG = re.compile(r"^<([A-Za-z_]\w*):([A-Z][A-Z0-9_]*)(?:\(([^)]*)\))?>$")
_KW = re.compile(r"^[a-z0-9_-][a-z0-9_.:/-]*$")


def _lex(syntax: str) -> list[str]:
    out, pos = [], 0
    syntax = syntax.rstrip()
    while pos < len(syntax):
        m = _LEX.match(syntax, pos)
        if not m:
            raise GrammarError(f"cannot lex {syntax[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, syntax: str, resolve_type: Callable[[str, str | None], ArgType]):
        self.syntax = syntax
        self.toks = _lex(syntax)
        self.pos = 0
        self.resolve_type = resolve_type

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def fail(self, why: str) -> GrammarError:
        return GrammarError(f"{why} in syntax {self.syntax!r}")

    def parse(self) -> Seq:
        seq = self.seq()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()!r}")
        if not seq.items:
            raise self.fail("empty command")
        return seq

    def seq(self) -> Seq:
        items = []
        while self.peek() not in (None, "}", "]", "|"):
            items.append(self.item())
        return Seq(items)

    def item(self) -> Any:
        tok = self.take()
        if tok in ("{", "["):
            close = "}" if tok == "{" else "]"
            options = [self.seq()]
            while self.peek() == "|":
                self.take()
                options.append(self.seq())
            if self.peek() != close:
                raise self.fail(f"missing {close!r}")
            self.take()
            if any(not o.items for o in options):
                raise self.fail("empty alternative")
            node: Any = Alt(options, optional=tok == "[")
        elif tok.startswith("<"):
            m = _ARG.match(tok)
            if not m:
                raise self.fail(f"bad argument {tok!r} (want <var:TYPE> or <var:TYPE(a-b)>)")
            try:
                node = Arg(m.group(1), self.resolve_type(m.group(2), m.group(3)))
            except (KeyError, ValueError) as exc:
                raise self.fail(f"bad type in {tok!r}: {exc}") from None
        elif _KW.match(tok):
            node = Kw(tok)
        else:
            raise self.fail(f"unexpected {tok!r}")
        if self.peek() and self.peek().startswith("@"):
            self._label(node, self.take()[1:])
        if self.peek() == "...":
            self.take()
            node = Rep(node)
        return node

    def _label(self, node: Any, label: str) -> None:
        if isinstance(node, Kw):
            node.label = label
            return
        if not isinstance(node, Alt):
            raise self.fail("a label follows a keyword or a { } / [ ] group")
        for option in node.options:
            if not isinstance(option.items[0], Kw):
                raise self.fail("every alternative of a labelled group starts with a keyword")
            option.items[0].label = label


# ---- graph -----------------------------------------------------------------------------------

KW, ARG, EPS, END = "kw", "arg", "eps", "end"


@dataclass(eq=False)
class Node:
    kind: str
    next: list[Node] = field(default_factory=list)
    word: str = ""  # KW
    label: str | None = None  # KW
    var: str = ""  # ARG
    type: ArgType | None = None  # ARG
    multi: bool = False  # ARG collects a list
    help: str = ""
    command: Any = None  # owning Command (END nodes and every token node, for help/hidden)


def _vars(ast: Any, in_rep: bool, counts: dict[str, int], repeated: set[str]) -> None:
    if isinstance(ast, Arg):
        counts[ast.var] = counts.get(ast.var, 0) + 1
        if in_rep:
            repeated.add(ast.var)
    elif isinstance(ast, Seq):
        for item in ast.items:
            _vars(item, in_rep, counts, repeated)
    elif isinstance(ast, Alt):
        for option in ast.options:
            _vars(option, in_rep, counts, repeated)
    elif isinstance(ast, Rep):
        _vars(ast.item, True, counts, repeated)


def list_vars(ast: Seq) -> tuple[set[str], set[str]]:
    """(all variable names, those that collect lists: repeated or used more than once)."""
    counts: dict[str, int] = {}
    repeated: set[str] = set()
    _vars(ast, False, counts, repeated)
    return set(counts), repeated | {v for v, c in counts.items() if c > 1}


def compile_syntax(
    ast: Seq, command: Any, help: dict[str, str], multi: set[str]
) -> tuple[Node, Node]:
    """Return (entry, end) nodes for one command."""
    end = Node(END, command=command)

    def build(item: Any, cont: Node) -> Node:
        if isinstance(item, Kw):
            return Node(
                KW,
                [cont],
                word=item.word,
                label=item.label,
                help=help.get(item.word, ""),
                command=command,
            )
        if isinstance(item, Arg):
            return Node(
                ARG,
                [cont],
                var=item.var,
                type=item.type,
                multi=item.var in multi,
                help=help.get(item.var, ""),
                command=command,
            )
        if isinstance(item, Seq):
            for sub in reversed(item.items):
                cont = build(sub, cont)
            return cont
        if isinstance(item, Alt):
            branches = [build(option, cont) for option in item.options]
            return Node(EPS, branches + ([cont] if item.optional else []))
        if isinstance(item, Rep):
            loop = Node(EPS)
            entry = build(item.item, loop)
            loop.next = [entry, cont]
            return entry
        raise GrammarError(f"unknown syntax node {item!r}")

    return build(ast, end), end


def parse_syntax(syntax: str, resolve_type: Callable[[str, str | None], ArgType]) -> Seq:
    return _Parser(syntax, resolve_type).parse()
