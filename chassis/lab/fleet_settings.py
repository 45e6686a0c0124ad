"""The eNodeB fleet's settings (the topology's `lab: fleet:`), checked without heavy imports.

The JSON Schema (chassis/topology.schema.json, `$defs/fleet`) checks shapes, enums and ranges;
`problems` adds what a schema cannot say (the gateway address, flows against child SAs) for
`chassis validate`, and `from_config` turns a checked section into `FleetSettings`. Only the
standard library is imported here: the topology loader and the CLI use this module.

    lab:
      fleet:
        count: 50                # eNodeBs enb0001.lab.example ... (one process for all)
        gateway: 127.0.0.1:5500  # default: the startup-config's first wsg-service bind address
        children: 2              # child SAs per eNodeB: the first in IKE_AUTH, then CREATE_CHILD_SA
        issuer: intermediate     # root | intermediate: which lab CA signs the eNodeB certificates,
                                 # or how many each signs: {root: 45, intermediate: 5} (the
                                 # root's first: enb0001-0045, then enb0046-0050)
        revoked: 1               # the last N eNodeBs' certificates are revoked before they dial
        wait-for-gateway: true   # dial once the gateway answers an IKE_SA_INIT probe (0.25 s)
        dh-group: 19             # 14 | 19 | 20 | 31
        key: ec-p256             # ec-p256 | rsa-2048 (RSA keys cached in RUN/lab/fleet/)
        rate: 50                 # new tunnels per second at most
        half-open: 32            # IKE_SA_INITs in flight at most
        dpd-interval: 30         # our liveness checks (seconds, 0: none)
        retry: {initial: 1, max: 30}   # back-off after a failure or a loss (doubling, jitter)
        traffic:                 # per child, in order: its selectors and a flow inside it
          - {proto: udp, port: 2123, pps: 1, size: 200}
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

PROTOCOLS = {"udp": 17, "tcp": 6, "sctp": 132}
DEFAULT_DESTINATION = "192.0.2.1"  # the inner packets' core-side address, unless `to` says
_BIND = re.compile(
    r"^[ \t]*bind address (\S+)(?: port (\d+))? crypto-template \S+", re.MULTILINE
)  # a wsg-service's bind line (a crypto map's has no crypto-template)
_ADDR = re.compile(r"^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$")


class FleetSettingsError(ValueError):
    def __init__(self, problems: list[tuple[tuple, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p)) or 'fleet'}: {m}" for p, m in problems))


@dataclass(frozen=True)
class Flow:
    """Traffic inside one child SA: its selectors (protocol, core-side port) and a packet rate."""

    proto: str = "udp"
    port: int = 2152
    pps: float = 0.0
    size: int = 200  # bytes of each inner IP packet
    to: str = DEFAULT_DESTINATION

    @property
    def proto_number(self) -> int:
        return PROTOCOLS[self.proto]

    @property
    def label(self) -> str:
        return f"{self.proto}/{self.port}"


@dataclass(frozen=True)
class FleetSettings:
    count: int
    gateway: tuple[str, int]
    children: int = 1
    issuer: str = "intermediate"  # the CA of every eNodeB, or of the first ones (see issuers)
    dh_group: int = 19
    key: str = "ec-p256"
    rate: float = 50.0
    half_open: int = 32
    dpd_interval: float = 30.0
    retry_initial: float = 1.0
    retry_max: float = 30.0
    traffic: tuple[Flow, ...] = ()
    # (CA, how many), the root's first, when the topology splits the fleet between the CAs
    issuers: tuple[tuple[str, int], ...] = ()
    revoked: int = 0  # the last ones: their certificates are revoked before they dial
    wait_for_gateway: bool = True  # the process probes the gateway before the first dial

    @property
    def expected_up(self) -> int:
        """eNodeBs that should come up: all but the revoked ones."""
        return self.count - self.revoked

    def issuer_of(self, index: int) -> str:
        """The lab CA that signs eNodeB ``index`` (1-based) its certificate."""
        for issuer, many in self.issuers:
            if index <= many:
                return issuer
            index -= many
        return self.issuer

    def is_revoked(self, index: int) -> bool:
        return index > self.count - self.revoked

    def issuer_counts(self) -> dict[str, int]:
        """How many eNodeBs each lab CA signs."""
        if not self.issuers:
            return {self.issuer: self.count}
        return {issuer: many for issuer, many in self.issuers if many}

    @property
    def gateway_text(self) -> str:
        host, port = self.gateway
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def flow(self, child: int) -> Flow | None:
        """The flow of child SA ``child`` (0-based), if the topology gave one."""
        return self.traffic[child] if child < len(self.traffic) else None

    @classmethod
    def from_config(cls, conf: Mapping, startup_config: str = "") -> FleetSettings:
        """Settings from a `lab: fleet:` section the schema accepted; FleetSettingsError lists
        what else is wrong (paths relative to the section)."""
        found = problems(conf, startup_config)
        if found:
            raise FleetSettingsError(found)
        retry = conf.get("retry") or {}
        gateway = conf.get("gateway")
        issuer = conf.get("issuer", "intermediate")
        issuers = (  # the root's eNodeBs first, whatever the mapping's order
            tuple((ca, int(issuer[ca])) for ca in ("root", "intermediate") if ca in issuer)
            if isinstance(issuer, Mapping)
            else ()
        )
        return cls(
            count=int(conf["count"]),
            gateway=parse_address(gateway) if gateway else discover_gateway(startup_config),
            children=int(conf.get("children", 1)),
            issuer=next((k for k, v in issuers if v), issuers[0][0]) if issuers else str(issuer),
            dh_group=int(conf.get("dh-group", 19)),
            key=str(conf.get("key", "ec-p256")),
            rate=float(conf.get("rate", 50)),
            half_open=int(conf.get("half-open", 32)),
            dpd_interval=float(conf.get("dpd-interval", 30)),
            retry_initial=float(retry.get("initial", 1)),
            retry_max=float(retry.get("max", 30)),
            traffic=tuple(
                Flow(
                    proto=str(f.get("proto", "udp")),
                    port=int(f["port"]),
                    pps=float(f.get("pps", 0)),
                    size=int(f.get("size", 200)),
                    to=str(f.get("to", DEFAULT_DESTINATION)),
                )
                for f in conf.get("traffic") or ()
            ),
            issuers=issuers,
            revoked=int(conf.get("revoked", 0)),
            wait_for_gateway=bool(conf.get("wait-for-gateway", True)),
        )


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT -> (address, port); ValueError says what is wrong."""
    m = _ADDR.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not ADDRESS:PORT (an IPv6 address in brackets)")
    host, port = m.group(1) or m.group(2), int(m.group(3))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if m.group(1) and address.version != 6:
        raise ValueError(f"[{host}]: brackets are for IPv6 addresses")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return str(address), port


