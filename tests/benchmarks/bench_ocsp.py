"""OCSP client CPU per tunnel: build_request + check_response. Reports figures; asserts nothing.

    python tests/benchmarks/bench_ocsp.py [--n 2000] [--runs 7]

What the IKE card pays per tunnel for an OCSP check, the HTTP exchange excluded (the runner
does it): one build_request (with a 16-byte nonce) and one check_response of the response
body. Cases:

- openssl-delegate: the OpenSSL 3.0 vector tests/vectors/ocsp/openssl-good-nonce (RSA-2048
  delegated responder included in the response, sha256WithRSA, nonce echoed);
- ca-rsa: a response signed by the issuing CA itself (RSA-2048), built in memory;
- delegate-ec: a P-256 delegated responder with EKU OCSPSigning, built in memory.

Each run times --n calls; the figure is the median over --runs runs, in microseconds per
call, plus the split between building and checking.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from cards.pki.ocsp import build_request, check_response  # noqa: E402

VEC = Path(__file__).resolve().parents[1] / "vectors" / "ocsp"
URL = "http://127.0.0.1:18800/"
NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


def _cert(cn, key, issuer_cn, issuer_key, *, ca=False, eku=None, serial=None):
    name = lambda s: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, s)])  # noqa: E731
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(issuer_cn))
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def cases() -> dict[str, tuple]:
    """name -> (cert, issuer, nonce, body, now)."""
    out = {}
    load = lambda n: x509.load_pem_x509_certificate((VEC / "pki" / n).read_bytes())  # noqa: E731
    body = (VEC / "openssl-good-nonce-resp.der").read_bytes()
    nonce = (
        ocsp.load_der_ocsp_response(body)
        .extensions.get_extension_for_class(x509.OCSPNonce)
        .value.nonce
    )
    vec_now = dt.datetime(2026, 11, 29, 2, 30, tzinfo=dt.UTC)
    out["openssl-delegate"] = (load("good.crt"), load("ca.crt"), nonce, body, vec_now)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert("Bench CA", ca_key, "Bench CA", ca_key, ca=True)
    leaf = _cert("leaf", ec.generate_private_key(ec.SECP256R1()), "Bench CA", ca_key)
    del_key = ec.generate_private_key(ec.SECP256R1())
    delegate = _cert(
        "responder", del_key, "Bench CA", ca_key, eku=[ExtendedKeyUsageOID.OCSP_SIGNING]
    )
    nonce = bytes(range(16))
    for name, signer, key in [("ca-rsa", ca, ca_key), ("delegate-ec", delegate, del_key)]:
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                leaf,
                ca,
                hashes.SHA1(),
                ocsp.OCSPCertStatus.GOOD,
                NOW,
                NOW + dt.timedelta(hours=1),
                None,
                None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.NAME, signer)
            .add_extension(x509.OCSPNonce(nonce), critical=False)
        )
        if signer is not ca:
            builder = builder.certificates([signer])
        der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        out[name] = (leaf, ca, nonce, der, NOW)
    return out


def run(case: tuple, n: int) -> tuple[float, float]:
    """(µs per build_request, µs per check_response) over n calls each."""
    cert, issuer, nonce, body, now = case
    request = build_request(cert, issuer, URL, nonce=nonce)
    result = check_response(request, issuer, body, now, require_nonce=True)
    if result.status != "good":
        raise SystemExit(f"benchmark case is not good: {result.reason}")
    t0 = time.perf_counter()
    for _ in range(n):
        build_request(cert, issuer, URL, nonce=nonce)
    t1 = time.perf_counter()
    for _ in range(n):
        check_response(request, issuer, body, now, require_nonce=True)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"build_request + check_response, median of {args.runs} runs x {args.n} calls")
    for name, case in cases().items():
        runs = [run(case, args.n) for _ in range(args.runs)]
        build = statistics.median(r[0] for r in runs)
        check = statistics.median(r[1] for r in runs)
        total = statistics.median(r[0] + r[1] for r in runs)
        print(f"  {name:17} {total:7.1f} µs/tunnel  (build {build:5.1f} µs, check {check:6.1f} µs)")


if __name__ == "__main__":
    main()
