"""Python API for other people's tests and tools: up, down, status, exec.

    from chassis import client
    ch = client.up("topologies/asr5500.yaml", run_dir="/tmp/lab1")
    print(ch.exec("show card table")[0].output)
    ch.down()

Everything here is a client of the running chassis: status comes from the backplane,
commands go to the supervisor's CLI socket, exactly as `chassis status` and
`chassis exec` do.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from chassis import DISTRIBUTION, procs, topology
from chassis import backplane as bp
from chassis.capture import MAX_BYTES, CaptureError, KeyFile
from chassis.faults import Fault, FaultError, timestamp
from chassis.ipc import keys as keyring
from chassis.ipc.rundir import RunDir
from chassis.ipc.sockets import SyncClient

READY = ("active", "standby")


class ChassisError(Exception):
    pass


@dataclass
class CommandResult:
    command: str
    output: str
    data: object
    error: bool
    prompt: str  # the prompt the command was typed at


def check_packages() -> None:
    """Refuse to run when PyPI's unrelated `supervisor` or `cards` shadows ours."""
    import cards
    import supervisor

    for mod in (supervisor, cards):
        if getattr(mod, "DISTRIBUTION", None) != DISTRIBUTION:
            raise ChassisError(
                f"the imported package '{mod.__name__}' ({getattr(mod, '__file__', '?')}) is not part of "
                f"{DISTRIBUTION}; uninstall the unrelated PyPI project of that name"
            )


def default_run_dir(name: str) -> Path:
    return Path(".chassis") / name