def discover_gateway(startup_config: str) -> tuple[str, int] | None:
    """The first wsg-service bind address of a boot configuration. A service on port 500 is
    reached on its NAT-T port 4500 (the NPU listens there too): ESP-in-UDP needs the marker
    framing, which port 500 does not have."""
    m = _BIND.search(startup_config or "")
    if m is None:
        return None
    try:
        address = str(ipaddress.ip_address(m.group(1)))
    except ValueError:
        return None
    port = int(m.group(2) or 500)
    return address, 4500 if port == 500 else port


def problems(conf, startup_config: str = "") -> list[tuple[tuple, str]]:
    """What the schema cannot see in a fleet section: [(path inside the section, message)]."""
    if not isinstance(conf, Mapping):
        return [((), "expected a mapping of fleet settings")]
    out: list[tuple[tuple, str]] = []
    gateway = conf.get("gateway")
    if gateway is not None:
        try:
            _, port = parse_address(gateway)
        except ValueError as exc:
            out.append((("gateway",), str(exc)))
        else:
            if port == 500:
                out.append(
                    (
                        ("gateway",),
                        "port 500 cannot carry ESP-in-UDP; give the service's NAT-T port 4500 "
                        "(or bind the service to another port)",
                    )
                )
    elif discover_gateway(startup_config) is None:
        out.append(
            (
                (),
                "no gateway: give `gateway: ADDRESS:PORT` (the startup-config binds no "
                "wsg-service with `bind address ... crypto-template ...`)",
            )
        )
    children = conf.get("children", 1)
    flows = conf.get("traffic")
    flows = flows if isinstance(flows, list) else []
    if isinstance(children, int) and not isinstance(children, bool) and len(flows) > children:
        out.append(
            (
                ("traffic",),
                f"{len(flows)} flows for {children} child SA(s): one flow per child SA at most "
                "(raise `children`)",
            )
        )
    seen: dict[tuple, int] = {}
    for i, flow in enumerate(flows):
        if not isinstance(flow, Mapping):
            continue
        key = (repr(flow.get("proto", "udp")), repr(flow.get("port")))
        if key in seen:
            out.append(
                (
                    ("traffic", i),
                    f"same protocol and port as flow {seen[key] + 1}: their child SAs would "
                    "have the same selectors",
                )
            )
        seen.setdefault(key, i)
        to = flow.get("to")
        if to is not None:
            try:
                if ipaddress.ip_address(str(to)).version != 4:
                    raise ValueError
            except ValueError:
                out.append((("traffic", i, "to"), f"{to!r} is not an IPv4 address"))
    count = conf.get("count")
    count = count if _integer(count) else None
    issuer = conf.get("issuer")
    if isinstance(issuer, Mapping) and count is not None:
        many = [v for v in issuer.values() if _integer(v) and v >= 0]
        if len(many) == len(issuer) and sum(many) != count:
            split = ", ".join(f"{k}: {v}" for k, v in issuer.items())
            out.append(
                (("issuer",), f"the CAs sign {sum(many)} eNodeBs ({split}), not count {count}")
            )
    revoked = conf.get("revoked")
    if _integer(revoked) and count is not None and revoked > count:
        out.append((("revoked",), f"{revoked} revoked of {count} eNodeBs: at most count"))
    retry = conf.get("retry") or {}
    if isinstance(retry, Mapping):
        initial, most = retry.get("initial", 1), retry.get("max", 30)
        if _number(initial) and _number(most) and initial > most:
            out.append((("retry",), f"initial back-off {initial} s is above max {most} s"))
    return out


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def render_status(status: Mapping) -> list[str]:
    """Lines for `chassis status` under the fleet's lab row."""
    if not status:
        return []
    p = status.get("phases", {})
    lines = [
        f"      {status.get('configured', 0)} eNodeBs to {status.get('gateway', '?')}"
        + (f" ({len(status['revoked'])} revoked)" if status.get("revoked") else "")
        + (" waiting for the gateway to answer" if status.get("gateway_serving") is False else "")
        + f": {status.get('up', 0)} up, {status.get('establishing', 0)} establishing, "
        f"{p.get('waiting', 0)} waiting to retry, {p.get('queued', 0) + p.get('preparing', 0)} "
        f"not started; child SAs {status.get('children_up', 0)}/{status.get('children_wanted', 0)}",
        f"      {status.get('attempts', 0)} attempts, {status.get('failed', 0)} failed, "
        f"{status.get('lost', 0)} lost, {status.get('re_established', 0)} re-established; "
        f"{status.get('tunnels_per_s', 0):.1f} tunnels/s"
        + (f"; all up in {status['ramp_s']:.2f} s" if status.get("ramp_s") is not None else "")
        + (" (paused)" if status.get("paused") else ""),
    ]
    for f in status.get("flows", []):
        lines.append(
            f"      flow {f['child']} {f['flow']} {f['pps']:g} pps: sent {f['packets_sent']} "
            f"({f['bytes_sent']} B), received {f['packets_received']} ({f['bytes_received']} B)"
        )
    return lines
