"""CRL benchmarks: a large CRL fetched, verified, parsed and indexed. Reports figures; asserts
nothing.

    python tests/benchmarks/bench_crl.py [--entries 1000000] [--runs 5] [--cache /tmp/segw-bench-crl]

The CRL (RSA-2048 CA, sha256WithRSAEncryption, 16-octet random serials, a reasonCode on every
fourth entry, CRL number, nextUpdate in 7 days) is DER-encoded here and signed with the CA key
(cryptography's CertificateRevocationListBuilder is quadratic), then cached under --cache.

Stages, each the median of --runs, against tools run on the same file:
1. fetch: supervisor.pki.urls.Fetcher over http (from `python -m http.server`) and from a
   file, against `curl -o /dev/null` and `cat > /dev/null` (process wall time).
2. verify: issuer match + signature over the TBS as received, against `openssl dgst -sha256
   -verify` over the same TBS bytes (minus its start-up). The difference of `openssl crl
   -noout -inform DER -in FILE` with and without `-CAfile ca.pem` is printed too, but on this
   file it is smaller than the run-to-run noise of the parse.
3. parse: load (cryptography validates the whole DER), extension checks and serials out as
   20-octet rows, against `openssl crl -noout` without -CAfile minus its start-up (the same
   command on a one-entry CRL).
4. index build (worker) and size; verify_and_index whole, in-process and through the process
   pool (Workers.run: the body goes in and the index comes back pickled).
5. card: RSS growth of a fresh process that reads the index and opens a CrlIndex on it, and
   the time of one lookup (half revoked serials, half not).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository, when the package is not installed
sys.path.insert(0, str(ROOT / "tests"))  # crl_material

from crl_material import write_crl  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from chassis.ipc import crl_index  # noqa: E402
from chassis.ipc.crl_index import CrlIndex  # noqa: E402
from supervisor.pki import crl as crlmod  # noqa: E402
from supervisor.pki.urls import CRL_LIMIT, Fetcher  # noqa: E402
from supervisor.workers import Workers  # noqa: E402

DER = serialization.Encoding.DER
CARD = r"""
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
from chassis.ipc.crl_index import CrlIndex
before = rss()
blob = open(sys.argv[1], "rb").read()
index = CrlIndex(blob)
assert len(index) > 0
print(rss() - before)
"""


# ---------------------------------------------------------------- the CRL


def make_ca(home: Path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CRL CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (home / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def prepare(home: Path, n: int) -> tuple[Path, Path, Path]:
    """(CRL, one-entry CRL, CA PEM) under home; regenerated when a day old (nextUpdate)."""
    home.mkdir(parents=True, exist_ok=True)
    crl, tiny = home / f"crl-{n}.der", home / "crl-1.der"
    fresh = crl.exists() and time.time() - crl.stat().st_mtime < 86400
    if fresh and tiny.exists() and (home / "ca.pem").exists():
        return crl, tiny, home / "ca.pem"
    print(f"generating a {n:,}-entry CRL under {home} ...", file=sys.stderr)
    cert, key = make_ca(home)
    start = time.perf_counter()
    write_crl(crl, cert, key, n)
    write_crl(tiny, cert, key, 1)
    took = time.perf_counter() - start
    print(f"  {crl.stat().st_size:,} bytes in {took:.1f} s", file=sys.stderr)
    return crl, tiny, home / "ca.pem"


# ---------------------------------------------------------------- measuring


def median_s(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def proc_s(cmd: list[str], runs: int, **kw) -> float:
    def once():
        subprocess.run(cmd, check=True, timeout=120, **kw)

    once()  # warm the page cache
    return median_s(once, runs)


def paired(a: list[str], b: list[str], runs: int) -> tuple[float, float, float]:
    """Wall medians of two commands run alternately, and the median of b - a per pair (the
    cost b adds, with the drift of a busy machine mostly cancelled)."""
    subprocess.run(a, check=True, timeout=120, capture_output=True)
    ta, tb = [], []
    for _ in range(runs):
        for cmd, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, timeout=120, capture_output=True)
            out.append(time.perf_counter() - start)
    diff = statistics.median(y - x for x, y in zip(ta, tb, strict=True))
    return statistics.median(ta), statistics.median(tb), diff


def openssl_verify_only(body: bytes, ca_pem: Path, home: Path, runs: int) -> float:
    """OpenSSL's signature check of this CRL alone: `openssl dgst -sha256 -verify` over the
    TBS bytes (what X509_CRL_verify hashes) minus the same command over a one-byte file. The
    with/without -CAfile difference of `openssl crl` is below the noise of its parse."""
    parts = crlmod._split(body)
    (home / "tbs.der").write_bytes(body[slice(*parts["tbs"])])
    (home / "sig.bin").write_bytes(body[slice(*parts["signature"])])
    (home / "one.bin").write_bytes(b"x")
    pub = x509.load_pem_x509_certificate(ca_pem.read_bytes()).public_key()
    pem = serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    (home / "ca-pub.pem").write_bytes(pub.public_bytes(pem, spki))
    cmd = ["openssl", "dgst", "-sha256", "-verify", str(home / "ca-pub.pem"), "-signature",
           str(home / "sig.bin")]  # fmt: skip
    full = proc_s([*cmd, str(home / "tbs.der")], runs, capture_output=True)
    # The one-byte file fails verification (exit 1): time it without check.
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*cmd, str(home / "one.bin")], timeout=60, capture_output=True)
        times.append(time.perf_counter() - start)
    return full - statistics.median(times)


def start_http(directory: Path) -> tuple[subprocess.Popen, int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--directory", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("http.server did not start")


def fetch_times(fetcher: Fetcher, urls: list[str], runs: int) -> list[float]:
    async def measure():
        out = []
        for url in urls:
            await fetcher.fetch(url, limit=CRL_LIMIT)  # warm-up
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                await fetcher.fetch(url, limit=CRL_LIMIT)
                times.append(time.perf_counter() - start)
            out.append(statistics.median(times))
        return out

    return asyncio.run(measure())


def our_stages(body: bytes, ca_der: bytes, runs: int) -> dict[str, float]:
    now = time.time()
    x = {}

    def parse():
        x["crl"] = c = x509.load_der_x509_crl(body)
        x["parts"] = parts = crlmod._split(body)
        crlmod._check_extensions(c)
        crlmod._check_times(c, now)
        x["rows"] = crlmod._serial_rows(c, body, parts["revoked"])
        crlmod._check_entry_extensions(body, parts["revoked"])

    def verify():
        crlmod._find_issuer(x["crl"], [ca_der], body, x["parts"])

    t = {"parse": median_s(parse, runs), "verify": median_s(verify, runs)}
    t["build"] = median_s(lambda: x.__setitem__("index", crl_index.build(x["rows"])), runs)
    t["whole"] = median_s(lambda: crlmod.verify_and_index(body, "der", [ca_der], now), runs)
    crl = x["crl"]
    t["crypto_sig"] = median_s(
        lambda: crl.is_signature_valid(x509.load_der_x509_certificate(ca_der).public_key()), 1
    )
    t["crypto_serials"] = median_s(
        lambda: [r.serial_number for r in x509.load_der_x509_crl(body)], 1
    )
    t["index_bytes"] = len(x["index"])
    t["index"] = x["index"]
    return t


def worker_time(body: bytes, ca_der: bytes, runs: int) -> float:
    async def measure():
        workers = Workers()
        try:
            await workers.run(crlmod.verify_and_index, b"x", None, [], 0.0)  # start the pool
        except crlmod.CrlError:
            pass
        try:
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                await workers.run(crlmod.verify_and_index, body, "der", [ca_der], time.time())
                times.append(time.perf_counter() - start)
            return statistics.median(times)
        finally:
            workers.close()

    return asyncio.run(measure())


def card_rss(index_file: Path, runs: int) -> int:
    cmd = [sys.executable, "-c", CARD, str(index_file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    got = [
        int(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout)
        for _ in range(runs)
    ]
    return int(statistics.median(got))


def lookup_us(blob: bytes, body: bytes, runs: int) -> float:
    index = CrlIndex(blob)
    crl = x509.load_der_x509_crl(body)
    rng = random.Random(5)
    n = len(crl)
    revoked = [crl[rng.randrange(n)].serial_number for _ in range(min(n, 50_000))]
    absent = [rng.getrandbits(127) | 1 << 120 for _ in range(len(revoked))]
    probes = revoked + absent
    rng.shuffle(probes)

    def once():
        hits = 0
        for s in probes:
            if s in index:
                hits += 1
        if hits < len(revoked):
            raise SystemExit("a revoked serial was not found")

    return median_s(once, runs) / len(probes) * 1e6


# ---------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/segw-bench-crl"))
    args = parser.parse_args()
    crl_path, tiny, ca_pem = prepare(args.cache, args.entries)
    body = crl_path.read_bytes()
    ca_der = x509.load_pem_x509_certificate(ca_pem.read_bytes()).public_bytes(DER)
    runs = args.runs

    flash = Fetcher(local_roots={"/flash": args.cache}, known_hosts=args.cache / "known_hosts")
    http, port = start_http(args.cache)
    try:
        url = f"http://127.0.0.1:{port}/{crl_path.name}"
        ours_http, ours_file = fetch_times(flash, [url, f"/flash/{crl_path.name}"], runs)
        curl = proc_s(["curl", "-sf", "-o", "/dev/null", url], runs)
    finally:
        http.kill()
        http.wait(10)
    cat = proc_s(["cat", str(crl_path)], runs, stdout=subprocess.DEVNULL)
    read_floor = median_s(crl_path.read_bytes, runs)

    base = ["openssl", "crl", "-noout", "-inform", "DER", "-in"]
    ossl_start = proc_s([*base, str(tiny)], runs, capture_output=True)
    ossl_parse, ossl_full, ossl_verify = paired(
        [*base, str(crl_path)], [*base, str(crl_path), "-CAfile", str(ca_pem)], max(runs, 9)
    )
    ossl_parse_net = ossl_parse - ossl_start
    ossl_dgst = openssl_verify_only(body, ca_pem, args.cache, max(runs, 9))

    t = our_stages(body, ca_der, runs)
    in_worker = worker_time(body, ca_der, runs)
    index_file = args.cache / f"index-{args.entries}.bin"
    index_file.write_bytes(t["index"])
    rss = card_rss(index_file, runs)
    lookup = lookup_us(t["index"], body, runs)

    n = args.entries
    print(f"\nCRL: {n:,} entries, {len(body):,} bytes DER, RSA-2048/SHA-256; medians of {runs}")
    print(f"openssl start-up (one-entry CRL): {1000 * ossl_start:.1f} ms\n")
    print("| stage | ours | reference | ours / reference | target |")
    print("| --- | --- | --- | --- | --- |")

    def row(stage, ours_s, ref_s, ref_name, target="<= 1.5x"):
        ratio = f"{ours_s / ref_s:.2f}x" if ref_s > 0 else "-"
        print(f"| {stage} | {1000 * ours_s:.1f} ms | {ref_name} {1000 * ref_s:.1f} ms "
              f"| {ratio} | {target} |")  # fmt: skip

    row("fetch over http (Fetcher, httpx)", ours_http, curl, "curl")
    row("fetch from file (Fetcher, /flash)", ours_file, cat, "cat")
    row("verify (issuer match + signature)", t["verify"], ossl_dgst,
        "openssl dgst -verify over the TBS minus start-up")  # fmt: skip
    row("parse (load + checks + serials out)", t["parse"], ossl_parse_net,
        "openssl crl -noout minus start-up")  # fmt: skip
    row("verify + parse", t["verify"] + t["parse"], ossl_full - ossl_start,
        "openssl -CAfile minus start-up")  # fmt: skip
    print(f"| index build (numpy sort) | {1000 * t['build']:.1f} ms | - | - | report |")
    print(f"| verify_and_index, in-process | {1000 * t['whole']:.1f} ms | - | - | report |")
    print(f"| verify_and_index, through the process pool | {1000 * in_worker:.1f} ms "
          "| - | - | report |")  # fmt: skip
    print(f"| index size | {t['index_bytes']:,} bytes ({t['index_bytes'] / n:.1f} B/entry) "
          "| - | - | <= 32 MiB |")  # fmt: skip
    print(f"| card RSS growth for the index | {rss / 2**20:.1f} MiB | - | - | <= 32 MiB |")
    print(f"| lookup of one serial | {lookup:.2f} us | - | - | <= 2 us |")
    print(f"\nopenssl crl with -CAfile minus without (paired, noisy): {1000 * ossl_verify:.1f} ms")
    print(f"File read floor: Python open().read() {1000 * read_floor:.1f} ms")
    print("Not used, for comparison (cryptography's own paths):")
    print(f"  crl.is_signature_valid: {1000 * t['crypto_sig']:.0f} ms (re-encodes the TBS)")
    print(f"  load + [r.serial_number for r in crl]: {1000 * t['crypto_serials']:.0f} ms")


if __name__ == "__main__":
    main()
