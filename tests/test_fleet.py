"""The eNodeB fleet (chassis/lab/fleet.py): its settings, the RSA key pool, and the fleet
itself against an in-memory gateway (a cards.ike responder with two child-SA payloads and an
address pool, ESP from cards.esp) on a manual clock: pacing, the half-open limit, children,
traffic both ways, re-establishment after a loss and back-off after failures.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import ipaddress
import os
import stat
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cards.esp import EspSa, build_udp, parse_inner
from cards.ike.config import ChildPolicy, ChildProposal, Credentials, IkeConfig, IkeProposal
from cards.ike.const import DhGroup, Encr, Integ, Prf, TsType
from cards.ike.engine import Endpoint
from cards.ike.events import Send
from cards.ike.payloads import TrafficSelector
from cards.pools import AddressPool, Pools
from chassis.lab import fleet_settings
from chassis.lab.authority import Authority
from chassis.lab.fleet import Fleet, Phase, child_policies, ike_config, inner_packet
from chassis.lab.fleet_settings import FleetSettings, Flow, discover_gateway, render_status
from chassis.lab.keypool import KeyPool, generate_rsa_pem
from chassis.topology import TopologyError, loads

MINIMAL = """\
name: lab
cards:
  5: {type: mio, role: active}
  1: {type: dpc}
"""
BOOT = """\
startup-config: |
  config
    context segw
      wsg-service s
        bind address 127.0.0.1 port 5500 crypto-template t
