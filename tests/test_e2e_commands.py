"""The `chassis` command itself, run as a user would (subprocesses, real chassis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import BASIC, TOPOLOGIES, small_topology

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def chassis(*args, cwd=None, env=None, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "chassis.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


BAD_BOOT = """\
  config
    system hostname lab
    context segw
      ip pool good 10.1.0.0 255.255.0.0
      interface s1u
        ip address 203.0.113.1 255.255.255.0
        ip adress 203.0.113.9 255.255.255.0
      #exit
      ip pool after 10.2.0.0 255.255.0.0
    #exit
  end"""


def test_up_exec_status_down(tmp_path):
    topo = small_topology(tmp_path, name="cmd1", config=BAD_BOOT)
    run = tmp_path / "run"
    up = chassis("up", topo, "--run-dir", run, "--detach")
    try:
        assert up.returncode == 0, up.stderr
        assert "ready in" in up.stdout

        status = json.loads(chassis("status", "--run-dir", run, "--json").stdout)
        assert {s["slot"]: s["state"] for s in status["slots"]} == {
            1: "active",
            2: "standby",
            5: "active",
        }

        # The bad boot line is reported, the rest applied, the broken block kept out of service.
        cfg = chassis("exec", "--run-dir", run, "show configuration")
        assert cfg.returncode == 0
        assert "ip pool good" in cfg.stdout and "ip pool after" in cfg.stdout
        errors = chassis("exec", "--run-dir", run, "show configuration errors")
        assert "ip adress" in errors.stdout and "interface s1u" in errors.stdout

        bad = chassis("exec", "--run-dir", run, "show crad table", "show version")
        assert bad.returncode == 1
        assert "^" in bad.stderr + bad.stdout and "Image Version" not in bad.stdout

        script = tmp_path / "script.txt"
        script.write_text("configure\ncontext segw\nip pool scripted 10.9.0.0 255.255.0.0\nend\n")
        assert chassis("exec", "--run-dir", run, "-f", script).returncode == 0
        js = json.loads(chassis("exec", "--run-dir", run, "--json", "show configuration").stdout)
        assert "ip pool scripted" in js[0]["output"]

        shell = subprocess.run(
            [sys.executable, "-m", "chassis.cli", "cli", "--run-dir", str(run)],
            input="show version\nconfigure\nexit\nexit\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shell.returncode == 0 and "[lab]" not in shell.stdout
        assert "[local]lab(config)#" in shell.stdout and "Image Version" in shell.stdout
    finally:
        down = chassis("down", "--run-dir", run)
    assert down.returncode == 0
    assert chassis("status", "--run-dir", run).returncode != 0


def test_validate_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nplatform: asr5500\ncards:\n  5: {type: mio, role: active}\n  7: {type: mio, role: active}\n"
    )
    res = chassis("validate", bad)
    assert res.returncode == 2
    assert f"{bad}:5:" in res.stderr and "cards.7" in res.stderr
    ok = chassis(
        "validate",
        TOPOLOGIES / "asr5500.yaml",
        TOPOLOGIES / "asr9000.yaml",
        BASIC,
    )
    assert ok.returncode == 0, ok.stderr
    # `up` refuses the same file before starting anything.
    up = chassis("up", bad, "--run-dir", tmp_path / "never", "--detach")
    assert up.returncode == 2 and not (tmp_path / "never").exists()


def test_a_shadowing_supervisor_package_is_refused(tmp_path):
    fake = tmp_path / "shadow" / "supervisor"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("# the unrelated PyPI project\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"))
    res = chassis("status", env=env, cwd=tmp_path)
    assert res.returncode != 0
    assert "is not part of staros-segw-sim" in res.stderr


def test_interactive_shell_tab_and_help(chassis_factory):
    """The shell in a real pseudo-terminal: Tab completes, ? lists, a typo gets a caret."""
    import pexpect

    ch = chassis_factory(BASIC)
    shell = pexpect.spawn(
        sys.executable,
        ["-m", "chassis.cli", "cli", "--run-dir", str(ch.run.root)],
        encoding="utf-8",
        timeout=10,
        dimensions=(40, 200),
    )
    try:
        shell.expect_exact("[local]default#")
        shell.send("show car\t")
        shell.expect_exact("show card")
        shell.send(" ?")
        shell.expect("table")
        shell.send("\x15")  # Ctrl-U clears the line
        shell.sendline("show crad table")
        shell.expect_exact("Invalid input detected at '^' marker.")
        shell.sendline("configure")
        shell.expect_exact("[local]default(config)#")
        shell.sendline("end")
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)


def test_completion_and_help_come_from_the_supervisor(chassis_factory):
    from prompt_toolkit.document import Document

    from chassis.shell import RemoteCompleter

    ch = chassis_factory(BASIC)
    with ch.session() as session:
        assert "card" in session.complete("show ca")
        words = [w for w, _ in session.help("show ")]
        assert {"card", "configuration", "version"} <= set(words)
        assert [
            c.text for c in RemoteCompleter(session).get_completions(Document("sh car"), None)
        ] == ["card"]
        session.execute("configure")
        assert session.prompt == "[local]default(config)#"
        assert "context" in session.complete("cont")
