"""CMP client benchmarks against the lab CA. Reports figures; asserts nothing.

    python tests/benchmarks/bench_cmp.py [--tx 50] [--runs 3] [--keys 8]

The lab CA (chassis.lab: Authority + Responder behind ca_server's HTTP handler) runs in a
separate process, so its CPU is not counted. Each run enrols --tx certificates with `ir` and
PBM, sequentially, four ways: our sans-IO `Transaction` driven by a blocking http.client POST
(Connection: close), and the `openssl cmp` client as a child process, each with and without
implicitConfirm. RSA-2048 keys are generated beforehand (excluded) and reused round-robin.

1. Client CPU per transaction: ours from time.process_time() (this process has one thread),
   with a per-step breakdown; OpenSSL's from the RUSAGE_CHILDREN user+sys delta.
2. ir/s: our client, sequential, wall clock per run; the median of the runs.
3. First import of supervisor.pki.cmp, in a fresh interpreter (not a per-transaction cost).
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from supervisor.pki.cmp import Done, Enrollment, Protection, Send, Transaction

DER = serialization.Encoding.DER
SECRET = "s3cret"
RECIPIENT = "/O=SeGW Lab/CN=SeGW Lab Issuing CA"
LAB = r"""
import os, sys
from http.server import ThreadingHTTPServer
from chassis.lab.authority import Authority
from chassis.lab.ca_server import Clock, make_handler
from chassis.lab.cmp_responder import Behaviour, Responder
clock, behaviour = Clock(), Behaviour()
authority = Authority(sys.argv[1], clock.now)
responder = Responder(authority, sys.argv[2].encode(), behaviour, clock.now, os.urandom)
server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(responder, behaviour, clock, authority))
print(server.server_address[1], flush=True)
server.serve_forever()
"""
IMPORT = (
    "import time; c, w = time.process_time(), time.perf_counter(); import supervisor.pki.cmp; "
    "print(time.process_time() - c, time.perf_counter() - w)"
)


def start_lab(home: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", LAB, str(home), SECRET], stdout=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else b""
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit(f"lab CA did not start: {line!r}")
    return proc, int(line)


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def post(port: int, der: bytes) -> tuple[bytes, float, float]:
    """One CMP message: (answer, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/pkixcmp", "Connection": "close"}
        conn.request("POST", "/pkix/", body=der, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status} from the lab CA")
    return body, time.perf_counter() - wall, time.process_time() - cpu


class Timed(Transaction):
    """A Transaction that adds the CPU spent building (and protecting) messages to `built`."""

    built = 0.0

    def _message(self, *args, **kw) -> bytes:
        cpu = time.process_time()
        try:
            return super()._message(*args, **kw)
        finally:
            self.built += time.process_time() - cpu


def ours(port: int, key_pem: bytes, root_der: bytes, implicit: bool) -> dict[str, float]:
    """One ir transaction; CPU seconds per step (and "wall ..." for the round trips)."""
    t: dict[str, float] = {}
    begin = cpu = time.process_time()
    wall = time.perf_counter()
    e = Enrollment("ir", key_pem, "/CN=bench", recipient=RECIPIENT, ca_root_der=root_der,
                   implicit_confirm=implicit)  # fmt: skip
    p = Protection(secret=SECRET.encode(), reference=b"1234")
    tx = Timed(e, p, rand=os.urandom, now=lambda: datetime.now(UTC))
    t["Transaction() (key load)"] = time.process_time() - cpu
    cpu = time.process_time()
    der = tx.start()
    t["start(): build + protect ir"] = time.process_time() - cpu
    for answer in ("ip", "pkiConf"):
        body, t[f"wall POST -> {answer}"], t[f"POST -> {answer}"] = post(port, der)
        tx.built, cpu = 0.0, time.process_time()
        step = tx.receive(body)
        t[f"receive({answer}): verify + parse + checks"] = time.process_time() - cpu - tx.built
        if isinstance(step, Send):
            t["certConf build + protect"] = tx.built
            der = step.der
            continue
        break
    if not isinstance(step, Done):
        raise RuntimeError(f"our transaction did not complete: {step}")
    t["total"], t["wall total"] = time.process_time() - begin, time.perf_counter() - wall
    return t


def openssl(port: int, key: Path, root: Path, out: Path, implicit: bool) -> tuple[float, float]:
    """One `openssl cmp` ir as a child process: (its user+sys CPU, its wall time)."""
    cmd = ["openssl", "cmp", "-config", "", "-server", f"127.0.0.1:{port}/pkix/",
           "-cmd", "ir", "-recipient", RECIPIENT, "-ref", "1234", "-secret", f"pass:{SECRET}",
           "-newkey", str(key), "-subject", "/CN=bench", "-trusted", str(root),
           "-certout", str(out), *(["-implicit_confirm"] if implicit else [])]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, timeout=60)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"openssl cmp failed: {(res.stdout + res.stderr).decode()}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall


