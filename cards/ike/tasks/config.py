"""The configuration payload in IKE_AUTH: the eNodeB's inner address (RFC 7296 2.19, 3.15).

    HDR, SK{IDi, CERT, AUTH, CP(CFG_REQUEST: INTERNAL_IP4_ADDRESS), SAi2, TSi, TSr}  -->
    <--  HDR, SK{IDr, CERT, AUTH, CP(CFG_REPLY: INTERNAL_IP4_ADDRESS = a), SAr2, TSi = a, TSr}

Responder: each address family asked for gets an address from ``IkeConfig.addresses`` (the
service's pools), kept in ``sa.assigned`` until the IKE SA goes; the CHILD_SAs' TSi are
narrowed to the assigned addresses. When no pool has a free address the answer carries
INTERNAL_ADDRESS_FAILURE and no CHILD_SA (3.15.4); the IKE SA stays. Initiator: asks for the
families in ``IkeConfig.request_addresses`` and keeps what it gets in ``sa.virtual_ips``.
"""

from __future__ import annotations

import ipaddress

from ..const import CfgType, NotifyType
from ..message import CpPayload
from . import Ctx, Task

IP4_ADDRESS, IP6_ADDRESS = 1, 8
ATTR_VERSION = {IP4_ADDRESS: 4, IP6_ADDRESS: 6}


class ConfigTask(Task):
    def __init__(self):
        self.failed = False

    # ------------------------------------------------------------------ initiator
    def build_i(self, sa, ctx: Ctx) -> None:
        attrs = [(IP4_ADDRESS if v == 4 else IP6_ADDRESS, b"") for v in sa.config.request_addresses]
        if attrs:
            ctx.payloads.append(CpPayload(CfgType.CFG_REQUEST, attrs))

    def process_i(self, sa, ctx: Ctx) -> None:
        cp = ctx.first(CpPayload)
        if cp is None or cp.cfg_type != CfgType.CFG_REPLY:
            return
        got = list(sa.virtual_ips)  # a tuple while empty (shared)
        for atype, value in cp.attributes:
            if atype == IP4_ADDRESS and len(value) == 4:
                got.append(str(ipaddress.IPv4Address(value)))
            elif atype == IP6_ADDRESS and len(value) == 17:
                got.append(str(ipaddress.IPv6Address(value[:16])))
        if got:
            sa.virtual_ips = got

    # ------------------------------------------------------------------ responder
    def process_r(self, sa, ctx: Ctx) -> None:
        cp = ctx.first(CpPayload)
        pools = sa.config.addresses
        if cp is None or cp.cfg_type != CfgType.CFG_REQUEST or pools is None:
            return
        wanted = dict.fromkeys(ATTR_VERSION[t] for t, _ in cp.attributes if t in ATTR_VERSION)
        for version in wanted:
            address = pools.allocate(version)
            if address is None:
                self.failed = True
                continue
            sa.assigned.append(address)
        if self.failed and not sa.assigned:
            sa.no_child = "no free address in the pools (INTERNAL_ADDRESS_FAILURE)"

    def build_r(self, sa, ctx: Ctx) -> None:
        if self.failed and not sa.assigned:
            ctx.add_notify(NotifyType.INTERNAL_ADDRESS_FAILURE)
            return
        # Host addresses, without INTERNAL_IP4_NETMASK (strongSwan refuses it in a reply).
        attrs = []
        for address in sa.assigned:
            ip = ipaddress.ip_address(address)
            if ip.version == 4:
                attrs.append((IP4_ADDRESS, ip.packed))
            else:
                attrs.append((IP6_ADDRESS, ip.packed + bytes([128])))
        if attrs:
            ctx.payloads.append(CpPayload(CfgType.CFG_REPLY, attrs))
