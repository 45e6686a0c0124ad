"""`chassis`: launch, inspect, drive and stop a simulated StarOS SeGW chassis."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click

from chassis import client as api
from chassis import topology as topo_mod


def resolve_run_dir(run_dir: str | None) -> Path:
    if run_dir:
        return Path(run_dir)
    base = Path(".chassis")
    found = (
        sorted(p for p in base.glob("*") if (p / "chassis.json").exists()) if base.is_dir() else []
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise click.ClickException(
            "no chassis in .chassis/; start one with `chassis up` or give --run-dir"
        )
    raise click.ClickException(
        f"several chassis in .chassis/ ({', '.join(p.name for p in found)}); give --run-dir"
    )


def open_chassis(run_dir: str | None) -> api.Chassis:
    try:
        return api.Chassis(resolve_run_dir(run_dir))
    except api.ChassisError as exc:
        raise click.ClickException(str(exc)) from None


def render_status(status: dict) -> str:
    lines = [
        f"chassis {status['name']} ({status['platform']}), backplane pid {status['backplane_pid']}, epoch {status['epoch']}"
        + (f", netns {status['netns']}" if status.get("netns") else ""),
        f"{'Slot':>4}  {'Type':<4}  {'Role':<8}  {'State':<8}  {'PID':>7}  {'Uptime':>9}",
    ]
    for s in status["slots"]:
        uptime = f"{s['uptime_s']:.1f}s" if s["uptime_s"] is not None else "-"
        lines.append(
            f"{s['slot']:>4}  {s['label']:<4}  {s['role']:<8}  {s['state']:<8}  {s['pid'] or '-':>7}  {uptime:>9}"
        )
    for name, peer in status.get("lab", {}).items():
        state = "running" if peer["pid"] else "stopped"
        lines.append(
            f" lab  {name:<14}  {state:<8}  {peer['pid'] or '-':>7}  {peer['url']}"  # Type+Role
        )
        if name == "fleet" and peer.get("status"):
            from chassis.lab.fleet_settings import render_status as render_fleet

            lines += render_fleet(peer["status"])
    if status.get("capture"):
        lines.append(
            f"capture to {status['capture']['path']}: {capture_summary(status['capture'])}"
        )
    for fault in status.get("faults") or []:
        lines.append(f"fault in force: {fault.get('fault')}")
    for t in status.get("mgmt_takeovers") or []:
        lines.append(f"management takeover: MIO {t['from']} -> {t['to']} ({t['why']}), "
                     f"epoch {t['epoch']}")  # fmt: skip
    return "\n".join(lines)


def capture_summary(stats: dict) -> str:
    text = f"{stats['packets']} packets, {stats['bytes']} bytes in {stats['seconds']:.1f} s"
    if stats["full"]:
        text += f", size limit {stats['max_bytes']} bytes reached"
    if stats["dropped"]:
        text += f", {stats['dropped']} packets not written"
    if stats["error"]:
        text += f", {stats['error']}"
    return text


CARD = click.option(
    "--card", type=int, help="Packet card (slot) that card commands such as `cmp fetch` act for."
)
RUN_DIR = click.option(
    "--run-dir", type=click.Path(file_okay=False), help="Run directory (default .chassis/NAME)."
)


@click.group()
def main() -> None:
    """Simulated Cisco StarOS security-gateway chassis."""
    try:
        api.check_packages()
    except api.ChassisError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("topology", required=False, type=click.Path(dir_okay=False))
@RUN_DIR
@click.option("--detach", is_flag=True, help="Return once ready; the chassis keeps running.")
@click.option(
    "--wait",
    "wait_for",
    type=click.Choice(api.WAIT_LEVELS),
    default="cards",
    show_default=True,
    help="Readiness: cards = every slot in its role; certs = and every packet card in service "
    "holds the gateway's current certificate with its crypto templates ready; tunnels = and the "
    "lab fleet's expected tunnels are up with all their child SAs.",
)
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for readiness."
)
@click.option(
    "--netns",
    metavar="NAME",
    help="Run the chassis (backplane, cards, lab) inside this network namespace (ip netns add).",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.25),
    default=1.0,
    show_default=True,
    help="Seconds between two polls of the live view (and of the metrics).",
)
@click.option(
    "--plain",
    is_flag=True,
    help="Plain lines instead of the live view (the default when stdout is not a terminal).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (needs prometheus_client; 0: any "
    "free port).",
)
def up(topology, run_dir, detach, wait_for, timeout, netns, refresh, plain, metrics_port):
    """Start a chassis from TOPOLOGY (default: topologies/default.yaml).

    In the foreground a live view shows the cards, the certificate version each holds, tunnels
    and traffic per card and the latest events until Ctrl-C, which stops the chassis."""
    if metrics_port is not None:
        from chassis import metrics

        try:
            metrics.require_prometheus()
        except metrics.MetricsUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    started, wall = time.monotonic(), time.time()
    first = "cards" if not detach else wait_for  # the foreground view waits for the rest
    try:
        topo = topo_mod.load(topology or topo_mod.default_path())
        root = Path(run_dir) if run_dir else api.default_run_dir(topo.name)
        running_before = (root / "chassis.json").exists() and api.Chassis(root).running()
    except topo_mod.TopologyError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        chassis = api.up(topology, run_dir, wait=first, timeout=timeout, netns=netns)
    except topo_mod.TopologyError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except api.ChassisError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C while it starts: stop what this command started
        if not running_before and (root / "chassis.json").exists():
            click.echo("stopping")
            api.down(root)
        sys.exit(130)
    if detach:
        click.echo(render_status(chassis.status()))
        if metrics_port is not None:
            try:
                url, pid = _detached_metrics(chassis, metrics_port, refresh)
            except click.ClickException:
                api.down(chassis.run.root)
                raise
            click.echo(f"metrics on {url} (pid {pid}; it exits with the chassis)")
        click.echo(
            f"ready in {time.monotonic() - started:.2f} s ({wait_for}); run dir {chassis.run.root}"
        )
        return
    _foreground(chassis, wait_for, timeout, wall, refresh, plain, metrics_port)


def _detached_metrics(chassis, port: int, refresh: float) -> tuple[str, int]:
    """Start `python -m chassis.metrics` in a session of its own (it polls the chassis and
    exits when the backplane does); wait (bounded) for the URL it serves."""
    import select
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "chassis.metrics", "--run-dir", str(chassis.run.root),
         "--port", str(port), "--interval", str(refresh)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=open(chassis.run.logs / "metrics.out", "ab"), start_new_session=True,
    )  # fmt: skip
    ready, _, _ = select.select([proc.stdout], [], [], 20.0)
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    proc.stdout.close()
    if not line.startswith("serving "):
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        raise click.ClickException(
            line.removeprefix("error: ")
            or f"the metrics exporter did not start (see {chassis.run.logs}/metrics.out)"
        )
    return line.removeprefix("serving "), proc.pid


def _foreground(chassis, wait_for, timeout, wall, refresh, plain, metrics_port) -> None:
    """The live view until Ctrl-C (or SIGTERM), or until the backplane exits; the chassis is
    stopped on the way out, whatever happened."""
    from rich.console import Console

    from chassis import live

    console = Console()
    exporter, code = None, 0
    try:
        if metrics_port is not None:
            from chassis import metrics

            try:
                exporter = metrics.Exporter(metrics_port)
            except metrics.MetricsUnavailable as exc:
                raise click.ClickException(str(exc)) from None
            click.echo(f"metrics on {exporter.url}")
        plain = plain or not console.is_terminal
        click.echo(f"chassis {chassis.name} running; run dir {chassis.run.root}; Ctrl-C stops it.")

        def on_ready(view: dict) -> None:
            if plain:
                click.echo(f"ready in {view['wall'] - wall:.2f} s ({wait_for})")

        live.run(chassis, level=wait_for, timeout=timeout, interval=refresh, started=wall,
                 plain=plain, console=console, exporter=exporter, on_ready=on_ready)  # fmt: skip
        click.echo("backplane exited", err=True)
        code = 1
    except live.ReadinessTimeout as exc:
        click.echo(f"Error: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        if exporter is not None:
            exporter.close()
        chassis.down()
    if code:
        sys.exit(code)


@main.command()
@RUN_DIR
def down(run_dir):
    """Stop everything a chassis started and remove its sockets."""
    path = resolve_run_dir(run_dir)
    killed = api.down(path)
    click.echo(
        f"down: {path}" + (f" (killed {len(killed)} leftover process(es))" if killed else "")
    )


@main.command()
@RUN_DIR
@click.option("--json", "as_json", is_flag=True)
def status(run_dir, as_json):
    """Every slot with its type, role, state, PID and uptime."""
    chassis = open_chassis(run_dir)
    try:
        st = chassis.status()
    except (api.ChassisError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(st, indent=2) if as_json else render_status(st))


@main.command("exec")
@RUN_DIR
@click.option("--json", "as_json", is_flag=True, help="Structured output of each command.")
@click.option("-f", "--file", "script", type=click.File(), help="Commands, one per line.")
@CARD
@click.argument("commands", nargs=-1)
def exec_(run_dir, as_json, script, card, commands):
    """Run COMMANDs in one CLI session, in order; stop at the first error (exit 1)."""
    lines = list(commands)
    if script is not None:
        lines += [
            ln.rstrip("\n") for ln in script if ln.strip() and not ln.lstrip().startswith("#")
        ]
    if not lines:
        raise click.UsageError("give at least one command, or -f FILE")
    chassis = open_chassis(run_dir)
    try:
        results = chassis.exec(*lines, card=card)
    except (api.ChassisError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        out = [
            {"command": r.command, "output": r.output, "data": r.data, "error": r.error}
            for r in results
        ]
        click.echo(json.dumps(out, indent=2))
    else:
        for r in results:
            if len(lines) > 1:
                click.echo(f"{r.prompt} {r.command}")
            if r.output:
                click.echo(r.output, err=r.error)
    if any(r.error for r in results):
        sys.exit(1)


@main.command()
@RUN_DIR
@CARD
def cli(run_dir, card):
    """Interactive StarOS shell (Tab completes, ? lists what may follow)."""
    from chassis import shell

    chassis = open_chassis(run_dir)
    try:
        session = chassis.session(card=card)
    except (api.ChassisError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    with session:
        code = shell.interactive(session) if sys.stdin.isatty() else shell.batch(session, sys.stdin)
    sys.exit(code)


@main.group()
def fault() -> None:
    """Inject faults into a running chassis (the drills' vocabulary: chassis/faults.py).

    TARGET is a slot (2 or slot-2), `supervisor` (the active management card) or a lab peer
    (lab:ca, lab:ocsp, lab:crl, lab:fleet)."""


FAULT_JSON = click.option("--json", "as_json", is_flag=True, help="The result as JSON.")


def _apply_fault(run_dir, as_json: bool, form: dict, line) -> None:
    """Build the fault (a bad one is a usage error), apply it, print one line (or JSON)."""
    from chassis.faults import Fault, FaultError

    try:
        f = Fault.from_dict(form)
    except FaultError as exc:
        raise click.UsageError(str(exc)) from None
    chassis = open_chassis(run_dir)
    try:
        result = chassis.fault(f)
    except (api.ChassisError, FaultError, TimeoutError) as exc:
        raise click.ClickException(f"{f.describe()}: {exc}") from None
    click.echo(json.dumps(result, indent=2) if as_json else line(result))


def _done(result: dict) -> str:
    pid = f" (pid {result['pid']})" if result.get("pid") else ""
    return f"{result['fault']}: done{pid} at {result['at']['monotonic']:.3f} (monotonic)"


def _process_fault(action: str, doc: str):
    @fault.command(action, help=doc)
    @click.argument("target")
    @RUN_DIR
    @FAULT_JSON
    def command(target, run_dir, as_json):
        _apply_fault(run_dir, as_json, {"fault": action, "target": target}, _done)

    return command


fault_kill = _process_fault(
    "kill", "Kill TARGET's process (SIGKILL): a card or supervisor crash, a lab peer gone."
)
fault_hang = _process_fault("hang", "Hang TARGET's process (SIGSTOP) until `fault resume`.")
fault_resume = _process_fault("resume", "Resume TARGET's hung process (SIGCONT).")

RATE = click.option("--rate", type=float, help="Probability (0..1) per message (default 1).")
DELAY_MS = click.option("--ms", type=float, help="Delay in milliseconds (delay mode).")
SEED = click.option("--seed", type=int, help="Seed of the random decisions (replayable).")


def _rate_params(rate, ms, seed) -> dict:
    given = {"rate": rate, "ms": ms, "seed": seed}
    return {k: v for k, v in given.items() if v is not None}


@fault.command("ipc")
@click.argument("mode", type=click.Choice(["drop", "delay", "duplicate", "partition", "heal"]))
@click.option("--slot", type=int, required=True, help="The packet card.")
@RATE
@DELAY_MS
@SEED
@RUN_DIR
@FAULT_JSON
def fault_ipc(mode, slot, rate, ms, seed, run_dir, as_json):
    """Drop, delay, duplicate or partition (drop all, both ways) the messages between the
    supervisor and one packet card; `heal` lifts it."""
    form = {"fault": "ipc", "target": slot, "mode": mode, **_rate_params(rate, ms, seed)}
    _apply_fault(run_dir, as_json, form, _done)


@fault.command("udp")
@click.argument("mode", type=click.Choice(["drop", "delay", "heal"]))
@click.option("--slot", type=int, help="The packet card (datagrams steered to it and its own).")
@click.option("--peer", metavar="ADDRESS[:PORT]", help="The peer (datagrams from and to it).")
@RATE
@DELAY_MS
@SEED
@RUN_DIR
@FAULT_JSON
def fault_udp(mode, slot, peer, rate, ms, seed, run_dir, as_json):
    """Drop or delay UDP at the NPU for one packet card or one peer; `heal` lifts it (without
    --slot or --peer: every udp fault)."""
    if slot is not None and peer is not None:
        raise click.UsageError("give --slot or --peer, not both")
    if slot is None and peer is None and mode != "heal":
        raise click.UsageError("give --slot N or --peer ADDRESS[:PORT]")
    form = {"fault": "udp", "mode": mode, **_rate_params(rate, ms, seed)}
    if slot is not None:
        form["target"] = slot
    elif peer is not None:
        form["peer"] = peer
    _apply_fault(run_dir, as_json, form, _done)


@fault.command("lab")
@click.argument("peer", type=click.Choice(["ca", "ocsp", "crl", "fleet"]))
@click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE...")
@RUN_DIR
@FAULT_JSON
def fault_lab(peer, settings, run_dir, as_json):
    """Set a lab peer's behaviours, as `chassis lab set` does (down=true, slow=2,
    error=tryLater, stale=true), kept in the fault list; `fault clear` puts them back."""
    changes = {}
    for item in settings:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE")
        try:
            changes[key] = json.loads(value)
        except ValueError:
            changes[key] = value  # a bare word: error=tryLater
    form = {"fault": "lab", "target": f"lab:{peer}", "set": changes}
    _apply_fault(run_dir, as_json, form, _done)


@fault.command("warp")
@RUN_DIR
@click.option("--days", type=float, default=0.0, help="Days to move the wall clock forward.")
@click.option("--hours", type=float, default=0.0, help="Hours to move the wall clock forward.")
@FAULT_JSON
def fault_warp(run_dir, days, hours, as_json):
    """Move the wall clock of the supervisor and the lab forward (expiry, auto-update, traps)."""
    form = {
        "fault": "warp",
        **({"days": days} if days else {}),
        **({"hours": hours} if hours else {}),
    }
    _apply_fault(run_dir, as_json, form,
                 lambda r: f"wall clock now {r['now']} (offset {r['offset']:+.0f} s)")  # fmt: skip


def _cleared(result: dict) -> str:
    text = ", ".join(result["healed"]) or "nothing was in force"
    errors = "; not undone: " + "; ".join(result["errors"]) if result.get("errors") else ""
    return f"cleared: {text}{errors}"


@fault.command("clear")
@RUN_DIR
@FAULT_JSON
def fault_clear(run_dir, as_json):
    """Heal every fault in force: resume hung processes, lift ipc and udp faults, restart
    killed lab peers, put lab behaviours back."""
    _apply_fault(run_dir, as_json, {"fault": "clear"}, _cleared)


@fault.command("list")
@RUN_DIR
@FAULT_JSON
def fault_list(run_dir, as_json):
    """The faults in force, oldest first."""
    from chassis.faults import FaultError

    chassis = open_chassis(run_dir)
    try:
        faults = chassis.faults()
    except (api.ChassisError, FaultError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(faults, indent=2))
        return
    now = time.time()
    for f in faults:
        click.echo(f"{f['fault']}  (for {now - f['since']['wall']:.1f} s)")
    if not faults:
        click.echo("no faults in force")


@main.group()
def lab() -> None:
    """The simulated world around the gateway: revoke lab certificates, show and set the lab
    peers (CA, OCSP responder, CRL publisher, eNodeB fleet)."""


def certificate_serial(text: str) -> tuple[int, str | None]:
    """SERIAL (hex, as `show certificate` and `openssl x509 -serial` print it; colons and a
    0x allowed) or a PEM/DER certificate file -> (serial, subject or None)."""
    path = Path(text)
    if path.is_file():
        from cryptography import x509

        data = path.read_bytes()
        try:
            cert = (
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
        except ValueError as exc:
            raise click.BadParameter(f"{text}: not a certificate ({exc})") from None
        return cert.serial_number, cert.subject.rfc4514_string()
    digits = text.replace(":", "").removeprefix("0x").removeprefix("0X")
    try:
        if not digits:
            raise ValueError
        return int(digits, 16), None
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a hex serial number nor a certificate file"
        ) from None


REASONS = (
    "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
    "cessationOfOperation", "certificateHold", "privilegeWithdrawn", "aACompromise",
)  # fmt: skip


@lab.command("revoke")
@click.argument("certificate", metavar="SERIAL|CERT-FILE")
@click.option("--reason", type=click.Choice(REASONS), default="unspecified", show_default=True,
              help="CRLReason (RFC 5280).")  # fmt: skip
@RUN_DIR
@click.option("--json", "as_json", is_flag=True)
def lab_revoke(certificate, reason, run_dir, as_json):
    """Revoke a certificate the lab CA issued: the OCSP responder answers revoked from now on,
    the CRL publisher publishes a new CRL at once."""
    serial, subject = certificate_serial(certificate)
    chassis = open_chassis(run_dir)
    try:
        result = chassis.lab_revoke(serial, reason)
    except (api.ChassisError, TimeoutError) as exc:
        if subject and "not issued" in str(exc):
            raise click.ClickException(f"{exc} ({subject})") from None
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    state = "revoked" if result["changed"] else "already revoked"
    click.echo(f"{state}: {result['serial']} ({result['subject']}), {result['reason']} "
               f"at {result['revoked_at']}")  # fmt: skip
    for name, crl in (result.get("crl") or {}).items():
        click.echo(f"CRL {name} #{crl['number']}: {crl['revoked']} revoked, "
                   f"next update {crl['next_update']}")  # fmt: skip
    if result.get("crl_error"):
        click.echo(f"the CRL publisher was not reached: {result['crl_error']}", err=True)


def _behaviour_text(report: dict) -> str:
    b = report.get("behaviour", report)  # the CA's report is flat
    set_ = [
        f"{k}={json.dumps(v)}"
        for k, v in b.items()
        if k not in ("counts", "pending") and v not in (False, 0, None)
    ]
    return ", ".join(set_) or "normal"


def render_lab(peers: dict) -> str:
    lines = []
    for name, peer in peers.items():
        state = "running" if peer["pid"] else "stopped"
        lines.append(f"{name:<6} {state:<8} {peer['pid'] or '-':>7}  {peer['urls'].get('url', '')}")
        for key, url in peer["urls"].items():
            if key not in ("url", "admin"):
                lines.append(f"{'':<6}   {key:<12} {url}")
        report = peer.get("report")
        if peer.get("error"):
            lines.append(f"{'':<6}   admin        not reached: {peer['error']}")
        if not report or name not in ("ocsp", "crl"):
            continue
        lines.append(f"{'':<6}   behaviour    {_behaviour_text(report)}")
        counts = (report.get("behaviour") or {}).get("counts") or {}
        if counts:
            lines.append(
                f"{'':<6}   counts       " + ", ".join(f"{k} {v}" for k, v in counts.items())
            )
        if name == "ocsp":
            lines.append(f"{'':<6}   signer       {report['signer']}, next update "
                         f"{report['next_update_s']:g} s, nonce {report['nonce']}")  # fmt: skip
        else:
            for ca, crl in report.get("crls", {}).items():
                lines.append(f"{'':<6}   {ca + ' CRL':<12} #{crl['number']}, {crl['revoked']} "
                             f"revoked, next update {crl['next_update']}")  # fmt: skip
            lines.append(f"{'':<6}   ldap         {report['ldap']}")
    return "\n".join(lines)


@lab.command("status")
@RUN_DIR
@click.option("--json", "as_json", is_flag=True)
def lab_status(run_dir, as_json):
    """The lab peers: process, URLs, behaviours, CRL numbers, counters."""
    chassis = open_chassis(run_dir)
    peers = chassis.lab_status()
    if not peers:
        raise click.ClickException(f"chassis {chassis.name} has no lab (topology lab:)")
    click.echo(json.dumps(peers, indent=2) if as_json else render_lab(peers))


@lab.command("set")
@click.argument("peer")
@click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE...")
@RUN_DIR
def lab_set(peer, settings, run_dir):
    """Change a lab peer's behaviours at run time, e.g. `chassis lab set ocsp down=true`,
    `slow=2.5`, `error=tryLater`, `stale=true` (crl: `error=corrupt`, `publish=true`)."""
    changes = {}
    for item in settings:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE")
        try:
            changes[key] = json.loads(value)
        except ValueError:
            changes[key] = value  # a bare word: error=tryLater
    chassis = open_chassis(run_dir)
    try:
        report = chassis.lab_set(peer, changes)
    except (api.ChassisError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{peer}: {_behaviour_text(report)}")


KEY_POLL_S = 1.0  # `chassis capture --keys`: how often the SAs' keys are gathered


@main.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@RUN_DIR
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this long (default: at Ctrl-C).")  # fmt: skip
@click.option("--keys", "keys", metavar="KEYFILE", type=click.Path(dir_okay=False),
              help="Write the SAs' IKE and ESP keys here (0600), as tshark -o arguments.")  # fmt: skip
@click.option("--max-mb", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Stop writing at this file size (MiB).")  # fmt: skip
@click.option("--stop", is_flag=True, help="Stop a capture that is running (no FILE).")
def capture(file, run_dir, seconds, keys, max_mb, stop):
    """Write every datagram of the gateway (IKE, ESP in UDP), both ways, to FILE (pcapng)."""
    chassis = open_chassis(run_dir)
    if stop:
        if file or keys or seconds:
            raise click.UsageError("--stop takes no FILE, --keys or --seconds")
        try:
            stats = chassis.capture_stop()
        except (api.ChassisError, TimeoutError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"stopped capture to {stats['path']}: {capture_summary(stats)}")
        return
    if not file:
        raise click.UsageError("give the capture FILE (or --stop)")
    try:
        chassis.capture_start(file, keys, max_bytes=max_mb << 20)
    except (api.ChassisError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    until = f"for {seconds:g} s" if seconds else "until Ctrl-C"
    click.echo(f"capturing to {file}{f', keys to {keys}' if keys else ''} {until}")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            left = KEY_POLL_S if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(KEY_POLL_S, left)))
            if not chassis.running():
                raise click.ClickException("the chassis stopped (the capture file is closed)")
            if keys:
                try:
                    chassis.capture_keys()
                except (api.ChassisError, TimeoutError) as exc:
                    click.echo(f"keys not gathered: {exc}", err=True)
    except KeyboardInterrupt:
        pass
    try:
        stats = chassis.capture_stop()
    except (api.ChassisError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{stats['path']}: {capture_summary(stats)}")
    if "keys" in stats:
        k = stats["keys"]
        click.echo(f"{k['path']}: keys of {k['ike_sas']} IKE SAs, {k['esp_sas']} ESP SAs")
        if stats.get("keys_error"):
            click.echo(f"last key gathering failed: {stats['keys_error']}", err=True)


@main.command()
@click.argument("topology", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Directory for NAME.dot, NAME.svg and NAME.html.")  # fmt: skip
@click.option("--no-dot", is_flag=True, help="Do not run Graphviz's dot even when installed.")
def graph(topology, out_dir, no_dot):
    """Draw TOPOLOGY (default: topologies/default.yaml): a Graphviz dot file and a
    self-contained HTML page with an SVG picture of the cards, the lab peers and their links."""
    from chassis import graph as graph_mod

    try:
        topo = topo_mod.load(topology or topo_mod.default_path())
    except topo_mod.TopologyError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    paths = graph_mod.write(topo, out_dir, use_dot=not no_dot)
    for kind, path in paths.items():
        click.echo(f"{kind:<8} {path}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(files):
    """Check topology FILEs; every problem names file:line:column and the field (exit 2)."""
    bad = False
    for f in files:
        try:
            t = topo_mod.load(f)
        except topo_mod.TopologyError as exc:
            click.echo(str(exc), err=True)
            bad = True
            continue
        click.echo(f"{f}: OK ({t.platform}, {len(t.cards)} cards, transport {t.transport})")
    if bad:
        sys.exit(2)


if __name__ == "__main__":
    main()

from chassis.drill_cli import drill  # noqa: E402  (chassis drill: chassis/drill_cli.py)

main.add_command(drill)
