"""`chassis drill [TOPOLOGY] DRILL`: run a drill file and write its report (chassis/drills.py).

    chassis drill dpc-hang                          # a shipped drill, its own topology
    chassis drill topologies/asr5500.yaml my.yaml   # a drill on another topology
    chassis drill dpc-hang --run-dir .chassis/x     # on a chassis that is running
    chassis drill dpc-hang --seed 42 --schedule     # the fault schedule seed 42 gives

Exit status: 0 when every step held, 1 when an expectation failed (or the chassis could not
be brought up), 2 for a drill or topology file with errors.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import click

from chassis import client as api
from chassis import drill_report, drills
from chassis import topology as topo_mod


class PlainProgress(drills.Progress):
    """One line per step (not a terminal: CI logs, pipes)."""

    def __init__(self, echo=click.echo) -> None:
        self.echo = echo
        self.last = None

    def step_started(self, step, text):
        kind = "" if text.startswith(step.kind) else f"{step.kind} "  # "run ..." says it
        self.echo(f"step {step.number}: {kind}{text}")

    def step_finished(self, step, result):
        state = "ok" if result["ok"] else "FAILED"
        took = result.get("duration_s")
        self.echo(f"  {state} at {result['t']:.2f} s ({took:.2f} s): {result['detail']}")

    def sample(self, sample):
        self.last = sample

    def note(self, text):
        self.echo(text)


class RichProgress(drills.Progress):
    """A live view on a terminal: the steps done, the current one, tunnels per card."""

    def __init__(self, drill: drills.Drill, console) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = console
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.completed}/{task.total}"),
                            BarColumn(bar_width=10), TimeElapsedColumn(),
                            TextColumn("{task.fields[cards]}"),
                            TextColumn("[dim]{task.description}"),
                            console=console, transient=True)  # fmt: skip
        self.task = self.bar.add_task(drill.name, total=len(drill.steps), cards="")

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def step_started(self, step, text):
        self.bar.update(self.task, description=f"{step.number}. {step.kind} {text}"[:60])

    def step_finished(self, step, result):
        mark = "[green]ok[/]" if result["ok"] else "[bold red]FAILED[/]"
        self.bar.console.print(f"{step.number:>2}. {mark} [dim]{result['t']:7.2f} s[/] "
                               f"{step.kind} {step.label}: {result['detail']}",
                               markup=True, highlight=False)  # fmt: skip
        self.bar.advance(self.task)

    def sample(self, sample):
        cards = " ".join(f"{k}:{(v.get('state') or '?')[:1].upper()}{v.get('tunnels') or 0}"
                         for k, v in sorted(sample.get("cards", {}).items(), key=lambda i: int(i[0])))  # fmt: skip
        fleet = sample.get("fleet") or {}
        self.bar.update(self.task, cards=f"eNodeBs {fleet.get('up', '-')} | cards {cards}")

    def note(self, text):
        self.bar.console.print(text)


def _chassis_for(topology, run_dir, timeout, echo):
    """(chassis, started here, topology used)."""
    if run_dir and Path(run_dir, "chassis.json").exists():
        ch = api.Chassis(run_dir)
        if ch.running():
            if topology:
                echo(f"using the chassis running in {run_dir}; {topology} is not used")
            return ch, False
    if not topology:
        topology = str(topo_mod.default_path())
    echo(f"bringing up {topology}" + (f" in {run_dir}" if run_dir else ""))
    started = time.monotonic()
    ch = api.up(topology, run_dir, timeout=timeout)
    echo(f"chassis {ch.name} ready in {time.monotonic() - started:.1f} s ({ch.run.root})")
    return ch, True


@click.command("drill")
@click.argument("files", nargs=-1, required=True, metavar="[TOPOLOGY] DRILL")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Use the chassis running here (else bring one up here).")  # fmt: skip
@click.option("--seed", type=int, help="Replay another fault schedule (default: the drill's).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Where report.json and report.html go (default RUN_DIR/drills/NAME-TIME).")  # fmt: skip
@click.option("--keep", is_flag=True, help="Leave a chassis the drill brought up running.")
@click.option("--schedule", "only_schedule", is_flag=True,
              help="Print the fault schedule the seed gives and exit (no chassis).")  # fmt: skip
@click.option("--timeout", type=float, default=90.0, show_default=True,
              help="Seconds for the chassis to come up.")  # fmt: skip
def drill(files, run_dir, seed, report_dir, keep, only_schedule, timeout):
    """Run DRILL (a file, or a shipped drill's name) on TOPOLOGY (default: the drill's own
    topology, else topologies/default.yaml) or on the chassis in --run-dir; report the
    detection and recovery times, the tunnels and CMP transactions lost, and revoked eNodeBs
    wrongly accepted. Exit 1 when an expectation failed."""
    if len(files) > 2:
        raise click.UsageError("give [TOPOLOGY] DRILL")
    topology = files[0] if len(files) == 2 else None
    path = drills.resolve_drill(files[-1])
    try:
        d = drills.load(path)
    except drills.DrillError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    topology = topology or d.topology
    if only_schedule:
        try:
            t = topo_mod.load(topology or topo_mod.default_path())
        except topo_mod.TopologyError as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
        facts = drills.chassis_facts(t.to_dict())
        try:
            schedule = drills.plan(d, facts.cards, facts.enodebs, seed)
        except drills.DrillError as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
        click.echo(f"drill {d.name}, seed {d.seed if seed is None else seed}:")
        for p in schedule:
            click.echo(f"  {p.describe()}")
        return
    try:
        from rich.console import Console

        console = Console(stderr=False)
        tty = console.is_terminal
    except ImportError:  # pragma: no cover - rich is a dependency
        console, tty = None, False
    echo = console.print if tty else click.echo
    try:
        ch, ours = _chassis_for(topology, run_dir, timeout, echo)
    except topo_mod.TopologyError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except api.ChassisError as exc:
        raise click.ClickException(str(exc)) from None
    runner = None
    try:
        progress = RichProgress(d, console) if tty else PlainProgress()
        try:
            runner = drills.Runner(d, ch, seed, progress)
        except drills.DrillError as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
        faults = sum(p.kind == "inject" for p in runner.schedule)
        echo(f"drill {d.name}: seed {runner.seed}, {len(d.steps)} steps, "
             f"{faults} fault{'' if faults == 1 else 's'}")  # fmt: skip
        if tty:
            with progress:
                report = runner.run()
        else:
            report = runner.run()
        if not ours:
            runner.cleanup()
    finally:
        if ours and not keep:
            ch.down()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    where = Path(report_dir) if report_dir else ch.run.root / "drills" / f"{d.name}-{stamp}"
    json_path, html_path = drill_report.write(report, where)
    click.echo(f"drill {d.name}: {report['result'].upper()} in {report['duration_s']:.1f} s "
               f"(seed {report['seed']})")  # fmt: skip
    for name, value in drill_report.figure_lines(report):
        click.echo(f"  {name}: {value}")
    for step in report["steps"]:
        if step.get("ok") is False:
            click.echo(f"  step {step['step']} failed (line {step['line']}): {step['label']}: "
                       f"{step['detail']}", err=True)  # fmt: skip
    click.echo(f"report: {html_path} ({json_path.name} and report.svg beside it)")
    if ours and keep:
        click.echo(f"the chassis keeps running: chassis down --run-dir {ch.run.root}")
    sys.exit(0 if report["result"] == "passed" else 1)
