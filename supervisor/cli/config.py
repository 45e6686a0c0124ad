"""The running configuration: an ordered tree of lines and blocks.

Every node is identified inside its parent by (kind, name): `("ip-pool", "p1")`,
`("interface", "mgmt")`, `("description", None)`. Setting an existing key replaces the node in
place, so the order of `show configuration` is the order of first configuration and a
configuration re-applied from its own text comes back identical.

Mutations are journalled: the session opens a transaction around each command and rolls it
back when the handler fails, so a failed command changes nothing. `Config.version` grows once
per committed change (cards get a new projection when it changes).

A block with errors (from a bad boot line) stays in the tree and in `show configuration` but
is out of service: it and everything under it are left out of `projection()`. Nodes marked
`secret` (key material) never reach the projection, and reach the configuration text only
through their `display` form.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from .result import ConfigError

Key = tuple[str, str | None]


class Line:
    def __init__(self, kind: str, name: str | None, text: str, data: Any = None, **opts: Any):
        self.kind = kind
        self.name = name
        self.text = text  # canonical command line, as shown by `show configuration`
        self.data = data  # JSON-able value for the projection
        self.secret: bool = opts.get("secret", False)
        self.display: str | None = opts.get("display")  # shown instead of text when secret
        self.parent: Block | None = None
        self.config: Config | None = None

    @property
    def key(self) -> Key:
        return (self.kind, self.name)


class Block(Line):
    """A node that is also a sub-mode: a context, an interface, ..."""

    def __init__(self, kind: str, name: str | None, text: str, data: Any = None, **opts: Any):
        super().__init__(kind, name, text, data, **opts)
        self.children: dict[Key, Line] = {}
        self.errors: list[ConfigError] = []

    # -- queries -------------------------------------------------------------------------------

    def get(self, kind: str, name: str | None = None) -> Line | None:
        return self.children.get((kind, name))

    def projection(self) -> dict:
        """This block as the cards see it (secrets and errored sub-blocks left out)."""
        return _project(self, False)

    def all(self, kind: str) -> list[Line]:
        return [c for c in self.children.values() if c.kind == kind]

    @property
    def attached(self) -> bool:
        node: Line = self
        while node.parent is not None:
            if node.parent.children.get(node.key) is not node:
                return False
            node = node.parent
        return self.config is not None and node is self.config.root

    def path(self) -> list[str]:
        out, node = [], self
        while node is not None and node.parent is not None:
            out.append(node.text)
            node = node.parent
        return out[::-1]

    def walk(self) -> Iterator[Block]:
        yield self
        for child in self.children.values():
            if isinstance(child, Block):
                yield from child.walk()

    # -- mutations (journalled) ----------------------------------------------------------------

    def set(self, node: Line, first: bool = False) -> Line:
        """Add `node` or replace the node with the same key (in place)."""
        old = self.children.get(node.key)
        if isinstance(old, Block):
            raise ValueError(f"{node.kind} {node.name or ''} is a block: change its lines".strip())
        self._snapshot()
        node.parent, node.config = self, self.config
        if old is None and first:
            self.children = {node.key: node, **self.children}
        else:
            self.children[node.key] = node
        if old is not None:
            old.parent = None
        return node

    def set_line(self, kind: str, name: str | None, text: str, data: Any = None, **opts: Any):
        old = self.children.get((kind, name))
        if (
            isinstance(old, Line)
            and not isinstance(old, Block)
            and (old.text, old.data, old.secret, old.display)
            == (text, data, opts.get("secret", False), opts.get("display"))
        ):
            return old  # unchanged: no new version
        return self.set(Line(kind, name, text, data, **opts), first=opts.get("first", False))

    def child(self, kind: str, name: str | None, text: str, data: Any = None) -> Block:
        """Return the sub-block (kind, name), creating it if missing."""
        old = self.children.get((kind, name))
        if isinstance(old, Block):
            return old
        if old is not None:
            raise ValueError(f"{kind} {name} is a line, not a block")
        block = Block(kind, name, text, data)
        self.set(block)
        return block

    def remove(self, kind: str, name: str | None = None) -> bool:
        old = self.children.get((kind, name))
        if old is None:
            return False
        self._snapshot()
        del self.children[(kind, name)]
        old.parent = None
        return True

    def add_error(self, error: ConfigError) -> None:
        self._snapshot()
        self.errors = [*self.errors, error]

    def clear_errors(self) -> None:
        if self.errors:
            self._snapshot()
            self.errors = []

    def _snapshot(self) -> None:
        children, errors = dict(self.children), self.errors

        def undo() -> None:
            for c in self.children.values():
                c.parent = None
            self.children, self.errors = children, errors
            for c in children.values():
                c.parent = self

        if self.config is not None:
            self.config.record(undo)


class Config:
    def __init__(self) -> None:
        self.root = Block("root", None, "")
        self.root.config = self
        self.version = 0
        self._journal: list[Callable[[], None]] | None = None

    # -- transactions --------------------------------------------------------------------------

    def record(self, undo: Callable[[], None]) -> None:
        if self._journal is None:
            self.version += 1
        else:
            self._journal.append(undo)

    def begin(self) -> None:
        self._journal = []

    @property
    def dirty(self) -> bool:
        return bool(self._journal)

    def commit(self) -> bool:
        changed = bool(self._journal)
        self._journal = None
        if changed:
            self.version += 1
        return changed

    def rollback(self) -> None:
        journal, self._journal = self._journal or [], None
        for undo in reversed(journal):
            undo()

    # -- views ---------------------------------------------------------------------------------

    def contexts(self) -> list[Block]:
        return [c for c in self.root.all("context") if isinstance(c, Block)]

    def context(self, name: str) -> Block | None:
        node = self.root.get("context", name)
        return node if isinstance(node, Block) else None

    def errored_blocks(self, under: Block | None = None) -> list[Block]:
        return [b for b in (under or self.root).walk() if b.errors]

    def render(self, block: Block | None = None, secrets: bool = False) -> str:
        """StarOS configuration-file text: `config`, 2-space indented blocks closed by `#exit`,
        `end`. With `block`, only that top-level block (e.g. one context) is shown."""
        lines = ["config"]
        if block is None or block is self.root:
            _render(self.root, 2, secrets, lines)
        else:
            _render_node(block, 2, secrets, lines)
        lines.append("end")
        return "\n".join(lines)

    def tree(self, include_errored: bool = False) -> dict:
        """JSON-able view; secrets stripped; errored blocks dropped unless include_errored."""
        return _project(self.root, include_errored)


def _render(block: Block, indent: int, secrets: bool, lines: list[str]) -> None:
    for child in block.children.values():
        _render_node(child, indent, secrets, lines)


def _render_node(node: Line, indent: int, secrets: bool, lines: list[str]) -> None:
    text = node.text
    if node.secret and not secrets:
        if node.display is None:
            return
        text = node.display
    lines.append(" " * indent + text)
    if isinstance(node, Block):
        _render(node, indent + 2, secrets, lines)
        lines.append(" " * indent + "#exit")


def _project(block: Block, include_errored: bool) -> dict:
    out: dict = copy.deepcopy(block.data) if isinstance(block.data, dict) else {}
    for child in block.children.values():
        if child.secret:
            continue
        if isinstance(child, Block):
            if child.errors and not include_errored:
                continue
            value: Any = _project(child, include_errored)
            if include_errored and child.errors:
                value["errors"] = [e.message for e in child.errors]
        else:
            value = copy.deepcopy(child.data)
        if child.name is None:
            out[child.kind] = value
        else:
            out.setdefault(child.kind, {})[child.name] = value
    return out
