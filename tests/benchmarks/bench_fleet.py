"""The eNodeB fleet against the chassis (issue #7). Reports figures; asserts nothing.

    python tests/benchmarks/bench_fleet.py [--count 400] [--rate 200] [--half-open 64]
        [--rounds 3] [--runs 1x19,2x19,1x14,2x14] [--burst 2000] [--burst-rate 2000]
        [--burst-half-open 512] [--burst-rounds 3] [--run-dir DIR]

Every chassis here is an ASR 5500 with MIO 5 and one or two DPCs, default timers (heartbeats
every 100 ms, a card failed after 3 missed), and a `lab:` section with the CA and the eNodeB
fleet (chassis/lab/fleet.py, one process). The lab CA's root and intermediate are made in the
run directory before `chassis up` (chassis.lab.authority, as the CA process would), so the
gateway's certificate can be EC P-256 too: issued by the intermediate, loaded with the CA
certificates from /flash by the boot configuration, which binds one wsg-service (AES-CBC-256,
HMAC-SHA2-256-128, PRF-SHA2-256, DH group 19 or 14; an IP pool, one child SA per eNodeB). The
eNodeBs' keys are EC P-256, their certificates from the intermediate (each sends it: the
gateway verifies two certificate signatures and the AUTH one).

1. Tunnel setup: --count eNodeBs at --rate tunnels/s, at most --half-open IKE_SA_INITs in
   flight, against 1 DPC and against 2 DPCs, with group 19 and with group 14 (four
   chassis). Once all are up (the first ramp warms the cards up and is not counted), each
   round POSTs {"reconnect": true} to the fleet's admin: the fleet deletes every tunnel (paced
   at --rate) and then starts them all again (paced at --rate). The CPU of every chassis
   process (utime + stime of every thread, /proc/PID/stat) is read at the reconnect, at the
   end of the deletes (count/rate seconds later: the fleet starts no tunnel before its last
   delete) and once the fleet reports all up (its status file, every 0.5 s); setup figures
   use the second interval, the idle background of the chassis (measured before the rounds)
   included and shown. Tunnels/s is the fleet's own (count / time from its first start to its
   last tunnel up): the offered rate whenever the chassis keeps up. The fleet process's CPU
   is shown apart, never in the chassis's sum.
2. The crypto floor of one tunnel for the responder, in this process, same run: the DH key
   generation and exchange of the group (OpenSSL, the card's 512-bit exponent for MODP), the
   SKEYSEED and prf+ HMACs, the AES-CBC/HMAC of both SK payloads of IKE_AUTH (sizes from a
   tunnel made in memory with the fleet's own configuration and the card's responder), the
   ECDSA P-256 verifications of the eNodeB's certificate, its intermediate and its AUTH, the
   ECDSA P-256 signature of our AUTH octets, the CHILD_SA KEYMAT. The card's IKE engine alone
   (that responder, in memory, no runner, no IPC) is timed too, to split the DPC's figure.
3. The burst: --burst eNodeBs against 2 DPCs, group 19, at --burst-rate with --burst-half-open.
   After the first ramp, each of --burst-rounds reconnects deletes all of them and starts them
   again at once: tunnels that failed (an attempt given up), attempts beyond one per eNodeB
   (retries), IKE retransmissions, time from the first start to the last tunnel up, the NPU's
   drops and each card's state.
4. Card memory: at the end of the burst chassis, each DPC's RSS divided by its live tunnels;
   the slope (RSS growth per tunnel) between a point with fewer tunnels (the first ramp paused
   as soon as a tunnel is up; those in flight still come up) and all of them up; each DPC's
   RSS after each burst round (about as many tunnels: the growth per round).

Failed tunnels, cards that left service and NPU drops are printed, never hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ike as b  # noqa: E402
import httpx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import dh, ec  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from cards.ike.engine import Endpoint  # noqa: E402
from cards.ike.events import Send  # noqa: E402
from chassis import client  # noqa: E402
from chassis.lab.authority import Authority  # noqa: E402
from chassis.randomness import SystemRandom  # noqa: E402

COMMAND = "python tests/benchmarks/bench_fleet.py"
TOPOLOGY = """\
name: fleetbench
platform: asr5500
cards:
  5: {{type: mio, role: active}}
{dpcs}
lab:
  ca: {{psk: lab-secret}}
  fleet:
    count: {count}
    children: 1
    issuer: intermediate
    dh-group: {group}
    key: ec-p256
    rate: {rate}
    half-open: {half_open}
    dpd-interval: 0
    retry: {{initial: 1, max: 8}}
startup-config: |
  config
    system hostname segw
    ca-certificate name lab-root pem url /flash/root.crt
    ca-certificate name lab-int pem url /flash/int.crt
    certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key
    context segw
      ip pool enb-pool 10.64.0.0 255.255.0.0 public 0
      ikev2-ikesa transform-set ts
        encryption aes-cbc-256
        hmac sha2-256-128
        prf sha2-256
        group {group}
      #exit
      crypto template tmpl ikev2-dynamic
        authentication local certificate
        authentication remote certificate
        certificate name segw
        ca-certificate list ca-cert-name lab-root
        ikev2-ikesa transform-set list ts
      #exit
      wsg-service svc
        ip address pool name enb-pool
        bind address 127.0.0.1 port {port} crypto-template tmpl
      #exit
    #exit
  end
