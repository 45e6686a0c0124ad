"""The eNodeB fleet against a real chassis: 50 eNodeBs with two child SAs each.

A 2-DPC ASR 5500 enrolls its certificate from the lab CA (CMPv2), and serves a crypto template
with two child-SA payloads (GTP-C udp/2123 and GTP-U udp/2152, `max-childsa 2`, `ipsec sink
echo`) on a non-500 port. The topology's `lab: fleet:` starts 50 eNodeBs in one process after
the CA; each gets its certificate from the lab CA's files, an inner address (CP), its first
child in IKE_AUTH and the second by CREATE_CHILD_SA, and sends GTP-like UDP through both:
`chassis status --json` shows them all up, the traffic counters rise both ways (the gateway
echoes), and the gateway's own SA table agrees. A second run kills a DPC: its eNodeBs notice
(DPD), back off and come back on the other card.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from helpers import slot_pid, wait_until, write_topology

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPOLOGY = """\
name: fleet
platform: asr5500
cards:
  5: {{type: mio, role: active}}
  1: {{type: dpc, role: active}}
  2: {{type: dpc, role: active}}
lab:
  ca: {{psk: lab-secret}}
  fleet:
    count: {count}
    children: 2
    issuer: intermediate
    dh-group: 19
    key: ec-p256
    rate: 50
    half-open: 32
    dpd-interval: {dpd}
    retry: {{initial: 1, max: 4}}
    traffic:
      - {{proto: udp, port: 2123, pps: 1, size: 200}}
      - {{proto: udp, port: 2152, pps: 10, size: 1200}}
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
        max-childsa 2
        ipsec sink echo
        payload gtpc match childsa match ipv4
          ipsec transform-set list esp-gcm
          tsr start-address 0.0.0.0 end-address 255.255.255.255 protocol 17 start-port 2123 end-port 2123
        #exit
        payload gtpu match childsa match ipv4
          ipsec transform-set list esp-gcm
          tsr start-address 0.0.0.0 end-address 255.255.255.255 protocol 17 start-port 2152 end-port 2152
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


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(chassis_factory, tmp_path, count: int, dpd: int):
    port = free_udp_port()
    path = write_topology(tmp_path, TOPOLOGY.format(count=count, dpd=dpd, port=port))
    ch = chassis_factory(path, timeout=60)
    return ch, port


def fleet(ch) -> dict:
    return ch.status()["lab"]["fleet"].get("status") or {}


def cli_status(ch) -> dict:
    """`chassis status --json`, the command an operator types."""
    out = subprocess.run(
        [sys.executable, "-m", "chassis", "status", "--run-dir", str(ch.run.root), "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def all_up(ch, count: int):
    st = fleet(ch)
    return st if st.get("up") == count and st.get("children_up") == 2 * count else None


def test_fifty_enodebs_with_two_children_each_come_up_and_send_traffic(chassis_factory, tmp_path):
    ch, port = start(chassis_factory, tmp_path, count=50, dpd=30)
    lab = ch.status()["lab"]
    assert set(lab) == {"ca", "fleet"} and lab["fleet"]["pid"]
    assert ch.manifest["lab"]["fleet"]["gateway"] == f"127.0.0.1:{port}"  # from the config
    st = wait_until(lambda: all_up(ch, 50), 60, 0.2, what="50 eNodeBs with 2 child SAs each")
    assert st["configured"] == 50 and st["children_wanted"] == 100
    assert st["phases"]["waiting"] == 0 and st["establishing"] == 0

    # the operator's view
    status = cli_status(ch)["lab"]["fleet"]
    assert status["pid"] and status["url"].endswith("/admin")
    assert status["status"]["up"] == 50 and status["status"]["children_up"] == 100

    # the gateway's view: 50 IKE SAs, 2 children each, spread over both DPCs
    shown = wait_until(  # both cards answer (a card busy past the timeout is listed as silent)
        lambda: (
            (d := ch.exec("show crypto ikev2-ikesa security-associations")[0].data)
            and not d["silent"]
            and d
        ),
        15,
        what="both cards' SA tables",
    )
    sas = shown["sas"]
    assert len(sas) == 50
    assert sorted(s["peer_id"] for s in sas) == [f"enb{i:04d}.lab.example" for i in range(1, 51)]
    assert all(s["state"] == "ESTABLISHED" and s["children"] == 2 for s in sas)
    # inner addresses from the pool (unique across cards is the pool shares' business, not
    # the fleet's: not checked here)
    assert all(s["address"].startswith("10.64.") for s in sas)
    # each card hands out its own share of the pool: no address twice across the two DPCs
    assert len({s["address"] for s in sas}) == len(sas) and {s["card"] for s in sas} == {1, 2}
    assert {s["card"] for s in sas} == {1, 2}

    # traffic through both children, echoed back by the gateway
    def flowing():
        flows = fleet(ch)["flows"]
        return flows if all(f["packets_sent"] >= 100 and f["packets_received"] >= 50
                            for f in flows) else None  # fmt: skip

    gtpc, gtpu = wait_until(flowing, 60, 0.2, what="traffic both ways on both flows")
    assert (gtpc["flow"], gtpu["flow"]) == ("udp/2123", "udp/2152")
    assert gtpu["bytes_sent"] == 1200 * gtpu["packets_sent"] and gtpu["refused"] == 0

    # a fleet-wide reconnect: every tunnel deleted and brought up again, the ramp measured
    admin = ch.manifest["lab"]["fleet"]["admin"]
    httpx.post(admin, json={"reconnect": True}, timeout=5, trust_env=False).raise_for_status()
    wait_until(lambda: fleet(ch)["counts"].get("reconnects") == 1, 10, 0.1, what="reconnect")
    st = wait_until(
        lambda: (s := all_up(ch, 50)) and s.get("children_all_up_s") is not None and s,
        60, 0.2, what="50 eNodeBs up again after a reconnect",
    )  # fmt: skip
    assert st["lost"] == 0 and st["failed"] == 0
    print(f"\n50 eNodeBs x 2 children after a reconnect: first up {st['first_up_s']} s, "
          f"all IKE SAs {st['all_up_s']} s, all children {st['children_all_up_s']} s")  # fmt: skip
    assert st["all_up_s"] < 10


def test_enodebs_of_a_dead_card_come_back_on_the_other(chassis_factory, tmp_path):
    ch, _ = start(chassis_factory, tmp_path, count=10, dpd=1)
    wait_until(lambda: all_up(ch, 10), 60, 0.2, what="10 eNodeBs up")
    sas = ch.exec("show crypto ikev2-ikesa security-associations")[0].data["sas"]
    # the card holding more of them dies (the NPU's hash decides which: never a skip)
    victim = max((1, 2), key=lambda slot: sum(s["card"] == slot for s in sas))
    on_victim = sum(1 for s in sas if s["card"] == victim)
    assert on_victim >= 5
    pid, _ = slot_pid(ch, victim)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    st = wait_until(
        lambda: (s := fleet(ch)).get("lost", 0) >= on_victim and s.get("up") == 10 and s,
        60, 0.2, what="the dead card's eNodeBs back up",
    )  # fmt: skip
    assert st["re_established"] >= on_victim and st["losses"].get("timeout", 0) >= on_victim
    assert time.monotonic() - started < 60
    sas = ch.exec("show crypto ikev2-ikesa security-associations")[0].data["sas"]
    assert len([s for s in sas if s["state"] == "ESTABLISHED"]) >= 10
