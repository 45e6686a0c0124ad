"""The lab CA as a process: CMPv2 over HTTP (RFC 6712), its CA certificates, an admin API.

    python -m chassis.lab.ca_server --run-dir DIR      (the backplane starts it)

    POST /pkix/           a CMP message (application/pkixcmp)
    GET  /ca/root.crt     the root CA certificate (PEM); /ca/issuing.crt, /ca/chain.pem
    GET  /admin           behaviours and counters (JSON)
    POST /admin           set behaviours: {"poll": N, "check_after": S, "reject": "badRequest",
                          "error": true, "delay": S, "down": true, "warp": SECONDS}
    POST /admin/revoke    {"serial": "HEX" or N, "reason": "keyCompromise"}: revoke a certificate
                          the lab CA issued (from any lab process: the database is read again);
                          the OCSP responder and the CRL publisher see it in the database

"down" closes every CMP connection without an answer; "delay" answers late; "warp"
moves the lab's wall clock (the chassis's warp drills move both).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.serialization import Encoding

from chassis.ipc.rundir import RunDir
from chassis.lab.authority import Authority
from chassis.lab.cmp_responder import Behaviour, Responder

log = logging.getLogger("lab-ca")
MAX_BODY = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.offset, dt.UTC)


def make_handler(responder: Responder, behaviour: Behaviour, clock: Clock, authority: Authority):
    lock = threading.Lock()  # one CMP exchange at a time: the responder's state is shared

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # RFC 6712: a connection per message

        def log_message(self, fmt, *args):
            log.info("%s %s", self.address_string(), fmt % args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            pem = {
                "/ca/root.crt": authority.root.public_bytes(Encoding.PEM),
                "/ca/issuing.crt": authority.issuing.public_bytes(Encoding.PEM),
                "/ca/chain.pem": b"".join(c.public_bytes(Encoding.PEM) for c in authority.chain),
            }
            if self.path in pem:
                self._send(200, pem[self.path], "application/x-pem-file")
            elif self.path == "/admin":
                self._send(
                    200, json.dumps(behaviour.report(responder)).encode(), "application/json"
                )
            else:
                self._send(404, b"not found\n", "text/plain")

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._send(400, b"missing or oversize body\n", "text/plain")
                return None
            return self.rfile.read(length)

        def _revoke(self) -> None:
            body = self._body()
            if body is None:
                return
            try:
                ask = json.loads(body)
                serial = ask["serial"]
                serial = int(serial, 16) if isinstance(serial, str) else serial
                if isinstance(serial, bool) or not isinstance(serial, int):
                    raise ValueError("serial must be a hex string or an integer")
                reason = ask.get("reason") or "unspecified"
                with lock:
                    changed = authority.revoke(serial, reason)
                    entry = authority.db.get(serial)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self._send(400, f"bad revocation: {exc}\n".encode(), "text/plain")
                return
            if entry is None:
                text = f"serial {serial:X} was not issued by the lab CA\n"
                self._send(404, text.encode(), "text/plain")
                return
            if changed:
                log.info("revoked %X (%s): %s", serial, entry.subject, entry.reason)
            answer = {**vars(entry), "serial": f"{serial:X}", "changed": changed}
            self._send(200, json.dumps(answer).encode(), "application/json")

        def do_POST(self):
            if self.path == "/admin/revoke":
                self._revoke()
                return
            if self.path == "/admin":
                body = self._body()
                if body is None:
                    return
                try:
                    changes = json.loads(body)
                    if "warp" in changes:
                        clock.offset += float(changes.pop("warp"))
                    behaviour.update(changes)
                except (ValueError, TypeError) as exc:
                    self._send(400, f"bad behaviour: {exc}\n".encode(), "text/plain")
                    return
                self._send(
                    200, json.dumps(behaviour.report(responder)).encode(), "application/json"
                )
                return
            if self.path.rstrip("/") != "/pkix":
                self._send(404, b"not found\n", "text/plain")
                return
            if behaviour.down:
                self.close_connection = True
                self.connection.close()
                return
            body = self._body()
            if body is None:
                return
            if behaviour.delay:
                time.sleep(behaviour.delay)
            with lock:
                answer = responder.handle(body)
            self._send(200, answer, "application/pkixcmp")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chassis.lab.ca_server")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.DEBUG if os.environ.get("CHASSIS_DEBUG") else logging.INFO,
        format="%(asctime)s lab-ca %(levelname)s %(message)s",
    )
    run = RunDir(args.run_dir)
    manifest = run.manifest()
    conf = dict(manifest["topology"].get("lab", {}).get("ca") or {})
    ours = manifest["lab"]["ca"]
    clock = Clock()
    authority = Authority(run.root / "lab" / "ca", clock.now, int(conf.get("validity-days", 365)))
    behaviour = Behaviour.from_config(conf)
    responder = Responder(authority, ours["psk"].encode(), behaviour, clock.now, os.urandom)
    port = int(ours["url"].split(":")[2].split("/")[0])
    server = ThreadingHTTPServer(
        ("127.0.0.1", port), make_handler(responder, behaviour, clock, authority)
    )
    server.daemon_threads = True
    log.info("lab CA on %s (root %s)", ours["url"], authority.root.subject.rfc4514_string())
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
