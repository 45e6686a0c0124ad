"""The lab's CRL publisher as a process: the lab CAs' CRLs over http, in files, over ldap.

    python -m chassis.lab.crl_server --run-dir DIR      (the backplane starts it, after the CA)

    GET  /crl/issuing.crl   the issuing CA's CRL (DER, application/pkix-crl); .pem in PEM
    GET  /crl/root.crl      the root CA's CRL; /crl/root.pem
    GET  /admin             CRL numbers and times, behaviours, ldap state (JSON)
    POST /admin             {"down": true, "slow": S, "error": "corrupt", "stale": true,
                             "warp": SECONDS, "publish": true}

Files: RUN/lab/crl/{issuing,root}.{crl,pem}, and the same under RUN/usb1/lab-crl/, which the
gateway reads as ``file:/usb1/lab-crl/issuing.crl``. LDAP (when slapd is installed and the
topology does not say ``ldap: false``): a slapd of our own on loopback (chassis.lab.
ldap_directory). A new CRL is published at start, whenever the CA's database grows (a
revocation by any process: seen within 0.1 s, and before every http answer), every half
period, after a warp, and on ``{"publish": true}``.

Behaviours (``behaviour:`` in the topology, /admin at run time): down closes http
connections and stops slapd (ldap refused; the files stay); slow delays http answers; error
http-500 (or true) answers http with 500, corrupt and bad-signature publish a spoiled CRL
everywhere; stale publishes a CRL whose nextUpdate has passed.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
from pathlib import Path

from chassis.ipc.rundir import RunDir
from chassis.lab.authority import Authority
from chassis.lab.crl_publisher import CAS, CrlPublisher, crl_behaviour
from chassis.lab.ldap_directory import LdapError, Slapd
from chassis.lab.peer import STATUS_EVERY_S, LabClock, Peer, Reply, serve, wait_for_ca, write_status

log = logging.getLogger("lab-crl")
DEFAULT_NEXT_UPDATE_S = 3600
TICK_S = 0.1
ANSWER_WAIT_S = 5.0  # an http answer waits this long at most for the publisher's loop
USB_DIR = "lab-crl"  # RUN/usb1/lab-crl: the gateway's file:/usb1/lab-crl/...


class CrlPeer(Peer):
    """The HTTP side; everything that changes the CRLs runs in the process's main thread
    (``run``), which owns slapd (it must outlive every thread that starts it)."""

    name = "crl"

    def __init__(
        self,
        publisher: CrlPublisher,
        clock: LabClock,
        *,
        ldap: Slapd | None = None,
        ldap_note: str | None = None,
        urls: dict | None = None,
    ) -> None:
        self.publisher, self.clock, self.ldap = publisher, clock, ldap
        self.behaviour = publisher.behaviour
        self.ldap_state = ldap_note or ("starting" if ldap else "off")
        self.urls = dict(urls or {})
        self.commands: queue.Queue = queue.Queue()
        self.stop = threading.Event()

    # --- requests from other threads ------------------------------------------------------

    def _call(self, what: str, arg=None):
        """Run `what` in the main loop and wait for it (bounded)."""
        done, box = threading.Event(), {}
        self.commands.put((what, arg, done, box))
        if not done.wait(ANSWER_WAIT_S):
            raise TimeoutError(f"the CRL publisher did not answer {what} in {ANSWER_WAIT_S:g} s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def get(self, path: str) -> Reply | None:
        name, dot, ext = path.removeprefix("/crl/").partition(".")
        if not path.startswith("/crl/") or name not in CAS or ext not in ("crl", "pem"):
            return None
        if self.behaviour.error_kind == "http-500":
            self.behaviour.count("errors")
            return Reply(500, b"the lab CRL publisher was told to fail\n", "text/plain")
        published = self._call("sync")[name]
        self.behaviour.count("fetches")
        if ext == "pem":
            return Reply(200, published.pem, "application/x-pem-file")
        return Reply(200, published.der, "application/pkix-crl")

    def admin(self, changes: dict) -> None:
        self._call("admin", changes)

    def report(self) -> dict:
        return super().report() | {
            "crls": self.publisher.describe(),
            "next_update_s": self.publisher.period.total_seconds(),
            "ldap": self.ldap_state,
            "urls": self.urls,
        }

    # --- the main loop ----------------------------------------------------------------------

    def prepare(self) -> None:
        """The first CRLs, and slapd serving them (before the http port opens: the backplane
        takes an open port for "ready")."""
        self._publish()
        if self.ldap is not None and not self.behaviour.down:
            self._ldap_start()
        elif self.ldap is not None:
            self.ldap_state = "down (told to)"

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                what, arg, done, box = self.commands.get(timeout=TICK_S)
            except queue.Empty:
                what = None
            if what is not None:
                try:
                    box["result"] = self._command(what, arg)
                except Exception as exc:  # handed to the caller's thread
                    box["error"] = exc
                done.set()
            if self.publisher.due():
                self._publish()
        if self.ldap is not None:
            self.ldap.stop()

    def _command(self, what: str, arg):
        if what == "sync":
            if self.publisher.due():
                self._publish()
            return self.publisher.current
        if what == "admin":
            changes = dict(arg)
            publish = changes.pop("publish", False)
            if not isinstance(publish, bool):
                raise ValueError("publish must be true or false")
            was_down = self.behaviour.down
            before = (self.behaviour.error, self.behaviour.stale)
            self.behaviour.update(changes)
            if self.ldap is not None and self.behaviour.down != was_down:
                if self.behaviour.down:
                    self.ldap.stop()
                    self.ldap_state = "down (told to)"
                else:
                    self._ldap_start()
            if publish or before != (self.behaviour.error, self.behaviour.stale):
                self._publish()
            return None
        raise ValueError(f"unknown command {what}")

    def _crls(self) -> dict[str, bytes]:
        return {name: p.der for name, p in self.publisher.current.items()}

    def _publish(self) -> None:
        out = self.publisher.publish()
        log.info("published CRL %s", ", ".join(f"{n} #{p.number} ({p.revoked} revoked)"
                                               for n, p in out.items()))  # fmt: skip
        if self.ldap is not None and self.ldap.running:
            try:
                self.ldap.update(self._crls())
            except LdapError as exc:
                self.ldap_state = f"failed: {exc}"
                log.error("ldap update failed: %s", exc)

    def _ldap_start(self) -> None:
        try:
            self.ldap.start(self._crls())
        except (LdapError, OSError, TimeoutError) as exc:
            self.ldap_state = f"failed: {exc}"
            log.error("slapd did not start: %s", exc)
        else:
            self.ldap_state = f"running on 127.0.0.1:{self.ldap.port}"


def build(run: RunDir, clock: LabClock) -> CrlPeer:
    manifest = run.manifest()
    lab = manifest["topology"].get("lab") or {}
    conf = dict(lab.get("crl") or {})
    ours = manifest["lab"]["crl"]
    ca_home = run.root / "lab" / "ca"
    if not wait_for_ca(ca_home):
        raise SystemExit(f"no lab CA in {ca_home}")
    validity = int((lab.get("ca") or {}).get("validity-days", 365))
    authority = Authority(ca_home, clock.now, validity)
    home = run.root / "lab" / "crl"
    publisher = CrlPublisher(
        authority,
        clock.now,
        home,
        next_update_s=float(conf.get("next-update-s", DEFAULT_NEXT_UPDATE_S)),
        behaviour=crl_behaviour(conf.get("behaviour")),
        mirrors=[run.root / "usb1" / USB_DIR],
    )
    ldap = None
    if "ldap" in ours:
        port = int(ours["ldap"].split("//")[1].split("/")[0].rsplit(":", 1)[1])
        ldap = Slapd(home / "ldap", port)
    urls = {k: v for k, v in ours.items() if k != "admin"}
    return CrlPeer(publisher, clock, ldap=ldap, ldap_note=ours.get("ldap_error"), urls=urls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chassis.lab.crl_server")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.DEBUG if os.environ.get("CHASSIS_DEBUG") else logging.INFO,
        format="%(asctime)s lab-crl %(levelname)s %(message)s",
    )
    run = RunDir(args.run_dir)
    peer = build(run, LabClock())
    status = run.root / "lab" / "crl" / "status.json"
    status.unlink(missing_ok=True)  # a previous run's
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop slapd on the way out
        signal.signal(sig, lambda *_: peer.stop.set())
    peer.prepare()
    url = peer.urls["url"]
    server = serve(peer, int(url.split("//")[1].split("/")[0].rsplit(":", 1)[1]), log)
    threading.Thread(target=_status_loop, args=(peer, status), daemon=True).start()
    log.info("CRL publisher on %s (ldap: %s)", url, peer.ldap_state)
    try:
        peer.run()
    finally:
        server.shutdown()
    return 0


def _status_loop(peer: CrlPeer, path: Path) -> None:
    last = None
    while not peer.stop.wait(STATUS_EVERY_S):
        report = peer.report()
        if report != last:
            write_status(path, report)
            last = report


if __name__ == "__main__":
    sys.exit(main())
