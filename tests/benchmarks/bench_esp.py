"""ESP data-plane benchmark (issue #7). Reports figures; asserts nothing.

    python tests/benchmarks/bench_esp.py [--packets 100000] [--repeats 5] [--size 1400]

Two cards.esp.EspSa of one CHILD_SA (the eNodeB's and the SeGW's ends: crossed SPIs and keys,
TSi the eNodeB's inner address, TSr 10.200.0.0/16) pass IPv4/UDP packets of --size octets
(the inner packet) one way: the eNodeB seals, the SeGW opens and checks. The figure is
seal + open pairs per second of wall time on one core (median of --repeats rounds), with
randomness from os.urandom as a card draws it; seal alone and open alone are shown too. Each
round also times a bare loop of AESGCM.encrypt (os.urandom nonce, same key length, same
plaintext length, 8-byte AAD), the floor a C data plane would sit on; the ratio is the median
of the rounds' seal+open : bare (the loops of a round run under the same load).
AES-GCM-128 is the figure issue #7 asks for; AES-GCM-256 and AES-CBC with HMAC-SHA2-256-128
are shown for comparison.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from cards.esp import EspSa, build_udp  # noqa: E402
from cards.ike.child import ChildKeys, ChildSa  # noqa: E402
from cards.ike.config import ChildProposal  # noqa: E402
from cards.ike.const import Encr, Integ, TsType  # noqa: E402
from cards.ike.payloads import TrafficSelector  # noqa: E402

SUITES = {
    "AES-GCM-128": ChildProposal(Encr.AES_GCM_16, 128),
    "AES-GCM-256": ChildProposal(Encr.AES_GCM_16, 256),
    "AES-CBC-128 + HMAC-SHA2-256-128": ChildProposal(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128),
}
ENB, CORE = "10.1.2.3", "10.200.0.9"


def ts(net: str) -> TrafficSelector:
    n = ipaddress.ip_network(net)
    return TrafficSelector(TsType.IPV4_ADDR_RANGE, 0, 0, 65535, n[0], n[-1])


def children(suite: ChildProposal) -> tuple[ChildSa, ChildSa]:
    """(eNodeB, SeGW) ends of one CHILD_SA with random keys."""
    e, a = suite.encr_key_len, suite.integ_key_len
    keys = ChildKeys(os.urandom(e), os.urandom(a), os.urandom(e), os.urandom(a))
    tsi, tsr = (ts(f"{ENB}/32"),), (ts("10.200.0.0/16"),)
    spi_enb, spi_gw = b"\xc1" + os.urandom(3), b"\x07" + os.urandom(3)
    enb = ChildSa(spi_enb, spi_gw, suite, tsi, tsr, True, keys)
    gw = ChildSa(spi_gw, spi_enb, suite, tsi, tsr, False, keys)
    return enb, gw


def timed(fn, n: int) -> float:
    """Calls per second of fn(n)."""
    t = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t)


def measure(suite: ChildProposal, size: int, n: int, repeats: int) -> dict[str, float]:
    """Medians over ``repeats`` rounds; each round times every loop once, in turn, so that
    the ratio compares loops that ran under the same load."""
    enb_child, gw_child = children(suite)
    enb, gw = EspSa.from_child(enb_child), EspSa.from_child(gw_child)
    again = EspSa.from_child(gw_child, replay_window=0)  # opens the same packets again and again
    inner = build_udp(ENB, CORE, 40000, 2152, os.urandom(size - 28))
    rand = os.urandom
    seal, open_, reopen = enb.seal, gw.open, again.open
    packets = [seal(inner, rand) for _ in range(n)]
    if reopen(packets[-1]) != inner:
        raise SystemExit(f"open failed: {again.last_drop}")
    key = os.urandom(suite.key_bits // 8)
    aead, salt, plain, aad = AESGCM(key), os.urandom(4), inner + b"\x01\x02\x02\x04", bytes(8)

    def both(k: int) -> None:
        for _ in range(k):
            if open_(seal(inner, rand)) is None:
                raise SystemExit(f"open failed: {gw.last_drop}")

    def seals(k: int) -> None:
        for _ in range(k):
            seal(inner, rand)

    def opens(k: int) -> None:
        for p in packets[:k]:
            reopen(p)

    def bare(k: int) -> None:
        for _ in range(k):
            aead.encrypt(salt + rand(8), plain, aad)

    loops = {"seal+open": both, "seal": seals, "open": opens, "bare": bare}
    for fn in loops.values():
        fn(n // 10)  # warm-up
    rounds = [{name: timed(fn, n) for name, fn in loops.items()} for _ in range(repeats)]
    out = {name: statistics.median(r[name] for r in rounds) for name in loops}
    out["ratio"] = statistics.median(r["seal+open"] / r["bare"] for r in rounds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=1400, help="inner packet octets")
    args = ap.parse_args()
    print(f"{args.size}-octet inner IPv4/UDP packets, {args.packets} per run, "
          f"median of {args.repeats}, one core")  # fmt: skip
    print("| ESP suite | seal+open /s | seal /s | open /s | bare AESGCM.encrypt /s "
          "| seal+open : bare |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for name, suite in SUITES.items():
        r = measure(suite, args.size, args.packets, args.repeats)
        print(f"| {name} | {r['seal+open']:,.0f} | {r['seal']:,.0f} | {r['open']:,.0f} "
              f"| {r['bare']:,.0f} | {r['ratio']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
