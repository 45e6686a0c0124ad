"""Two network namespaces joined by a veth pair, for real peers that need their own kernel
routing (INTEROP.md: charon installs CHILD_SAs only with kernel-libipsec in its own netns).

    with netns.pair() as link:
        link.gw, link.peer             # namespace names
        link.gw_addr, link.peer_addr   # the veth ends, 10.A.B.1 and 10.A.B.2 (/30)
        link.addr(65)                  # 10.A.B.65: another address of this pair's /24
        link.add_address(link.peer, link.addr(65))   # a /32 on the peer's loopback

Names and addresses are unique per pytest-xdist worker (PYTEST_XDIST_WORKER) and per pair
(a counter in this process): namespaces `segwt-<worker>-<pid>-<n>-gw` and `-peer` (the pid
keeps two test sessions on one host apart), subnet 10.<64 + worker>.<n mod 256>.0/24. The
veth ends are created directly inside the namespaces, and every address lives inside them:
nothing is added to, or removed from, the host's own namespace. On leaving the block both
namespaces are deleted, whatever happened; processes still running in them are reported
(never killed: whoever started them stops them, by PID, before the block ends).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
PREFIX = "segwt"
_counter = itertools.count()


def worker_index() -> int:
    """gw0 -> 0, gw1 -> 1, ...; 0 without xdist."""
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(match.group(1)) if match else 0


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def pids_in(name: str) -> list[int]:
    done = ip("netns", "pids", name, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


@dataclass
class Link:
    gw: str  # namespace of the gateway (the chassis)
    peer: str  # namespace of the peer (charon)
    net: str  # "10.A.B": this pair's /24
    gw_if: str = "veth-gw"
    peer_if: str = "veth-peer"
    created: list[str] = field(default_factory=list)

    def addr(self, host: int) -> str:
        return f"{self.net}.{host}"

    @property
    def gw_addr(self) -> str:
        return self.addr(1)

    @property
    def peer_addr(self) -> str:
        return self.addr(2)

    def add_address(self, namespace: str, address: str) -> None:
        """A /32 on the namespace's loopback (a local address for traffic selectors)."""
        ip("-n", namespace, "addr", "add", f"{address}/32", "dev", "lo")

    def exec_argv(self, namespace: str, *argv: str) -> list[str]:
        """argv run inside `namespace` (`ip netns exec` replaces itself: same PID)."""
        return [IP, "netns", "exec", namespace, *argv]


@contextlib.contextmanager
def pair() -> Iterator[Link]:
    n = next(_counter)
    worker = worker_index()
    if worker > 63:
        raise AssertionError(f"netns.pair: worker {worker} has no 10.x block (at most 64)")
    base = f"{PREFIX}-{worker}-{os.getpid()}-{n}"
    link = Link(gw=f"{base}-gw", peer=f"{base}-peer", net=f"10.{64 + worker}.{n % 256}")
    failed = True
    try:
        for name in (link.gw, link.peer):
            ip("netns", "add", name)
            link.created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("link", "add", link.gw_if, "netns", link.gw, "type", "veth",
           "peer", "name", link.peer_if, "netns", link.peer)  # fmt: skip
        for name, dev, host in ((link.gw, link.gw_if, 1), (link.peer, link.peer_if, 2)):
            ip("-n", name, "addr", "add", f"{link.addr(host)}/30", "dev", dev)
            ip("-n", name, "link", "set", dev, "up")
        yield link
        failed = False
    finally:
        leftovers = {}
        for name in link.created:
            deadline = time.monotonic() + 5
            while (left := pids_in(name)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if left:
                leftovers[name] = left
            ip("netns", "del", name, check=False)  # the veth pair goes with its namespaces
        if leftovers and not failed:  # else the test's own error says more
            raise AssertionError(f"processes still running in the test's namespaces: {leftovers}")