class CliSession:
    """One StarOS CLI session on the supervisor (mode and context live there)."""

    def __init__(self, client: SyncClient, timeout: float, card: int | None = None) -> None:
        self.client, self.timeout = client, timeout
        opened = self._call("cli.open", card=card)
        self.sid, self.prompt = opened["session"], opened["prompt"]
        self.closed = False

    def _call(self, method: str, **args):
        reply = self.client.call(method, args, timeout=self.timeout)
        if not reply.ok:
            raise ChassisError(reply.error)
        return reply.result

    def execute(self, line: str) -> CommandResult:
        res = self._call("cli.exec", session=self.sid, line=line)
        typed_at, self.closed, self.prompt = self.prompt, res["close"], res["prompt"]
        return CommandResult(line, res["output"], res["data"], res["error"], typed_at)

    def complete(self, text: str) -> list[str]:
        return self._call("cli.complete", session=self.sid, text=text)

    def help(self, text: str) -> list[tuple[str, str]]:
        return [tuple(h) for h in self._call("cli.help", session=self.sid, text=text)]

    def close(self) -> None:
        try:
            if not self.closed:
                self._call("cli.close", session=self.sid)
        except (ChassisError, TimeoutError):
            pass  # the session is gone with its MIO (`card switch`): nothing left to close
        finally:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Chassis:
    """A handle on a chassis by its run directory (it need not have been started here)."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run = RunDir(run_dir)
        if not self.run.exists():
            raise ChassisError(f"{self.run.root}: no chassis here (no chassis.json)")
        self.manifest = self.run.manifest()
        self._keys: KeyFile | None = None  # the key file of the capture started here

    @property
    def name(self) -> str:
        return self.manifest["name"]

    def _client(self, endpoint: str, server: str) -> SyncClient:
        key = keyring.public_key(self.run.keys, server)
        return SyncClient(self.run.keys, "cli", self.manifest["endpoints"][endpoint], key)

    def running(self) -> bool:
        rec = self.run.pids().get("backplane")
        return bool(rec) and procs.alive(rec["pid"], rec["start"])

    def status(self, timeout: float = 3.0) -> dict:
        if not self.running():
            raise ChassisError(f"chassis {self.name} is not running ({self.run.root})")
        with self._client("backplane", "backplane") as c:
            reply = c.call("status", timeout=timeout)
        return reply.result

    def wait(self, what: str = "cards", timeout: float = 30.0, proc=None) -> dict:
        """Wait for a readiness level (WAIT_LEVELS); raise ChassisError on timeout, naming
        what was not reached. Returns the last status (`certs`/`tunnels`: with the card
        table under "cards" and the certificates under "certificates").

        cards:   every slot is in its role (active or standby).
        certs:   cards, and the gateway holds its certificate everywhere it must: at least one
                 certificate is in the store (`show certificate`); on ASR 5500 every packet
                 card in service (active or standby) holds the current version of each
                 (`Cards: 1: v3, ...`) and reports each of its crypto templates and crypto maps
                 `ready` (card table `templates`); on ASR 9000 the RSP holds it (VSMs only
                 get it by `cmp fetch`).
        tunnels: certs, and the lab fleet (if the topology has one) reports its expected
                 tunnels up with all their child SAs (`lab.fleet.status`: `up` and
                 `children_up`; expected = `expected` if the fleet reports it, else
                 `configured` less the eNodeBs it reports `revoked`)."""
        if what not in WAIT_LEVELS:
            raise ChassisError(f"--wait {what}: expected one of {', '.join(WAIT_LEVELS)}")
        deadline = time.monotonic() + timeout
        status: dict = {}
        missing: list[str] = ["no status from the backplane yet"]
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise ChassisError(f"backplane exited with {proc.returncode}; see {self.run.logs}")
            try:
                status = self.status(timeout=1.0)
            except (ChassisError, TimeoutError) as exc:
                missing = [f"backplane status: {exc or type(exc).__name__}"]
                time.sleep(0.05)
                continue
            missing = cards_missing(status)
            if not missing and what != "cards":
                status = self._readiness_snapshot(status, max(0.5, deadline - time.monotonic()))
                missing = readiness_missing(what, status)
            if not missing:
                return status
            time.sleep(0.02 if what == "cards" else 0.2)
        if what == "cards":
            states = {s["slot"]: s["state"] for s in status.get("slots", [])}
            raise ChassisError(f"chassis {self.name} not ready after {timeout:g} s: {states}")
        raise ChassisError(
            f"chassis {self.name}: --wait {what} not reached after {timeout:g} s: "
            + "; ".join(missing)
        )

    def _readiness_snapshot(self, status: dict, timeout: float) -> dict:
        """status + the card table and the certificates, from one CLI session (an error
        there is kept under "errors": the supervisor may still be starting)."""
        snap = dict(status)
        try:
            results = self.exec("show card table", "show certificate",
                                timeout=min(timeout, 5.0), stop_on_error=False)  # fmt: skip
        except (ChassisError, TimeoutError, OSError) as exc:
            snap["errors"] = [f"supervisor CLI: {exc or type(exc).__name__}"]
            return snap
        for r in results:
            if r.error:
                snap.setdefault("errors", []).append(f"{r.command}: {r.output.strip()}")
            elif r.command == "show card table":
                snap["cards"] = (r.data or {}).get("cards", [])
            else:
                snap["certificates"] = (r.data or {}).get("items", [])
        return snap

    def session(self, timeout: float = 10.0, card: int | None = None) -> CliSession:
        """A CLI session; `card` names the packet card that card commands (cmp) act for."""
        client = self._client("cli", "mgmt")
        try:
            return CliSession(client, timeout, card)
        except BaseException:
            client.close()
            raise

    def exec(
        self,
        *commands: str,
        timeout: float = 30.0,
        stop_on_error: bool = True,
        card: int | None = None,
    ) -> list[CommandResult]:
        """Run commands in order in one CLI session (stops after the first error)."""
        results = []
        with self.session(timeout, card) as session:
            for command in commands:
                results.append(session.execute(command))
                if session.closed or (results[-1].error and stop_on_error):
                    break
        return results

    def warp(self, seconds: float) -> dict:
        """Move the wall clock of the supervisor and of the lab peers forward (expiry drills).

        Liveness and protocol timers run on the monotonic clock and are not affected."""
        netns = self.manifest.get("netns")
        if netns and any("admin" in p for p in self.manifest.get("lab", {}).values()):
            raise ChassisError(
                f"the lab peers run in network namespace {netns}: their admin URLs on its "
                "loopback are out of reach from here"
            )
        with self._client("cli", "mgmt") as c:
            reply = c.call("clock.warp", {"seconds": seconds})
        if not reply.ok:
            raise ChassisError(reply.error)
        for peer in self.manifest.get("lab", {}).values():
            if "admin" in peer:
                import httpx

                httpx.post(
                    peer["admin"], json={"warp": seconds}, timeout=5, trust_env=False
                ).raise_for_status()
        return reply.result

    # --- the lab (chassis/lab): its peers' loopback admin endpoints -----------------------

    def _lab_admin(self, peer: str) -> str:
        lab = self.manifest.get("lab", {})
        if "admin" not in lab.get(peer, {}):
            raise ChassisError(f"chassis {self.name} has no lab {peer} (topology lab: {peer}:)")
        if self.manifest.get("netns"):
            raise ChassisError(
                f"the lab peers run in network namespace {self.manifest['netns']}: their admin "
                "URLs on its loopback are out of reach from here"
            )
        return lab[peer]["admin"]

    def _lab_post(self, url: str, body: dict, timeout: float):
        import httpx

        try:
            resp = httpx.post(url, json=body, timeout=timeout, trust_env=False)
        except httpx.HTTPError as exc:
            raise ChassisError(f"{url}: {exc or type(exc).__name__}") from None
        if resp.status_code != 200:
            raise ChassisError(f"{url}: {resp.text.strip() or resp.status_code}")
        return resp.json()

    def lab_revoke(self, serial: int, reason: str = "unspecified", timeout: float = 10.0) -> dict:
        """Revoke a certificate the lab CA issued, through the CA's admin endpoint (the CA's
        database keeps it). The OCSP responder answers revoked from then on; the CRL publisher,
        when the lab has one, is told to publish a new CRL at once (result["crl"])."""
        url = self._lab_admin("ca") + "/revoke"
        result = self._lab_post(url, {"serial": format(serial, "X"), "reason": reason}, timeout)
        if "crl" in self.manifest.get("lab", {}):
            try:
                result["crl"] = self.lab_set("crl", {"publish": True}, timeout)["crls"]
            except ChassisError as exc:  # revoked all the same; the publisher sees it later
                result["crl_error"] = str(exc)
        return result

    def lab_set(self, peer: str, changes: dict, timeout: float = 10.0) -> dict:
        """Change a lab peer's behaviours (e.g. {"down": True}, {"slow": 2}); returns its report."""
        return self._lab_post(self._lab_admin(peer), changes, timeout)

    def lab_status(self, timeout: float = 3.0) -> dict:
        """Each lab peer's manifest entry (URLs), process id and admin report (or the error
        that kept it from answering)."""
        import httpx

        try:
            running = self.status(timeout).get("lab", {})
        except (ChassisError, TimeoutError):
            running = {}
        out = {}
        for name, urls in self.manifest.get("lab", {}).items():
            entry = {"urls": {k: v for k, v in urls.items() if k != "psk"},
                     "pid": running.get(name, {}).get("pid")}  # fmt: skip
            if "admin" in urls and not self.manifest.get("netns"):
                try:
                    resp = httpx.get(urls["admin"], timeout=timeout, trust_env=False)
                    resp.raise_for_status()
                    entry["report"] = resp.json()
                except (httpx.HTTPError, ValueError) as exc:
                    entry["error"] = str(exc) or type(exc).__name__
            out[name] = entry
        return out

    def _backplane_call(self, method: str, args: dict, timeout: float = 5.0):
        if not self.running():
            raise ChassisError(f"chassis {self.name} is not running ({self.run.root})")
        with self._client("backplane", "backplane") as c:
            reply = c.call(method, args, timeout=timeout)
        if not reply.ok:
            raise ChassisError(reply.error)
        return reply.result

    def capture_start(
        self, path: Path | str, keys: Path | str | None = None, *, max_bytes: int = MAX_BYTES
    ) -> dict:
        """The NPU writes every datagram of the gateway, both ways, to the pcapng file `path`
        (0600, at most `max_bytes`). With `keys`, the IKE and ESP keys of the SAs go to that
        file (0600): at start, at every `capture_keys()` and at `capture_stop()`."""
        path = Path(path).absolute()  # the backplane's working directory is not ours
        key_file = None
        if keys is not None:
            if Path(keys).absolute() == path:
                raise ChassisError(f"{path}: the capture and its keys need two files")
            try:
                key_file = KeyFile(Path(keys).absolute())
            except CaptureError as exc:
                raise ChassisError(str(exc)) from None
        try:
            stats = self._backplane_call(
                "capture.start", {"path": str(path), "max_bytes": int(max_bytes)}
            )
        except BaseException:
            if key_file is not None:
                key_file.path.unlink(missing_ok=True)
            raise
        self._keys = key_file
        if key_file is not None:
            self.capture_keys()
        return stats

    def capture_keys(self, timeout: float = 5.0) -> int:
        """Add the SAs up now to the key file of the capture started here (SAs come and go:
        call it while the capture runs); returns the number of lines it holds."""
        if self._keys is None:
            return 0
        with self._client("cli", "mgmt") as c:
            reply = c.call("ike.keys", timeout=timeout)
        if not reply.ok:
            raise ChassisError(reply.error)
        try:
            self._keys.add(reply.result)
        except CaptureError as exc:
            raise ChassisError(str(exc)) from None
        return len(self._keys.ike) + len(self._keys.esp)

    def capture_stop(self) -> dict:
        """Stop the capture (the file is complete when this returns); with keys, their file
        gets the SAs up now too. Stops a capture started by another client as well."""
        stats = self._backplane_call("capture.stop", {})
        if self._keys is not None:
            try:
                self.capture_keys()
            except (TimeoutError, ChassisError) as exc:  # the pcap is complete anyway
                stats["keys_error"] = str(exc)
            stats["keys"] = {
                "path": str(self._keys.path),
                "ike_sas": len(self._keys.ike),
                "esp_sas": len(self._keys.esp),
            }
            self._keys = None
        return stats

    # --- faults (chassis/faults.py): `chassis fault ...` and the drills -------------------

    def fault(self, fault: Fault | dict, timeout: float = 10.0) -> dict:
        """Apply a fault (a Fault or its drill-file dict). Returns {"fault": its description,
        "at": {"monotonic", "wall"} when it took effect, and details: "target", "pid" of the
        process acted on, ...}. Raises FaultError for a bad fault or one the chassis refuses
        (unknown or empty slot, nothing to resume, ...), ChassisError when it is not running."""
        f = Fault.from_dict(fault)
        if f.action in ("kill", "hang", "resume", "ipc", "udp"):
            result = self._fault_call("fault", {"fault": f.to_dict()}, timeout)
        elif f.action == "lab":
            result = self._lab_fault(f, timeout)
        elif f.action == "warp":
            result = {**self.warp(f.warp_seconds), "at": timestamp()}
        else:
            result = self._clear_faults(timeout)
        return {"fault": f.describe(), **result}

    def faults(self, timeout: float = 5.0) -> list[dict]:
        """The faults in force, oldest first: {"fault", "action", "target", "params",
        "since": {"monotonic", "wall"}, ...} (also under "faults" in `status()`)."""
        return self._fault_call("fault.list", {}, timeout)

    def _fault_call(self, method: str, args: dict, timeout: float):
        if not self.running():
            raise ChassisError(f"chassis {self.name} is not running ({self.run.root})")
        with self._client("backplane", "backplane") as c:
            reply = c.call(method, args, timeout=timeout)
        if not reply.ok:
            raise FaultError(reply.error)
        return reply.result

    def _lab_behaviours(self, peer: str, timeout: float) -> dict:
        import httpx

        try:
            resp = httpx.get(self._lab_admin(peer), timeout=timeout, trust_env=False)
            resp.raise_for_status()
            report = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FaultError(
                f"lab {peer}: admin not reached: {exc or type(exc).__name__}"
            ) from None
        return report.get("behaviour", report)  # the CA's report is flat

    def _lab_fault(self, f: Fault, timeout: float) -> dict:
        """Set a lab peer's behaviours (as `chassis lab set`), remembering at the backplane
        what they were so that `fault clear` puts them back. The CA calls `slow` `delay`."""
        peer, changes = f.lab_peer, dict(f.params["set"])
        if peer == "ca" and "slow" in changes:  # a float: the CA keeps each value's type
            slow = changes.pop("slow")
            changes["delay"] = float(slow) if isinstance(slow, int | float) else slow
        try:
            before = self._lab_behaviours(peer, timeout)
            report = self.lab_set(peer, changes, timeout)
        except ChassisError as exc:
            raise FaultError(str(exc)) from None
        at = timestamp()
        undo = {k: before[k] for k in changes if k in before}
        if undo:  # a behaviour in force; one-shot actions (publish, reconnect) are not listed
            self._fault_call("fault.note", {"fault": f.to_dict(), "undo": undo}, timeout)
        return {"target": f.target, "report": report, "at": at}

    def _clear_faults(self, timeout: float) -> dict:
        """Heal every fault in force (hung processes resumed, IPC and UDP faults lifted,
        killed lab peers restarted, lab behaviours put back as they were)."""
        result = self._fault_call("fault.clear", {}, max(timeout, 30.0))
        healed, errors = list(result["healed"]), []
        if result.get("restarted"):  # a restarted lab peer starts on the unwarped clock
            try:
                self._rewarp(result["restarted"], timeout)
            except (ChassisError, TimeoutError) as exc:
                errors.append(f"warp of the restarted lab peers: {exc}")
        for note in reversed(result["lab"]):  # the newest first: the oldest value wins
            if not note.get("undo"):
                continue
            try:
                self.lab_set(note["target"][4:], note["undo"], timeout)
                healed.append(note["fault"])
            except (ChassisError, TimeoutError) as exc:
                errors.append(f"{note['fault']}: {exc}")
        return {"healed": healed, "errors": errors, "at": result["at"]}

    def _rewarp(self, peers: list[str], timeout: float) -> None:
        """Give restarted lab peers the chassis's wall-clock offset (the supervisor's)."""
        with self._client("cli", "mgmt") as c:
            reply = c.call("clock.warp", {"seconds": 0}, timeout=timeout)
        if not reply.ok:
            raise ChassisError(reply.error)
        offset = reply.result["offset"]
        for peer in peers:
            if offset and "admin" in self.manifest.get("lab", {}).get(peer, {}):
                self._lab_post(self._lab_admin(peer), {"warp": offset}, timeout)

    def down(self, timeout: float = 10.0) -> None:
        """Stop everything this chassis started; no orphan, no socket file survives."""
        down(self.run.root, timeout=timeout)


