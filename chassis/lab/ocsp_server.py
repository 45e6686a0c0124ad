"""The lab's OCSP responder as a process (RFC 6960 over HTTP, appendix A), loopback only.

    python -m chassis.lab.ocsp_server --run-dir DIR      (the backplane starts it, after the CA)

    POST /ocsp              an OCSPRequest (application/ocsp-request); also POST /
    GET  /ocsp/BASE64       the same, base64 (URL-encoded) in the path
    GET  /admin             behaviours, counters, signer (JSON)
    POST /admin             {"down": true, "slow": S, "error": "tryLater", "stale": true,
                             "warp": SECONDS}

Answers come from the lab CA's revocation database (RUN/lab/ca/issued.jsonl), read again
whenever it grew, so a revocation by the CA process shows in the very next answer. Settings
from the topology's ``lab: ocsp:`` (delegate, next-update-s, nonce, behaviour); the counters
also go to RUN/lab/ocsp/status.json for `chassis status`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import os
import sys
import threading
from urllib.parse import unquote

from chassis.ipc.rundir import RunDir
from chassis.lab.authority import Authority
from chassis.lab.ocsp_responder import OcspResponder, ocsp_behaviour
from chassis.lab.peer import STATUS_EVERY_S, LabClock, Peer, Reply, serve, wait_for_ca, write_status

log = logging.getLogger("lab-ocsp")
RESPONSE = "application/ocsp-response"
DEFAULT_NEXT_UPDATE_S = 300


class OcspPeer(Peer):
    name = "ocsp"

    def __init__(self, responder: OcspResponder, clock: LabClock, url: str = "") -> None:
        self.responder, self.clock, self.url = responder, clock, url
        self.behaviour = responder.behaviour
        self.lock = threading.Lock()  # the Authority and the counters are shared

    def _answer(self, der: bytes) -> Reply:
        with self.lock:
            return Reply(200, self.responder.handle(der), RESPONSE)

    def post(self, path: str, body: bytes) -> Reply | None:
        if path.rstrip("/") not in ("", "/ocsp"):
            return None
        return self._answer(body)

    def get(self, path: str) -> Reply | None:
        if not path.startswith("/ocsp/"):
            return None
        try:
            der = base64.b64decode(unquote(path[len("/ocsp/") :]), validate=True)
        except (binascii.Error, ValueError):
            der = b""  # answered malformedRequest
        return self._answer(der)

    def admin(self, changes: dict) -> None:
        with self.lock:
            self.behaviour.update(changes)

    def report(self) -> dict:
        r = self.responder
        with self.lock:
            signers = {
                issuer: {
                    "subject": c.subject.rfc4514_string(),
                    "serial": format(c.serial_number, "X"),
                }
                for issuer, (c, _) in r.signers.items()
            }
            return super().report() | {
                "url": self.url,
                "signer": "delegate" if r.delegate else "ca",
                "delegates": signers,
                "next_update_s": r.period.total_seconds(),
                "nonce": r.nonce,
                "now": self.clock.now().isoformat(),
            }


def build(run: RunDir, clock: LabClock) -> OcspPeer:
    manifest = run.manifest()
    lab = manifest["topology"].get("lab") or {}
    conf = dict(lab.get("ocsp") or {})
    ca_home = run.root / "lab" / "ca"
    if not wait_for_ca(ca_home):
        raise SystemExit(f"no lab CA in {ca_home}")
    validity = int((lab.get("ca") or {}).get("validity-days", 365))
    authority = Authority(ca_home, clock.now, validity)
    responder = OcspResponder(
        authority,
        clock.now,
        next_update_s=float(conf.get("next-update-s", DEFAULT_NEXT_UPDATE_S)),
        nonce=bool(conf.get("nonce", True)),
        delegate=bool(conf.get("delegate", False)),
        behaviour=ocsp_behaviour(conf.get("behaviour")),
    )
    if responder.delegate:  # issue the delegates now, not in the first request's time
        for issuer in ("intermediate", "root"):
            responder.signer(issuer)
    return OcspPeer(responder, clock, manifest["lab"]["ocsp"]["url"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chassis.lab.ocsp_server")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.DEBUG if os.environ.get("CHASSIS_DEBUG") else logging.INFO,
        format="%(asctime)s lab-ocsp %(levelname)s %(message)s",
    )
    run = RunDir(args.run_dir)
    peer = build(run, LabClock())
    home = run.root / "lab" / "ocsp"
    home.mkdir(parents=True, exist_ok=True)
    (home / "status.json").unlink(missing_ok=True)  # a previous run's
    port = int(peer.url.split("//")[1].split("/")[0].rsplit(":", 1)[1])
    serve(peer, port, log)
    log.info("OCSP responder on %s (signed by %s)", peer.url, peer.report()["signer"])
    last = None
    stop = threading.Event()
    while not stop.wait(STATUS_EVERY_S):
        report = peer.report()
        report.pop("now")
        if report != last:
            write_status(home / "status.json", report)
            last = report
    return 0


if __name__ == "__main__":
    sys.exit(main())
