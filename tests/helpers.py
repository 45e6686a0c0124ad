"""Shared test helpers: bounded waits and small topology builders."""

from __future__ import annotations

import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGIES = ROOT / "topologies"


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    """Poll until predicate() is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def slot_states(chassis) -> dict[int, str]:
    return {s["slot"]: s["state"] for s in chassis.status()["slots"]}


def slot_pid(chassis, slot: int) -> tuple[int, int]:
    rec = json.loads(chassis.run.pids_path.read_text())[str(slot)]
    return rec["pid"], rec["start"]


def write_topology(tmp_path: Path, body: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


SMALL = """\
name: {name}
platform: asr5500
transport: {transport}
cards:
  5: {{type: mio, role: active}}
  1: {{type: dpc, role: active}}
  2: {{type: dpc, role: standby}}
startup-config: |
{config}
"""


def small_topology(
    tmp_path: Path, *, name="small", transport="ipc", config="  config\n  end"
) -> Path:
    return write_topology(tmp_path, SMALL.format(name=name, transport=transport, config=config))


BASIC = Path(__file__).resolve().parent / "topologies" / "basic.yaml"  # no lab: quick to start

# A topology's tail for a lab-CA chassis serving one child-SA payload on 127.0.0.1:{port}
# (enrolled with `cmp initialize`): a str.format template, as the topologies that end with it.
LAB_SEGW_CONFIG = """\
startup-config: |
  config
    system hostname segw
    ca-certificate name lab-root pem url ${{lab.ca.root}}
    context segw
      ip pool enb-pool 10.64.0.0 255.255.0.0 public 0
      ikev2-ikesa transform-set ike-gcm
        encryption aes-gcm-256
        group 19
        prf sha2-256
      #exit
      ipsec transform-set esp-gcm
        encryption aes-gcm-256
      #exit
      crypto template segw-tmpl ikev2-dynamic
        authentication local certificate
        authentication remote certificate
        certificate name segw
        ca-certificate list ca-cert-name lab-root
        ikev2-ikesa transform-set list ike-gcm
        ipsec sink echo
        payload gtpu match childsa match ipv4
          ipsec transform-set list esp-gcm
        #exit
      #exit
      wsg-service segw-svc
        ip address pool name enb-pool
        bind address 127.0.0.1 port {port} crypto-template segw-tmpl
      #exit
    #exit
  end
  cmp initialize modulus 2048 cert-name segw subject-name "/O=SeGW Lab/CN=segw.lab.example" ca-psk lab-secret ca-root lab-root ca-url ${{lab.ca.url}}
"""


def ike_attempt(config, gateway: tuple[str, int], timeout: float = 15.0) -> list:
    """One eNodeB (a cards.ike Endpoint with ``config``) dials ``gateway`` over real UDP on
    loopback; returns its Established / AuthFailed events once either came (bounded)."""
    import datetime as dt
    import os
    import select
    import socket

    from cards.ike.engine import Endpoint
    from cards.ike.events import AuthFailed, Established, Send

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    local = sock.getsockname()
    ep = Endpoint(config, rand=os.urandom, wall_clock=lambda: dt.datetime.now(dt.UTC),
                  local=local)  # fmt: skip
    events: list = []

    def handle(outs) -> None:
        for o in outs:
            (sock.sendto(o.data, o.dst) if isinstance(o, Send) else events.append(o))

    try:
        handle(ep.initiate(gateway, time.monotonic(), local=local))
        deadline = time.monotonic() + timeout
        while not any(isinstance(e, Established | AuthFailed) for e in events):
            assert time.monotonic() < deadline, f"no IKE answer within {timeout:g} s: {events}"
            if select.select([sock], [], [], 0.1)[0]:
                data, src = sock.recvfrom(65536)
                handle(ep.receive(data, src, local, time.monotonic()))
            handle(ep.handle_timer(time.monotonic()))
    finally:
        sock.close()
    return [e for e in events if isinstance(e, Established | AuthFailed)]