WAIT_LEVELS = ("cards", "certs", "tunnels")
IN_SERVICE = ("active", "standby")


def cards_missing(status: dict) -> list[str]:
    """`--wait cards`: the slots not (yet) in their role, e.g. ["slot 2 booting"]."""
    slots = status.get("slots")
    if not slots:
        return ["no slot reported"]
    return [f"slot {s['slot']} {s['state']}" for s in slots if s["state"] not in READY]


def readiness_missing(what: str, snap: dict) -> list[str]:
    """What keeps readiness level `what` from being reached in `snap` (a status with
    "cards" and "certificates", as `Chassis.wait` and the live view gather them); [] when
    reached. Pure: the live view and the tests call it on dicts."""
    missing = cards_missing(snap)
    if what == "cards" or missing:
        return missing
    missing = [f"NPU: {e}" for e in snap.get("npu_errors") or []]  # no service without it
    missing += certs_missing(snap)
    if what == "certs" or missing:
        return missing
    return tunnels_missing(snap)


def certs_missing(snap: dict) -> list[str]:
    """`--wait certs` (see Chassis.wait)."""
    if snap.get("errors") and ("cards" not in snap or "certificates" not in snap):
        return list(snap["errors"])
    certs = [c for c in snap.get("certificates") or [] if not c.get("is_ca")]
    if not certs:
        return ["no certificate in the store yet (show certificate lists none)"]
    if snap.get("platform") == "asr9000":
        return []
    table = {c["slot"]: c for c in snap.get("cards") or []}
    missing = []
    for s in snap.get("slots", []):
        if s["type"] in topology.MANAGEMENT_TYPES or s["state"] not in IN_SERVICE:
            continue
        slot = s["slot"]
        for cert in certs:
            want, held = f"v{cert['generation']}", (cert.get("cards") or {}).get(str(slot))
            if held != want:
                missing.append(
                    f"{s['label']} {slot} holds certificate {cert['name']} "
                    f"{held or 'not at all'} (current {want})"
                )
        templates = (table.get(slot) or {}).get("templates")
        if templates is None:
            missing.append(f"{s['label']} {slot} has not reported its crypto templates")
            continue
        for name, state in sorted(templates.items()):
            if state != "ready":
                missing.append(f"{s['label']} {slot} crypto template {name}: {state}")
    return missing


