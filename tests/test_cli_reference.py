"""docs/CLI.md is generated from the supervisor's command grammar (scripts/cli_reference.py):
a grammar change without regenerating it fails here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cli_reference.py"
DOC = ROOT / "docs" / "CLI.md"


def load_script():
    spec = importlib.util.spec_from_file_location("cli_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_what_the_grammar_generates_now():
    ref = load_script()
    assert DOC.read_text(encoding="utf-8") == ref.render(), (
        "docs/CLI.md is stale: run python3 scripts/cli_reference.py"
    )


def test_the_reference_uses_the_runners_plugins_and_covers_every_visible_command():
    ref = load_script()
    names = [name for name, _ in ref.runner_plugins()]
    assert names == [
        "supervisor.pki.commands.register",
        "supervisor.pki.cmp_commands.register",
        "supervisor.ike.commands.register",
        "supervisor.pki.crl_commands.register",
    ]
    grammar, _ = ref.build_grammar()
    text = ref.render()
    for mode in grammar.modes:
        assert f"\n## {mode}\n" in text, mode
    for cmd in grammar.commands:
        heading = f"\n### `{cmd.syntax}`\n"
        if cmd.hidden or cmd.syntax in ("exit", "end"):
            continue
        assert heading in text, cmd.syntax
    # a few commands the default topology's boot configuration uses, with their help
    for line in (
        "### `cmp initialize",
        "### `ca-crl name <name:",
        "### `ocsp [ nonce ]`",
        "### `payload <name:NAME(1-127)> match childsa",
        "### `show crypto ipsec security-associations [ summary ]`",
    ):
        assert line in text, line
    assert "- `nonce`: Send a nonce and require the responder to echo it" in text
    assert "\n### `config`\n" not in text  # hidden aliases (unicon's `config`) are left out
    assert "\n### `configure`\n" in text


def test_check_mode_reports_a_stale_file(tmp_path):
    stale = tmp_path / "CLI.md"
    stale.write_text("# old\n")
    run = [sys.executable, str(SCRIPT), "--check", "--output", str(stale)]
    res = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "is stale" in res.stderr
    res = subprocess.run([sys.executable, str(SCRIPT), "--output", str(stale)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and stale.read_text() == DOC.read_text()
