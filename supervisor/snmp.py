"""SNMPv2c notifications from the management card (pysnmp), e.g. certificate expiry.

The trap is the simulator's own (no public StarOS MIB text defines one for certificate
expiry): it lives under the experimental arc 1.3.6.1.3.8164 so it can never be mistaken
for a real Starent/Cisco OID.
    1.3.6.1.3.8164.1.1           segwCertificateExpiry (the notification)
    1.3.6.1.3.8164.1.2.1  name   OctetString: the certificate's name
    1.3.6.1.3.8164.1.2.2  notAfter  OctetString: ISO 8601, UTC
    1.3.6.1.3.8164.1.2.3  hours  Unsigned: hours left when the trap was sent
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("snmp")

TRAP_EXPIRY = "1.3.6.1.3.8164.1.1"
VB_NAME, VB_NOT_AFTER, VB_HOURS = (
    "1.3.6.1.3.8164.1.2.1",
    "1.3.6.1.3.8164.1.2.2",
    "1.3.6.1.3.8164.1.2.3",
)


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int = 162
    community: str = "public"


async def send_expiry_trap(
    target: Target, cert_name: str, not_after: str, hours: int
) -> str | None:
    """Send one v2c trap; returns an error text, or None when it left."""
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        NotificationType,
        ObjectIdentity,
        SnmpEngine,
        UdpTransportTarget,
        send_notification,
    )
    from pysnmp.proto.rfc1902 import OctetString, Unsigned32

    engine = SnmpEngine()
    try:
        transport = await UdpTransportTarget.create(
            (target.address, target.port), timeout=2, retries=0
        )
        error, _status, _index, _vbs = await send_notification(
            engine,
            CommunityData(target.community, mpModel=1),
            transport,
            ContextData(),
            "trap",
            NotificationType(ObjectIdentity(TRAP_EXPIRY)).add_varbinds(
                (VB_NAME, OctetString(cert_name)),
                (VB_NOT_AFTER, OctetString(not_after)),
                (VB_HOURS, Unsigned32(max(0, hours))),
            ),
        )
    except Exception as exc:  # a bad address or a socket error: report, never crash the card
        return f"{type(exc).__name__}: {exc}"
    finally:
        engine.close_dispatcher()
    return str(error) if error else None