def expected_tunnels(fleet: dict) -> int:
    """The tunnels a fleet status expects up: its own `expected` when it reports one, else
    `configured` less the eNodeBs it reports revoked (a count or a list)."""
    if isinstance(fleet.get("expected"), int):
        return fleet["expected"]
    revoked = fleet.get("revoked") or 0
    revoked = revoked if isinstance(revoked, int) else len(revoked)
    return max(0, int(fleet.get("configured") or 0) - revoked)


def expected_children(fleet: dict) -> int:
    """The child SAs a fleet status expects up: its `children_wanted` counts only the expected
    eNodeBs when it reports `expected`; else its share for the expected ones."""
    wanted = int(fleet.get("children_wanted") or 0)
    if isinstance(fleet.get("expected"), int):
        return wanted
    configured = int(fleet.get("configured") or 0)
    return wanted // configured * expected_tunnels(fleet) if configured else 0


def tunnels_missing(snap: dict) -> list[str]:
    """`--wait tunnels` (see Chassis.wait); a chassis without a lab fleet has none to wait for."""
    fleet_peer = (snap.get("lab") or {}).get("fleet")
    if fleet_peer is None:
        return []
    fleet = fleet_peer.get("status")
    if not fleet_peer.get("pid"):
        return ["the lab fleet is not running"]
    if not fleet:
        return ["the lab fleet has not reported yet"]
    expected, children_expected = expected_tunnels(fleet), expected_children(fleet)
    up, children = int(fleet.get("up") or 0), int(fleet.get("children_up") or 0)
    missing = []
    if up < expected:
        missing.append(f"lab fleet: {up} of {expected} expected tunnels up")
    if children < children_expected:
        missing.append(f"lab fleet: {children} of {children_expected} expected child SAs up")
    return missing


