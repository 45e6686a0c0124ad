"""Card CPU added per tunnel by an OCSP check (issue #8). Reports figures; asserts nothing.

    python tests/benchmarks/bench_ocsp_tunnel.py [--tunnels 300] [--rounds 5]

Two parts, summed:
1. The engine: in one process, --tunnels IKE SAs (IKE_SA_INIT + IKE_AUTH with a CHILD_SA,
   ECP-256, RSA-2048 certificates as in bench_ike) between an in-memory eNodeB and the
   gateway's Endpoint, once with `ocsp` on the template and once without. With OCSP the
   gateway parks IKE_AUTH, builds the request (cards/pki/ocsp.py), and on the answer (a
   response signed by the CA, handed over as the runner would) checks it and processes
   IKE_AUTH again. Only the gateway's calls are timed (time.process_time around them).
2. The runner's I/O: --tunnels sequential POSTs of that request with cards/http1.py to a
   real `openssl ocsp` responder (another process, not counted), one connection each, the
   client's CPU only (process_time of this process).
The medians of --rounds rounds are printed, with the target (<= 1 ms per tunnel).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cards import http1  # noqa: E402
from cards.ike.config import Credentials, IkeConfig, IkeProposal  # noqa: E402
from cards.ike.const import DhGroup, Encr, Integ, Prf  # noqa: E402
from cards.ike.engine import Endpoint  # noqa: E402
from cards.ike.events import CheckOcsp, Established, Send  # noqa: E402
from cards.pki.revocation import Policy  # noqa: E402
from chassis.randomness import SystemRandom  # noqa: E402

NOW = dt.datetime.now(dt.UTC)
URL = "http://127.0.0.1:1/"  # in part 1 nothing is sent: the answer is handed over
SUITE = IkeProposal(Encr.AES_CBC, 256, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128, DhGroup.ECP_256)


def cert(cn, key, issuer=None, issuer_key=None, *, ca=False, ocsp_url=None):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    if ocsp_url:
        desc = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        b = b.add_extension(x509.AuthorityInformationAccess([desc]), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


class Lab:
    def __init__(self, ocsp_url: str) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = cert("Bench Root", self.ca_key, ca=True)
        self.gw_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.enb_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.gw = cert("segw.bench", self.gw_key, self.ca, self.ca_key)
        self.enb = cert("enb.bench", self.enb_key, self.ca, self.ca_key, ocsp_url=ocsp_url)
        self.answer = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=self.enb,
                issuer=self.ca,
                algorithm=hashes.SHA1(),
                cert_status=ocsp.OCSPCertStatus.GOOD,
                this_update=NOW,
                next_update=NOW + dt.timedelta(minutes=5),
                revocation_time=None,
                revocation_reason=None,
            )  # fmt: skip
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca)
            .sign(self.ca_key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )


def endpoints(lab: Lab, with_ocsp: bool):

    policy = Policy(ocsp=True) if with_ocsp else None
    gw_cfg = IkeConfig(Credentials(lab.gw, lab.gw_key, ()), (lab.ca,), proposals=(SUITE,),
                       revocation=policy, fragmentation=False)  # fmt: skip
    enb_cfg = IkeConfig(Credentials(lab.enb, lab.enb_key, ()), (lab.ca,), proposals=(SUITE,),
                        fragmentation=False)  # fmt: skip
    wall = lambda: NOW  # noqa: E731
    return (Endpoint(enb_cfg, rand=SystemRandom(), wall_clock=wall),
            Endpoint(gw_cfg, rand=SystemRandom(), wall_clock=wall))  # fmt: skip


def engine_round(lab: Lab, tunnels: int, with_ocsp: bool) -> float:
    """Gateway CPU seconds per tunnel (only the gateway's calls are timed)."""
    enb, gw = endpoints(lab, with_ocsp)
    gw_addr, spent, up = ("192.0.2.1", 500), 0.0, 0
    for n in range(tunnels):
        enb_addr = ("198.51.100.1", 1024 + n)
        queue = [o for o in enb.initiate(gw_addr, 0.0, local=enb_addr) if isinstance(o, Send)]
        while queue:
            s = queue.pop(0)
            if s.dst == gw_addr:
                t = time.process_time()
                outs = gw.receive(s.data, s.src, s.dst, 0.0)
                for ask in [o for o in outs if isinstance(o, CheckOcsp)]:
                    outs += gw.revocation_answer(ask.my_spi, "ocsp", ask.url, lab.answer, None, 0.0)
                spent += time.process_time() - t
                up += sum(isinstance(o, Established) for o in outs)
            else:
                outs = enb.receive(s.data, s.src, s.dst, 0.0)
            queue += [o for o in outs if isinstance(o, Send)]
    assert up == tunnels, f"{up} of {tunnels} tunnels up"
    return spent / tunnels


def start_responder(home: Path, lab: Lab) -> tuple[subprocess.Popen, int]:
    def pem(obj) -> bytes:
        if isinstance(obj, x509.Certificate):
            return obj.public_bytes(serialization.Encoding.PEM)
        return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())  # fmt: skip

    (home / "ca.crt").write_bytes(pem(lab.ca))
    (home / "ca.key").write_bytes(pem(lab.ca_key))
    end = (NOW + dt.timedelta(days=30)).strftime("%y%m%d%H%M%SZ")
    (home / "index.txt").write_text(f"V\t{end}\t\t{lab.enb.serial_number:X}\tunknown\t/CN=enb\n")
    proc = subprocess.Popen(
        ["openssl", "ocsp", "-index", str(home / "index.txt"), "-port", "0", "-rsigner",
         str(home / "ca.crt"), "-rkey", str(home / "ca.key"), "-CA", str(home / "ca.crt"),
         "-nmin", "5", "-ignore_err"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(10)
    text = line[0].decode() if line else ""
    if not text.startswith("ACCEPT"):
        proc.kill()
        raise SystemExit(f"openssl ocsp did not start: {text!r}")
    return proc, int(text.split()[1].rsplit(":", 1)[1])


def io_round(port: int, request: bytes, tunnels: int) -> float:
    async def run() -> float:
        url = f"http://127.0.0.1:{port}/"
        t = time.process_time()
        for _ in range(tunnels):
            body = await asyncio.wait_for(
                http1.exchange(
                    "POST",
                    url,
                    body=request,
                    max_bytes=65536,
                    content_type="application/ocsp-request",
                ),  # fmt: skip
                5,
            )
            assert body
        return (time.process_time() - t) / tunnels

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tunnels", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        lab = Lab(URL)  # part 2 posts the same request to the responder's real port
        proc, port = start_responder(home, lab)
        try:
            from cards.pki import ocsp as ocsp_client

            request = ocsp_client.build_request(lab.enb, lab.ca, URL, nonce=None).der
            engine_round(lab, 20, True)  # warm-up (imports, caches)
            plain, checked, io = [], [], []
            for _ in range(args.rounds):
                plain.append(engine_round(lab, args.tunnels, False))
                checked.append(engine_round(lab, args.tunnels, True))
                io.append(io_round(port, request, args.tunnels))
        finally:
            proc.kill()
            proc.wait(5)
    p, c, i = (statistics.median(x) * 1e3 for x in (plain, checked, io))
    print(f"OCSP check per tunnel, medians of {args.rounds} rounds x {args.tunnels} tunnels")
    print(f"  gateway engine without OCSP       {p:7.3f} ms")
    print(f"  gateway engine with OCSP          {c:7.3f} ms  (+{c - p:.3f} ms)")
    print(f"  runner HTTP POST (h11, 1 conn)    {i:7.3f} ms")
    print(f"  card CPU added per tunnel         {c - p + i:7.3f} ms   target <= 1 ms")


if __name__ == "__main__":
    main()