"""
TSET = {"encryption": "aes-cbc-256", "hmac": "sha2-256-128", "prf": "sha2-256"}
GW_NAME = "segw.lab.example"
MS = 1000


# ---------------------------------------------------------------------- PKI (before up)
def make_pki(home: Path) -> dict:
    """The lab CA's root and intermediate in RUN/lab/ca (the CA process loads them), and the
    gateway's EC P-256 certificate from the intermediate; their PEM files in RUN/flash."""
    authority = Authority(home / "lab" / "ca", b.utcnow)
    gw_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SeGW Lab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, GW_NAME)])  # fmt: skip
    gw = authority.issue(subject, gw_key.public_key(), [x509.DNSName(GW_NAME)])
    flash = home / "flash"
    flash.mkdir(parents=True, exist_ok=True)
    files = {"root.crt": authority.root, "int.crt": authority.issuing, "gw.crt": gw,
             "gw.key": gw_key}  # fmt: skip
    for name, obj in files.items():
        (flash / name).write_bytes(b.pem(obj))
    return {"authority": authority, "gw": gw, "gw_key": gw_key}


def topology(home: Path, dpcs: int, count: int, group: int, rate: float, half_open: int) -> Path:
    slots = "\n".join(f"  {s}: {{type: dpc, role: active}}" for s in range(1, dpcs + 1))
    path = home / "fleetbench.yaml"
    path.write_text(TOPOLOGY.format(dpcs=slots, count=count, group=group, rate=rate,
                                    half_open=half_open, port=b.free_udp_port()))  # fmt: skip
    return path


# ---------------------------------------------------------------------- the chassis's processes
def processes(ch) -> tuple[dict[str, int], dict[str, int]]:
    """(chassis processes, lab processes): name -> pid. The chassis: the backplane (NPU), the
    supervisor, the DPCs and whatever else runs under the backplane outside the lab peers."""
    pids = ch.run.pids()
    chassis = {"backplane (NPU)": pids["backplane"]["pid"], "supervisor (MIO 5)": pids["5"]["pid"]}
    for slot in sorted((k for k in pids if k.isdigit() and k != "5"), key=int):
        chassis[f"DPC {slot}"] = pids[slot]["pid"]
    lab = {name.removeprefix("lab-"): rec["pid"] for name, rec in pids.items()
           if name.startswith("lab-")}  # fmt: skip
    lab_tree = set(lab.values())
    for pid in lab.values():
        lab_tree.update(b.descendants(pid))
    known = set(chassis.values()) | lab_tree
    for pid in b.descendants(chassis["backplane (NPU)"]):
        if pid not in known:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            what = " ".join(a.decode(errors="replace") for a in argv[1:3])[:40]
            chassis[f"other: pid {pid} ({what})"] = pid
    return chassis, lab


def fleet_status(ch) -> dict:
    """What the fleet publishes (RUN/lab/fleet/status.json, every 0.5 s): read the file, not
    the backplane, so that polling costs the chassis nothing."""
    try:
        return json.loads((ch.run.root / "lab" / "fleet" / "status.json").read_bytes())
    except (OSError, ValueError):
        return {}


def admin(ch, body: dict) -> None:
    url = ch.manifest["lab"]["fleet"]["admin"]
    httpx.post(url, json=body, timeout=5, trust_env=False).raise_for_status()


