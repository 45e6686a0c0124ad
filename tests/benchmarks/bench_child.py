"""CREATE_CHILD_SA benchmark (issue #6). Reports figures; asserts nothing.

    python tests/benchmarks/bench_child.py [--exchanges 1000] [--repeats 5]

One card's responder Endpoint, built the way a DPC builds it (cards.gateway, the credentials
of bench_ike.py; IKE SA AES-CBC-256 / HMAC-SHA2-256-128 / ECP-256; one child-SA payload with
an AES-GCM-256 IPsec transform set, `group none` or `group 19`), holds one IKE SA with an
in-process eNodeB initiator (not counted). The eNodeB rekeys the CHILD_SA again and again
(CREATE_CHILD_SA with REKEY_SA, then the INFORMATIONAL delete of the old child); the card's
CPU for answering each CREATE_CHILD_SA request is timed (time.process_time around
Endpoint.receive), with PFS off and on, and compared with the crypto floor of the same
exchange measured in the same run: the request's HMAC and AES-CBC, the new nonce, the KEYMAT
prf+, the response's AES-CBC and HMAC, and with PFS the ECP-256 key generation and exchange.
Exchanges per second = 1 / CPU per exchange, on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ike as b  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from cards.ike.config import ChildPolicy, ChildProposal  # noqa: E402
from cards.ike.const import DhGroup, Encr, ExchangeType  # noqa: E402
from cards.ike.engine import Endpoint  # noqa: E402
from cards.ike.events import Send  # noqa: E402
from chassis.randomness import SystemRandom  # noqa: E402


def responder(p: dict, pfs: bool) -> Endpoint:
    """bench_ike's card responder with a payload whose transform set asks for PFS or not."""
    from cards.credentials import Credentials as CardCredentials
    from cards.gateway import Gateway

    creds = CardCredentials()
    creds.pushed = {
        "certificate/segw": {"cert_pem": b.pem(p["gw"]).decode(),
                             "key_pem": b.pem(p["gw_key"]).decode(), "generation": 1},
        "ca-certificate/lab-root": {"cert_pem": b.pem(p["ca"]).decode(), "generation": 1},
        "ca-certificate/lab-int": {"cert_pem": b.pem(p["int"]).decode(), "generation": 1},
    }  # fmt: skip
    tree = {"context": {"segw": {
        "ikesa-transform-set": {"ts19": dict(b.TSET)},
        "ipsec-transform-set": {"esp": {"encryption": "aes-gcm-256",
                                        "group": "19" if pfs else "none"}},
        "crypto-template": {"tmpl": {
            "authentication": {"local": "certificate", "remote": "certificate"},
            "certificate": "segw", "ca-certificate-list": ["lab-root"],
            "ikesa-transform-set-list": ["ts19"],
            "payload": {"all": {"family": "ipv4", "ipsec-transform-set-list": ["esp"]}}}},
        "wsg-service": {"svc": {"bind": {"address": b.GW_MEM[0], "port": b.GW_MEM[1],
                                         "template": "tmpl"}}},
    }}}  # fmt: skip
    gateway = Gateway(1, SystemRandom(), b.utcnow, os.urandom(32))
    gateway.configure(tree, creds)
    return gateway.endpoints[b.GW_MEM]


def exchange_type(data: bytes) -> int:
    return (data[4:] if data[:4] == bytes(4) else data)[18]


def rekeys(p: dict, pfs: bool, n: int) -> list[float]:
    """Responder CPU seconds of each of n child rekeys (CREATE_CHILD_SA requests only)."""
    gw = responder(p, pfs)
    cfg = b.enodeb_config(p)
    suite = ChildProposal(Encr.AES_GCM_16, 256, dh=DhGroup.ECP_256 if pfs else 0)
    cfg = replace(cfg, children=(ChildPolicy("all", proposals=(suite,)),))
    enb = Endpoint(cfg, rand=SystemRandom(), wall_clock=b.utcnow, local=b.ENB_MEM)
    b.in_memory_tunnel(gw, enb)
    (sa,) = enb.sas.values()
    spent = []
    for _ in range(n):
        (child,) = sa.children.values()
        queue, cost = list(enb.rekey_child(sa.spi_i, child.our_spi, 0.0)), 0.0
        while queue:
            o = queue.pop(0)
            if not isinstance(o, Send):
                continue
            if o.dst == b.GW_MEM:
                t = time.process_time()
                out = gw.receive(o.data, o.src, o.dst, 0.0)
                if exchange_type(o.data) == ExchangeType.CREATE_CHILD_SA:
                    cost += time.process_time() - t
                queue += out
            else:
                queue += enb.receive(o.data, o.src, o.dst, 0.0)
        if len(sa.children) != 1:
            raise SystemExit(f"rekey failed: {len(sa.children)} children")
        spent.append(cost)
    return spent


def floor(pfs: bool, n: int) -> float:
    """The responder's cryptography for one CREATE_CHILD_SA, alone (CPU seconds, median)."""
    curve = ec.SECP256R1()
    point = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    peer = ec.generate_private_key(curve).public_key().public_bytes(*point)
    sk_ai, sk_ar, sk_ei, sk_er, sk_d = (os.urandom(32) for _ in range(5))
    request, response = os.urandom(28 + 4 + 16 + 160 + 16), os.urandom(28 + 4 + 16 + 160 + 16)

    def one() -> None:
        b._hmac(sk_ai, request[:-16])
        dec = Cipher(algorithms.AES(sk_ei), modes.CBC(request[32:48])).decryptor()
        dec.update(request[48:-16]) + dec.finalize()
        nonce, shared = os.urandom(32), b""
        if pfs:
            priv = ec.generate_private_key(curve)
            priv.public_key().public_bytes(*point)
            shared = priv.exchange(
                ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(curve, peer)
            )
        b._prf_plus(sk_d, shared + nonce + nonce, 72)  # KEYMAT, AES-GCM-256 both ways
        enc = Cipher(algorithms.AES(sk_er), modes.CBC(os.urandom(16))).encryptor()
        ct = enc.update(response[48:-16]) + enc.finalize()
        b._hmac(sk_ar, response[:48] + ct)

    runs = []
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            one()
        runs.append((time.process_time() - t) / n)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    p = b.make_pki()
    rows = []
    for pfs in (False, True):
        rekeys(p, pfs, 50)  # warm-up
        per = [statistics.mean(rekeys(p, pfs, args.exchanges // args.repeats))
               for _ in range(args.repeats)]  # fmt: skip
        cpu, fl = statistics.median(per), floor(pfs, 500)
        rows.append((pfs, cpu, fl))
    print(
        "| CREATE_CHILD_SA on one card (child rekey) | CPU per exchange | exchanges/s per core"
        " | crypto floor | ratio |"
    )
    print("| --- | --- | --- | --- | --- |")
    for pfs, cpu, fl in rows:
        name = "PFS on (ECP-256)" if pfs else "PFS off"
        print(
            f"| {name} | {cpu * 1e3:.3f} ms | {1 / cpu:.0f} | {fl * 1e3:.3f} ms | {cpu / fl:.2f}x |"
        )


if __name__ == "__main__":
    main()
