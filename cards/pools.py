"""Inner addresses for eNodeBs from the context's IP pools (sans-IO).

Every packet card serves the same pools, so each takes a disjoint share: the supervisor
tells card k of n its share, and the card hands out only the addresses whose index in the
pool is k modulo n. IPv4 pools skip the network and broadcast addresses. Pools are tried in
configuration order, IPv4 pools for IPv4 requests and IPv6 pools for IPv6 ones (S17: the
first pool with a free address wins). An address comes back when its IKE SA goes.
"""

from __future__ import annotations

import ipaddress
from collections import deque


class AddressPool:
    def __init__(self, name: str, network: str, index: int = 0, of: int = 1) -> None:
        self.name = name
        self.network = ipaddress.ip_network(network, strict=False)
        self.index, self.of = index, max(1, of)
        self.used: set[int] = set()  # offsets from the network address
        self.free: deque[int] = deque()  # released offsets, reused first
        self.cursor = index  # the next never-used offset of our share

    @property
    def version(self) -> int:
        return self.network.version

    def _ours(self, offset: int) -> bool:
        size = self.network.num_addresses
        if self.version == 4 and size > 2 and offset in (0, size - 1):
            return False  # network and broadcast addresses
        return 0 <= offset < size and offset % self.of == self.index

    def allocate(self) -> str | None:
        while self.free:
            offset = self.free.popleft()
            if offset not in self.used:
                self.used.add(offset)
                return str(self.network[offset])
        while self.cursor < self.network.num_addresses:
            offset, self.cursor = self.cursor, self.cursor + self.of
            if self._ours(offset) and offset not in self.used:
                self.used.add(offset)
                return str(self.network[offset])
        return None

    def offset(self, address: str) -> int | None:
        addr = ipaddress.ip_address(address)
        if addr.version != self.version or addr not in self.network:
            return None
        return int(addr) - int(self.network.network_address)

    def release(self, address: str) -> bool:
        offset = self.offset(address)
        if offset is None or offset not in self.used:
            return False
        self.used.discard(offset)
        self.free.append(offset)
        return True

    def reserve(self, address: str) -> bool:
        """Mark an address in use again (an SA restored from a checkpoint)."""
        offset = self.offset(address)
        if offset is None or offset in self.used:
            return False
        self.used.add(offset)
        return True


class Pools:
    """The pools of one service, in configuration order (what IkeConfig.addresses takes)."""

    def __init__(self, pools: list[AddressPool]) -> None:
        self.pools = pools

    def allocate(self, version: int) -> str | None:
        for pool in self.pools:
            if pool.version == version and (address := pool.allocate()) is not None:
                return address
        return None

    def release(self, address: str) -> None:
        any(pool.release(address) for pool in self.pools)

    def reserve(self, address: str) -> bool:
        return any(pool.reserve(address) for pool in self.pools)