def import_cost(runs: int = 3) -> tuple[float, float]:
    """(CPU, wall) seconds of `import supervisor.pki.cmp` in a fresh interpreter; medians."""
    got = []
    for _ in range(runs):
        cmd = [sys.executable, "-c", IMPORT]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        got.append(tuple(map(float, out.split())))
    return statistics.median(c for c, _ in got), statistics.median(w for _, w in got)


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(65537, 2048)
    fmt = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def ms(values) -> float:
    return 1000 * statistics.median(values)


def rate(runs: list[float]) -> str:
    return f"{statistics.median(runs):.1f} ir/s (runs: {', '.join(f'{r:.1f}' for r in runs)})"


def measure(args, lab_pid: int, port: int, base: Path, pems: list[bytes], files: list[Path]):
    root = base / "lab" / "root.crt"
    root_der = x509.load_pem_x509_certificate(root.read_bytes()).public_bytes(DER)
    steps = {ic: defaultdict(list) for ic in (False, True)}  # ours: step -> CPU (or wall) s
    rates = {ic: [] for ic in (False, True)}  # ours: ir/s per run
    ossl = {ic: ([], []) for ic in (False, True)}  # openssl: ([CPU s], [wall s])
    lab_cpu = []  # lab CA process CPU per ir of ours, per run
    for ic in (False, True):  # warm-up, not counted
        ours(port, pems[0], root_der, ic)
        openssl(port, files[0], root, base / "out.pem", ic)
    for _ in range(args.runs):
        for ic in (False, True):
            wall, srv = time.perf_counter(), server_cpu(lab_pid)
            for i in range(args.tx):
                for name, value in ours(port, pems[i % args.keys], root_der, ic).items():
                    steps[ic][name].append(value)
            rates[ic].append(args.tx / (time.perf_counter() - wall))
            lab_cpu.append((server_cpu(lab_pid) - srv) / args.tx)
            for i in range(args.tx):
                cpu, wall = openssl(port, files[i % args.keys], root, base / "out.pem", ic)
                ossl[ic][0].append(cpu)
                ossl[ic][1].append(wall)
    return steps, rates, ossl, lab_cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tx", type=int, default=50, help="transactions per run and variant")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=8, help="RSA-2048 keys, reused")
    args = parser.parse_args()
    imp_cpu, imp_wall = import_cost()
    with tempfile.TemporaryDirectory(prefix="segw-cmp-") as tmp:
        base = Path(tmp)
        pems = [rsa_pem() for _ in range(args.keys)]
        files = [base / f"key{i}.pem" for i in range(args.keys)]
        for f, pem in zip(files, pems, strict=True):
            f.write_bytes(pem)
        lab, port = start_lab(base / "lab")
        try:
            steps, rates, ossl, lab_cpu = measure(args, lab.pid, port, base, pems, files)
        finally:
            lab.kill()
            lab.wait(timeout=10)
    print("| figure | target | measured |\n| --- | --- | --- |")
    for ic, label in ((False, "with certConf"), (True, "implicitConfirm granted")):
        mine, theirs = ms(steps[ic]["total"]), ms(ossl[ic][0])
        print(
            f"| Client CPU per ir transaction (PBM, RSA-2048, {label}), excluding key "
            f"generation ({args.runs * args.tx} tx) | <= `openssl cmp` client process CPU, same run | ours "
            f"{mine:.2f} ms (wall {ms(steps[ic]['wall total']):.2f} ms); openssl {theirs:.2f} ms "
            f"(process wall {ms(ossl[ic][1]):.2f} ms); ours/openssl {mine / theirs:.2f} |"
        )
    print(
        f"| ir transactions per second against the lab CA (ours, sequential, {args.runs} runs "
        f"of {args.tx}) | report it | {rate(rates[False])} with certConf; {rate(rates[True])} "
        f"implicitConfirm (lab CA process CPU {ms(lab_cpu):.1f} ms/tx) |"
    )
    print(
        f"| First import of supervisor.pki.cmp (fresh interpreter, not per transaction) "
        f"| report it | {1000 * imp_cpu:.0f} ms CPU, {1000 * imp_wall:.0f} ms wall |"
    )
    print("\n| step of our ir transaction | CPU ms (certConf) | CPU ms (implicitConfirm) |")
    print("| --- | --- | --- |")
    for name in steps[False]:
        if name.startswith("wall"):
            continue
        cells = [f"{ms(s[name]):.3f}" if s.get(name) else "-" for s in steps.values()]
        wall = steps[False].get(f"wall {name}")
        extra = f" (wall {ms(wall):.2f} ms)" if wall else ""
        print(f"| {name}{extra} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