def up(
    topology_file: Path | str | None = None,
    run_dir: Path | str | None = None,
    *,
    wait: str | None = "cards",
    timeout: float = 30.0,
    netns: str | None = None,
) -> Chassis:
    """Start a chassis and wait for readiness level `wait` (WAIT_LEVELS; None: do not
    wait). `netns`: run the backplane, and so every card and lab peer, inside that
    existing network namespace (`ip netns add NAME`; root only): the gateway's addresses are
    then the namespace's. This API and the CLI reach it over its ipc:// socket files."""
    check_packages()
    topo = topology.load(topology_file or topology.default_path())
    run = RunDir(run_dir or default_run_dir(topo.name))
    if run.exists() and Chassis(run.root).running():
        raise ChassisError(f"chassis {topo.name} is already running in {run.root}")
    if netns is not None:
        check_netns(netns, topo.transport)
    bp.prepare(topo, run, netns)
    proc = bp.spawn(run, netns=netns)
    chassis = Chassis(run.root)
    if wait:
        try:
            chassis.wait(wait, timeout, proc)
        except ChassisError:
            if proc.poll() is None:
                down(run.root)
            raise
    return chassis


def check_netns(name: str, transport: str) -> None:
    """A namespace `ip netns exec` can enter (one `ip netns add` made), with the ipc transport."""
    if not name or "/" in name or name in (".", ".."):
        raise ChassisError(f"--netns {name!r}: not a network namespace name")
    if not Path("/var/run/netns", name).exists():
        raise ChassisError(f"network namespace {name} does not exist (ip netns add {name})")
    if shutil.which("ip") is None and not Path("/usr/sbin/ip").exists():
        raise ChassisError("--netns needs iproute2's `ip` command")
    if transport != "ipc":
        raise ChassisError(
            f"--netns needs transport ipc (the topology says {transport}): tcp:// on loopback "
            "inside the namespace is out of reach of the clients outside it"
        )


def down(run_dir: Path | str, timeout: float = 10.0) -> list[tuple[int, int]]:
    """Stop a chassis; returns the (pid, start) records that had to be killed here."""
    run = RunDir(run_dir)
    records = run.pids()
    back = records.pop("backplane", None)
    if back and procs.alive(back["pid"], back["start"]):
        try:
            ch = Chassis(run.root)
            with ch._client("backplane", "backplane") as c:
                c.call("shutdown", timeout=2.0)
            deadline = time.monotonic() + timeout
            while procs.alive(back["pid"], back["start"]) and time.monotonic() < deadline:
                time.sleep(0.02)
        except (TimeoutError, ChassisError, OSError):
            pass
        procs.stop_verified([(back["pid"], back["start"])])
    # The backplane normally stops its cards; whatever it could not (it was killed first) goes here.
    left = [(r["pid"], r["start"]) for r in records.values() if procs.alive(r["pid"], r["start"])]
    procs.stop_verified(left)
    shutil.rmtree(run.ipc, ignore_errors=True)
    run.pids_path.unlink(missing_ok=True)
    return left
