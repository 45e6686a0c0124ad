"""Commands that need I/O: the handler returns Deferred, the runner awaits the result.

Nothing changes before the I/O is done, and a failing fetch changes nothing at all.
"""

import asyncio

from test_cli_fuzz import FakeSystem

from supervisor.cli import CommandFailure, Deferred, Engine, SetLine


def plugin(fetched: dict):
    store = SetLine("thing", "name")

    def handler(args, ctx):
        async def work():
            await asyncio.sleep(0) if args["name"].startswith("slow") else None
            if args["name"] not in fetched:
                raise CommandFailure(f"cannot fetch {args['name']}")
            return fetched[args["name"]]

        return Deferred(work, lambda value: store(args, ctx) or f"Info: got {value}")

    def register(g):
        g.command("config", "thing <name:NAME(1-20)>", handler, help={"thing": "Fetch a thing"})

    return register


def engine(fetched):
    return Engine(FakeSystem(), plugins=[plugin(fetched)])


def test_deferred_command_changes_config_only_when_finished():
    eng = engine({"a": 42})
    s = eng.new_session()
    s.execute("configure")
    res = s.execute("thing a")
    assert res.pending is not None and "thing a" not in eng.config_text()
    done = asyncio.run(res.pending())
    assert done.output == "Info: got 42" and not done.error
    assert "thing a" in eng.config_text()


def test_failing_io_changes_nothing():
    eng = engine({})
    s = eng.new_session()
    s.execute("configure")
    before = eng.config_text()
    done = asyncio.run(s.execute("thing b").pending())
    assert done.error and done.output == "Failure: cannot fetch b"
    assert eng.config_text() == before


def test_boot_configuration_awaits_deferred_lines():
    eng = engine({"slow1": 1, "fast": 2})
    text = "config\n  thing slow1\n  thing missing\n  thing fast\nend\n"
    errors = asyncio.run(eng.apply_boot_async(text))
    assert [(e.line_no, e.message) for e in errors] == [(3, "Failure: cannot fetch missing")]
    cfg = eng.config_text()
    assert "thing slow1" in cfg and "thing fast" in cfg


def test_sync_boot_runs_deferred_lines_that_never_suspend():
    eng = engine({"fast": 2})
    assert eng.apply_boot("config\n  thing fast\nend\n") == []
    assert "thing fast" in eng.config_text()
    try:
        engine({"slow": 1}).apply_boot("config\n  thing slow\nend\n")
    except RuntimeError as exc:
        assert "needs I/O" in str(exc)
    else:
        raise AssertionError("a suspending boot line must not pass the sync wrapper")
