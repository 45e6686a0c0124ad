#!/usr/bin/env python3
"""Write docs/CLI.md, the StarOS CLI reference, from the supervisor's command grammar.

    python3 scripts/cli_reference.py            # (re)write docs/CLI.md
    python3 scripts/cli_reference.py --check    # exit 1 if docs/CLI.md is not what it would write
    python3 scripts/cli_reference.py --output -  # print it

The grammar is the one the management card serves: supervisor.cli's built-in exec and
configuration commands plus the plugins supervisor/runner.py hands to its Engine (read from
the runner's source, so a plugin added there shows up here without editing this script).
Every mode is listed from Exec down its tree, with its prompt and parent, and every visible
command of it (hidden aliases are left out) in registration order: its syntax as registered
and the help `?` shows for each of its keywords and arguments. tests/test_cli_reference.py
fails when docs/CLI.md differs from what this script writes now.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the repository's packages
    sys.path.insert(0, str(ROOT))

from supervisor.cli.actions import EnterBlock  # noqa: E402
from supervisor.cli.grammar import Command, Grammar  # noqa: E402
from supervisor.cli.syntax import ARG, KW, Node  # noqa: E402

RUNNER = ROOT / "supervisor" / "runner.py"
OUTPUT = ROOT / "docs" / "CLI.md"
HOST = "segw"  # the prompts' host name (the default topology's `system hostname`)


def runner_plugins(path: Path = RUNNER) -> list[tuple[str, Callable[[Grammar], None]]]:
    """(dotted name, register function) of each plugin the runner passes to Engine(plugins=
    [...]), in its order, resolved through the runner's own imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    modules: dict[str, str] = {}  # local name -> module it names
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name.split(".")[0]] = alias.name
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Engine"):
            continue
        for kw in node.keywords:
            if kw.arg == "plugins" and isinstance(kw.value, ast.List | ast.Tuple):
                for item in kw.value.elts:
                    if not (isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name)):
                        raise ValueError(f"{path}:{item.lineno}: a plugin that is not module.func")
                    module = modules.get(item.value.id)
                    if module is None:
                        raise ValueError(f"{path}: {item.value.id} is not imported")
                    found.append((f"{module}.{item.attr}", _resolve(module, item.attr)))
    if not found:
        raise ValueError(f"{path}: no Engine(plugins=[...]) call found")
    return found


def _resolve(module: str, attr: str):
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError:  # `from package import name` where name is not a module
        package, _, name = module.rpartition(".")
        return getattr(getattr(importlib.import_module(package), name), attr)


def build_grammar() -> tuple[Grammar, list[str]]:
    from supervisor.cli import default_grammar

    plugins = runner_plugins()
    return default_grammar([register for _, register in plugins]), [n for n, _ in plugins]


def _words(cmd: Command) -> list[tuple[str, str]]:
    """(word, help) for each keyword and argument of a command, in syntax order, once each."""
    out: dict[str, str] = {}
    stack: list[Node] = [cmd.entry]
    seen: set[int] = set()
    order: list[Node] = []
    while stack:  # depth first along the syntax, first branch first
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.kind in (KW, ARG) and node.command is cmd:
            order.append(node)
        stack.extend(reversed(node.next))
    for node in order:
        if node.kind == KW:
            out.setdefault(f"`{node.word}`", node.help)
        else:
            kind = node.type.name + (f" {node.type.describe}" if node.type.describe else "")
            text = "; ".join(t for t in (node.help, f"`{kind}`") if t)
            out.setdefault(f"`<{node.var}>`" + (" (repeatable)" if node.multi else ""), text)
    return list(out.items())


def _mode_tree(g: Grammar) -> list[tuple[str, int]]:
    """Every mode with its depth, Exec first, each followed by its children."""
    children: dict[str | None, list[str]] = {}
    for mode in g.modes.values():
        children.setdefault(mode.parent, []).append(mode.name)
    out: list[tuple[str, int]] = []

    def visit(name: str, depth: int) -> None:
        out.append((name, depth))
        for child in children.get(name, []):
            visit(child, depth + 1)

    for top in children.get(None, []):
        visit(top, 0)
    return out


def _prompt(g: Grammar, mode: str) -> str:
    label = g.modes[mode].label
    return f"{HOST}({label})#" if label else f"{HOST}#"


def _anchor(mode: str) -> str:
    return f"mode-{mode}"


def render() -> str:
    g, plugins = build_grammar()
    tree = _mode_tree(g)
    entered_by: dict[str, list[tuple[str, str]]] = {}
    for cmd in g.commands:
        if isinstance(cmd.handler, EnterBlock) and not cmd.hidden:
            entered_by.setdefault(cmd.handler.mode, []).append((cmd.mode, cmd.syntax))
    visible = [c for c in g.commands if not c.hidden and c.syntax not in ("exit", "end")]
    lines = [
        "# StarOS CLI reference",
        "",
        "<!-- Generated by scripts/cli_reference.py from the supervisor's command grammar: do not",
        "     edit. After a grammar change run `python3 scripts/cli_reference.py`;",
        "     tests/test_cli_reference.py fails until docs/CLI.md matches. -->",
        "",
        "The commands the simulated management card accepts, in the boot configuration",
        "(`startup-config`), the shell (`chassis cli`), `chassis exec` and drills: one grammar",
        "serves them all. Built from `supervisor.cli` (exec and configuration commands) and the",
        "plugins `supervisor/runner.py` registers: " + ", ".join(f"`{p}`" for p in plugins) + ".",
        "",
        "Syntax: `keyword`, `<var:TYPE(range)>` an argument, `{ a | b }` one of, `[ a | b ]`",
        "optional, `X...` one or more, `@label` names the choice made. Keywords may be",
        "abbreviated to any unique prefix (`sh card tab`); `?` lists what may come next with the",
        "help below. A `no` form negates or removes what its command set. Every mode also has",
        "`exit` (back to its parent mode) and `end` (back to Exec).",
        "",
        f"{len(tree)} modes, {len(visible)} commands (`no` forms counted).",
        "",
        "## Modes",
        "",
    ]
    for mode, depth in tree:
        lines.append(f"{'  ' * depth}- [{mode}](#{_anchor(mode)}) `{_prompt(g, mode)}`")
    for mode, _ in tree:
        m = g.modes[mode]
        cmds = [c for c in visible if c.mode == mode]
        lines += ["", f'<a id="{_anchor(mode)}"></a>', "", f"## {mode}", ""]
        lines.append(f"Prompt `{_prompt(g, mode)}`.")
        if m.parent:
            lines.append(f"Parent mode: [{m.parent}](#{_anchor(m.parent)}).")
        if mode == "config":
            lines.append("Entered from Exec with `configure`.")
        for parent, syntax in entered_by.get(mode, []):
            lines.append(f"Entered from [{parent}](#{_anchor(parent)}) with `{syntax}`.")
        lines.append(f"{len(cmds)} commands.")
        for cmd in cmds:
            lines += ["", f"### `{cmd.syntax}`", ""]
            words = _words(cmd)
            lines += [f"- {word}: {text}" if text else f"- {word}" for word, text in words]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(OUTPUT), help="file to write ('-': stdout)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args(argv)
    text = render()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current != text:
            print(f"{out} is stale: run python3 scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
