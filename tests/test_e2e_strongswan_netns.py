"""Real CHILD_SAs with a real strongSwan: each peer in a network namespace of its own.

This kernel has no ESP, so charon installs CHILD_SAs only with kernel-libipsec (ESP in user
space, a TUN device and routes to the remote TS), which it may do only in a namespace of its
own (INTEROP.md). tests/netns.py makes two namespaces joined by a veth pair; the chassis
(backplane, MIO, DPCs: `chassis up --netns`) runs in one and binds its wsg-service to its end
of the veth, charon runs in the other as the eNodeB. The test talks to both over unix
sockets (the chassis's ipc:// files, charon's vici), which work across namespaces.

Addresses (10.A.B.0/24 of the pair): the veth is .1 (gateway) and .2 (eNodeB). Each
child-SA payload i of the template pairs one eNodeB address 10.A.B.(64+i) (a /32 on charon's
loopback: libipsec needs the local TS to hold a local address) with a /28 of the core,
10.A.B.(128+16(i-1)), which does not cover the gateway's IKE address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import wait_until, write_topology
from netns import pair, pids_in
from strongswan import SWANCTL, Charon
from test_e2e_strongswan import _cert, pem

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

# Lenient liveness (2 s): these tests share 2 cores with others, and are not about card failure.
TOPO = """\
name: swan
platform: asr5500
timers:
  heartbeat-interval-ms: 200
  heartbeat-liveness: 10
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
"""
GW_PORT, ENB_PORT = 5500, 5600  # the namespaces are ours: fixed ports cannot clash
CHILDREN = ("c1", "c2", "c3")


@pytest.fixture
def link():
    """Request it before chassis_factory: fixtures tear down in reverse, so the chassis and
    charon are stopped before the namespaces go."""
    with pair() as made:
        yield made


# ---------------------------------------------------------------------- charon's view
def charon_sas(charon: Charon) -> dict:
    """`swanctl --list-sas`: {"ike": {name, state, spi_i, spi_r}, "ikes": [...], "children":
    {name: [{state, in, out, local, remote}]}}; "ike" is the ESTABLISHED IKE SA (during a
    rekey the old one is listed too, in "ikes"), children are those of every IKE SA.
    Empty dict: no IKE SA."""
    out = charon.swanctl("--list-sas").stdout
    ikes: list[dict] = []
    children: dict[str, list[dict]] = {}
    child: dict | None = None
    for line in out.splitlines():
        if m := re.match(r"^(\S+): #\d+, (\w+), IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r", line):
            ikes.append({"name": m[1], "state": m[2], "spi_i": m[3], "spi_r": m[4]})
        elif m := re.match(r"^  (\S+): #\d+, reqid \d+, (\w+),", line):
            child = {"state": m[2]}
            children.setdefault(m[1], []).append(child)
        elif child is not None and (m := re.match(r"^    (in|out) +([0-9a-f]{8}),", line)):
            child[m[1]] = m[2]
        elif child is not None and (m := re.match(r"^    (local|remote) +(\S+)", line)):
            child[m[1]] = m[2]
    if not ikes:
        return {}
    ike = next((i for i in reversed(ikes) if i["state"] == "ESTABLISHED"), ikes[-1])
    return {"ike": ike, "ikes": ikes, "children": children}


def installed(charon: Charon) -> dict[str, list[dict]]:
    sas = charon_sas(charon)
    return {
        name: [c for c in cs if c["state"] == "INSTALLED"]
        for name, cs in sas.get("children", {}).items()
    }


def installed_names(charon: Charon) -> list[str]:
    return sorted(n for n, cs in installed(charon).items() for _ in cs)


# ---------------------------------------------------------------------- the gateway's view
def counters(ch) -> dict[int, dict]:
    rows = ch.exec("show card table")[0].data["cards"]
    return {r["slot"]: r.get("counters", {}) for r in rows if r["type"] == "dpc"}


def gw_sas(ch) -> list[dict]:
    return ch.exec("show crypto ikev2-ikesa security-associations")[0].data["sas"]


def card_log(ch, slot: int) -> str:
    return (ch.run.logs / f"dpc-{slot}.log").read_text()


def child_lines(ch, slot: int) -> list[str]:
    return [line for line in card_log(ch, slot).splitlines() if "CHILD_SA up with" in line]


# ---------------------------------------------------------------------- setup
class Setup:
    """A chassis in link.gw serving one template with len(payloads) child-SA payloads, and a
    charon in link.peer with one child per payload (none started)."""

    def __init__(
        self,
        link,
        chassis_factory,
        tmp_path,
        *,
        payloads=CHILDREN,
        lifetimes=None,
        ike_lifetime=None,
        charon_children=CHILDREN,
        cp=False,
        hash_url=False,
        echo=False,
    ) -> None:
        """`lifetimes`: {payload: seconds} with `rekey`; `ike_lifetime`: with `ikev2-ikesa
        rekey`; `cp`: the first payload's TSi is an IP pool of the service and charon asks for
        a virtual IP in it; `hash_url`: both sides send their certificate as Hash and URL,
        served over HTTP from the peer's namespace (http://10.A.B.2:8080/)."""
        lifetimes = lifetimes or {}
        self.served = tmp_path / "served"  # what the HTTP server in the peer namespace serves
        self.link = link
        ca_key, gw_key, enb_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        ca = _cert("Lab Root", ca_key, "Lab Root", ca_key, ca=True)
        gw = _cert("segw.example.net", gw_key, "Lab Root", ca_key, san="segw.example.net")
        enb = _cert("enb1.example.net", enb_key, "Lab Root", ca_key, san="enb1.example.net")

        started = time.monotonic()
        self.ch = ch = chassis_factory(write_topology(tmp_path, TOPO), netns=link.gw)
        self.up_s = time.monotonic() - started
        for name, data in {"ca.crt": pem(ca), "gw.crt": pem(gw), "gw.key": pem(gw_key)}.items():
            (ch.run.flash / name).write_bytes(data)
        lines = [
            "configure",
            "ca-certificate name lab-root pem url /flash/ca.crt",
            "certificate name segw pem url /flash/gw.crt private-key pem url /flash/gw.key"
            + (f" cert-hash-url {self.base_url()}segw.der" if hash_url else ""),
            "context segw",
            *([f"ip pool cp {self.pool()[0]} 255.255.255.224"] if cp else []),
            "ipsec transform-set esp-gcm",
            "encryption aes-gcm-256",
            "exit",
            "ikev2-ikesa transform-set ike-gcm",
            "encryption aes-gcm-256",
            "group 19",
            "prf sha2-256",
            *([f"lifetime {ike_lifetime}"] if ike_lifetime else []),
            "exit",
            "crypto template tmpl ikev2-dynamic",
            "authentication local certificate",
            "authentication remote certificate",
            "certificate name segw",
            "ca-certificate list ca-cert-name lab-root",
            "ikev2-ikesa transform-set list ike-gcm",
            *(["ikev2-ikesa rekey"] if ike_lifetime else []),
            *(["allow-cert-enc cert-hash-url"] if hash_url else []),
            *(["ipsec sink echo"] if echo else []),
            f"max-childsa {len(payloads)}",
        ]
        for i, name in enumerate(payloads, 1):
            lo, hi = self.core(i)
            first, last = self.pool() if cp and i == 1 else (self.enb_ts(i), self.enb_ts(i))
            lines += [
                f"payload {name} match childsa match ipv4",
                "ipsec transform-set list esp-gcm",
                f"tsi start-address {first} end-address {last}",
                f"tsr start-address {lo} end-address {hi}",
                *([f"lifetime {lifetimes[name]}", "rekey"] if name in lifetimes else []),
                "exit",
            ]
        lines += [
            "exit",
            "wsg-service svc",
            *(["ip address pool name cp"] if cp else []),
            f"bind address {link.gw_addr} port {GW_PORT} crypto-template tmpl",
            "end",
        ]
        res = ch.exec(*lines)
        assert not any(r.error for r in res), [r.output for r in res if r.error]

        self.charon = charon = Charon(
            tmp_path / "charon", ENB_PORT, netns=link.peer,
            plugins="curl" if hash_url else "",
            settings="  hash_and_url = yes\n" if hash_url else "",
        )  # fmt: skip
        self.http = None
        if hash_url:  # our certificate at its URL, charon's where cert_uri_base points
            self.served.mkdir()
            (self.served / "segw.der").write_bytes(der(gw))
            (self.served / hashlib.sha1(der(enb)).hexdigest()).write_bytes(der(enb))
            self.http = subprocess.Popen(
                link.exec_argv(link.peer, sys.executable, "-m", "http.server", "8080", "--bind",
                               link.peer_addr, "--directory", str(self.served)),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        d = charon.swanctl_dir
        (d / "x509ca" / "ca.pem").write_bytes(pem(ca))
        (d / "x509" / "enb.pem").write_bytes(pem(enb))
        (d / "private" / "enb.pem").write_bytes(pem(enb_key))
        children = ""
        for i, name in enumerate(charon_children, 1):
            lo, _ = self.core(i)
            if cp and i == 1:
                local_ts = "dynamic"  # the virtual IP the gateway assigns
            else:
                link.add_address(link.peer, self.enb_ts(i))
                local_ts = f"{self.enb_ts(i)}/32"
            children += f"""
      {name} {{
        local_ts = {local_ts}
        remote_ts = {lo}/28
        esp_proposals = aes256gcm16
      }}"""
        vips = "\n    vips = 0.0.0.0" if cp else ""
        authorities = (
            f"\nauthorities {{\n  lab {{\n    cacert = ca.pem\n"
            f"    cert_uri_base = {self.base_url()}\n  }}\n}}"
            if hash_url
            else ""
        )
        (d / "swanctl.conf").write_text(f"""
connections {{
  segw {{
    version = 2
    local_addrs = {link.peer_addr}
    remote_addrs = {link.gw_addr}
    local_port = {ENB_PORT}
    remote_port = {GW_PORT}
    proposals = aes256gcm16-prfsha256-ecp256
    mobike = no{vips}
    local {{
      auth = pubkey
      certs = enb.pem
      id = enb1.example.net
    }}
    remote {{
      auth = pubkey
      id = segw.example.net
    }}
    children {{{children}
    }}
  }}
}}{authorities}
""")
        charon.start()
        loaded = charon.swanctl("--load-all")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        # The serving DPCs are ready once the template is: wait for the NPU to listen.
        wait_until(lambda: ch.status().get("npu") is not None, 5, what="the NPU")
        time.sleep(0.5)

    def pool(self) -> tuple[str, str]:
        """The CP pool: a /27 of the pair's /24 (.96-.127), away from everything else."""
        return self.link.addr(96), self.link.addr(127)

    def base_url(self) -> str:
        return f"http://{self.link.peer_addr}:8080/"

    def enb_ts(self, i: int) -> str:
        return self.link.addr(64 + i)

    def core(self, i: int) -> tuple[str, str]:
        base = 128 + 16 * (i - 1)
        return self.link.addr(base), self.link.addr(base + 15)

    def initiate(self, child: str) -> subprocess.CompletedProcess:
        done = self.charon.swanctl("--initiate", "--child", child, "--timeout", "15", timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr + self.charon.log()[-3000:]
        return done

    def serving(self) -> int:
        """The DPC that holds the IKE SA (the NPU steers everything of it there)."""
        [row] = wait_until(
            lambda: [r for r in gw_sas(self.ch) if r["state"] == "ESTABLISHED"],
            10,
            what="the gateway's IKE SA",
        )
        return row["card"]

    def stop(self) -> None:
        self.charon.stop()
        if self.http is not None:  # ours, by PID
            self.http.terminate()
            self.http.wait(5)


@pytest.fixture
def setup(link, chassis_factory, tmp_path):
    made: list[Setup] = []

    def factory(**kw) -> Setup:
        made.append(Setup(link, chassis_factory, tmp_path, **kw))
        return made[-1]

    yield factory
    for s in made:
        s.stop()


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def dump(s: Setup) -> str:
    logs = [f"--- charon.log\n{s.charon.log()[-6000:]}"]
    for slot in (1, 2):
        path = s.ch.run.logs / f"dpc-{slot}.log"
        if path.exists():
            logs.append(f"--- dpc-{slot}.log\n{path.read_text()[-3000:]}")
    return "\n".join(logs)


# ---------------------------------------------------------------------- tests
def test_chassis_up_netns_runs_every_process_in_the_namespace(link, tmp_path):
    """`chassis up --netns`: backplane and cards in the namespace, reached from outside over
    ipc://; `chassis down` stops them all by PID; a missing namespace is refused."""

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "chassis.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    def netns_of(pid: int) -> str:
        return os.readlink(f"/proc/{pid}/ns/net")

    topo, run = write_topology(tmp_path, TOPO), tmp_path / "run"
    missing = cli("up", topo, "--run-dir", tmp_path / "never", "--netns", f"{link.gw}-nope")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    up = cli("up", topo, "--run-dir", run, "--detach", "--netns", link.gw)
    try:
        assert up.returncode == 0, up.stderr
        assert f"netns {link.gw}" in up.stdout
        status = json.loads(cli("status", "--run-dir", run, "--json").stdout)
        assert status["netns"] == link.gw
        inside = set(pids_in(link.gw))
        pids = [status["backplane_pid"], *(s["pid"] for s in status["slots"])]
        assert set(pids) <= inside, (pids, inside)  # nothing of it runs in ours
        assert netns_of(status["backplane_pid"]) != netns_of(os.getpid())
        shown = cli("exec", "--run-dir", run, "show card table")
        assert shown.returncode == 0 and "Active" in shown.stdout
    finally:
        down = cli("down", "--run-dir", run)
    assert down.returncode == 0, down.stderr
    assert "leftover" not in down.stdout  # the backplane stopped its cards itself
    assert pids_in(link.gw) == []


def test_charon_creates_three_children(setup):
    """The first CHILD_SA in IKE_AUTH, two more by charon's CREATE_CHILD_SA, each matched to
    its payload; all installed in charon's libipsec and up at the card."""
    s = setup()
    try:
        started = time.monotonic()
        s.initiate("c1")
        # Both follow at once: the gateway creates uncovered payloads 1 s after IKE_AUTH.
        procs = [
            subprocess.Popen(
                [SWANCTL, "--initiate", "--child", c, "--timeout", "15"],
                env=s.charon.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for c in ("c2", "c3")
        ]
        for p in procs:
            out, _ = p.communicate(timeout=30)
            assert p.returncode == 0, out
        wait_until(
            lambda: installed_names(s.charon) == list(CHILDREN),
            10,
            what="three CHILD_SAs installed at charon",
        )
        took = time.monotonic() - started
        slot = s.serving()
        [row] = gw_sas(s.ch)
        assert row["children"] == 3 and row["peer_id"] == "enb1.example.net"
        wait_until(
            lambda: counters(s.ch)[slot].get("ike_childestablished") == 3,
            5,
            what="three children counted at the card",
        )
        c = counters(s.ch)[slot]
        assert not c.get("ike_childrefused") and not c.get("ike_childdeleted"), c
        up = child_lines(s.ch, slot)
        assert len(up) == 3, up
        sas = installed(s.charon)
        for i, name in enumerate(CHILDREN, 1):
            [child] = sas[name]
            lo, _ = s.core(i)
            assert child["local"] == f"{s.enb_ts(i)}/32" and child["remote"] == f"{lo}/28"
            # charon's outbound SPI is the card's inbound one, with the card's slot on top
            [line] = [u for u in up if f"our SPI {child['out']}" in u]
            assert f"their SPI {child['in']}" in line and int(child["out"][:2], 16) == slot
            assert f"{s.enb_ts(i)} === {lo}/28" in line
        clog = s.charon.log()
        # c2 and c3 were charon's own requests, not the gateway's (responder-triggered) ones
        assert (
            len(re.findall(r"generating CREATE_CHILD_SA request \d+ \[ SA No TSi TSr \]", clog))
            == 2
        ), clog
        assert "parsed CREATE_CHILD_SA request" not in clog
        assert "unable to add SAD entry" not in clog
        print(
            f"three CHILD_SAs installed {took:.2f} s after the first initiate "
            f"(chassis up {s.up_s:.2f} s)"
        )
    except AssertionError:
        print(dump(s))
        raise


def test_gateway_creates_the_children_charon_did_not_ask_for(setup):
    """charon starts c1 only; c2 and c3 are configured (it accepts them as responder): the
    gateway creates them itself 1 s after IKE_AUTH (responder-triggered MCSA)."""
    s = setup()
    try:
        started = time.monotonic()
        s.initiate("c1")
        wait_until(
            lambda: installed_names(s.charon) == list(CHILDREN),
            10,
            what="c2 and c3 created by the gateway, installed at charon",
        )
        took = time.monotonic() - started
        slot = s.serving()
        # the card has a child it created once the answer is in: one datagram after charon
        wait_until(lambda: gw_sas(s.ch)[0]["children"] == 3, 5, what="three children at the card")
        clog = s.charon.log()
        assert len(re.findall(r"parsed CREATE_CHILD_SA request \d+ \[", clog)) == 2, clog
        assert "unable to add SAD entry" not in clog
        sas = installed(s.charon)
        up = child_lines(s.ch, slot)
        assert len(up) == 3, up
        for i, name in enumerate(CHILDREN, 1):
            [child] = sas[name]
            lo, _ = s.core(i)
            assert child["local"] == f"{s.enb_ts(i)}/32" and child["remote"] == f"{lo}/28"
            assert any(f"our SPI {child['out']}, their SPI {child['in']}" in u for u in up), up
        print(f"gateway-created children installed {took:.2f} s after the initiate")
    except AssertionError:
        print(dump(s))
        raise


def test_charon_rekeys_a_child_and_the_ike_sa(setup):
    """`swanctl --rekey --child` and `--rekey --ike`: new SPIs at both ends, nothing lost."""
    s = setup(payloads=CHILDREN[:2], charon_children=CHILDREN[:2])
    try:
        s.initiate("c1")
        wait_until(
            lambda: installed_names(s.charon) == ["c1", "c2"], 10, what="c1 and c2 installed"
        )
        slot = s.serving()
        before = charon_sas(s.charon)
        [old_c1] = before["children"]["c1"]

        started = time.monotonic()
        done = s.charon.swanctl("--rekey", "--child", "c1")
        assert done.returncode == 0, done.stdout + done.stderr

        def c1_rekeyed():
            sas = installed(s.charon)
            return len(sas.get("c1", [])) == 1 and sas["c1"][0]["in"] != old_c1["in"] and sas

        sas = wait_until(c1_rekeyed, 10, what="c1 rekeyed at charon")
        child_took = time.monotonic() - started
        [new_c1] = sas["c1"]
        assert new_c1["out"] != old_c1["out"] and int(new_c1["out"][:2], 16) == slot
        assert sas["c2"] == before["children"]["c2"]  # untouched
        wait_until(lambda: gw_sas(s.ch)[0]["children"] == 2, 5, what="two children at the card")
        assert any(
            f"our SPI {new_c1['out']}, their SPI {new_c1['in']}" in u
            for u in child_lines(s.ch, slot)
        )
        clog = s.charon.log()
        assert re.search(r"generating CREATE_CHILD_SA request \d+ \[ N\(REKEY_SA\) SA No", clog)
        assert f"closing CHILD_SA c1{{1}} with SPIs {old_c1['in']}_i" in clog  # the old one

        started = time.monotonic()
        done = s.charon.swanctl("--rekey", "--ike", "segw")
        assert done.returncode == 0, done.stdout + done.stderr

        def ike_rekeyed():
            sas = charon_sas(s.charon)
            return (
                sas
                and sas["ike"]["state"] == "ESTABLISHED"
                and sas["ike"]["spi_i"] != before["ike"]["spi_i"]
                and sas
            )

        after = wait_until(ike_rekeyed, 10, what="the IKE SA rekeyed at charon")
        ike_took = time.monotonic() - started
        assert after["ike"]["spi_r"] != before["ike"]["spi_r"]
        assert int(after["ike"]["spi_r"][:2], 16) == slot  # the new SPIr is the card's too
        assert installed_names(s.charon) == ["c1", "c2"]  # the children moved along
        rows = wait_until(
            lambda: [r for r in gw_sas(s.ch) if r["spi_i"] == after["ike"]["spi_i"]],
            5,
            what="the new IKE SA at the card",
        )
        wait_until(lambda: len(gw_sas(s.ch)) == 1, 5, what="the old IKE SA gone at the card")
        assert rows[0]["spi_r"] == after["ike"]["spi_r"] and rows[0]["children"] == 2
        assert rows[0]["state"] == "ESTABLISHED"
        clog = s.charon.log()
        assert re.search(r"generating CREATE_CHILD_SA request \d+ \[ SA No KE \]", clog)
        assert re.search(r"IKE_SA segw\[\d+\] rekeyed between", clog)
        wait_until(
            lambda: counters(s.ch)[slot].get("ike_ikerekeyed") == 1,
            5,
            what="the IKE rekey counted at the card",
        )
        # the new IKE SA works: a child rekey runs over it
        assert s.charon.swanctl("--rekey", "--child", "c2").returncode == 0
        wait_until(
            lambda: (
                installed(s.charon).get("c2", [{}])[0].get("in")
                != before["children"]["c2"][0]["in"]
            ),
            10,
            what="c2 rekeyed over the new IKE SA",
        )
        print(f"charon's child rekey {child_took:.2f} s, IKE rekey {ike_took:.2f} s")
    except AssertionError:
        print(dump(s))
        raise


# The IKE SA and c1 (both made in IKE_AUTH) fall due in the same tick at 54 s, c2 (made 1 s
# after IKE_AUTH) at 55 s, on the new IKE SA: c1's rekey follows the children to it.
LIFETIMES = {"c1": 60, "c2": 60}


def test_gateway_rekeys_children_and_the_ike_sa(setup):
    """Short lifetimes (60 s is the CLI's minimum) with `rekey` and `ikev2-ikesa rekey`: at 90%
    of each the gateway rekeys the IKE SA and both children by itself; charon follows, and
    the IKE SA and both CHILD_SAs stay up with new SPIs."""
    s = setup(
        payloads=CHILDREN[:2], charon_children=CHILDREN[:2], lifetimes=LIFETIMES, ike_lifetime=60
    )
    try:
        started = time.monotonic()
        s.initiate("c1")
        wait_until(
            lambda: installed_names(s.charon) == ["c1", "c2"], 10, what="c1 and c2 installed"
        )
        slot = s.serving()
        before = charon_sas(s.charon)

        def all_rekeyed():
            sas = charon_sas(s.charon)
            if not sas or sas["ike"]["spi_i"] == before["ike"]["spi_i"]:
                return False
            now = installed(s.charon)
            return (
                all(
                    len(now.get(n, [])) == 1 and now[n][0]["in"] != before["children"][n][0]["in"]
                    for n in ("c1", "c2")
                )
                and sas
            )

        last = 0.9 * max([60, *LIFETIMES.values()])
        after = wait_until(all_rekeyed, last + 15, interval=0.5, what="the gateway's rekeys")
        took = time.monotonic() - started
        clog = s.charon.log()
        assert len(re.findall(r"parsed CREATE_CHILD_SA request \d+ \[ SA No KE \]", clog)) == 1
        assert re.search(r"IKE_SA segw\[\d+\] rekeyed between", clog)
        rekeys = re.findall(
            r"parsed CREATE_CHILD_SA request \d+ \[ N\(REKEY_SA\) SA No TSi TSr", clog
        )
        assert len(rekeys) == 2, clog
        assert "unable to add SAD entry" not in clog
        assert after["ike"]["state"] == "ESTABLISHED"
        # we initiated the rekey, so we are the new IKE SA's initiator: SPIi is ours (2.18)
        assert int(after["ike"]["spi_i"][:2], 16) == slot
        # The card settles one datagram after charon (it deletes an old SA on the answer to
        # its delete) and reports counters each heartbeat: wait for both.
        [row] = wait_until(lambda: len(rows := gw_sas(s.ch)) == 1 and rows, 5,
                           what="the old IKE SA gone at the card")  # fmt: skip
        assert row["spi_i"] == after["ike"]["spi_i"] and row["spi_r"] == after["ike"]["spi_r"]
        assert row["children"] == 2 and row["state"] == "ESTABLISHED"
        c = wait_until(lambda: (c := counters(s.ch)[slot]).get("ike_childdeleted") == 2 and c,
                       5, what="the old children counted deleted at the card")  # fmt: skip
        assert c.get("ike_ikerekeyed") == 1 and c.get("ike_childestablished") == 4, c
        now = installed(s.charon)
        up = child_lines(s.ch, slot)
        for name in ("c1", "c2"):
            [child] = now[name]
            assert any(f"our SPI {child['out']}, their SPI {child['in']}" in u for u in up), up
        print(f"gateway rekeys (IKE, c1, c2) done {took:.2f} s after the initiate")
    except AssertionError:
        print(dump(s))
        raise


def test_charon_gets_its_inner_address_from_the_pool(setup):
    """CP: charon asks for a virtual IP (vips = 0.0.0.0); the card gives it one from the
    service's pool, narrows the child's TSi to it, and charon installs it and the child."""
    s = setup(payloads=CHILDREN[:1], charon_children=CHILDREN[:1], cp=True)
    try:
        s.initiate("c1")
        wait_until(lambda: installed_names(s.charon) == ["c1"], 10, what="c1 installed")
        (child,) = installed(s.charon)["c1"]
        vip = child["local"].split("/")[0]
        first, last = (ipaddress.ip_address(a) for a in s.pool())
        assert first < ipaddress.ip_address(vip) < last, child  # not the net or broadcast
        assert f"installing new virtual IP {vip}" in s.charon.log()
        (row,) = [r for r in gw_sas(s.ch) if r["state"] == "ESTABLISHED"]
        assert row["address"] == vip
        # the address goes back to the pool with the IKE SA
        done = s.charon.swanctl("--terminate", "--ike", "segw", "--timeout", "10", timeout=30)
        assert done.returncode == 0, done.stdout
        wait_until(lambda: not gw_sas(s.ch), 5, what="the IKE SA gone at the card")
    except AssertionError:
        print(dump(s))
        raise


def test_hash_and_url_both_ways(setup):
    """`allow-cert-enc cert-hash-url`: charon (hash_and_url = yes) sends its certificate as
    SHA-1 + URL and the card fetches it over HTTP; the gateway sends ours the same way and
    charon fetches it (curl)."""
    s = setup(payloads=CHILDREN[:1], charon_children=CHILDREN[:1], hash_url=True)
    try:
        s.initiate("c1")
        wait_until(lambda: installed_names(s.charon) == ["c1"], 10, what="c1 installed")
        log = s.charon.log()
        assert "sending hash-and-url" in log.lower() or "hash and url" in log.lower(), log[-3000:]
        assert f"{s.base_url()}segw.der" in log  # charon fetched ours
        assert "received end entity cert" not in log  # it came by URL, not in a CERT payload
        (row,) = [r for r in gw_sas(s.ch) if r["state"] == "ESTABLISHED"]
        assert row["peer_id"] == "enb1.example.net"
    except AssertionError:
        print(dump(s))
        raise


def charon_packets(listing: str) -> dict[str, dict[str, int]]:
    """Per child of `swanctl --list-sas`: packets in and out ("in  SPI, B bytes, N packets")."""
    out: dict[str, dict[str, int]] = {}
    child = None
    for line in listing.splitlines():
        if m := re.match(r"^  (\S+): #\d+, reqid", line):
            child = out.setdefault(m[1], {"in": 0, "out": 0})
        elif child is not None and (
            m := re.match(r"^    (in|out) +[0-9a-f]{8}, +\d+ bytes, +(\d+) packets", line)
        ):
            child[m[1]] += int(m[2])
    return out


ECHO = """
import socket, sys, time
src, dst, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, port))
s.settimeout(0.5)
got, deadline = 0, time.monotonic() + 10
for i in range(n):
    s.sendto(b"flow %d" % i, (dst, port))
while got < n and time.monotonic() < deadline:
    try:
        data, peer = s.recvfrom(2048)
    except TimeoutError:
        s.sendto(b"again", (dst, port))
        continue
    got += peer[0] == dst and data.startswith(b"flow")
print(got)
"""


def test_udp_through_each_child_reaches_it_and_comes_back(setup):
    """Two children; UDP from charon's side of each (libipsec ESP) reaches that child at the
    card, which echoes it (`ipsec sink echo`) back through the same child; the packet and
    byte counters rise on both sides, per child."""
    s = setup(payloads=CHILDREN[:2], charon_children=CHILDREN[:2], echo=True)
    try:
        s.initiate("c1")
        s.initiate("c2")
        wait_until(lambda: installed_names(s.charon) == ["c1", "c2"], 10, what="c1, c2")
        sent = {"c1": 5, "c2": 8}
        for i, name in enumerate(CHILDREN[:2], 1):
            lo, _ = s.core(i)
            target = str(ipaddress.ip_address(lo) + 5)  # inside the child's /28
            done = subprocess.run(
                s.link.exec_argv(s.link.peer, sys.executable, "-c", ECHO, s.enb_ts(i), target,
                                 str(2152 + i), str(sent[name])),
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert done.stdout.strip() == str(sent[name]), (done.stdout, done.stderr)
        rows = {r["payload"]: r for r in
                s.ch.exec("show crypto ipsec security-associations")[0].data["sas"]}  # fmt: skip
        for name, n in sent.items():
            assert rows[name]["packets_in"] >= n and rows[name]["packets_out"] >= n, rows[name]
            assert rows[name]["delivered"] == rows[name]["packets_in"]
            assert rows[name]["tsr"].startswith(s.core(CHILDREN.index(name) + 1)[0])
        packets = charon_packets(s.charon.swanctl("--list-sas").stdout)
        for name, n in sent.items():  # charon: what it sent out, and the echoes it got back
            assert packets[name]["out"] >= n and packets[name]["in"] >= n, packets
    except AssertionError:
        print(dump(s))
        raise