def wait_for(what: str, predicate, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


def card_rows(ch) -> dict[int, dict]:
    rows = ch.exec("show card table")[0].data["cards"]
    return {r["slot"]: r for r in rows}


def slot_states(ch) -> dict[int, str]:
    return {s["slot"]: s["state"] for s in ch.status()["slots"]}


def card_sas(ch, slots: list[int], want: int, timeout: float = 5.0) -> dict[int, int]:
    """Each DPC's live IKE SAs, as the card reports them (once per heartbeat interval)."""
    got: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = card_rows(ch)
        got = {s: rows[s].get("counters", {}).get("ike_sas", 0) for s in slots}
        if sum(got.values()) >= want:
            break
        time.sleep(0.1)
    return got


def npu_counts(ch) -> dict:
    return dict(ch.status().get("npu") or {})


def idle(procs: dict[str, int], seconds: float = 2.0) -> dict[str, float]:
    a, t = b.snapshot(procs), time.monotonic()
    time.sleep(seconds)
    c, wall = b.snapshot(procs), time.monotonic() - t
    return {k: (c[k] - a[k]) / wall for k in procs}


def reconnect_round(ch, procs: dict, count: int, rate: float, number: int, timeout: float):
    """One reconnect: CPU per process for the deletes and for the setups, the fleet's figures."""
    before_status = fleet_status(ch)
    npu0 = npu_counts(ch)
    t0, cpu0 = time.monotonic(), b.snapshot(procs)
    admin(ch, {"reconnect": True})
    # The fleet takes the command on its next loop turn (<= 50 ms, 25 on average), deletes
    # every tunnel paced at ``rate`` and starts none before its last delete.
    split = time.monotonic() + 0.025 + count / rate
    time.sleep(max(0.0, split - time.monotonic()))
    cpu1 = b.snapshot(procs)

    def done():
        st = fleet_status(ch)
        ok = (st.get("counts", {}).get("reconnects", 0) >= number and st.get("all_up_s") is not None
              and st.get("up") == count)  # fmt: skip
        return st if ok else None

    try:
        st = wait_for(f"round {number}: {count} tunnels up again", done, timeout, every=0.02)
        complete = True
    except TimeoutError:
        st, complete = fleet_status(ch), False
    t2, cpu2 = time.monotonic(), b.snapshot(procs)
    npu1 = npu_counts(ch)
    c0, c1 = before_status.get("counts", {}), st.get("counts", {})

    def delta(key: str) -> int:
        return c1.get(key, 0) - c0.get(key, 0)

    return {
        "complete": complete,
        "deletes_cpu": {k: cpu1[k] - cpu0[k] for k in procs},
        "setup_cpu": {k: cpu2[k] - cpu1[k] for k in procs},
        "setup_wall": t2 - split,
        "wall": t2 - t0,
        "all_up_s": st.get("all_up_s"),
        "first_up_s": st.get("first_up_s"),
        "ramp_s": st.get("ramp_s"),
        "up": st.get("up", 0),
        "attempts": delta("attempts"),
        "failed": delta("failed"),
        "lost": delta("lost"),
        "retransmissions": delta("retransmissions"),
        "failures": st.get("failures", {}),
        "send_errors": st.get("send_errors", 0) - before_status.get("send_errors", 0),
        "npu": {k: npu1.get(k, 0) - npu0.get(k, 0) for k in set(npu0) | set(npu1)},
        "states": slot_states(ch),
    }


def start(home: Path, dpcs: int, count: int, group: int, rate: float, half_open: int):
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    pki = make_pki(home)
    topo = topology(home, dpcs, count, group, rate, half_open)
    ch = client.up(topo, home, timeout=60)
    return ch, pki


def first_ramp(ch, count: int, timeout: float) -> dict:
    return wait_for(
        f"the first ramp of {count} eNodeBs",
        lambda: (st := fleet_status(ch)).get("up") == count and st,
        timeout,
        every=0.1,
    )


def setup_run(args, home: Path, dpcs: int, group: int) -> dict:
    ch, pki = start(home, dpcs, args.count, group, args.rate, args.half_open)
    try:
        chassis, lab = processes(ch)
        first = first_ramp(ch, args.count, 60 + args.count / args.rate * 4)
        time.sleep(0.5)
        background = idle({**chassis, **lab})
        rounds = []
        timeout = 30 + 4 * args.count / args.rate
        for k in range(args.rounds):
            rounds.append(reconnect_round(ch, {**chassis, **lab}, args.count, args.rate,
                                          k + 1, timeout))  # fmt: skip
            if not rounds[-1]["complete"]:
                break
        slots = [int(n.split()[1]) for n in chassis if n.startswith("DPC")]
        sas = card_sas(ch, slots, args.count)
        rss = {s: b.rss_bytes(chassis[f"DPC {s}"]) for s in slots}
        return {"dpcs": dpcs, "group": group, "chassis": list(chassis), "lab": list(lab),
                "idle": background, "rounds": rounds, "first": first, "sas": sas, "rss": rss,
                "pki": pki}  # fmt: skip
    finally:
        ch.down()


def burst_run(args, home: Path) -> dict:
    count, dpcs, group = args.burst, 2, 19
    ch, _ = start(home, dpcs, count, group, args.burst_rate, args.burst_half_open)
    try:
        chassis, lab = processes(ch)
        slots = [int(n.split()[1]) for n in chassis if n.startswith("DPC")]
        # Memory slope: pause the first ramp early (what is in flight still comes up), note
        # each card's tunnels and RSS.
        wait_for("the first tunnel up", lambda: fleet_status(ch).get("up", 0) > 0, 120, 0.02)
        admin(ch, {"pause": True})
        wait_for("no tunnel in flight", lambda: (st := fleet_status(ch)).get("paused")
                 and st.get("establishing") == 0 and st, 60)  # fmt: skip
        time.sleep(0.3)
        part_up = fleet_status(ch).get("up", 0)
        sas_a = card_sas(ch, slots, part_up)
        rss_a = {s: b.rss_bytes(chassis[f"DPC {s}"]) for s in slots}
        admin(ch, {"pause": False})
        first = first_ramp(ch, count, 120)
        time.sleep(0.5)
        sas_b = card_sas(ch, slots, count)
        rss_b = {s: b.rss_bytes(chassis[f"DPC {s}"]) for s in slots}
        rounds, rss_rounds, sas_rounds = [], [], []
        for k in range(args.burst_rounds):
            rounds.append(reconnect_round(ch, {**chassis, **lab}, count, args.burst_rate,
                                          k + 1, 120))  # fmt: skip
            time.sleep(0.5)
            sas_rounds.append(card_sas(ch, slots, count))
            rss_rounds.append({s: b.rss_bytes(chassis[f"DPC {s}"]) for s in slots})
            if not rounds[-1]["complete"]:
                break
        return {"count": count, "chassis": list(chassis), "lab": list(lab), "rounds": rounds,
                "first": first, "sas_a": sas_a, "rss_a": rss_a, "sas_b": sas_b, "rss_b": rss_b,
                "sas_rounds": sas_rounds, "rss_rounds": rss_rounds}  # fmt: skip
    finally:
        ch.down()


# ---------------------------------------------------------------------- in memory
GW_MEM, ENB_MEM = ("127.0.0.1", 4600), ("127.0.0.1", 4601)
EXCHANGE_AT = 4 + 18  # non-ESP marker, then the IKE header's exchange type
KINDS = {(34, True): "init_req", (34, False): "init_resp", (35, True): "auth_req",
         (35, False): "auth_resp"}  # fmt: skip


def enodeb(authority: Authority, name: str = "enb9999.lab.example"):
    """An eNodeB key and certificate as the fleet makes them (EC P-256, from the intermediate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SeGW Lab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])  # fmt: skip
    cert = authority.issue(subject, key.public_key(), [x509.DNSName(name)], issuer="intermediate")
    return cert, key


def card_responder(pki: dict, group: int) -> Endpoint:
    """The responder Endpoint a DPC builds (cards.gateway) from the boot configuration above."""
    from cards.credentials import Credentials as CardCredentials
    from cards.gateway import Gateway

    a = pki["authority"]
    creds = CardCredentials()
    creds.pushed = {
        "certificate/segw": {"cert_pem": b.pem(pki["gw"]).decode(),
                             "key_pem": b.pem(pki["gw_key"]).decode(), "generation": 1},
        "ca-certificate/lab-root": {"cert_pem": b.pem(a.root).decode(), "generation": 1},
        "ca-certificate/lab-int": {"cert_pem": b.pem(a.issuing).decode(), "generation": 1},
    }  # fmt: skip
    tree = {"context": {"segw": {
        "ip-pool": {"enb-pool": {"name": "enb-pool", "address": "10.64.0.0",
                                 "mask": "255.255.0.0"}},
        "ikesa-transform-set": {"ts": {**TSET, "group": str(group)}},
        "crypto-template": {"tmpl": {
            "authentication": {"local": "certificate", "remote": "certificate"},
            "certificate": "segw", "ca-certificate-list": ["lab-root"],
            "ikesa-transform-set-list": ["ts"]}},
        "wsg-service": {"svc": {"bind": {"address": GW_MEM[0], "port": GW_MEM[1],
                                         "template": "tmpl"},
                                "ip-address-pool": {"enb-pool": "enb-pool"}}},
    }}}  # fmt: skip
    gateway = Gateway(1, SystemRandom(), b.utcnow, os.urandom(32))
    gateway.configure(tree, creds)
    return gateway.endpoints[GW_MEM]


def fleet_initiator(pki: dict, group: int) -> Endpoint:
    """An eNodeB with the fleet's own IkeConfig (chassis.lab.fleet.ike_config)."""
    from cards.ike.config import Credentials
    from chassis.lab.fleet import ike_config
    from chassis.lab.fleet_settings import FleetSettings

    a = pki["authority"]
    cert, key = enodeb(a)
    settings = FleetSettings(count=1, gateway=GW_MEM, dh_group=group, dpd_interval=0)
    cfg = ike_config(settings, Credentials(cert, key, a.intermediates("intermediate")), (a.root,))
    return Endpoint(cfg, rand=SystemRandom(), wall_clock=b.utcnow, local=ENB_MEM), cert, key


def tunnel(responder: Endpoint, enb: Endpoint, wire: dict | None = None) -> float:
    """One IKE SA with its CHILD_SA, datagrams passed by hand: the responder's CPU seconds."""
    spent = 0.0
    queue = list(enb.initiate(GW_MEM, 0.0, local=ENB_MEM))
    while queue:
        o = queue.pop(0)
        if not isinstance(o, Send):
            continue
        to_gw = o.dst == GW_MEM
        if wire is not None and len(o.data) > EXCHANGE_AT:
            kind = KINDS.get((o.data[EXCHANGE_AT], to_gw))
            if kind:
                seen = wire.setdefault(kind, [0, 0])
                seen[0], seen[1] = seen[0] + 1, seen[1] + len(o.data) - 4
        if to_gw:
            t = time.process_time()
            out = responder.receive(o.data, o.src, o.dst, 0.0)
            spent += time.process_time() - t
            queue += out
        else:
            queue += enb.receive(o.data, o.src, o.dst, 0.0)
    enb.sas.clear()  # the initiator keeps nothing
    return spent


def in_memory(pki: dict, group: int, n: int, repeats: int = 5) -> dict:
    """The fleet's eNodeB against the card's responder, in this process: per exchange (datagrams
    per tunnel, bytes each), and the responder's CPU per tunnel (median of ``repeats``)."""
    responder = card_responder(pki, group)
    enb, cert, key = fleet_initiator(pki, group)
    wire: dict = {}
    tunnel(responder, enb, wire)
    established = sum(1 for sa in responder.sas.values() if sa.state.name == "ESTABLISHED")
    for _ in range(10):
        tunnel(responder, enb)
    runs = []
    for _ in range(repeats):
        runs.append(sum(tunnel(responder, enb) for _ in range(n)) / n)
        responder.sas.clear()
        responder.esp_spis.clear()
    sizes = {k: (c, size // max(1, c)) for k, (c, size) in wire.items()}
    return {"engine": statistics.median(runs), "wire": sizes, "established": established,
            "enb_cert": cert, "enb_key": key}  # fmt: skip


# ---------------------------------------------------------------------- crypto floor
DH_ROW = "DH key pair + exchange (19: ECP-256 ECDH; 14: g^x and (g^y)^x, the card's 512-bit x)"
CARD_DH_ROW = "(the card's own DH, for comparison: cards.ike.dh.DiffieHellman + shared())"


def modp_key(x: int):
    """A MODP-2048 private key with exponent ``x`` (OpenSSL's key object; its public value is
    left to compute, see floor)."""
    from cards.ike.dh import _MODP_PARAMS, _ffdh

    with _ffdh():
        return dh.DHPrivateNumbers(x, dh.DHPublicNumbers(2, _MODP_PARAMS)).private_key()


def modp_public(y: int):
    from cards.ike.dh import _MODP_PARAMS, _ffdh

    with _ffdh():
        return dh.DHPublicNumbers(y, _MODP_PARAMS).public_key()


def floor(pki: dict, mem: dict, group: int, iterations: int, repeats: int) -> dict:
    """CPU seconds of the responder's cryptography for one tunnel, and its parts (OpenSSL
    through ``cryptography``, nothing else)."""
    from cards.ike.const import DhGroup
    from cards.ike.dh import DiffieHellman

    a, wire = pki["authority"], mem["wire"]
    enb, enb_key, gw_key = mem["enb_cert"], mem["enb_key"], pki["gw_key"]
    inter, root = a.issuing, a.root
    curve = ec.SECP256R1()
    point = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    peer_ec = ec.generate_private_key(curve).public_key().public_bytes(*point)
    peer_modp = int.from_bytes(DiffieHellman(DhGroup.MODP_2048, os.urandom).public, "big")
    generator = modp_public(2)
    init_req, init_resp = wire["init_req"][1], wire["init_resp"][1]
    ni, nr = os.urandom(32), os.urandom(32)
    idi, idr = b"\x02\0\0\0enb9999.lab.example", b"\x02\0\0\0" + GW_NAME.encode()
    peer_octets = os.urandom(init_req) + nr + os.urandom(32)
    peer_sig = enb_key.sign(peer_octets, ec.ECDSA(hashes.SHA256()))

    def protected(kind: str) -> list[tuple[bytes, int]]:
        """Per datagram: (the datagram, where its IV starts); IV 16, ICV 16, CBC blocks."""
        count, size = wire[kind]
        aad = 28 + (4 if count <= 1 else 8)  # header + SK (or SKF with its fragment numbers)
        body = (size - aad - 32) // 16 * 16
        return [(os.urandom(aad + 16 + body + 16), aad) for _ in range(max(1, round(count)))]

    requests, responses = protected("auth_req"), protected("auth_resp")

    def dh19() -> bytes:
        priv = ec.generate_private_key(curve)
        priv.public_key().public_bytes(*point)
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, peer_ec)
        return priv.exchange(ec.ECDH(), peer)

    def dh14() -> bytes:
        # the card's 512-bit exponent; g^x and then (g^y)^x, both by OpenSSL
        key = modp_key(int.from_bytes(os.urandom(64), "big") | (1 << 511))
        key.exchange(generator)
        return key.exchange(modp_public(peer_modp))

    def card_dh():
        me = DiffieHellman(DhGroup(group), os.urandom)
        return me.shared(peer_ec[1:] if group == 19 else peer_modp.to_bytes(256, "big"))

    dh_fn = dh19 if group == 19 else dh14

    def keys(shared):
        seed = b._hmac(ni + nr, shared)
        km = b._prf_plus(seed, ni + nr + os.urandom(16), 7 * 32)  # SK_d ai ar ei er pi pr
        return [km[i * 32 : (i + 1) * 32] for i in range(7)]

    def sk_in(k):
        for datagram, aad in requests:
            b._hmac(k[1], datagram[:-16])  # ICV (HMAC-SHA2-256 truncated to 16 bytes)
            dec = Cipher(algorithms.AES(k[3]), modes.CBC(datagram[aad : aad + 16])).decryptor()
            dec.update(datagram[aad + 16 : -16]) + dec.finalize()

    def peer_auth(k):
        enb.verify_directly_issued_by(inter)  # the eNodeB's certificate
        inter.verify_directly_issued_by(root)  # the intermediate it sent
        b._hmac(k[5], idi)
        enb.public_key().verify(peer_sig, peer_octets, ec.ECDSA(hashes.SHA256()))

    def own_auth(k):
        octets = os.urandom(init_resp) + ni + b._hmac(k[6], idr)
        gw_key.sign(octets, ec.ECDSA(hashes.SHA256()))

    def sk_out(k):
        b._prf_plus(k[0], ni + nr, 128)  # CHILD_SA KEYMAT
        for datagram, aad in responses:
            iv = os.urandom(16)
            enc = Cipher(algorithms.AES(k[4]), modes.CBC(iv)).encryptor()
            ct = enc.update(datagram[aad + 16 : -16]) + enc.finalize()
            b._hmac(k[2], datagram[:aad] + iv + ct)

    def whole():
        kk = keys(dh_fn())
        sk_in(kk)
        peer_auth(kk)
        own_auth(kk)
        sk_out(kk)

    shared = dh_fn()
    k = keys(shared)
    parts = {
        DH_ROW: dh_fn,
        "SKEYSEED + prf+ (7 keys)": lambda: keys(shared),
        "IKE_AUTH request: HMAC + AES-CBC decrypt": lambda: sk_in(k),
        "peer: 2 certificate + AUTH ECDSA P-256 verifies": lambda: peer_auth(k),
        "own AUTH: ECDSA P-256 sign": lambda: own_auth(k),
        "KEYMAT + IKE_AUTH response: AES-CBC + HMAC": lambda: sk_out(k),
        "total": whole,
        CARD_DH_ROW: card_dh,
    }
    runs: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):  # interleaved, so that the parts and the total see the same load
        for name, fn in parts.items():
            t = time.process_time()
            for _ in range(iterations):
                fn()
            runs[name].append((time.process_time() - t) / iterations)
    return {name: statistics.median(r) for name, r in runs.items()}


# ---------------------------------------------------------------------- report
def per_tunnel(rounds: list[dict], key: str, procs: list[str], count: int) -> dict[str, float]:
    """Median over the complete rounds of CPU seconds per tunnel, per process."""
    done = [r for r in rounds if r["complete"]] or rounds
    return {k: statistics.median(r[key][k] / count for r in done) for k in procs}


def chassis_sum(rounds: list[dict], key: str, procs: list[str], count: int) -> float:
    done = [r for r in rounds if r["complete"]] or rounds
    return statistics.median(sum(r[key][k] for k in procs) / count for r in done)


def rate(rounds: list[dict], count: int) -> float:
    done = [r for r in rounds if r["complete"] and r["all_up_s"]]
    return statistics.median(count / r["all_up_s"] for r in done) if done else float("nan")


def problems(rounds: list[dict]) -> list[str]:
    out = []
    for i, r in enumerate(rounds):
        bad = {s: st for s, st in r["states"].items() if st != "active"}
        drops = r["npu"].get("dropped", 0)
        if not r["complete"] or r["failed"] or bad or drops or r["send_errors"]:
            out.append(f"round {i + 1}: complete {r['complete']}, up {r['up']}, failed "
                       f"{r['failed']} {r['failures']}, cards not active {bad}, NPU dropped "
                       f"{drops}, fleet send errors {r['send_errors']}")  # fmt: skip
    return out


def report_setup(args, runs: list[dict], floors: dict, engines: dict) -> list[dict]:
    rows = []
    for run in runs:
        rounds, count = run["rounds"], args.count
        chassis = run["chassis"]
        dpcs = [k for k in chassis if k.startswith("DPC")]
        name = f"{run['dpcs']} DPC{'s' if run['dpcs'] > 1 else ''}, group {run['group']}"
        print(f"\n{name}: first ramp {run['first'].get('all_up_s')} s from the first attempt "
              f"({run['first'].get('attempts')} attempts, {run['first'].get('failed')} failed); "
              f"live IKE SAs per card at the end {run['sas']}")  # fmt: skip
        for i, r in enumerate(rounds):
            setup = ", ".join(f"{k} {r['setup_cpu'][k] / count * MS:.3f}" for k in chassis
                              if not k.startswith("other") or r["setup_cpu"][k])  # fmt: skip
            print(f"  round {i + 1}: {r['up']}/{count} up {r['all_up_s']} s after the first "
                  f"start ({r['attempts']} attempts, {r['failed']} failed, "
                  f"{r['retransmissions']} retransmissions, NPU {r['npu']}); setup CPU ms per "
                  f"tunnel: {setup}; fleet {r['setup_cpu']['fleet'] / count * MS:.3f}; deletes "
                  f"{sum(r['deletes_cpu'][k] for k in chassis) / count * MS:.3f} ms each")  # fmt: skip
        for line in problems(rounds):
            print("  PROBLEM", line)
        done = [r for r in rounds if r["complete"] and r["all_up_s"]] or rounds
        idle_rate = sum(run["idle"][k] for k in chassis)
        rows.append({
            "name": name, "dpcs": dpcs, "rate": rate(rounds, count),
            "per": per_tunnel(rounds, "setup_cpu", chassis + run["lab"], count),
            "total": chassis_sum(rounds, "setup_cpu", chassis, count),
            "deletes": chassis_sum(rounds, "deletes_cpu", chassis, count),
            "floor": floors[run["group"]]["total"], "engine": engines[run["group"]],
            "fleet_busy": statistics.median(
                r["setup_cpu"]["fleet"] / (r["all_up_s"] or r["setup_wall"]) for r in done),
            "idle_rate": idle_rate,
            "idle_share": statistics.median(idle_rate * r["setup_wall"] / count for r in done),
            "problems": problems(rounds),
        })  # fmt: skip
    print()
    print(f"| {args.count} eNodeBs, offered {args.rate:g}/s, half-open {args.half_open} "
          f"(median of {args.rounds} reconnects) | tunnels/s | chassis CPU per tunnel | "
          f"backplane (NPU) | supervisor | DPC(s) | crypto floor | ratio | fleet CPU per "
          f"tunnel (busy) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for w in rows:
        per, total, fl = w["per"], w["total"], w["floor"]
        dpc = " + ".join(f"{per[d] * MS:.3f}" for d in w["dpcs"])
        print(f"| {w['name']} | {w['rate']:.0f} | {total * MS:.3f} ms | "
              f"{per['backplane (NPU)'] * MS:.3f} | {per['supervisor (MIO 5)'] * MS:.3f} | "
              f"{dpc} | {fl * MS:.3f} ms | {total / fl:.2f}x | {per['fleet'] * MS:.3f} ms "
              f"({w['fleet_busy']:.0%} of a core) |")  # fmt: skip
    print()
    print("| run | chassis idle background (in the setup CPU above) | DPC engine alone (in "
          "memory) per tunnel | deletes: chassis CPU per tunnel deleted |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for w in rows:
        print(f"| {w['name']} | {w['idle_rate'] * MS:.1f} ms/s (~{w['idle_share'] * MS:.3f} ms "
              f"per tunnel) | {w['engine'] * MS:.3f} ms | {w['deletes'] * MS:.3f} ms |")  # fmt: skip
    return rows


def report_floor(floors: dict) -> None:
    print()
    groups = sorted(floors, reverse=True)
    print("| crypto floor part (this process, median of 5) | "
          + " | ".join(f"group {g}" for g in groups) + " |")  # fmt: skip
    print("| --- |" + " --- |" * len(groups))
    names = list(dict.fromkeys(n for g in groups for n in floors[g]))
    for n in names:
        cells = [f"{floors[g][n] * MS:.3f} ms" if n in floors[g] else "" for g in groups]
        print(f"| {n} | " + " | ".join(cells) + " |")


def report_burst(args, burst: dict) -> list[str]:
    count, rounds = burst["count"], burst["rounds"]
    chassis = burst["chassis"]
    print(f"\nburst: {count} eNodeBs, 2 DPCs, group 19, offered {args.burst_rate:g}/s, half-open "
          f"{args.burst_half_open}; first ramp {burst['first'].get('all_up_s')} s "
          f"({burst['first'].get('attempts')} attempts, {burst['first'].get('failed')} failed)")  # fmt: skip
    for i, r in enumerate(rounds):
        setup = sum(r["setup_cpu"][k] for k in chassis) / count * MS
        print(f"  round {i + 1}: {r['up']}/{count} up {r['all_up_s']} s after the first start "
              f"(first up {r['first_up_s']} s; {r['wall']:.2f} s after the reconnect, deletes "
              f"included); attempts {r['attempts']}, failed {r['failed']} {r['failures']}, "
              f"lost {r['lost']}, retransmissions {r['retransmissions']}, NPU {r['npu']}, "
              f"fleet send errors {r['send_errors']}, cards {r['states']}; chassis CPU "
              f"{setup:.3f} ms per tunnel")  # fmt: skip
    for line in problems(rounds):
        print("  PROBLEM", line)
    print(f"  memory: live IKE SAs per card {burst['sas_a']} -> {burst['sas_b']}, RSS MiB "
          f"{ {s: round(v / 2**20, 1) for s, v in burst['rss_a'].items()} } -> "
          f"{ {s: round(v / 2**20, 1) for s, v in burst['rss_b'].items()} }; after each burst "
          f"round: {[{s: round(v / 2**20, 1) for s, v in x.items()} for x in burst['rss_rounds']]}"
          f" with {burst['sas_rounds']}")  # fmt: skip
    return []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=400, help="eNodeBs of the setup runs")
    parser.add_argument("--rate", type=float, default=200, help="tunnels/s the fleet offers")
    parser.add_argument("--half-open", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="reconnects per setup run")
    parser.add_argument("--burst", type=int, default=2000, help="eNodeBs of the burst (0: none)")
    parser.add_argument("--burst-rate", type=float, default=2000)
    parser.add_argument("--burst-half-open", type=int, default=512)
    parser.add_argument("--burst-rounds", type=int, default=3)
    parser.add_argument("--runs", default="1x19,2x19,1x14,2x14", help="DPCsxGROUP, ...")
    parser.add_argument("--floor-iterations", type=int, default=200)
    parser.add_argument("--engine-tunnels", type=int, default=100, help="per run, 5 runs")
    parser.add_argument("--run-dir", help="keep the run directories (logs) here")
    args = parser.parse_args()
    print("command:", " ".join([COMMAND, *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
    base = Path(args.run_dir or tempfile.mkdtemp(prefix="segw-fleet-"))
    started = time.monotonic()
    runs, floors, engines, errors = [], {}, {}, []
    try:
        for spec in args.runs.split(","):
            dpcs, group = (int(x) for x in spec.split("x"))
            home = base / f"setup-{dpcs}dpc-g{group}"
            try:
                run = setup_run(args, home, dpcs, group)
            except (TimeoutError, client.ChassisError) as exc:  # reported, the rest still runs
                errors.append(f"{dpcs} DPC(s), group {group}: {exc} (logs: {home / 'logs'})")
                continue
            runs.append(run)
            if group not in floors:
                mem = in_memory(run["pki"], group, args.engine_tunnels)
                if mem["established"] != 1:  # the sizes and the engine figure mean nothing
                    errors.append(f"group {group}: the in-memory tunnel did not come up")
                engines[group] = mem["engine"]
                floors[group] = floor(run["pki"], mem, group, args.floor_iterations, 5)
                floors[group]["wire"] = mem["wire"]
        burst = None
        if args.burst:
            try:
                burst = burst_run(args, base / "burst")
            except (TimeoutError, client.ChassisError) as exc:
                errors.append(f"burst: {exc} (logs: {base / 'burst' / 'logs'})")
    finally:
        if not args.run_dir and not errors:  # logs of a run that went wrong are kept
            shutil.rmtree(base, ignore_errors=True)
    print(f"(everything took {time.monotonic() - started:.0f} s; load average "
          f"{os.getloadavg()[0]:.2f} at the end)")  # fmt: skip
    for error in errors:
        print("PROBLEM:", error)
    for g, f in floors.items():
        print(f"group {g}: on the wire per tunnel (datagrams, bytes each): {f['wire']}")
    rows = report_setup(args, runs, floors, engines) if runs else []
    if floors:
        report_floor({g: {k: v for k, v in f.items() if k != "wire"} for g, f in floors.items()})
    if burst:
        report_burst(args, burst)
    summary(args, rows, floors, burst)


def summary(args, rows, floors, burst) -> None:
    print()
    print("| figure | target | measured |")
    print("| --- | --- | --- |")
    for w in rows:
        per, total, fl = w["per"], w["total"], w["floor"]
        dpc = sum(per[d] for d in w["dpcs"])
        print(f"| Tunnel setup with the fleet, {w['name']} ({args.count} eNodeBs, offered "
              f"{args.rate:g}/s, half-open {args.half_open}; EC P-256 certificates) | <= 2x the "
              f"crypto floor | {w['rate']:.0f} tunnels/s; chassis CPU {total * MS:.3f} ms per "
              f"tunnel (NPU {per['backplane (NPU)'] * MS:.3f}, DPCs {dpc * MS:.3f} of which "
              f"engine {w['engine'] * MS:.3f}, supervisor {per['supervisor (MIO 5)'] * MS:.3f}; "
              f"idle background ~{w['idle_share'] * MS:.3f}); floor {fl * MS:.3f} ms; ratio "
              f"{total / fl:.2f}x; fleet {per['fleet'] * MS:.3f} ms ({w['fleet_busy']:.0%} of a "
              f"core)" + ("; PROBLEMS: " + " / ".join(w["problems"]) if w["problems"] else "")
              + " |")  # fmt: skip
    if burst:
        count, rounds = burst["count"], burst["rounds"]
        failed = [r["failed"] for r in rounds]
        retried = [r["attempts"] - count for r in rounds]
        times = [r["all_up_s"] for r in rounds]
        walls = [round(r["wall"], 2) for r in rounds]
        rates = [round(count / r["all_up_s"]) if r["all_up_s"] else None for r in rounds]
        print(f"| Burst: {count} eNodeBs at once (2 DPCs, group 19, offered "
              f"{args.burst_rate:g}/s, half-open {args.burst_half_open}; {len(rounds)} "
              f"reconnects) | 0 failed tunnels (strongSwan's charon lost 645 of 2,000) | "
              f"failed {failed}; retried (attempts beyond one each) {retried}; IKE "
              f"retransmissions {[r['retransmissions'] for r in rounds]}; all up {times} s "
              f"after the first start, {rates} tunnels/s ({walls} s after the reconnect, its "
              f"deletes included); NPU drops {[r['npu'].get('dropped', 0) for r in rounds]} |")  # fmt: skip
        slots = sorted(burst["rss_b"])
        rss_end = (burst["rss_rounds"] or [burst["rss_b"]])[-1]
        sas_end = (burst["sas_rounds"] or [burst["sas_b"]])[-1]
        cells = []
        for s in slots:
            grown = burst["sas_b"][s] - burst["sas_a"][s]
            slope = (
                f"{(burst['rss_b'][s] - burst['rss_a'][s]) / grown / 1024:.1f} KiB per tunnel "
                f"from {burst['sas_a'][s]} to {burst['sas_b'][s]} tunnels (first ramp)"
                if grown >= 50
                else "no slope (the first ramp was not paused early enough)"
            )
            after = ", ".join(f"{x[s] / 2**20:.1f} MiB ({n[s]})"
                              for x, n in zip(burst["rss_rounds"], burst["sas_rounds"],
                                              strict=True))  # fmt: skip
            cells.append(
                f"DPC {s}: {rss_end[s] / 2**20:.1f} MiB / {sas_end[s]} tunnels = "
                f"{rss_end[s] / max(1, sas_end[s]) / 1024:.1f} KiB each; slope {slope}; RSS "
                f"(tunnels) {burst['rss_b'][s] / 2**20:.1f} MiB ({burst['sas_b'][s]}) after "
                f"the first ramp, then after each burst round {after}"
            )
        print("| Card RSS per live tunnel, end of the burst run | report | "
              + "; ".join(cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