"""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def problems(text: str):
    with pytest.raises(TopologyError) as info:
        loads(textwrap.dedent(text))
    return info.value.problems


def only(text: str):
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- settings --------------------------------------------------------------------------------


def test_a_full_fleet_section_loads_with_its_settings():
    topo = loads(
        MINIMAL
        + "lab:\n  ca: {psk: x}\n  fleet:\n    count: 50\n    gateway: 127.0.0.1:5600\n"
        + "    children: 2\n    issuer: root\n    dh-group: 20\n    key: rsa-2048\n"
        + "    rate: 12.5\n    half-open: 8\n    dpd-interval: 0\n"
        + "    retry: {initial: 0.5, max: 8}\n    traffic:\n"
        + "      - {proto: udp, port: 2123, pps: 1, size: 200}\n"
        + "      - {proto: sctp, port: 36412, to: 10.9.9.9}\n"
    )
    s = FleetSettings.from_config(topo.lab["fleet"], topo.startup_config)
    assert (s.count, s.gateway, s.children, s.issuer, s.dh_group, s.key) == (
        50, ("127.0.0.1", 5600), 2, "root", 20, "rsa-2048")  # fmt: skip
    assert (s.rate, s.half_open, s.dpd_interval, s.retry_initial, s.retry_max) == (
        12.5, 8, 0.0, 0.5, 8.0)  # fmt: skip
    assert s.traffic == (Flow("udp", 2123, 1.0, 200), Flow("sctp", 36412, 0.0, 200, "10.9.9.9"))


def test_defaults_and_the_gateway_found_in_the_startup_config():
    topo = loads(MINIMAL + "lab:\n  fleet: {count: 3}\n" + BOOT)
    s = FleetSettings.from_config(topo.lab["fleet"], topo.startup_config)
    assert s == FleetSettings(count=3, gateway=("127.0.0.1", 5500))
    assert (s.children, s.issuer, s.dh_group, s.key, s.rate, s.half_open) == (
        1, "intermediate", 19, "ec-p256", 50.0, 32)  # fmt: skip


def test_an_issuer_split_revoked_enodebs_and_waiting_for_the_gateway():
    topo = loads(
        MINIMAL + "lab:\n  fleet:\n    count: 5\n    issuer: {intermediate: 2, root: 3}\n"
        "    revoked: 1\n    wait-for-gateway: false\n" + BOOT
    )
    s = FleetSettings.from_config(topo.lab["fleet"], topo.startup_config)
    assert s.issuers == (("root", 3), ("intermediate", 2)) and s.issuer == "root"  # root first
    assert [s.issuer_of(i) for i in range(1, 6)] == ["root"] * 3 + ["intermediate"] * 2
    assert s.issuer_counts() == {"root": 3, "intermediate": 2}
    assert [s.is_revoked(i) for i in range(1, 6)] == [False] * 4 + [True]
    assert (s.revoked, s.expected_up, s.wait_for_gateway) == (1, 4, False)
    s = FleetSettings.from_config({"count": 2, "issuer": {"intermediate": 2}}, BOOT)
    assert s.issuer == "intermediate" and s.issuer_of(2) == "intermediate" and s.wait_for_gateway
    assert FleetSettings(2, GW, issuer="root").issuer_counts() == {"root": 2}


def test_gateway_discovery():
    assert discover_gateway("bind address ::1 port 5600 crypto-template t") == ("::1", 5600)
    # a service on 500 is reached on its NAT-T port (ESP-in-UDP needs the marker framing)
    assert discover_gateway("  bind address 10.0.0.1 crypto-template t\n") == ("10.0.0.1", 4500)
    # a crypto map's bind line (no crypto-template) is the gateway dialling out: not ours
    assert discover_gateway("  bind address 10.0.0.1 port 5600\n") is None
    assert FleetSettings(1, ("::1", 5600)).gateway_text == "[::1]:5600"


@pytest.mark.parametrize(
    ("fleet", "field", "at", "message"),
    [
        ("{count: 0}", "lab.fleet.count", "0}", "0 is less than the minimum of 1"),
        ("{count: 3, rtae: 5}", "lab.fleet.rtae", "rtae", "did you mean 'rate'?"),
        ("{count: 3, dh-group: 21}", "lab.fleet.dh-group", "21", "must be one of 14, 19, 20, 31"),
        ("{count: 3, key: ec-p384}", "lab.fleet.key", "ec-p384", "must be one of ec-p256, rsa"),
        ("{count: 3, issuer: sub}", "lab.fleet.issuer", "sub", "must be one of root, inter"),
        ("{count: 3, children: 6}", "lab.fleet.children", "6", "greater than the maximum"),
        ("{count: 3, rate: 0}", "lab.fleet.rate", "0}", "less than or equal to the minimum"),
        ("{count: 3, gateway: 5500}", "lab.fleet.gateway", "5500", "expected string"),
        ("{count: 3, gateway: h}", "lab.fleet.gateway", "h}", "is not valid: ADDRESS:PORT"),
        ("{count: 3, gateway: 'gw:5500'}", "lab.fleet.gateway", "'gw", "not an IP address"),
        ("{count: 3, gateway: '1.2.3.4:70000'}", "lab.fleet.gateway", "'1.2", "out of range"),
        ("{count: 3, gateway: '::1:5500'}", "lab.fleet.gateway", "'::1", "IPv6 address in brackets"),
        ("{count: 3, gateway: '1.2.3.4:500'}", "lab.fleet.gateway", "'1.2", "port 500 cannot"),
        ("{count: 3, retry: {initial: 9, max: 2}}", "lab.fleet.retry", "{initial", "above max"),
        ("{count: 3, traffic: [{port: 1, proto: icmp}]}", "lab.fleet.traffic.0.proto", "icmp",
         "must be one of udp"),
        ("{count: 3, traffic: [{port: 1, size: 20}]}", "lab.fleet.traffic.0.size", "20",
         "less than the minimum of 28"),
        ("{count: 3, traffic: [{port: 1, to: 'fd00::1'}]}", "lab.fleet.traffic.0.to", "'fd00",
         "not an IPv4 address"),
        ("{count: 3, traffic: [{port: 1}, {port: 2}]}", "lab.fleet.traffic", "[{port",
         "2 flows for 1 child SA(s)"),
        ("{count: 3, children: 2, traffic: [{port: 1}, {port: 1}]}", "lab.fleet.traffic.1",
         "{port: 1}]", "same protocol and port as flow 1"),
        ("{count: 3, issuer: {root: 1, intermediate: 1}}", "lab.fleet.issuer", "{root",
         "the CAs sign 2 eNodeBs (root: 1, intermediate: 1), not count 3"),
        ("{count: 3, issuer: {root: 2, sub: 1}}", "lab.fleet.issuer.sub", "sub", "unknown key"),
        ("{count: 3, issuer: {root: -3}}", "lab.fleet.issuer.root", "-3", "less than the minimum"),
        ("{count: 3, issuer: {}}", "lab.fleet.issuer", "{}", "should be non-empty"),
        ("{count: 3, revoked: 4}", "lab.fleet.revoked", "4}", "4 revoked of 3 eNodeBs"),
        ("{count: 3, revoked: -1}", "lab.fleet.revoked", "-1", "less than the minimum of 0"),
        ("{count: 3, wait-for-gateway: 1}", "lab.fleet.wait-for-gateway", "1}", "expected boolean"),
    ],
)  # fmt: skip
def test_bad_fleet_settings_name_file_line_and_column(fleet, field, at, message):
    line = "  fleet: " + fleet
    p = only(MINIMAL + "lab:\n" + line + "\n" + BOOT)
    assert (p.field, p.line, p.column) == (field, 6, line.index(at) + 1), p
    assert message in p.message
    assert str(p).startswith(f"<string>:6:{p.column}: {field}: ")


def test_a_fleet_without_a_gateway_to_dial_is_refused():
    p = only(MINIMAL + "lab:\n  fleet:\n    count: 3\n")
    assert (p.field, p.line, p.column) == ("lab.fleet", 6, 3) and "no gateway" in p.message


def test_block_style_errors_point_at_the_value():
    found = problems(
        MINIMAL + "lab:\n  fleet:\n    count: 3\n    half-open: -1\n    children: 2\n    traffic:\n"
        "      - {proto: udp, port: 2123}\n      - {proto: udp, port: 70000}\n" + BOOT
    )
    assert [(p.line, p.column, p.field) for p in found] == [
        (8, 16, "lab.fleet.half-open"),
        (12, 28, "lab.fleet.traffic.1.port"),
    ]


def test_other_lab_sections_stay_open():
    topo = loads(MINIMAL + "lab:\n  ftp: {anything: [1, 2]}\n")
    assert topo.lab["ftp"]["anything"] == (1, 2)


def test_problems_never_raise_on_odd_input():
    assert fleet_settings.problems(None) == [((), "expected a mapping of fleet settings")]
    assert fleet_settings.problems({"count": 1, "traffic": [1, "x"], "retry": "soon"}, "")
    odd = {"gateway": ["x"], "children": True, "traffic": [{"port": [1]}, {"port": [1]}]}
    assert fleet_settings.problems(odd, BOOT)


def test_schema_and_code_problems_are_reported_together_once():
    found = problems(
        MINIMAL + "lab:\n  fleet:\n    count: 3\n    gateway: 127.0.0.1:500\n"
        "    issuer: sub\n    traffic: [{port: 1}, {port: 2, size: 9}]\n" + BOOT
    )
    assert [(p.line, p.field) for p in found] == [
        (8, "lab.fleet.gateway"),  # port 500 (the code)
        (9, "lab.fleet.issuer"),  # the schema
        (10, "lab.fleet.traffic"),  # 2 flows for 1 child (the code)
        (10, "lab.fleet.traffic.1.size"),  # the schema
    ]
    found = problems(MINIMAL + "lab:\n  fleet: {count: 3, gateway: 5}\n" + BOOT)
    assert [p.message for p in found] == ["expected string, got integer"]  # said once


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["count", "gateway", "children", "issuer", "dh-group", "key", "rate",
                         "half-open", "dpd-interval", "retry", "traffic", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.integers(-3, 70000) | st.floats() | st.text(max_size=8)
            | st.sampled_from(["udp", "127.0.0.1:5500", "[::1]:1", "root", "ec-p256"]),
            lambda inner: st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["port", "proto", "pps", "size", "to", "initial",
                                               "max"]), inner, max_size=4),
            max_leaves=12,
        ),
        max_size=6,
    )
)  # fmt: skip
def test_any_fleet_section_loads_or_is_a_topology_error(fleet):
    import yaml

    text = MINIMAL + yaml.safe_dump({"lab": {"fleet": fleet}}) + BOOT
    try:
        topo = loads(text)
    except TopologyError as exc:
        assert all(p.line >= 1 and p.column >= 1 for p in exc.problems)
        return
    FleetSettings.from_config(topo.lab["fleet"], topo.startup_config)  # accepted: it builds


def test_render_status_lines():
    lines = render_status(
        {"configured": 2, "gateway": "127.0.0.1:5500", "up": 1, "establishing": 1,
         "phases": {"waiting": 0, "queued": 0, "preparing": 0}, "children_up": 1,
         "children_wanted": 4, "attempts": 2, "failed": 0, "lost": 0, "re_established": 0,
         "tunnels_per_s": 1.0, "ramp_s": None,
         "flows": [{"child": 1, "flow": "udp/2123", "pps": 1.0, "packets_sent": 3,
                    "bytes_sent": 600, "packets_received": 0, "bytes_received": 0}]}
    )  # fmt: skip
    assert "2 eNodeBs to 127.0.0.1:5500: 1 up, 1 establishing" in lines[0]
    assert "child SAs 1/4" in lines[0]
    assert lines[2].strip() == "flow 1 udp/2123 1 pps: sent 3 (600 B), received 0 (0 B)"


# --- the RSA key pool ----------------------------------------------------------------------------


@functools.cache
def rsa_pem() -> bytes:
    return generate_rsa_pem(2048)


class Generator:
    def __init__(self):
        self.calls = 0

    def __call__(self, bits: int) -> bytes:
        assert bits == 2048
        self.calls += 1
        return rsa_pem()


def test_key_pool_generates_once_and_restarts_load_the_cache(tmp_path):
    gen = Generator()
    pool = KeyPool(tmp_path / "rsa", generate=gen)
    keys = list(pool.keys(3))
    assert [n for n, _ in keys] == [1, 2, 3] and gen.calls == 3
    assert all(k.key_size == 2048 for _, k in keys)
    assert stat.S_IMODE(os.stat(tmp_path / "rsa").st_mode) == 0o700
    for n in (1, 2, 3):
        assert stat.S_IMODE(pool.path(n).stat().st_mode) == 0o600
    again = KeyPool(tmp_path / "rsa", generate=gen)
    assert [n for n, _ in again.keys(3)] == [1, 2, 3]
    assert gen.calls == 3 and (again.loaded, again.generated) == (3, 0)
    # a bigger fleet generates only the new ones
    assert [n for n, _ in again.keys(5)] == [1, 2, 3, 4, 5] and gen.calls == 5


def test_key_pool_replaces_unreadable_or_wrong_keys(tmp_path):
    gen = Generator()
    pool = KeyPool(tmp_path / "rsa", generate=gen)
    list(pool.keys(3))
    pool.path(2).write_bytes(b"-----BEGIN PRIVATE KEY-----\ntorn")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pool.path(3).write_bytes(generate_ec_pem(ec_key))
    gen.calls = 0
    assert [n for n, _ in KeyPool(tmp_path / "rsa", generate=gen).keys(3)] == [1, 2, 3]
    assert gen.calls == 2


def test_key_pool_uses_an_executor_and_keeps_the_order(tmp_path):
    gen = Generator()
    with ThreadPoolExecutor(4) as executor:
        keys = list(KeyPool(tmp_path / "rsa", generate=gen).keys(6, executor))
    assert [n for n, _ in keys] == [1, 2, 3, 4, 5, 6] and gen.calls == 6


def test_key_pool_really_generates_rsa_2048(tmp_path):
    ((n, key),) = list(KeyPool(tmp_path / "rsa").keys(1))
    assert n == 1 and key.key_size == 2048


def generate_ec_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --- the lab CA issues from the root too -----------------------------------------------------------


def test_authority_issues_from_the_root_or_the_intermediate(tmp_path):
    ca = Authority(tmp_path / "ca", now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enb0001.lab.example")])
    from_root = ca.issue(name, key.public_key(), issuer="root")
    from_issuing = ca.issue(name, key.public_key())
    assert from_root.issuer == ca.root.subject and from_issuing.issuer == ca.issuing.subject
    from_root.verify_directly_issued_by(ca.root)
    from_issuing.verify_directly_issued_by(ca.issuing)
    assert ca.intermediates("root") == () and ca.intermediates() == (ca.issuing,)
    assert ca.status(from_root.serial_number) == "good"
    with pytest.raises(ValueError):
        ca.issue(name, key.public_key(), issuer="sub")


def test_credentials_from_each_ca_and_the_revoked_ones_revoked_at_once(tmp_path):
    from chassis.lab.fleet import credentials

    ca = Authority(tmp_path / "ca", now)
    s = FleetSettings(3, GW, issuers=(("root", 2), ("intermediate", 1)), revoked=1)
    made = [credentials(ca, s, i, ec.generate_private_key(ec.SECP256R1())) for i in (1, 2, 3)]
    assert [c.cert.issuer for c in made] == [ca.root.subject] * 2 + [ca.issuing.subject]
    assert [c.intermediates for c in made] == [(), (), (ca.issuing,)]
    made[0].cert.verify_directly_issued_by(ca.root)
    made[2].cert.verify_directly_issued_by(ca.issuing)
    assert made[2].cert.subject.rfc4514_string() == "CN=enb0003.lab.example,O=SeGW Lab"
    other = Authority(tmp_path / "ca", now)  # another process: the OCSP responder, say
    assert [other.status(c.cert.serial_number) for c in made] == ["good", "good", "revoked"]
    (entry,) = other.revoked("intermediate")
    assert entry.serial == made[2].cert.serial_number and entry.reason == "keyCompromise"


# --- the fleet against an in-memory gateway ----------------------------------------------------

GW = ("192.0.2.1", 5500)
FLEET = ("198.51.100.7", 40000)
FLOWS = (Flow("udp", 2123, 2.0, 200), Flow("udp", 2152, 10.0, 1200))


def v4(proto=0, lo=0, hi=65535, net="0.0.0.0/0") -> TrafficSelector:
    n = ipaddress.ip_network(net)
    return TrafficSelector(TsType.IPV4_ADDR_RANGE, proto, lo, hi, n[0], n[-1])


class Lab:
    """The fleet, a gateway Endpoint (two payloads: udp/2123 and udp/2152, a pool) and a
    wire with a latency between them; the gateway echoes ESP packets back (swapped)."""

    def __init__(self, tmp_path, settings: FleetSettings, *, latency=0.0, trusted=True,
                 group=DhGroup.ECP_256, probe_every=None, refuse=()):  # fmt: skip
        self.now, self.latency, self.seq = 0.0, latency, 0
        self.wire: list = []  # (at, seq, "gw" | "fleet", data)
        self.ca = Authority(tmp_path / "ca", now)
        gw_key = ec.generate_private_key(ec.SECP256R1())
        gw_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "segw.lab.example")])
        gw_cert = self.ca.issue(gw_name, gw_key.public_key(), [x509.DNSName("segw.lab.example")])
        anchors = (self.ca.root,) if trusted else (Authority(tmp_path / "other", now).root,)
        payloads = tuple(
            ChildPolicy(name, (ChildProposal(Encr.AES_GCM_16, 256),), (v4(17, port, port),),
                        (v4(),))
            for name, port in (("gtpc", 2123), ("gtpu", 2152))
        )  # fmt: skip
        self.gw = Endpoint(
            IkeConfig(
                Credentials(gw_cert, gw_key, (self.ca.issuing,)),
                anchors,
                proposals=(
                    IkeProposal(Encr.AES_GCM_16, 256, Prf.HMAC_SHA2_256, Integ.NONE, group),
                ),
                children=payloads,
                addresses=Pools([AddressPool("enb", "10.64.0.0/16")]),
                max_children=2,
            ),
            rand=os.urandom,
            wall_clock=now,
            local=GW,
        )
        self.gw_esp: dict[bytes, EspSa] = {}
        self.gw_received: list = []
        self.fleet = Fleet(settings, GW, FLEET, rand=os.urandom, wall_clock=now,
                           probe_every=probe_every)  # fmt: skip
        self.max_half_open = 0
        stranger = Authority(tmp_path / "stranger", now) if refuse else None
        for i in range(1, settings.count + 1):
            key = ec.generate_private_key(ec.SECP256R1())
            name = fleet_settings_fqdn(i)
            ca = stranger if i in refuse else self.ca  # refused: the gateway does not trust it
            cert = ca.issue(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(),
                [x509.DNSName(name)], issuer=settings.issuer_of(i),
            )  # fmt: skip
            creds = Credentials(cert, key, ca.intermediates(settings.issuer_of(i)))
            self.to_gw(self.fleet.add(i, ike_config(settings, creds, (self.ca.root,)), self.now))

    def to_gw(self, out):
        for data, dst in out:
            assert dst == GW
            self.seq += 1
            heapq.heappush(self.wire, (self.now + self.latency, self.seq, "gw", data))

    def to_fleet(self, data):
        self.seq += 1
        heapq.heappush(self.wire, (self.now + self.latency, self.seq, "fleet", data))

    def gateway(self, data):
        if data[:4] == b"\0\0\0\0":
            for o in self.gw.receive(data, FLEET, GW, self.now):
                if isinstance(o, Send):
                    self.to_fleet(o.data)
            return
        esp = self.gw_esp.get(data[:4])
        if esp is None:
            child = next(c for sa in self.gw.sas.values() for s, c in sa.children.items()
                         if s == data[:4])  # fmt: skip
            esp = self.gw_esp[data[:4]] = EspSa.from_child(child)
        inner = esp.open(data)
        assert inner is not None, esp.last_drop
        self.gw_received.append(parse_inner(inner))
        _, src, dst, _, sport, dport = parse_inner(inner)
        self.to_fleet(esp.seal(build_udp(dst, src, dport, sport, b"echo"), os.urandom))

    def run(self, until: float, step: float = 0.005):
        while self.now < until:
            self.now = round(self.now + step, 6)
            while self.wire and self.wire[0][0] <= self.now:
                _, _, to, data = heapq.heappop(self.wire)
                if to == "gw":
                    self.gateway(data)
                else:
                    self.to_gw(self.fleet.receive(data, GW, self.now))
            self.to_gw(self.fleet.handle_timer(self.now))
            for o in self.gw.handle_timer(self.now):
                if isinstance(o, Send):
                    self.to_fleet(o.data)
            self.max_half_open = max(self.max_half_open, self.fleet.phases[Phase.INIT])
        return self.fleet.status(self.now)


def fleet_settings_fqdn(i: int) -> str:
    from chassis.lab.fleet import fqdn

    return fqdn(i)


def fleet_conf(**kw) -> FleetSettings:
    base = dict(count=4, gateway=GW, children=2, rate=1000.0, half_open=32, dpd_interval=0,
                traffic=FLOWS)  # fmt: skip
    return FleetSettings(**{**base, **kw})


def test_policies_follow_the_flows():
    first, second, third = child_policies(fleet_conf(children=3))
    assert first.ts_remote == (v4(17, 2123, 2123),) and first.ts_local == (v4(17),)
    assert second.ts_remote == (v4(17, 2152, 2152),)
    assert third.ts_remote == third.ts_local == (v4(),)  # no flow: any traffic


def test_inner_packets():
    udp = inner_packet("10.64.0.1", "192.0.2.9", Flow("udp", 2152, 1, 300))
    assert len(udp) == 300 and parse_inner(udp)[3:] == (17, 2152, 2152)
    sctp = inner_packet("10.64.0.1", "192.0.2.9", Flow("sctp", 36412, 1, 100))
    assert len(sctp) == 100 and parse_inner(sctp)[3:] == (132, 36412, 36412)


def test_fleet_brings_every_tunnel_and_both_children_up_and_sends_traffic(tmp_path):
    lab = Lab(tmp_path, fleet_conf(issuer="root"))
    st = lab.run(0.5)
    assert (st["up"], st["children_up"], st["children_wanted"]) == (4, 8, 8), st
    assert st["failed"] == 0 and st["attempts"] == 4 and st["all_up_s"] is not None
    for enb in lab.fleet.enbs.values():
        sa = enb.established()
        assert ipaddress.ip_address(sa.virtual_ips[0]) in ipaddress.ip_network("10.64.0.0/16")
        assert sorted(c.policy for c in sa.children.values()) == ["child1", "child2"]
    gw_sas = list(lab.gw.sas.values())
    assert sorted(sa.peer_id for sa in gw_sas) == [f"enb000{i}.lab.example" for i in range(1, 5)]
    assert all({c.policy for c in sa.children.values()} == {"gtpc", "gtpu"} for sa in gw_sas)
    st = lab.run(2.5)
    gtpc, gtpu = st["flows"]
    # about 2.5 s at 2 and 10 pps for 4 eNodeBs, each starting at a random phase
    assert 4 * 4 <= gtpc["packets_sent"] <= 4 * 6, gtpc
    assert 4 * 23 <= gtpu["packets_sent"] <= 4 * 26, gtpu
    assert gtpu["bytes_sent"] == 1200 * gtpu["packets_sent"] and gtpu["refused"] == 0
    assert {(r[3], r[5]) for r in lab.gw_received} == {(17, 2123), (17, 2152)}
    assert {str(r[1]) for r in lab.gw_received} == {
        enb.established().virtual_ips[0] for enb in lab.fleet.enbs.values()
    }
    in_flight = 8  # an echo per eNodeB and flow may still be on the wire (latency 0: none)
    assert gtpc["packets_sent"] - in_flight <= gtpc["packets_received"] <= gtpc["packets_sent"]
    assert gtpc["bytes_received"] == 32 * gtpc["packets_received"]  # 20 + 8 + "echo"


def test_pacing_and_the_half_open_limit(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=6, rate=10.0, children=1, traffic=()), latency=0.0)
    lab.run(0.22)
    assert lab.fleet.counts["attempts"] == 3  # t = 0, 0.1, 0.2
    st = lab.run(0.6)
    assert st["up"] == 6 and st["attempts"] == 6

    lab = Lab(tmp_path / "2", fleet_conf(count=6, rate=1000.0, half_open=2, children=1,
                                       traffic=()), latency=0.05)  # fmt: skip
    lab.run(0.09)
    assert lab.fleet.counts["attempts"] == 2 and lab.fleet.phases[Phase.INIT] == 2
    st = lab.run(1.5)
    assert st["up"] == 6 and lab.max_half_open == 2


def test_a_lost_tunnel_is_re_established_after_a_back_off(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=2, retry_initial=1.0, retry_max=8.0))
    lab.run(0.3)
    enb = lab.fleet.enbs[1]
    spi = enb.established().spi_i
    (gw_sa,) = [sa for sa in lab.gw.sas.values() if sa.spi_i == spi]
    for o in lab.gw.delete(gw_sa.my_spi, lab.now):  # the gateway deletes eNodeB 1's SA
        if isinstance(o, Send):
            lab.to_fleet(o.data)
    st = lab.run(lab.now + 0.05)
    assert st["up"] == 1 and st["lost"] == 1 and st["losses"] == {"deleted": 1}
    assert enb.phase is Phase.WAITING and st["children_up"] == 2
    st = lab.run(lab.now + 1.6)  # back-off: 1 s x (0.5 .. 1.5)
    assert st["up"] == 2 and st["re_established"] == 1 and st["children_up"] == 4, st
    assert enb.established().spi_i != spi


def test_a_deleted_child_is_made_again(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=1, retry_initial=0.5))
    lab.run(0.3)
    sa = lab.fleet.enbs[1].established()
    (gw_sa,) = lab.gw.sas.values()
    gtpu = next(s for s, c in gw_sa.children.items() if c.policy == "gtpu")
    for o in lab.gw.delete_child(gw_sa.my_spi, gtpu, lab.now):
        if isinstance(o, Send):
            lab.to_fleet(o.data)
    st = lab.run(lab.now + 0.1)
    assert st["children_up"] == 1 and len(sa.children) == 1
    st = lab.run(lab.now + 1.0)
    assert st["children_up"] == 2 and {c.policy for c in sa.children.values()} == {
        "child1", "child2"}  # fmt: skip
    assert st["lost"] == 0


def test_authentication_failures_back_off_doubling(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=1, retry_initial=1.0, retry_max=4.0), trusted=False)
    st = lab.run(0.2)
    assert st["up"] == 0 and st["failed"] == 1 and st["failures"] == {"auth-failed": 1}
    st = lab.run(1.8)  # the first retry comes 0.5 .. 1.5 s later (the second 1 .. 3 s after)
    assert st["failed"] in (2, 3)
    assert lab.fleet.enbs[1].backoff == 4.0  # 1 -> 2 -> 4 (max)
    st = lab.run(12.0)
    # back-offs 1, 2, 4, 4 ... s, each times a jitter of 0.5 .. 1.5: by 12 s the attempts
    # started at 0 and at least by 1.5, 4.5, 10.5 s, at most by 0.5, 1.5, 3.5 ... 11.5 s
    assert 4 <= st["failed"] <= 8 and st["attempts"] == st["failed"]


def test_a_silent_gateway_is_given_up_and_tried_again(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=1, children=1, traffic=(), retry_initial=1.0))
    lab.gateway = lambda data: None  # nothing answers
    st = lab.run(10.0)
    assert st["establishing"] == 1 and st["failed"] == 0  # still retransmitting
    st = lab.run(15.6)  # 0.5 + 1 + 2 + 4 + 8 s: 4 retransmissions, then given up
    assert st["failed"] == 1 and st["failures"] == {"timeout": 1}
    assert st["counts"]["retransmissions"] == 4 and st["phases"]["waiting"] == 1
    st = lab.run(17.2)  # back-off 0.5 .. 1.5 s, then the next attempt
    assert st["attempts"] == 2 and st["establishing"] == 1


def test_nobody_dials_before_the_gateway_answers_a_probe(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=4, children=1, traffic=()), probe_every=0.25)
    answer, lab.gateway = lab.gateway, lambda data: None  # booting: nothing answers yet
    st = lab.run(1.0)
    assert st["attempts"] == 0 and st["phases"]["queued"] == 4 and not st["gateway_serving"]
    assert st["probes"] == 4 and st["counts"].get("retransmissions", 0) == 0  # every 0.25 s
    assert "waiting for the gateway to answer" in render_status(st)[0]
    lab.gateway = answer  # it serves: the next probe is answered, then everybody dials
    st = lab.run(1.3)
    assert st["gateway_serving"] and st["probes"] == 5 and 1.0 <= st["gateway_answered_s"] < 1.05
    assert (st["up"], st["attempts"], st["failed"], st["children_up"]) == (4, 4, 0, 4), st
    assert st["first_up_s"] is not None and st["all_up_s"] < 0.05  # timed from the first dial
    assert len(lab.gw.sas) == 4  # the probes left nothing behind at the gateway
    assert lab.run(2.0)["probes"] == 5  # no more probes


def test_revoked_enodebs_are_not_expected_up(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=3, revoked=1, retry_initial=1.0), refuse={3})
    st = lab.run(0.5)
    assert (st["up"], st["expected"], st["children_up"], st["children_wanted"]) == (2, 2, 4, 4)
    assert st["revoked"] == ["enb0003.lab.example"] and st["failures"] == {"auth-failed": 1}
    assert st["all_up_s"] is not None and st["children_all_up_s"] is not None
    assert st["gateway_serving"] and st["probes"] == 0  # dialled at once (no probe_every)
    assert "3 eNodeBs to 192.0.2.1:5500 (1 revoked): 2 up" in render_status(st)[0]


def test_shutdown_deletes_the_sas_at_the_gateway(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=3))
    lab.run(0.3)
    assert len(lab.gw.sas) == 3
    lab.to_gw(lab.fleet.shutdown(lab.now))
    lab.run(lab.now + 0.05)
    assert not lab.gw.sas


def test_reconnect_restarts_every_tunnel_without_a_back_off(tmp_path):
    lab = Lab(tmp_path, fleet_conf(count=3, rate=20.0))
    lab.run(0.3)
    before = {enb.established().spi_i for enb in lab.fleet.enbs.values()}
    lab.to_gw(lab.fleet.reconnect(lab.now))
    assert lab.fleet.all_up is None
    lab.run(lab.now + 0.01)
    assert len(lab.gw.sas) == 2  # one delete now, the others paced at 20/s with the starts
    st = lab.run(lab.now + 0.5)
    assert (st["up"], st["children_up"], st["lost"], st["failed"]) == (3, 6, 0, 0), st
    assert not before & {enb.established().spi_i for enb in lab.fleet.enbs.values()}
    assert len(lab.gw.sas) == 3 and st["all_up_s"] is not None


def test_admin_api_reports_and_takes_pause_reconnect_and_warp():
    import json
    import queue
    import threading
    from http.server import ThreadingHTTPServer
    from types import SimpleNamespace

    import httpx

    from chassis.lab.fleet import WallClock, make_handler

    proc = SimpleNamespace(snapshot={"up": 3}, clock=WallClock(), commands=queue.Queue())
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(proc))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/admin"
    try:
        assert httpx.get(url, trust_env=False).json() == {"up": 3}
        r = httpx.post(url, json={"warp": 86400, "pause": True}, trust_env=False)
        assert r.status_code == 200 and r.json()["warp"] == 86400
        assert proc.clock.now() > now() + dt.timedelta(hours=23)
        httpx.post(url, json={"reconnect": True}, trust_env=False).raise_for_status()
        assert [proc.commands.get_nowait() for _ in range(2)] == [("pause", True),
                                                                 ("reconnect", True)]  # fmt: skip
        for bad in ({"count": 3}, {"pause": "yes"}, [1]):
            assert httpx.post(url, content=json.dumps(bad), trust_env=False).status_code == 400
        assert httpx.get(url + "/x", trust_env=False).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("group", "dh"), [(14, DhGroup.MODP_2048), (20, DhGroup.ECP_384),
                                           (31, DhGroup.CURVE25519)])  # fmt: skip
def test_each_dh_group(tmp_path, group, dh):
    lab = Lab(tmp_path, fleet_conf(count=1, children=1, traffic=(), dh_group=group), group=dh)
    st = lab.run(0.2)
    assert st["up"] == 1 and st["children_up"] == 1
    assert lab.fleet.enbs[1].established().proposal.dh == dh
