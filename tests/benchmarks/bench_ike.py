"""IKEv2 responder benchmarks (issue #5). Reports figures; asserts nothing.

    python tests/benchmarks/bench_ike.py [--tunnels 600] [--rounds 3] [--inflight 32]
        [--sas 20000] [--run-dir DIR]

1. CPU per tunnel on a live chassis (1 MIO + 1 DPC): the gateway's certificate RSA-2048 under
   an intermediate CA (root -> intermediate -> gateway; the gateway sends its intermediate,
   test_e2e_strongswan's RSA scenario), an RSA-2048 eNodeB certificate under the root, IKE SA
   transform set AES-CBC-256, HMAC-SHA2-256-128, PRF-SHA2-256, group 19 (ECP-256); the eNodeB
   offers one IKE and one ESP proposal (AES-GCM-256), as strongSwan does there. An initiator
   in this process (a cards.ike Endpoint, not counted) brings --tunnels IKE SAs with their
   first CHILD_SA up per round over real UDP to 127.0.0.1 (a port other than 500: non-ESP
   marker), --inflight SAs at a time; the SAs stay up on the card. The CPU (utime + stime
   from /proc/PID/stat, every thread) of each chassis process (the backplane with the NPU,
   the DPC, the supervisor, anything else under the backplane) is read before and after each
   round; the idle background (heartbeats, status reports) is measured and shown, not
   subtracted. The card's IKE engine alone (the same Endpoint in memory, no runner, no IPC)
   is timed too, to split the DPC's figure.
2. The crypto floor, in this process: the cryptography calls the responder makes for one
   tunnel, alone in a loop (ECP-256 key generation and exchange, SKEYSEED and prf+ HMACs, the
   AES-CBC/HMAC of both SK payloads of IKE_AUTH at the sizes seen on the wire, the RSA-2048
   signature of our AUTH octets (RFC 7427 with PKCS#1 v1.5 SHA-256, as cards/ike/auth.py
   signs), the verification of the peer's AUTH and of its certificate's signature, the
   CHILD_SA KEYMAT), and the ratio of the chassis's sum to it.
3. Memory per established SA on a card: a fresh interpreter that imports the card's modules
   builds the responder Endpoint the way a card does (cards.gateway), establishes ONE SA with
   an in-memory initiator, checkpoints it (IkeSa.to_checkpoint carries the cached IKE_AUTH
   response) and imports --sas SAs restored from it (distinct IKE and ESP SPIs); RSS after
   gc.collect() at 11 points, slope by least squares.

Failed tunnels and a card that left service are printed, never hidden.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository, when the package is not installed

from cards.ike.config import (  # noqa: E402
    ChildPolicy,
    ChildProposal,
    Credentials,
    IkeConfig,
    IkeProposal,
)
from cards.ike.const import DhGroup, Encr, Integ, Prf  # noqa: E402
from cards.ike.engine import Endpoint  # noqa: E402
from cards.ike.events import (  # noqa: E402
    AuthFailed,
    ChildEstablished,
    ChildRefused,
    Deleted,
    Established,
    InternalError,
    Rejected,
    Send,
)
from chassis import client  # noqa: E402
from chassis.randomness import SystemRandom  # noqa: E402

# Heartbeats at the default 100 ms, but 3 s before a card is failed: the card's loop stops for
# ~0.3 s while it loads the IKE modules and builds the endpoint, and on a 2-core machine shared
# with the eNodeB driver a heartbeat may be late; a card failed mid-run would end the benchmark.
TOPOLOGY = """\
name: ikebench
platform: asr5500
timers: {heartbeat-interval-ms: 100, heartbeat-liveness: 30}
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
"""
TSET = {"encryption": "aes-cbc-256", "hmac": "sha2-256-128", "prf": "sha2-256", "group": "19"}
PROPOSAL = IkeProposal(
    Encr.AES_CBC, 256, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128, DhGroup.ECP_256
)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
EXCHANGE_AT = 4 + 18  # non-ESP marker, then the IKE header's exchange type


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------- PKI
def _cert(subject, key, issuer, issuer_key, *, ca=False, san=None) -> x509.Certificate:
    now = utcnow()
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki() -> dict:
    """test_e2e_strongswan's rsa-gateway-under-intermediate: root -> int -> gw, root -> enb."""
    ca_key, int_key, gw_key, enb_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(4)
    )
    ca = _cert("Lab Root", ca_key, "Lab Root", ca_key, ca=True)
    inter = _cert("Lab Intermediate", int_key, "Lab Root", ca_key, ca=True)
    gw = _cert("segw.example.net", gw_key, "Lab Intermediate", int_key, san="segw.example.net")
    enb = _cert("enb1.example.net", enb_key, "Lab Root", ca_key, san="enb1.example.net")
    return {"ca": ca, "int": inter, "gw": gw, "gw_key": gw_key, "enb": enb, "enb_key": enb_key}


def pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def enodeb_config(p: dict) -> IkeConfig:
    """One IKE and one ESP proposal, as strongSwan in test_e2e_strongswan offers them."""
    return IkeConfig(Credentials(p["enb"], p["enb_key"]), (p["ca"],), proposals=(PROPOSAL,),
                     children=(ChildPolicy(proposals=(ChildProposal(Encr.AES_GCM_16, 256),)),))  # fmt: skip


def free_udp_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            return port


# ---------------------------------------------------------------------- the eNodeB driver
class Driver:
    """Many eNodeB IKE SAs from one Endpoint and one UDP socket, in waves of --inflight.

    Waves, not a sliding window: the card's message pump (chassis/ipc/sockets.py) hands it
    every queued datagram before returning to its event loop, so a card kept busy without a
    pause sends no heartbeat and the supervisor fails it. A wave ends with its last IKE_AUTH
    answered, which lets the card's loop run between waves."""

    def __init__(self, cfg: IkeConfig, gw: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.local = self.sock.getsockname()
        self.gw = gw
        self.ep = Endpoint(cfg, rand=SystemRandom(), wall_clock=utcnow, local=self.local)
        # (exchange type, sent by us) -> [datagrams, bytes], the non-ESP marker left out
        self.wire: dict[tuple[int, bool], list[int]] = {}
        self.failures: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def _count(self, data: bytes, sent: bool) -> None:
        if len(data) > EXCHANGE_AT:
            seen = self.wire.setdefault((data[EXCHANGE_AT], sent), [0, 0])
            seen[0], seen[1] = seen[0] + 1, seen[1] + len(data) - 4

    def per_tunnel(self, tunnels: int) -> dict[str, tuple[float, int]]:
        """IKE_SA_INIT and IKE_AUTH each way: (datagrams per tunnel, bytes per datagram)."""
        out = {}
        for name, key in (("init_req", (34, True)), ("init_resp", (34, False)),
                          ("auth_req", (35, True)), ("auth_resp", (35, False))):  # fmt: skip
            count, size = self.wire.get(key, [0, 0])
            out[name] = (round(count / max(1, tunnels), 2), size // max(1, count))
        return out

    def _handle(self, outs) -> tuple[int, int, int]:
        up = children = failed = 0
        for o in outs:
            if isinstance(o, Send):
                self.sock.sendto(o.data, o.dst)
                self._count(o.data, True)
            elif isinstance(o, Established):
                up += 1
                # The initiator keeps nothing: its SA table stays small and cheap to scan.
                self.ep.sas.pop(o.spi_i, None)
            elif isinstance(o, ChildEstablished):
                children += 1
            elif isinstance(o, AuthFailed | Deleted | Rejected | InternalError | ChildRefused):
                failed += not isinstance(o, ChildRefused)
                if len(self.failures) < 5:
                    self.failures.append(repr(o))
        return up, children, failed

    def run(self, n: int, inflight: int, timeout: float) -> dict:
        started = up = children = failed = 0
        t0 = time.monotonic()
        deadline = t0 + timeout
        next_timer = t0 + 0.1
        while up + failed < n:
            now = time.monotonic()
            if now > deadline:
                break
            if started == up + failed:  # the next wave: --inflight new SAs at once
                for _ in range(min(inflight, n - started)):
                    u, c, f = self._handle(self.ep.initiate(self.gw, now, local=self.local))
                    up, children, failed, started = up + u, children + c, failed + f, started + 1
            readable, _, _ = select.select([self.sock], [], [], 0.05)
            while readable:
                try:
                    data, src = self.sock.recvfrom(65536)
                except OSError:  # drained (or an ICMP error): back to select()
                    break
                self._count(data, False)
                u, c, f = self._handle(self.ep.receive(data, src, self.local, time.monotonic()))
                up, children, failed = up + u, children + c, failed + f
            if now >= next_timer:  # retransmissions and setup timeouts of our SAs
                next_timer = now + 0.1
                u, c, f = self._handle(self.ep.handle_timer(now))
                up, children, failed = up + u, children + c, failed + f
        for spi in list(self.ep.sas):  # whatever is still in flight is abandoned
            self.ep.sas.pop(spi)
        return {"up": up, "children": children, "failed": failed,
                "wall": time.monotonic() - t0}  # fmt: skip


# ---------------------------------------------------------------------- chassis processes
def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    data = f.read()
            except OSError:
                continue
            parent[int(entry)] = int(data[data.rindex(")") + 2 :].split()[1])
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = [p for p, pp in parent.items() if pp == pid]
        out += kids
        todo += kids
    return out


def chassis_processes(ch) -> dict[str, int]:
    """name -> pid: the backplane (NPU), the supervisor, the DPC, and anything else it runs."""
    pids = ch.run.pids()
    named = {"backplane (NPU)": pids["backplane"]["pid"], "supervisor (MIO 5)": pids["5"]["pid"],
             "DPC 1": pids["1"]["pid"]}  # fmt: skip
    known = set(named.values())
    for pid in descendants(named["backplane (NPU)"]):
        if pid not in known:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            except OSError:
                continue
            what = " ".join(a.decode(errors="replace") for a in argv[1:3])[:40]
            named[f"other: pid {pid} ({what}; parent {ppid})"] = pid
    return named


def snapshot(procs: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in procs.items():
        try:
            out[name] = cpu_seconds(pid)
        except OSError:
            out[name] = float("nan")
    return out


def configure(ch, p: dict, port: int) -> None:
    """The gateway's credentials from make_pki (an intermediate CA when `p` has one) and the
    template on 127.0.0.1:port (bench_failover.py's PKI has no intermediate)."""
    files = {"ca.crt": pem(p["ca"]), "gw.crt": pem(p["gw"]), "gw.key": pem(p["gw_key"])}
    intermediate = []
    if "int" in p:
        files["int.crt"] = pem(p["int"])
        intermediate = ["ca-certificate name lab-int pem url /flash/int.crt"]
    for name, data in files.items():
        (ch.run.flash / name).write_bytes(data)
    res = ch.exec(
        "configure",
        "ca-certificate name lab-root pem url /flash/ca.crt",
        *intermediate,
        "certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key",
        "context segw",
        "ikev2-ikesa transform-set ts19",
        *(f"{k} {v}" for k, v in TSET.items()),
        "exit",
        "crypto template tmpl ikev2-dynamic",
        "authentication local certificate",
        "authentication remote certificate",
        "certificate name segw",
        "ca-certificate list ca-cert-name lab-root",
        "ikev2-ikesa transform-set list ts19",
        "exit",
        "wsg-service svc",
        f"bind address 127.0.0.1 port {port} crypto-template tmpl",
        "end",
    )
    bad = [f"{r.command}: {r.output}" for r in res if r.error]
    if bad:
        raise RuntimeError(f"configuration refused: {bad}")


def card_counters(ch) -> dict:
    rows = ch.exec("show card table")[0].data["cards"]
    return next(r.get("counters", {}) for r in rows if r["slot"] == 1)


def live(args, p: dict, base: Path) -> dict:
    topo = base / "ikebench.yaml"
    topo.write_text(TOPOLOGY)
    ch = client.up(topo, base / "run", timeout=60)
    driver = None
    try:
        port = free_udp_port()
        configure(ch, p, port)
        driver = Driver(enodeb_config(p), ("127.0.0.1", port))
        # Warm-up: the first datagrams may arrive before the NPU listens (the eNodeB
        # retransmits); the card's first tunnels also load code lazily.
        warm = driver.run(args.warmup, min(args.inflight, args.warmup), timeout=60)
        if warm["up"] < args.warmup:
            raise RuntimeError(f"warm-up: {warm} {driver.failures}")
        procs = chassis_processes(ch)
        time.sleep(0.5)
        idle_s = 3.0
        a, t = snapshot(procs), time.monotonic()
        time.sleep(idle_s)
        b, idle_wall = snapshot(procs), time.monotonic() - t
        idle = {k: (b[k] - a[k]) / idle_wall for k in procs}  # CPU seconds per second
        card_rss0 = rss_bytes(procs["DPC 1"])
        rounds = []
        for _ in range(args.rounds):
            before = snapshot(procs)
            res = driver.run(args.tunnels, args.inflight, timeout=args.tunnels * 0.05 + 30)
            time.sleep(0.05)  # the card's last log lines and counters
            after = snapshot(procs)
            res["cpu"] = {k: after[k] - before[k] for k in procs}
            res["states"] = {s["slot"]: s["state"] for s in ch.status()["slots"]}
            rounds.append(res)
        card_rss1 = rss_bytes(procs["DPC 1"])
        total_up = warm["up"] + sum(r["up"] for r in rounds)
        counters = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the card reports its counters each heartbeat
            counters = card_counters(ch)
            if counters.get("ike_established", 0) >= total_up:
                break
            time.sleep(0.1)
        return {"procs": list(procs), "idle": idle, "rounds": rounds, "counters": counters,
                "wire": driver.per_tunnel(total_up), "failures": driver.failures,
                "card_rss_per_sa": (card_rss1 - card_rss0) / max(1, total_up - warm["up"]),
                "total_up": total_up, "warmup": warm["up"]}  # fmt: skip
    finally:
        if driver is not None:
            driver.close()
        ch.down()


# ---------------------------------------------------------------------- crypto floor
def _hmac(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def _prf_plus(key: bytes, seed: bytes, length: int) -> bytes:
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = _hmac(key, t + seed + bytes([n]))
        out, n = out + t, n + 1
    return out[:length]


def floor(p: dict, wire: dict, iterations: int, repeats: int) -> dict:
    """CPU seconds of the responder's cryptography for one tunnel, and its parts.

    ``wire``: per exchange, (datagrams per tunnel, bytes per datagram without the marker), as
    the driver saw them; a fragmented message (RFC 7383) is protected fragment by fragment."""
    curve = ec.SECP256R1()
    point = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    peer_public = ec.generate_private_key(curve).public_key().public_bytes(*point)
    root_pub, enb, enb_pub = p["ca"].public_key(), p["enb"], p["enb"].public_key()
    gw_key = p["gw_key"]
    init_req, init_resp = wire["init_req"][1], wire["init_resp"][1]
    ni, nr = os.urandom(32), os.urandom(32)
    idi, idr = b"\x02\0\0\0enb1.example.net", b"\x02\0\0\0segw.example.net"
    peer_octets = os.urandom(init_req) + nr + os.urandom(32)
    peer_sig = p["enb_key"].sign(peer_octets, padding.PKCS1v15(), hashes.SHA256())

    def protected(kind: str) -> list[tuple[bytes, int]]:
        """Per datagram: (the datagram, where its IV starts); IV 16, ICV 16, CBC blocks."""
        count, size = wire[kind]
        aad = 28 + (4 if count == 1 else 8)  # header + SK (or SKF with its fragment numbers)
        body = (size - aad - 32) // 16 * 16
        return [(os.urandom(aad + 16 + body + 16), aad) for _ in range(max(1, round(count)))]

    requests, responses = protected("auth_req"), protected("auth_resp")

    def dh():
        priv = ec.generate_private_key(curve)
        priv.public_key().public_bytes(*point)
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, peer_public)
        return priv.exchange(ec.ECDH(), peer)

    def keys(shared):
        seed = _hmac(ni + nr, shared)
        km = _prf_plus(seed, ni + nr + os.urandom(16), 7 * 32)  # SK_d ai ar ei er pi pr
        return [km[i * 32 : (i + 1) * 32] for i in range(7)]

    def sk_in(k):
        for datagram, aad in requests:
            _hmac(k[1], datagram[:-16])  # ICV (HMAC-SHA2-256 truncated to 16 bytes)
            dec = Cipher(algorithms.AES(k[3]), modes.CBC(datagram[aad : aad + 16])).decryptor()
            dec.update(datagram[aad + 16 : -16]) + dec.finalize()

    def peer_auth(k):
        root_pub.verify(enb.signature, enb.tbs_certificate_bytes, padding.PKCS1v15(),
                        hashes.SHA256())  # fmt: skip
        _hmac(k[5], idi)
        enb_pub.verify(peer_sig, peer_octets, padding.PKCS1v15(), hashes.SHA256())

    def own_auth(k):
        octets = os.urandom(init_resp) + ni + _hmac(k[6], idr)
        gw_key.sign(octets, padding.PKCS1v15(), hashes.SHA256())

    def sk_out(k):
        _prf_plus(k[0], ni + nr, 72)  # CHILD_SA KEYMAT (AES-GCM-256 both ways)
        for datagram, aad in responses:
            iv = os.urandom(16)
            enc = Cipher(algorithms.AES(k[4]), modes.CBC(iv)).encryptor()
            ct = enc.update(datagram[aad + 16 : -16]) + enc.finalize()
            _hmac(k[2], datagram[:aad] + iv + ct)

    def whole():
        kk = keys(dh())
        sk_in(kk)
        peer_auth(kk)
        own_auth(kk)
        sk_out(kk)

    shared = dh()
    k = keys(shared)
    parts = {
        "ECP-256 keygen + exchange": dh,
        "SKEYSEED + prf+ (7 keys)": lambda: keys(shared),
        "IKE_AUTH request: HMAC + AES-CBC decrypt": lambda: sk_in(k),
        "peer: certificate + AUTH RSA verify": lambda: peer_auth(k),
        "own AUTH: RSA-2048 sign": lambda: own_auth(k),
        "KEYMAT + IKE_AUTH response: AES-CBC + HMAC": lambda: sk_out(k),
        "total": whole,
    }
    runs: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):  # interleaved, so that the parts and the total see the same load
        for name, fn in parts.items():
            t = time.process_time()
            for _ in range(iterations):
                fn()
            runs[name].append((time.process_time() - t) / iterations)
    out: dict = {name: statistics.median(r) for name, r in runs.items()}
    out["wire"] = wire
    return out


# ---------------------------------------------------------------------- the engine alone
GW_MEM, ENB_MEM = ("127.0.0.1", 4600), ("127.0.0.1", 4601)


def card_responder(p: dict) -> Endpoint:
    """The responder Endpoint a DPC builds (cards.gateway) from the same configuration and
    credentials as the live chassis, bound to GW_MEM."""
    from cards.credentials import Credentials as CardCredentials
    from cards.gateway import Gateway

    creds = CardCredentials()
    creds.pushed = {
        "certificate/segw": {"cert_pem": pem(p["gw"]).decode(), "key_pem": pem(p["gw_key"]).decode(),
                             "generation": 1},
        "ca-certificate/lab-root": {"cert_pem": pem(p["ca"]).decode(), "generation": 1},
        "ca-certificate/lab-int": {"cert_pem": pem(p["int"]).decode(), "generation": 1},
    }  # fmt: skip
    tree = {"context": {"segw": {
        "ikesa-transform-set": {"ts19": dict(TSET)},
        "crypto-template": {"tmpl": {
            "authentication": {"local": "certificate", "remote": "certificate"},
            "certificate": "segw", "ca-certificate-list": ["lab-root"],
            "ikesa-transform-set-list": ["ts19"]}},
        "wsg-service": {"svc": {"bind": {"address": GW_MEM[0], "port": GW_MEM[1],
                                         "template": "tmpl"}}},
    }}}  # fmt: skip
    gateway = Gateway(1, SystemRandom(), utcnow, os.urandom(32))
    gateway.configure(tree, creds)
    return gateway.endpoints[GW_MEM]


def in_memory_tunnel(responder: Endpoint, enb: Endpoint) -> float:
    """One IKE SA with its first CHILD_SA, datagrams passed by hand; the responder's CPU s."""
    spent = 0.0
    queue = list(enb.initiate(GW_MEM, 0.0, local=ENB_MEM))
    while queue:
        o = queue.pop(0)
        if not isinstance(o, Send):
            continue
        if o.dst == GW_MEM:
            t = time.process_time()
            out = responder.receive(o.data, o.src, o.dst, 0.0)
            spent += time.process_time() - t
            queue += out
        else:
            queue += enb.receive(o.data, o.src, o.dst, 0.0)
    return spent


def engine_alone(p: dict, n: int, repeats: int) -> float:
    """The card's IKE engine alone (no runner, no IPC): responder CPU per tunnel, median."""
    responder = card_responder(p)
    enb = Endpoint(enodeb_config(p), rand=SystemRandom(), wall_clock=utcnow, local=ENB_MEM)
    for _ in range(20):
        in_memory_tunnel(responder, enb)
    runs = []
    for _ in range(repeats):
        runs.append(sum(in_memory_tunnel(responder, enb) for _ in range(n)) / n)
        responder.sas.clear()
        responder.esp_spis.clear()
        enb.sas.clear()
    return statistics.median(runs)


# ---------------------------------------------------------------------- memory per SA
def memory_child(n: int) -> None:
    """Runs in a fresh interpreter (--memory-child): prints one JSON line."""
    import cards.gateway  # noqa: F401  (the runner loads it once a service is bound)
    import cards.runner  # noqa: F401  (what a card process has loaded)
    from cards.spi import make_spi

    p = make_pki()
    responder = card_responder(p)
    enb = Endpoint(enodeb_config(p), rand=SystemRandom(), wall_clock=utcnow, local=ENB_MEM)
    in_memory_tunnel(responder, enb)
    [spi] = responder.sas
    ckpt = responder.export_sa(spi)
    data = ckpt["cached"][2] if ckpt.get("cached") else []
    # the cached response: one datagram (hex), or its fragments (a list of hex)
    cached = sum(len(x) // 2 for x in ([data] if isinstance(data, str) else data))
    del responder.sas[spi]
    responder.esp_spis.clear()

    def restored(i: int) -> dict:
        d = dict(ckpt)
        d["spi_i"] = (i + 1).to_bytes(8, "big").hex()
        d["spi_r"] = make_spi(1, (i + 1).to_bytes(8, "big")).hex()
        d["children"] = [
            {**c, "our_spi": make_spi(1, (i + 256).to_bytes(4, "big")).hex(),
             "their_spi": (i + 256).to_bytes(4, "big").hex()}
            for c in ckpt["children"]
        ]  # fmt: skip
        return d

    points = []
    step = max(1, n // 10)
    for i in range(n + 1):
        if i % step == 0:
            gc.collect()
            points.append((i, rss_bytes()))
        if i < n:
            responder.import_sa(restored(i))
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    print(json.dumps({"slope": slope, "points": points, "cached": cached,
                      "has_cached": ckpt.get("cached") is not None,
                      "sas": len(responder.sas), "esp": len(responder.esp_spis)}))  # fmt: skip


def memory(n: int) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(n)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"memory child failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tunnels", type=int, default=600, help="IKE SAs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=32, help="SAs in flight at once")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--sas", type=int, default=20000, help="SAs imported for memory")
    parser.add_argument("--floor-iterations", type=int, default=300)
    parser.add_argument("--engine-tunnels", type=int, default=200, help="per run, 5 runs")
    parser.add_argument("--run-dir", help="keep the chassis's run directory (logs) here")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return
    p = make_pki()
    if args.run_dir:
        Path(args.run_dir).mkdir(parents=True, exist_ok=True)
        run = live(args, p, Path(args.run_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="segw-ike-") as tmp:
            run = live(args, p, Path(tmp))
    fl = floor(p, run["wire"], args.floor_iterations, 5)
    engine = engine_alone(p, args.engine_tunnels, 5)
    try:
        mem = memory(args.sas)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # report the rest anyway
        print(exc)
        mem = {"slope": float("nan"), "sas": 0, "cached": 0, "has_cached": False}
    report(args, run, fl, engine, mem)


def report(args, run: dict, fl: dict, engine: float, mem: dict) -> None:
    ms, rounds = 1000, run["rounds"]
    per = {
        k: statistics.median(r["cpu"][k] / max(1, r["up"]) for r in rounds) for k in run["procs"]
    }
    total = statistics.median(sum(r["cpu"].values()) / max(1, r["up"]) for r in rounds)
    idle_per = statistics.median(
        sum(run["idle"].values()) * r["wall"] / max(1, r["up"]) for r in rounds
    )
    rate = statistics.median(r["up"] / r["wall"] for r in rounds)
    dpc, bp, sup = per["DPC 1"], per["backplane (NPU)"], per["supervisor (MIO 5)"]
    c = run["counters"]
    print(f"tunnels (up, children, failed) per round: "
          f"{[(r['up'], r['children'], r['failed']) for r in rounds]}; the card counted "
          f"{c.get('ike_established')} IKE SAs, {c.get('ike_childestablished')} CHILD_SAs")  # fmt: skip
    if run["failures"]:
        print("failures:", run["failures"])
    if any(set(r["states"].values()) != {"active"} for r in rounds):
        print("slot states after each round:", [r["states"] for r in rounds])
    for i, r in enumerate(rounds):
        on_card = run["warmup"] + sum(x["up"] for x in rounds[: i + 1])
        parts = ", ".join(f"{k} {v / max(1, r['up']) * ms:.3f}" for k, v in r["cpu"].items()
                          if not k.startswith("other"))  # fmt: skip
        print(f"round {i + 1}: {r['up']} tunnels in {r['wall']:.2f} s, {on_card} SAs on the "
              f"card after it; CPU ms per tunnel: {parts}")  # fmt: skip
    print(f"on the wire, per tunnel (datagrams, bytes each): {fl['wire']}")
    print()
    print("| chassis process | CPU per tunnel (median of rounds) | idle background |")
    print("| --- | --- | --- |")
    for k in run["procs"]:
        print(f"| {k} | {per[k] * ms:.3f} ms | {run['idle'][k] * ms:.1f} ms/s |")
    print(f"| sum | {total * ms:.3f} ms | ~{idle_per * ms:.3f} ms of it idle background |")
    print(
        f"| (DPC: its IKE engine alone, in memory, same configuration) | {engine * ms:.3f} ms | |"
    )
    print(f"| (DPC: runner, IPC, logging, SA count) | {(dpc - engine) * ms:.3f} ms | |")
    print()
    print("| crypto floor part (this process, median of 5) | CPU per tunnel |")
    print("| --- | --- |")
    for k, v in fl.items():
        if k not in ("total", "wire"):
            print(f"| {k} | {v * ms:.3f} ms |")
    print(f"| floor: all of it in one loop | {fl['total'] * ms:.3f} ms |")
    print()
    print("| figure | target | measured |")
    print("| --- | --- | --- |")
    print(
        f"| Chassis CPU per tunnel (IKE SA + first CHILD_SA; RSA-2048 gateway chain and eNodeB, "
        f"ECP-256), {len(rounds)} rounds of {args.tunnels} in waves of {args.inflight} | "
        f"<= 2.5 ms and <= 2x floor | {total * ms:.3f} ms (backplane {bp * ms:.3f}, DPC "
        f"{dpc * ms:.3f} of which engine {engine * ms:.3f}, supervisor {sup * ms:.3f}); "
        f"floor {fl['total'] * ms:.3f} ms; ratio {total / fl['total']:.2f}x (engine alone "
        f"{engine / fl['total']:.2f}x); {rate:.0f} tunnels/s |"
    )
    print(
        f"| Card memory per restored SA ({mem['sas']} imported; cached response "
        f"{mem['cached']} B, {'in' if mem['has_cached'] else 'NOT in'} the checkpoint) | "
        f"<= 8 KiB | {mem['slope']:.0f} B/SA ({mem['slope'] / 1024:.2f} KiB) |"
    )
    print(
        f"| Card RSS growth per live tunnel (established over the wire) | report | "
        f"{run['card_rss_per_sa']:.0f} B/SA |"
    )


if __name__ == "__main__":
    main()
