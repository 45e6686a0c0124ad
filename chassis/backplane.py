"""The chassis backplane: powers slots, watches card processes, outlives the supervisor.

One process per chassis. It starts a supervisor process per management card and a
card process per packet card, sees a crashed process at once through its pidfd,
tells the active supervisor, and obeys its power requests (restart a slot). It grants
the management epoch: each start of an active supervisor gets a higher one, so
cards can ignore an older supervisor. `chassis status` and `chassis down` talk to it.

Faults (chassis/faults.py) that act on processes, the IPC or the NPU are applied here:
kill (SIGKILL: the pidfd sees a real crash), hang (SIGSTOP) and resume of a card, a
supervisor or a lab peer; an IPC filter set on one card over its channel to the backplane;
UDP drop/delay rules in the NPU. Cards heartbeat the backplane on that channel too, and the
supervisor asks when it last heard one whose heartbeats stopped (`card.seen`): a card cut
off from the supervisor but alive here is not hung (supervisor/cards.py).

    python -m chassis.backplane --run-dir DIR --topology FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from chassis import procs
from chassis.capture import MAX_BYTES, Capture, CaptureError
from chassis.faults import Fault, FaultError, peer_address, timestamp
from chassis.ipc import keys as keyring
from chassis.ipc.datapath import DatagramPipe
from chassis.ipc.messages import (
    CardStates,
    Datagram,
    Datagrams,
    Error,
    Heartbeat,
    Hello,
    NpuBinds,
    Power,
    ProcEvent,
    Request,
    burst,
    burst_items,
)
from chassis.ipc.rpc import Pending, RpcError
from chassis.ipc.rundir import RunDir, atomic_write
from chassis.ipc.sockets import Channel, Incoming, Node
from chassis.lab.fleet_settings import FleetSettings
from chassis.mgmt_pair import ManagementPair
from chassis.npu import UdpRule
from chassis.npu_io import Npu
from chassis.topology import PLATFORMS, Card, Topology

log = logging.getLogger("backplane")

RESTART_DELAY = 0.2  # before restarting a crashed active supervisor (#11 brings takeover)
CARD_ANSWER_S = 2.0  # a card's answer to an ipc fault (a hung card does not answer)


def key_names(topology: Topology) -> list[str]:
    """Every CURVE identity of this chassis; the ZAP handlers admit exactly these."""
    return ["backplane", "mgmt", "cli"] + [f"slot-{c.slot}" for c in topology.cards]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoints(topology: Topology, run: RunDir) -> dict[str, str]:
    names = ("backplane", "control", "state", "cli", "sync")
    if topology.transport == "tcp":
        return {n: f"tcp://127.0.0.1:{free_tcp_port()}" for n in names}
    return {n: run.endpoint(n) for n in names}


# lab: section key -> process module, in start order (the fleet needs the CA's certificates;
# the OCSP responder and the CRL publisher answer from the CA's database)
LAB_PEERS = {
    "ca": "chassis.lab.ca_server",
    "ocsp": "chassis.lab.ocsp_server",
    "crl": "chassis.lab.crl_server",
    "fleet": "chassis.lab.fleet",
}


def _port_again(url: str | None) -> int:
    """The port of `url` (a previous run's) if it is free again, else a new one: certificates
    issued before a restart name the lab's OCSP and CRL URLs, which then still answer."""
    try:
        port = int(url.split("//")[1].split("/")[0].rsplit(":", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return free_tcp_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the peers' servers do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_tcp_port()
    return port


def lab_endpoints(topology: Topology, previous: dict | None = None) -> dict[str, dict]:
    """Addresses of the simulated outside world (loopback, kernel-chosen ports; the OCSP and
    CRL peers keep a previous run's ports when they are free)."""
    previous = previous or {}
    out = {}
    if "ca" in topology.lab:
        conf = topology.lab["ca"] or {}
        base = f"http://127.0.0.1:{free_tcp_port()}"
        out["ca"] = {
            "url": f"{base}/pkix/",
            "root": f"{base}/ca/root.crt",
            "issuing": f"{base}/ca/issuing.crt",
            "admin": f"{base}/admin",
            "psk": str(conf.get("psk", "lab-secret")),
        }
    if "ocsp" in topology.lab:
        base = f"http://127.0.0.1:{_port_again((previous.get('ocsp') or {}).get('url'))}"
        out["ocsp"] = {"url": f"{base}/ocsp", "admin": f"{base}/admin"}
    if "crl" in topology.lab:
        out["crl"] = _crl_endpoints(topology.lab["crl"] or {}, previous.get("crl") or {})
    if "fleet" in topology.lab:  # eNodeBs: an admin/status URL and the gateway they dial
        fleet = FleetSettings.from_config(topology.lab["fleet"] or {}, topology.startup_config)
        base = f"http://127.0.0.1:{free_tcp_port()}"
        out["fleet"] = {"url": f"{base}/admin", "admin": f"{base}/admin",
                        "gateway": fleet.gateway_text}  # fmt: skip
    return out


def _crl_endpoints(conf, previous: dict) -> dict:
    from chassis.lab import ldap_directory

    base = f"http://127.0.0.1:{_port_again(previous.get('url'))}"
    out = {
        "url": f"{base}/crl/issuing.crl",  # the issuing CA's CRL, DER
        "pem": f"{base}/crl/issuing.pem",
        "root": f"{base}/crl/root.crl",  # the root CA's (certificates it signs itself)
        "file": "file:/usb1/lab-crl/issuing.crl",  # the gateway's view of RUN/usb1/lab-crl/
        "admin": f"{base}/admin",
    }
    if not conf.get("ldap", True):
        out["ldap_error"] = "off in the topology (lab.crl.ldap: false)"
    elif ldap_directory.find_slapd() is None:
        out["ldap_error"] = "slapd is not installed (apt-get install slapd)"
    else:
        port = _port_again(previous.get("ldap"))
        out["ldap"] = ldap_directory.url(port, "issuing")
        out["ldap_root"] = ldap_directory.url(port, "root")
    return out


def revocation_urls(lab: dict) -> dict:
    """What the lab CA writes into the certificates it issues (chassis.lab.authority)."""
    urls: dict = {"ocsp": [], "crl": {}}
    if "ocsp" in lab:
        urls["ocsp"].append(lab["ocsp"]["url"])
    if "crl" in lab:
        crl = lab["crl"]
        urls["crl"] = {
            "intermediate": [crl["url"]] + ([crl["ldap"]] if "ldap" in crl else []),
            "root": [crl["root"]] + ([crl["ldap_root"]] if "ldap_root" in crl else []),
        }
    return urls


def write_revocation_urls(run: RunDir, lab: dict) -> None:
    """RUN/lab/ca/urls.json, read by every process that issues from the lab CA (the CA
    server, the eNodeB fleet), written before any of them starts."""
    from chassis.lab.authority import URLS_FILE

    home = run.root / "lab" / "ca"
    path = home / URLS_FILE
    if "ca" not in lab:
        return
    if "ocsp" not in lab and "crl" not in lab:
        path.unlink(missing_ok=True)
        return
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    atomic_write(path, json.dumps(revocation_urls(lab), indent=1).encode(), 0o644)


def prepare(topology: Topology, run: RunDir, netns: str | None = None) -> dict:
    """Create the run directory, keys and manifest (before any process starts)."""
    previous = {}
    if run.exists():  # a restart on the same run directory
        try:
            previous = run.manifest().get("lab") or {}
        except (OSError, ValueError):
            previous = {}
    run.create()
    for name in key_names(topology):
        keyring.ensure_keypair(run.keys, name)
    cookie = run.keys / "ike-cookie.secret"  # one chassis-wide IKE COOKIE secret (RFC 7296 2.6)
    if not cookie.exists():
        atomic_write(cookie, os.urandom(32), 0o600)
    manifest = {
        "name": topology.name,
        "platform": topology.platform,
        "transport": topology.transport,
        "timers": {
            "interval": topology.timers.heartbeat_interval_ms / 1000,
            "liveness": topology.timers.heartbeat_liveness,
        },
        "endpoints": endpoints(topology, run),
        "topology": topology.to_dict(),
        "lab": lab_endpoints(topology, previous),
        "netns": netns,  # the network namespace the chassis runs in (None: the caller's)
    }
    run.write_json(run.manifest_path, manifest)
    write_revocation_urls(run, manifest["lab"])
    return manifest


@dataclass
class Slot:
    card: Card
    proc: subprocess.Popen | None = None
    started_ticks: int = 0
    started_at: float = 0.0  # wall clock, for uptime
    state: str = "offline"
    role: str = ""
    expect_exit: bool = False
    restarts: int = 0
    failed_at: float | None = None  # the last failure (CLOCK_MONOTONIC), kept after a restart
    failed_reason: str = ""
    detection_ms: float | None = None  # the supervisor's: last heartbeat -> failure declared
    restart_on_exit: bool = False  # an old active MIO stepping down: it comes back as standby

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None


class Backplane(ManagementPair):
    def __init__(self, topology: Topology, run: RunDir) -> None:
        self.topology, self.run = topology, run
        self.manifest = run.manifest()
        timers = self.manifest["timers"]
        self.interval, self.liveness = timers["interval"], timers["liveness"]
        self._mgmt_init()
        self.slots = {c.slot: Slot(c, role=c.role) for c in topology.cards}
        self.epoch = 0
        self.active_mgmt: int | None = None
        self.node = Node(run.keys, "backplane")
        self.bus: Channel | None = None
        self.stopping = asyncio.Event()
        self.lab: dict[str, tuple[subprocess.Popen, int]] = {}
        self.npu = Npu(self._to_card, self._steered, self._serving)
        self.pipes: dict[int, DatagramPipe] = {}  # packet card -> the NPU's datagram path
        self.capture: Capture | None = None  # `chassis capture`: the NPU's datagrams to a file
        self.pending = Pending()  # requests to cards (ipc faults)
        self.background: set[asyncio.Task] = set()
        self.seen: dict[int, float] = {}  # packet card -> its last heartbeat here (its clock)
        # faults in force (chassis/faults.py); each record: fault, action, target, params, since
        self.hung: dict[str, dict] = {}  # "slot-N" | "lab:P" -> record (+ pid, start)
        self.ipc_faults: dict[int, dict] = {}  # packet card -> record
        self.lab_killed: dict[str, dict] = {}  # lab peer -> record (clear restarts it)
        self.lab_notes: list[dict] = []  # lab behaviours a client set (clear undoes them)

    # --- processes ---------------------------------------------------------

    def start(self, slot: Slot) -> None:
        module = "supervisor.runner" if slot.card.is_management else "cards.runner"
        name = f"{slot.card.label.lower()}-{slot.card.slot}"
        args = [sys.executable, "-m", module, "--run-dir", str(self.run.root),
                "--slot", str(slot.card.slot)]  # fmt: skip
        pipe = theirs = None
        if not slot.card.is_management:  # the NPU's datagram path to this process
            pipe, theirs = DatagramPipe.pair()
            args += ["--npu-fd", str(theirs.fileno())]
        try:
            with open(self.run.logs / f"{name}.log", "ab") as out:
                slot.proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=partial(procs.die_with_parent, os.getpid()),
                    close_fds=True,
                    pass_fds=(theirs.fileno(),) if theirs else (),
                )
        finally:
            if theirs is not None:
                theirs.close()
        if pipe is not None:
            self._attach_pipe(slot.card.slot, pipe)
        slot.started_ticks = procs.start_time(slot.proc.pid) or 0
        slot.started_at = time.time()
        slot.state, slot.expect_exit = "booting", False
        if slot.card.is_management and slot.role == "active":
            self.epoch += 1
            self.node.epoch = self.epoch  # what the backplane sends (NPU datagrams) is current
        fd = os.pidfd_open(slot.proc.pid)
        asyncio.get_running_loop().add_reader(fd, self._exited, slot, slot.proc, fd)
        self.save_pids()
        self.notify(ProcEvent(slot.card.slot, "started", slot.proc.pid))
        log.info("slot %d: started %s pid %d", slot.card.slot, module, slot.proc.pid)

    def _exited(self, slot: Slot, proc: subprocess.Popen, fd: int) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        code = proc.wait()
        if slot.proc is not proc:  # an older process of a restarted slot
            return
        expected = slot.expect_exit or self.stopping.is_set()
        slot.state = "offline" if expected else "failed"
        if not expected:
            slot.failed_at, slot.failed_reason = time.monotonic(), f"process exited ({code})"
            slot.detection_ms = None
        # a hang or an IPC filter dies with its process
        self.hung.pop(f"slot-{slot.card.slot}", None)
        self.ipc_faults.pop(slot.card.slot, None)
        log.log(
            logging.INFO if expected else logging.WARNING,
            "slot %d: pid %d exited with %s",
            slot.card.slot,
            proc.pid,
            code,
        )
        self.save_pids()
        self.notify(ProcEvent(slot.card.slot, "exited", proc.pid, code))
        if slot.card.slot == self.active_mgmt and not expected:
            if not self.mgmt_exited(slot):  # no standby to take over: restart it in place
                self.active_mgmt = None
            asyncio.get_running_loop().call_later(RESTART_DELAY, self._restart_supervisor, slot)
        elif slot.restart_on_exit or slot.card.slot in self.demoted:
            # an old active that stepped down (or died before it could): back as the standby
            slot.restart_on_exit = False
            self.demoted.discard(slot.card.slot)
            asyncio.get_running_loop().call_later(RESTART_DELAY, self._restart_supervisor, slot)

    def _attach_pipe(self, n: int, pipe: DatagramPipe) -> None:
        """The new process's pipe replaces the old one's (what that one held is lost with
        the process, as a card's queue is)."""
        old = self.pipes.pop(n, None)
        if old is not None:
            old.close()
        self.pipes[n] = pipe
        pipe.listen(lambda items: self.npu.send(items, n))

    def _restart_supervisor(self, slot: Slot) -> None:
        if not self.stopping.is_set() and slot.pid is None:
            slot.restarts += 1
            self.start(slot)

    def restart(self, slot: Slot) -> None:
        """Power-cycle a slot: kill the process we recorded (if any), start a new one."""
        if slot.pid is not None:
            slot.expect_exit = True
            procs.signal_verified(slot.proc.pid, slot.started_ticks, signal.SIGKILL)
        slot.restarts += 1
        self.start(slot)

    def power_off(self, slot: Slot) -> None:
        """Stop a slot's process (an expected exit: the slot goes offline, not failed)."""
        if slot.proc is not None and slot.proc.poll() is None:
            slot.expect_exit = True
            procs.signal_verified(slot.proc.pid, slot.started_ticks, signal.SIGTERM)

    async def start_lab(self) -> None:
        """Lab peers come first: the boot configuration may enroll with the lab CA."""
        for name in sorted(self.manifest.get("lab", {}), key=list(LAB_PEERS).index):
            self._spawn_lab(name)
        await self._wait_lab(list(self.lab))

    def _spawn_lab(self, name: str) -> None:
        with open(self.run.logs / f"lab-{name}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", LAB_PEERS[name], "--run-dir", str(self.run.root)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=partial(procs.die_with_parent, os.getpid()),
                close_fds=True,
            )
        self.lab[name] = (proc, procs.start_time(proc.pid) or 0)
        self.save_pids()

    async def _wait_lab(self, names: list[str]) -> None:
        for name in names:
            proc = self.lab[name][0]
            url = self.manifest["lab"][name]["url"]
            host, port = url.split("//")[1].split("/")[0].split(":")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection((host, int(port)), timeout=0.2):
                        break
                except OSError:
                    await asyncio.sleep(0.02)
            else:
                log.error("lab %s did not come up (see logs/lab-%s.log)", name, name)

    def save_pids(self) -> None:
        records = {"backplane": {"pid": os.getpid(), "start": procs.start_time(os.getpid())}}
        for name, (proc, started) in self.lab.items():
            if proc.poll() is None:
                records[f"lab-{name}"] = {"pid": proc.pid, "start": started}
        for s in self.slots.values():
            if s.pid is not None:
                records[str(s.card.slot)] = {"pid": s.pid, "start": s.started_ticks}
        self.run.write_json(self.run.pids_path, records)

    # --- messages ----------------------------------------------------------

    def notify(self, msg) -> None:
        """Tell the active supervisor (if one is attached)."""
        if self.bus is not None and self.active_mgmt is not None:
            self.bus.send(msg, to=f"mgmt-{self.active_mgmt}".encode())

    def handle(self, inc: Incoming) -> None:
        if inc.error is not None:
            log.warning("bad message from %r: %s", inc.peer, inc.error.reason)
            self.bus.send(Error(inc.error.ref or 0, inc.error.reason), to=inc.peer)
            return
        msg = inc.env.msg
        if self.pending.resolve(inc):  # a card's answer to an ipc fault
            return
        if not self.mgmt_message(inc):  # an old active MIO, told to step down
            return
        if isinstance(msg, Heartbeat):  # a card's, on its NPU channel, or a MIO's
            slot = self._card_of(inc.peer)
            if slot is not None:
                self.seen[slot] = max(self.seen.get(slot, 0.0), msg.sent)
            elif (mgmt := self._mgmt_of(inc.peer)) is not None:
                self.mgmt_heartbeat(mgmt, msg.sent, bool(msg.state_seq))
        elif isinstance(msg, Hello):
            self.on_hello(inc, msg)
        elif isinstance(msg, CardStates):
            if inc.env.epoch == self.epoch:  # an older supervisor's view is not the chassis's
                self.on_states(msg)
        elif isinstance(msg, Power):
            if inc.env.epoch == self.epoch and msg.slot in self.slots:
                if msg.action == "restart":
                    self.restart(self.slots[msg.slot])
                elif msg.action == "stop":  # `card halt`: offline until `card reboot`
                    self.power_off(self.slots[msg.slot])
        elif isinstance(msg, Datagram | Datagrams):  # a card answers a peer
            self.npu.send(
                burst_items(msg), self._card_of(inc.peer) if self.npu.faults.rules else None
            )
        elif isinstance(msg, Request) and msg.method == "npu.owners":  # after NpuBinds: in order
            self.bus.reply(inc, True, {str(k): v for k, v in self.npu.owners.items()})
        elif isinstance(msg, Request) and msg.method == "mgmt.switch":  # `card switch`
            try:
                self.bus.reply(
                    inc, True, self.mgmt_switch(msg.args.get("from"), msg.args.get("to"))
                )
            except ValueError as exc:
                self.bus.reply(inc, False, error=str(exc))
        elif isinstance(msg, Request) and msg.method == "card.seen":  # the supervisor asks
            slots = msg.args.get("slots") or []
            self.bus.reply(
                inc, True, {str(n): self.seen.get(n) for n in slots if isinstance(n, int)}
            )
        elif isinstance(msg, Request) and msg.method in FAULT_METHODS:
            self._spawn(self._fault_request(inc, msg))
        elif isinstance(msg, NpuBinds):
            if inc.env.epoch == self.epoch:
                self.npu.owners = {int(k): int(v) for k, v in (msg.owners or {}).items()}
                asyncio.get_running_loop().create_task(self.npu.bind(msg.binds))
        elif isinstance(msg, Request) and msg.method == "npu.attach":
            self.bus.reply(inc, True)  # the card's identity is now routable
        elif isinstance(msg, Request) and msg.method == "status":
            self.bus.reply(inc, True, self.status())
        elif isinstance(msg, Request) and msg.method in ("capture.start", "capture.stop"):
            try:
                result = getattr(self, msg.method.replace(".", "_"))(**msg.args)
            except (CaptureError, TypeError, ValueError) as exc:
                self.bus.reply(inc, False, error=str(exc))
            else:
                self.bus.reply(inc, True, result)
        elif isinstance(msg, Request) and msg.method == "shutdown":
            self.bus.reply(inc, True, {"pid": os.getpid()})
            self.stopping.set()
        else:
            self.bus.send(
                Error(inc.env.id, f"backplane does not handle {inc.env.type}"), to=inc.peer
            )

    def on_hello(self, inc: Incoming, msg: Hello) -> None:
        slot = self.slots.get(msg.slot)
        if slot is None or not slot.card.is_management or slot.pid != msg.pid:
            self.bus.reply(
                inc, False, error=f"no management card process {msg.pid} in slot {msg.slot}"
            )
            return
        slot.state = slot.role
        if slot.role == "active":
            self.active_mgmt = msg.slot
        else:
            self.notify(ProcEvent(msg.slot, "hello", msg.pid, role=slot.role))
        self.bus.reply(
            inc, True, {"epoch": self.epoch, "role": slot.role, "slots": self.status()["slots"]}
        )

    def _serving(self) -> list[int]:
        """Packet cards that take new IKE SAs: active and in service."""
        return sorted(
            n for n, s in self.slots.items() if not s.card.is_management and s.state == "active"
        )

    def _steered(self) -> list[int]:
        """Packet cards whose SAs the NPU steers to them: the serving ones, and active cards
        cut off from the supervisor ("unreachable": alive, their tunnels kept)."""
        return sorted(
            n
            for n, s in self.slots.items()
            if not s.card.is_management
            and (
                s.state in ("active", "migrating")  # a migrating card serves until it is done
                or (s.state == "unreachable" and s.role == "active")
            )
        )

    @staticmethod
    def _card_of(peer: bytes | None) -> int | None:
        name = (peer or b"").decode(errors="replace")
        return int(name[5:]) if name.startswith("card-") and name[5:].isdigit() else None

    def _to_card(self, slot: int, items: list) -> bool:
        pipe = self.pipes.get(slot)
        if pipe is None:  # a card this backplane did not start: on the bus
            return self.bus.send(burst(items), to=f"card-{slot}".encode()) is not None
        return pipe.send(items)

    def on_states(self, msg: CardStates) -> None:
        for key, entry in msg.states.items():
            slot = self.slots.get(int(key))
            if slot is None or slot.card.is_management:
                continue
            # A report about a process that already exited must not undo the backplane's "failed".
            if entry.get("pid") == slot.pid or entry.get("state") in ("failed", "offline"):
                if entry["state"] == "failed" and slot.state != "failed" and entry.get("failed_at"):
                    # the supervisor's verdict (a hang); an exit the backplane saw itself first
                    slot.failed_at = entry["failed_at"]
                    slot.failed_reason = entry.get("failure", "")
                    slot.detection_ms = entry.get("detection_ms")
                slot.state = entry["state"]

    def capture_start(self, path: str, max_bytes: int = MAX_BYTES) -> dict:
        """Write every datagram of the gateway's sockets, both ways, to a pcapng file."""
        if self.capture is not None:
            raise CaptureError(
                f"a capture is already running to {self.capture.path}; "
                "stop it first (chassis capture --stop)"
            )
        if not os.path.isabs(path):
            raise CaptureError(f"capture path {path!r} is not absolute")
        self.capture = Capture(path, int(max_bytes), asyncio.get_running_loop())
        self.npu.tap = self.capture.record
        log.info("capture started: %s (at most %d bytes)", path, self.capture.max_bytes)
        return self.capture.stats()

    def capture_stop(self) -> dict:
        if self.capture is None:
            raise CaptureError("no capture is running")
        self.npu.tap, capture, self.capture = None, self.capture, None
        stats = capture.close()
        log.info("capture stopped: %s, %d packets, %d bytes%s", stats["path"], stats["packets"],
                 stats["bytes"], f", {stats['dropped']} not written" if stats["dropped"] else "")  # fmt: skip
        return stats

    def status(self) -> dict:
        now = time.time()
        return {
            "name": self.topology.name,
            "platform": self.topology.platform,
            "epoch": self.epoch,
            "backplane_pid": os.getpid(),
            "netns": self.manifest.get("netns"),
            "slots": [
                {
                    "slot": s.card.slot,
                    "type": s.card.type,
                    "label": s.card.label,
                    "role": s.role,
                    "state": s.state,
                    "pid": s.pid,
                    "uptime_s": round(now - s.started_at, 3) if s.pid else None,
                    "restarts": s.restarts,
                    "failed_at": s.failed_at,
                    "failed_reason": s.failed_reason,
                    "detection_ms": s.detection_ms,
                }
                for s in self.slots.values()
            ],
            "faults": self.fault_list(),
            "mgmt_takeovers": self.mgmt_takeovers,
            "npu": dict(self.npu.counts),
            "datapath": {  # each packet card's socketpair (chassis/ipc/datapath.py)
                str(n): {
                    "dropped": p.dropped,
                    "backlog": len(p.backlog),
                    "bad": p.bad,
                    "closed": p.closed,
                }
                for n, p in self.pipes.items()
            },
            "npu_errors": sorted(self.npu.listen_errors.values()),
            "capture": self.capture.stats() if self.capture is not None else None,
            "lab": {
                name: {
                    "pid": proc.pid if proc.poll() is None else None,
                    "url": self.manifest["lab"][name]["url"],
                    "status": self._lab_status(name),
                }
                for name, (proc, _) in self.lab.items()
            },
        }

    def _lab_status(self, name: str) -> dict | None:
        """What a lab peer publishes about itself in RUN/lab/NAME/status.json (the fleet's
        counters), read here so `chassis status` never waits on the peer."""
        try:
            return json.loads((self.run.root / "lab" / name / "status.json").read_bytes())
        except (OSError, ValueError):
            return None

    # --- faults (chassis/faults.py) ---------------------------------------------

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def _fault_request(self, inc: Incoming, msg: Request) -> None:
        try:
            if msg.method == "fault":
                result = await self.apply_fault(Fault.from_dict(msg.args.get("fault")))
            elif msg.method == "fault.list":
                result = self.fault_list()
            elif msg.method == "fault.note":
                result = self.note_lab_fault(msg.args)
            else:  # fault.clear
                result = await self.clear_faults()
        except FaultError as exc:
            self.bus.reply(inc, False, error=str(exc))
        except Exception as exc:
            log.exception("fault %s", msg.args)
            self.bus.reply(inc, False, error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            self.bus.reply(inc, True, result)

    def fault_list(self) -> list[dict]:
        """The faults in force, oldest first."""
        records = [*self.hung.values(), *self.ipc_faults.values(), *self.lab_killed.values()]
        records += [{**r.record, "counts": dict(r.counts)} for r in self.npu.faults.rules]
        records += self.lab_notes
        return sorted(
            ({k: v for k, v in r.items() if k not in ("start", "undo")} for r in records),
            key=lambda r: r["since"]["monotonic"],
        )

    @staticmethod
    def _record(fault: Fault, **extra) -> dict:
        return {"fault": fault.describe(), "action": fault.action, "target": fault.target,
                "params": dict(fault.params), "since": timestamp(), **extra}  # fmt: skip

    async def apply_fault(self, fault: Fault) -> dict:
        """Apply one fault; returns what was done (pid, when)."""
        if fault.action in ("kill", "hang", "resume"):
            return self._signal_fault(fault)
        if fault.action == "ipc":
            return await self._ipc_fault(fault)
        if fault.action == "udp":
            return self._udp_fault(fault)
        raise FaultError(f"{fault.action} faults are applied by the client, not the backplane")

    def _slot_of(self, fault: Fault, packet_only: bool = False) -> Slot:
        n = fault.slot
        if n is None:  # "supervisor"
            if self.active_mgmt is None:
                raise FaultError("no active supervisor is attached (it may be restarting)")
            n = self.active_mgmt
        if n not in self.slots:
            types = PLATFORMS.get(self.topology.platform, {})
            if any(n in slots for slots in types.values()):
                raise FaultError(
                    f"slot {n} is empty (no card there in topology {self.topology.name})"
                )
            known = ", ".join(f"{t} {'/'.join(map(str, s))}" for t, s in types.items())
            raise FaultError(f"unknown slot {n} on {self.topology.platform} (slots: {known})")
        slot = self.slots[n]
        if packet_only and slot.card.is_management:
            raise FaultError(
                f"slot {n} is a management card ({slot.card.label}); {fault.action} faults "
                "act between the supervisor and one packet card"
            )
        return slot

    def _process_of(self, fault: Fault) -> tuple[str, int, int]:
        """(key, pid, start ticks) of a kill/hang/resume target that has a live process."""
        peer = fault.lab_peer
        if peer is not None:
            if peer not in self.lab:
                raise FaultError(
                    f"chassis {self.topology.name} has no lab {peer} (topology lab: {peer}:)"
                )
            proc, started = self.lab[peer]
            if proc.poll() is not None:
                raise FaultError(f"lab {peer} is not running (exited with {proc.returncode})")
            return f"lab:{peer}", proc.pid, started
        slot = self._slot_of(fault)
        if slot.pid is None:
            raise FaultError(f"slot {slot.card.slot} has no running process ({slot.state})")
        return f"slot-{slot.card.slot}", slot.pid, slot.started_ticks

    def _signal_fault(self, fault: Fault) -> dict:
        key, pid, started = self._process_of(fault)
        stopped = process_stopped(pid)
        if fault.action == "hang" and (key in self.hung or stopped):
            raise FaultError(f"{key} (pid {pid}) is already hung; resume it first")
        if fault.action == "resume" and key not in self.hung and not stopped:
            raise FaultError(f"{key} (pid {pid}) is not hung: nothing to resume")
        sig = {"kill": signal.SIGKILL, "hang": signal.SIGSTOP, "resume": signal.SIGCONT}
        if not procs.signal_verified(pid, started, sig[fault.action]):
            raise FaultError(f"{key}: process {pid} is gone")
        at = timestamp()
        log.warning("fault: %s (pid %d)", fault.describe(), pid)
        if fault.action == "hang":
            self.hung[key] = {**self._record(fault, pid=pid), "target": key, "start": started}
        elif fault.action == "resume":
            self.hung.pop(key, None)
        else:  # kill: the pidfd reports the crash (cards: failed; the active MIO: restarted)
            self.hung.pop(key, None)
            if key.startswith("lab:"):
                self.lab_killed[key[4:]] = self._record(fault, pid=pid)
                self.save_pids()
        return {"target": key, "pid": pid, "at": at}

    async def _ipc_fault(self, fault: Fault, timeout: float = CARD_ANSWER_S) -> dict:
        slot = self._slot_of(fault, packet_only=True)
        n = slot.card.slot
        if slot.pid is None:
            raise FaultError(f"slot {n} has no running process ({slot.state})")
        if f"slot-{n}" in self.hung:
            raise FaultError(f"slot {n} is hung; resume it first (a hung card takes no filter)")
        args = dict(fault.params)
        try:
            answer = await self.pending.call(
                self.bus, Request("ipc.fault", args), to=f"card-{n}".encode(), timeout=timeout
            )
        except TimeoutError:
            raise FaultError(f"card {n} did not answer within {timeout:g} s") from None
        except RpcError as exc:
            raise FaultError(f"card {n}: {exc}") from None
        at = timestamp()
        log.warning("fault: %s", fault.describe())
        if fault.params["mode"] == "heal":
            self.ipc_faults.pop(n, None)
        else:
            self.ipc_faults[n] = self._record(fault, pid=answer.get("pid"))
        return {"target": f"slot-{n}", "pid": answer.get("pid"), "at": at}

    def _udp_fault(self, fault: Fault) -> dict:
        p = fault.params
        slot = peer = None
        if fault.target is not None:
            slot = self._slot_of(fault, packet_only=True).card.slot
        elif "peer" in p:
            peer = peer_address(p["peer"])
        at = timestamp()
        if p["mode"] == "heal":
            gone = self.npu.faults.heal(slot, peer)
            log.warning("fault: %s (%d rule(s) removed)", fault.describe(), len(gone))
            return {"target": fault.target, "peer": p.get("peer"), "at": at,
                    "healed": [r.record["fault"] for r in gone]}  # fmt: skip
        rule = UdpRule(p["mode"], p["rate"], p.get("ms", 0), slot, peer, f"{p['seed']}:udp",
                       record=self._record(fault))  # fmt: skip
        self.npu.faults.add(rule)
        log.warning("fault: %s", fault.describe())
        return {"target": fault.target, "peer": p.get("peer"), "at": at}

    def note_lab_fault(self, args: dict) -> dict:
        """A client set a lab peer's behaviours (a lab fault): keep it in the list, with the
        values to put back at `fault clear`."""
        fault = Fault.from_dict(args.get("fault"))
        if fault.action != "lab":
            raise FaultError("fault.note records lab faults only")
        record = {**self._record(fault), "undo": dict(args.get("undo") or {})}
        self.lab_notes.append(record)
        return {"fault": record["fault"], "at": record["since"]}

    async def clear_faults(self) -> dict:
        """Heal everything: resume hung processes, lift IPC filters and UDP rules, restart
        killed lab peers; the lab behaviours a client set go back to it to undo."""
        healed = []
        for rec in list(self.hung.values()):
            procs.signal_verified(rec["pid"], rec["start"], signal.SIGCONT)
            healed.append(rec["fault"])
        self.hung.clear()
        for n, rec in list(self.ipc_faults.items()):
            try:
                await self._ipc_fault(Fault("ipc", f"slot-{n}", {"mode": "heal"}))
            except FaultError as exc:
                log.warning("clear: %s: %s", rec["fault"], exc)
            self.ipc_faults.pop(n, None)
            healed.append(rec["fault"])
        healed += [r.record["fault"] for r in self.npu.faults.heal()]
        restarted = []
        for name in self.lab_killed:
            try:
                self.lab[name][0].wait(timeout=1.0)  # SIGKILLed: gone in a moment
            except subprocess.TimeoutExpired:
                log.warning("clear: lab %s is still running; not restarted", name)
                continue
            self._spawn_lab(name)
            restarted.append(name)
        healed += [rec["fault"] for rec in self.lab_killed.values()]
        self.lab_killed.clear()
        if restarted:
            await self._wait_lab(restarted)
        lab, self.lab_notes = self.lab_notes, []
        log.warning("fault clear: %s", ", ".join(healed) or "nothing in force")
        return {"healed": healed, "lab": lab, "restarted": restarted, "at": timestamp()}

    # --- main loop -----------------------------------------------------------

    async def serve(self) -> None:
        self.node.start_auth()
        self.bus = self.node.router(self.manifest["endpoints"]["backplane"])
        self.bus.listen(self._receive)
        await self.start_lab()
        for slot in self.slots.values():
            self.start(slot)
        self._spawn(self.mgmt_watch())
        await self.stopping.wait()
        self.shutdown()

    def _receive(self, inc: Incoming) -> None:
        try:
            self.handle(inc)
        except Exception:  # one bad message must not take the backplane down
            log.exception("while handling %s", inc.env.type if inc.env else "?")

    def shutdown(self) -> None:
        self.npu.close()
        for pipe in self.pipes.values():
            pipe.close()
        if self.capture is not None:
            self.capture_stop()
        records = [(s.proc.pid, s.started_ticks) for s in self.slots.values() if s.pid]
        records += [(p.pid, started) for p, started in self.lab.values() if p.poll() is None]
        for s in self.slots.values():
            s.expect_exit = True
        left = procs.stop_verified(records)
        for s in self.slots.values():
            if s.proc is not None and s.proc.returncode is None:
                s.proc.poll()
            s.state = "offline"
        if left:
            log.error("processes survived shutdown: %s", left)
        self.node.close()
        shutil.rmtree(self.run.ipc, ignore_errors=True)
        self.run.pids_path.unlink(missing_ok=True)
        log.info("backplane down")


FAULT_METHODS = ("fault", "fault.list", "fault.note", "fault.clear")


def process_stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP: state T in /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] in (b"T", b"t")


def spawn(
    run: RunDir, *, log_path: Path | None = None, netns: str | None = None
) -> subprocess.Popen:
    """Start a backplane process in its own session (it survives the shell that ran `up`).

    With `netns`, it runs inside that network namespace (`ip netns exec`, which execs the
    backplane in its own place: the PID is the backplane's), and so do the cards and lab
    peers it starts; the ipc:// sockets are files, reachable from any namespace."""
    argv = [sys.executable, "-m", "chassis.backplane", "--run-dir", str(run.root)]
    if netns:
        argv = [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", netns, *argv]
    out = open(log_path or run.logs / "backplane.out", "ab")
    with out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chassis.backplane")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    logging.basicConfig(
        filename=run.logs / "backplane.log",
        level=logging.DEBUG if os.environ.get("CHASSIS_DEBUG") else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    topology = Topology.from_dict(run.manifest()["topology"])
    backplane = Backplane(topology, run)

    async def runner():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, backplane.stopping.set)
        await backplane.serve()

    asyncio.run(runner())
    return 0


if __name__ == "__main__":
    sys.exit(main())
