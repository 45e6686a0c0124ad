"""The fault vocabulary (chassis/faults.py) and the mechanisms under it, without a chassis:
parsing of the drill and CLI forms, the IPC channel filter (chassis/ipc/sockets.py IpcFault
on a real CURVE socket pair), the NPU's UDP rules, and how the card manager tells an IPC
partition (alive on the backplane: unreachable) from a hang (failed)."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
from click.testing import CliRunner

from cards.spi import make_spi
from chassis import cli
from chassis.clock import ManualClock
from chassis.faults import DEFAULT_SEED, Fault, FaultError, parse_peer
from chassis.ipc import keys as keyring
from chassis.ipc.messages import Update
from chassis.ipc.sockets import IpcFault, Node
from chassis.npu import UdpFaults, UdpRule
from chassis.npu_io import Npu
from supervisor.cards import CardManager

# --- parsing ---------------------------------------------------------------------------

GOOD = [
    ({"fault": "kill", "target": "slot-2"}, "kill slot-2"),
    ({"fault": "kill", "target": 2}, "kill slot-2"),
    ({"fault": "hang", "target": "3"}, "hang slot-3"),
    ({"fault": "resume", "target": "SLOT-3"}, "resume slot-3"),
    ({"fault": "hang", "target": "supervisor"}, "hang supervisor"),
    ({"fault": "kill", "target": "lab:ca"}, "kill lab:ca"),
    ({"fault": "ipc", "target": "slot-2", "mode": "partition"}, "ipc partition slot-2"),
    ({"fault": "ipc", "target": 1, "mode": "drop", "rate": 0.3, "seed": 7},
     "ipc drop slot-1 rate 0.3 seed 7"),
    ({"fault": "ipc", "target": 1, "mode": "delay", "ms": 50}, "ipc delay slot-1 50 ms"),
    ({"fault": "ipc", "target": 1, "mode": "duplicate", "rate": 1}, "ipc duplicate slot-1"),
    ({"fault": "ipc", "target": 1, "mode": "heal"}, "ipc heal slot-1"),
    ({"fault": "udp", "target": 1, "mode": "drop"}, "udp drop slot-1"),
    ({"fault": "udp", "mode": "delay", "ms": 200, "peer": "127.0.0.1:500"},
     "udp delay peer 127.0.0.1:500 200 ms"),
    ({"fault": "udp", "mode": "heal"}, "udp heal"),
    ({"fault": "lab", "target": "lab:ocsp", "set": {"down": True}}, "lab lab:ocsp down=true"),
    ({"fault": "lab", "target": "crl", "set": {"stale": True, "slow": 2.5}},
     "lab lab:crl stale=true slow=2.5"),
    ({"fault": "warp", "days": 30}, "warp +30 days"),
    ({"fault": "warp", "days": 1, "hours": 12}, "warp +1 day 12 hours"),
    ({"fault": "warp", "seconds": 61}, "warp +61 s"),
    ({"fault": "warp", "days": 2, "seconds": 7200}, "warp +2 days 2 hours"),
    ({"fault": "clear"}, "clear"),
    ({"action": "kill", "params": {}, "target": "slot-4"}, "kill slot-4"),
    ({"fault": "ipc", "target": "slot-2", "params": {"mode": "drop", "rate": 0.5}},
     "ipc drop slot-2 rate 0.5 seed 9"),
]  # fmt: skip


@pytest.mark.parametrize(("form", "line"), GOOD, ids=[g[1] for g in GOOD])
def test_drill_forms_parse_describe_and_round_trip(form, line):
    fault = Fault.from_dict(form)
    assert fault.describe() == line
    assert Fault.from_dict(fault.to_dict()) == fault
    assert Fault(fault.action, fault.target, fault.params) == fault


def test_defaults_and_accessors():
    f = Fault.from_dict({"fault": "ipc", "target": "2", "mode": "drop"})
    assert f.params == {"mode": "drop", "rate": 1.0, "seed": DEFAULT_SEED} and f.slot == 2
    assert Fault.from_dict({"fault": "lab", "target": "ocsp", "set": {"down": True}}).lab_peer == (
        "ocsp"
    )
    assert Fault.from_dict({"fault": "warp", "days": 1, "hours": 2}).warp_seconds == 93600
    assert Fault.from_dict({"fault": "warp", "seconds": -30}).warp_seconds == -30
    assert Fault.from_dict({"fault": "hang", "target": "supervisor"}).slot is None
    with pytest.raises(AttributeError):
        Fault.from_dict({"fault": "clear"}).action = "kill"  # frozen


BAD = [
    ({}, "fault: missing"),
    ({"fault": "explode", "target": 1}, "fault: 'explode' is not one of"),
    ({"fault": "kill"}, "target: missing"),
    ({"fault": "kill", "target": "nowhere"}, "target: 'nowhere' is not a slot"),
    ({"fault": "kill", "target": "lab:dns"}, "target: no lab peer 'dns'"),
    ({"fault": "kill", "target": True}, "target:"),
    ({"fault": "kill", "target": "slot-2", "rate": 1}, "rate: not a parameter of a kill fault"),
    ({"fault": "ipc", "target": "slot-2"}, "mode: missing"),
    ({"fault": "ipc", "target": "slot-2", "mode": "melt"}, "mode: 'melt' is not one of"),
    ({"fault": "ipc", "target": "supervisor", "mode": "drop"}, "target: an ipc fault names a packet card"),
    ({"fault": "ipc", "target": "slot-2", "mode": "drop", "rate": 1.5}, "rate: 1.5 is outside 0..1"),
    ({"fault": "ipc", "target": "slot-2", "mode": "drop", "rate": "often"}, "rate: 'often' is not a number"),
    ({"fault": "ipc", "target": "slot-2", "mode": "delay"}, "ms: a delay fault needs"),
    ({"fault": "ipc", "target": "slot-2", "mode": "drop", "ms": 5}, "ms: only a delay fault"),
    ({"fault": "ipc", "target": "slot-2", "mode": "partition", "rate": 0.5}, "rate: partition takes no rate"),
    ({"fault": "ipc", "target": "slot-2", "mode": "heal", "seed": 1}, "seed: heal takes no seed"),
    ({"fault": "ipc", "target": "slot-2", "mode": "drop", "seed": 1.5}, "seed: 1.5"),
    ({"fault": "udp", "mode": "drop"}, "target: a udp fault names a packet card"),
    ({"fault": "udp", "mode": "drop", "target": 1, "peer": "1.2.3.4"}, "peer: give a card"),
    ({"fault": "udp", "mode": "drop", "peer": "gateway.example"}, "peer: 'gateway.example' is not an IP"),
    ({"fault": "udp", "mode": "drop", "peer": "1.2.3.4:0"}, "peer: port '0'"),
    ({"fault": "udp", "mode": "duplicate", "target": 1}, "mode: 'duplicate' is not one of drop, delay, heal"),
    ({"fault": "lab", "target": "slot-2", "set": {"down": True}}, "target: a lab fault names a lab peer"),
    ({"fault": "lab", "target": "lab:ocsp"}, "set: the behaviours to set"),
    ({"fault": "lab", "target": "lab:ocsp", "set": {}}, "set: the behaviours to set"),
    ({"fault": "warp"}, "days: a warp needs days, hours or seconds"),
    ({"fault": "warp", "days": "soon"}, "days: 'soon' is not a number"),
    ({"fault": "warp", "target": "slot-1", "days": 1}, "target: a warp fault takes none"),
    ({"fault": "clear", "target": "slot-1"}, "target: a clear fault takes none"),
    ({"fault": "kill", "target": 1, "params": {"x": 1}, "x": 2}, "x: given twice"),
    ({"fault": "kill", "target": 1, "params": [1]}, "params: a mapping"),
    ("kill slot-2", "a fault is a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("form", "message"), BAD, ids=[b[1] for b in BAD])
def test_bad_faults_name_the_field(form, message):
    with pytest.raises(FaultError, match=None) as err:
        Fault.from_dict(form)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("127.0.0.1", "127.0.0.1"), ("127.0.0.1:500", "127.0.0.1:500"), ("::1", "::1"),
     ("[::1]:4500", "[::1]:4500"), ("[2001:db8::0001]", "2001:db8::1")],
)  # fmt: skip
def test_peer_forms(text, canonical):
    assert parse_peer(text) == canonical


@pytest.mark.parametrize("text", ["[::1", "[::1]x", "1.2.3.4:70000", "host:500", ""])
def test_bad_peers(text):
    with pytest.raises(FaultError, match="peer"):
        parse_peer(text)


# --- the CLI forms ---------------------------------------------------------------------------


class FakeChassis:
    """Stands in for chassis.client.Chassis: records the faults the CLI builds."""

    applied: list[Fault] = []

    def __init__(self, run_dir) -> None:
        self.run_dir = run_dir

    def fault(self, fault: Fault) -> dict:
        FakeChassis.applied.append(fault)
        at = {"monotonic": 12.5, "wall": 1e9}
        if fault.action == "clear":
            return {"fault": "clear", "healed": ["hang slot-2"], "errors": [], "at": at}
        if fault.action == "warp":
            return {"fault": fault.describe(), "now": "2030-01-01T00:00:00+00:00",
                    "offset": 86400.0, "at": at}  # fmt: skip
        return {"fault": fault.describe(), "target": fault.target, "pid": 4242, "at": at}

    def faults(self) -> list[dict]:
        return [{"fault": f.describe(), "since": {"monotonic": 1.0, "wall": time.time() - 2}}
                for f in FakeChassis.applied]  # fmt: skip


CLI_FORMS = [
    (["kill", "2"], {"fault": "kill", "target": "slot-2"}),
    (["hang", "supervisor"], {"fault": "hang", "target": "supervisor"}),
    (["resume", "slot-2"], {"fault": "resume", "target": "slot-2"}),
    (["kill", "lab:ocsp"], {"fault": "kill", "target": "lab:ocsp"}),
    (["ipc", "partition", "--slot", "2"], {"fault": "ipc", "target": 2, "mode": "partition"}),
    (["ipc", "drop", "--slot", "1", "--rate", "0.25", "--seed", "5"],
     {"fault": "ipc", "target": 1, "mode": "drop", "rate": 0.25, "seed": 5}),
    (["ipc", "delay", "--slot", "1", "--ms", "80"],
     {"fault": "ipc", "target": 1, "mode": "delay", "ms": 80}),
    (["ipc", "heal", "--slot", "1"], {"fault": "ipc", "target": 1, "mode": "heal"}),
    (["udp", "drop", "--slot", "1"], {"fault": "udp", "target": 1, "mode": "drop"}),
    (["udp", "delay", "--peer", "10.0.0.1:500", "--ms", "100", "--rate", "0.5"],
     {"fault": "udp", "peer": "10.0.0.1:500", "mode": "delay", "ms": 100, "rate": 0.5}),
    (["udp", "heal"], {"fault": "udp", "mode": "heal"}),
    (["lab", "ocsp", "down=true", "error=tryLater"],
     {"fault": "lab", "target": "lab:ocsp", "set": {"down": True, "error": "tryLater"}}),
    (["warp", "--days", "1"], {"fault": "warp", "days": 1}),
    (["clear"], {"fault": "clear"}),
]  # fmt: skip


@pytest.mark.parametrize(("args", "form"), CLI_FORMS, ids=[" ".join(a) for a, _ in CLI_FORMS])
def test_cli_forms_build_the_drill_fault(monkeypatch, tmp_path, args, form):
    monkeypatch.setattr(cli.api, "Chassis", FakeChassis)
    FakeChassis.applied = []
    result = CliRunner().invoke(cli.main, ["fault", *args, "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert FakeChassis.applied == [Fault.from_dict(form)]
    assert len(result.output.strip().splitlines()) == 1  # one line
    assert result.output.startswith(
        {"clear": "cleared: hang slot-2", "warp": "wall clock now 2030"}.get(
            args[0], f"{Fault.from_dict(form).describe()}: done (pid 4242)"
        )
    )
    as_json = CliRunner().invoke(cli.main, ["fault", *args, "--run-dir", str(tmp_path), "--json"])
    assert as_json.exit_code == 0 and '"fault"' in as_json.output


def test_cli_list(monkeypatch, tmp_path):
    monkeypatch.setattr(cli.api, "Chassis", FakeChassis)
    FakeChassis.applied = []
    out = CliRunner().invoke(cli.main, ["fault", "list", "--run-dir", str(tmp_path)])
    assert out.exit_code == 0 and out.output.strip() == "no faults in force"
    FakeChassis.applied = [Fault.from_dict({"fault": "hang", "target": 2})]
    out = CliRunner().invoke(cli.main, ["fault", "list", "--run-dir", str(tmp_path)])
    assert out.output.startswith("hang slot-2  (for 2.")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ipc", "partition"], "Missing option '--slot'"),
        (["ipc", "melt", "--slot", "1"], "'melt' is not one of"),
        (["ipc", "delay", "--slot", "2"], "ms: a delay fault needs the delay"),
        (["ipc", "drop", "--slot", "2", "--rate", "3"], "rate: 3 is outside 0..1"),
        (["kill", "nowhere"], "target: 'nowhere' is not a slot"),
        (["udp", "drop"], "give --slot N or --peer"),
        (["udp", "drop", "--slot", "1", "--peer", "1.2.3.4"], "not both"),
        (["udp", "drop", "--peer", "nohost"], "peer: 'nohost' is not an IP address"),
        (["lab", "ocsp", "down"], "expected KEY=VALUE"),
        (["lab", "dns", "down=true"], "'dns' is not one of"),
        (["warp"], "days: a warp needs days, hours or seconds"),
    ],
)
def test_cli_bad_input_is_a_usage_error_before_any_chassis(tmp_path, args, message):
    # no chassis in tmp_path: a usage error comes first, from the same checks as the drills'
    result = CliRunner().invoke(cli.main, ["fault", *args, "--run-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_good_fault_without_a_chassis_names_the_cause(tmp_path):
    result = CliRunner().invoke(cli.main, ["fault", "kill", "2", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no chassis here" in result.output


# --- the IPC filter ---------------------------------------------------------------------------


def decisions(fault: IpcFault, n: int, direction: str = "out") -> list[tuple[int, float]]:
    return [fault.decide(direction) for _ in range(n)]


def test_ipc_fault_decisions_replay_with_their_seed():
    a, b = IpcFault("drop", 0.3, seed=7), IpcFault("drop", 0.3, seed=7)
    assert decisions(a, 1000) == decisions(b, 1000)
    assert decisions(IpcFault("drop", 0.3, seed=8), 1000) != decisions(
        IpcFault("drop", 0.3, seed=7), 1000
    )
    dropped = sum(c == 0 for c, _ in decisions(IpcFault("drop", 0.3, seed="7:ctl"), 2000))
    assert 500 < dropped < 700  # about 30 %


def test_ipc_fault_modes():
    assert set(decisions(IpcFault("partition"), 50)) == {(0, 0.0)}
    assert set(decisions(IpcFault("duplicate"), 50)) == {(2, 0.0)}
    assert set(decisions(IpcFault("delay", ms=40), 50)) == {(1, 0.04)}
    assert set(decisions(IpcFault("drop", rate=0), 50)) == {(1, 0.0)}
    half = IpcFault("duplicate", 0.5, seed=1)
    assert {c for c, _ in decisions(half, 200, "in")} == {1, 2}
    assert half.counts["in"] == 200 and 60 < half.counts["duplicated"] < 140
    for bad in (dict(mode="melt"), dict(mode="drop", rate=2), dict(mode="delay", ms=-1)):
        with pytest.raises(ValueError):
            IpcFault(**bad)


@pytest.fixture
def keys(tmp_path):
    for name in ("mgmt", "slot-1"):
        keyring.ensure_keypair(tmp_path / "keys", name)
    return tmp_path / "keys"


class Pair:
    """A supervisor-like ROUTER and a card-like DEALER, both listening, on a real socket."""

    def __init__(self, keys, tmp_path) -> None:
        self.server = Node(keys, "mgmt")
        self.server.start_auth()
        self.router = self.server.router(f"ipc://{tmp_path}/ctl")
        self.card = Node(keys, "card", key_name="slot-1")
        self.dealer = self.card.dealer(
            f"ipc://{tmp_path}/ctl", keyring.public_key(keys, "mgmt"), "slot-1"
        )
        self.at_router: list[tuple[int, float]] = []  # (n, when)
        self.at_card: list[tuple[int, float]] = []
        self.peer = None

    async def start(self) -> None:
        self.dealer.send(Update("hello", {"n": -1}))
        self.peer = (await asyncio.wait_for(self.router.recv(), 5)).peer
        self.router.listen(
            lambda inc: self.at_router.append((inc.env.msg.value["n"], time.monotonic()))
        )
        self.dealer.listen(lambda inc: self.at_card.append((inc.env.msg.value["n"], time.monotonic())))  # fmt: skip

    async def exchange(self, n: int, settle: float = 0.15) -> None:
        """n messages each way (card -> supervisor and back), then wait for stragglers."""
        for i in range(n):
            self.dealer.send(Update("up", {"n": i}))
            self.router.send(Update("down", {"n": i}), to=self.peer)
        await asyncio.sleep(settle)

    def close(self) -> None:
        self.card.close()
        self.server.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def numbers(received) -> list[int]:
    return [n for n, _ in received]


def test_channel_partition_drops_both_ways_until_healed(keys, tmp_path):
    async def scenario():
        pair = Pair(keys, tmp_path)
        try:
            await pair.start()
            pair.dealer.fault = IpcFault("partition")
            await pair.exchange(20)
            assert pair.at_router == [] and pair.at_card == []
            assert pair.dealer.fault.counts == {"out": 20, "in": 20, "dropped": 40}
            pair.dealer.fault = None  # heal
            await pair.exchange(5)
            assert numbers(pair.at_router) == numbers(pair.at_card) == list(range(5))
        finally:
            pair.close()

    run(scenario())


def test_channel_drop_is_what_the_seed_says(keys, tmp_path):
    async def scenario():
        pair = Pair(keys, tmp_path)
        try:
            await pair.start()
            pair.dealer.fault = IpcFault("drop", 0.4, seed="3:ctl")
            await pair.exchange(200, settle=0.3)
        finally:
            pair.close()
        return numbers(pair.at_router), numbers(pair.at_card)

    up, down = run(scenario())
    # the same seed replays the decisions: sends (out) then receipts (in) interleave as above
    model = IpcFault("drop", 0.4, seed="3:ctl")
    want_up, want_down = [], []
    for i in range(200):
        if model.decide("out")[0]:
            want_up.append(i)
    for i in range(200):  # the card reads the supervisor's messages after it sent its own
        if model.decide("in")[0]:
            want_down.append(i)
    assert up == want_up and down == want_down
    assert 80 < len(up) < 160 and 80 < len(down) < 160


def test_channel_duplicates_both_ways(keys, tmp_path):
    async def scenario():
        pair = Pair(keys, tmp_path)
        try:
            await pair.start()
            pair.dealer.fault = IpcFault("duplicate")
            await pair.exchange(10)
        finally:
            pair.close()
        return numbers(pair.at_router), numbers(pair.at_card)

    up, down = run(scenario())
    assert up == down == [i for i in range(10) for _ in (0, 1)]


def test_channel_delay_keeps_order_and_delays_both_ways(keys, tmp_path):
    async def scenario():
        pair = Pair(keys, tmp_path)
        try:
            await pair.start()
            pair.dealer.fault = IpcFault("delay", ms=120)
            sent = time.monotonic()
            await pair.exchange(10, settle=0.06)
            early = (list(pair.at_router), list(pair.at_card))
            await asyncio.sleep(0.3)
        finally:
            pair.close()
        return sent, early, pair.at_router, pair.at_card

    sent, early, up, down = run(scenario())
    assert early == ([], [])  # nothing within 60 ms
    assert numbers(up) == numbers(down) == list(range(10))  # everything, in order
    assert all(at - sent >= 0.115 for _, at in up + down)


# --- the NPU's UDP rules ---------------------------------------------------------------------


def test_udp_rules_match_a_card_or_a_peer():
    faults = UdpFaults()
    faults.add(UdpRule("drop", slot=2))
    faults.add(UdpRule("delay", ms=50, peer=("10.0.0.9", None)))
    faults.add(UdpRule("drop", peer=("10.0.0.7", 500)))
    assert faults.decide(2, ("10.0.0.1", 500)) is None  # card 2's datagrams
    assert faults.decide(1, ("10.0.0.1", 500)) == 0.0  # card 1's pass
    assert faults.decide(1, ("10.0.0.9", 4500)) == 0.05  # that peer, any port
    assert faults.decide(None, ("10.0.0.7", 500)) is None
    assert faults.decide(None, ("10.0.0.7", 501)) == 0.0  # another port of that peer
    assert [r.key for r in faults.heal(slot=2)] == [("slot", 2)]
    assert faults.decide(2, ("10.0.0.1", 500)) == 0.0
    assert len(faults.heal()) == 2 and faults.rules == []


def test_udp_rule_replaces_the_one_on_the_same_card_and_replays_its_seed():
    faults = UdpFaults()
    faults.add(UdpRule("drop", slot=1))
    faults.add(UdpRule("drop", rate=0.5, slot=1, seed="4:udp"))
    assert len(faults.rules) == 1
    got = [faults.decide(1, ("10.0.0.1", 500)) for _ in range(300)]
    model = UdpRule("drop", rate=0.5, slot=1, seed="4:udp")
    assert got == [None if model.rng.random() < 0.5 else 0.0 for _ in range(300)]
    assert faults.rules[0].counts["dropped"] == got.count(None)
    with pytest.raises(ValueError):
        UdpRule("drop")  # neither card nor peer


def ike_init() -> bytes:
    return b"\0\0\0\0" + os.urandom(8) + bytes(8) + bytes([33, 0x20, 34, 0x08]) + bytes(8)


def test_npu_drops_and_delays_a_cards_datagrams_both_ways():
    got: list = []
    npu = Npu(lambda slot, msg: got.append((slot, time.monotonic())) or True, lambda: [1])
    gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def scenario():
        local = gateway.getsockname()
        npu.sockets[local] = gateway
        npu.allowed[local] = {1}
        npu.faults.add(UdpRule("drop", slot=1))
        peer.sendto(ike_init(), local)
        await asyncio.sleep(0.05)
        npu._readable(local, gateway)
        assert got == [] and npu.counts["fault_dropped"] == 1
        # the card's answer is dropped too
        npu.send([[list(local), list(peer.getsockname()), b"answer"]], slot=1)
        assert npu.counts["fault_dropped"] == 2 and npu.counts["sent"] == 0
        npu.send([[list(local), list(peer.getsockname()), b"other"]], slot=2)
        assert npu.counts["sent"] == 1  # another card's answer goes out
        npu.faults.heal()
        npu.faults.add(UdpRule("delay", ms=80, slot=1))
        peer.sendto(ike_init(), local)
        await asyncio.sleep(0.05)
        start = time.monotonic()
        npu._readable(local, gateway)
        assert got == []
        await asyncio.sleep(0.15)
        assert [s for s, _ in got] == [1] and got[0][1] - start >= 0.075
        npu.send([[list(local), list(peer.getsockname()), b"late"]], slot=1)
        assert npu.counts["sent"] == 1
        await asyncio.sleep(0.15)
        assert npu.counts["sent"] == 2 and npu.counts["fault_delayed"] == 2

    gateway.bind(("127.0.0.1", 0))
    gateway.setblocking(False)
    peer.bind(("127.0.0.1", 0))
    try:
        run(scenario())
        assert peer.recv(100) == b"other" and peer.recv(100) == b"late"
    finally:
        npu.sockets.clear()
        gateway.close()
        peer.close()


def test_npu_steers_a_cut_off_cards_sas_but_gives_it_no_new_one():
    got: list = []
    # card 2 is "unreachable": its SAs are steered (ready), it takes no new SA (new_sa)
    npu = Npu(lambda slot, msg: got.append(slot) or True, lambda: [1, 2], lambda: [1])
    local = ("127.0.0.1", 4500)
    npu.allowed[local] = {1, 2}
    for _ in range(20):
        npu.received(local, ike_init(), ("10.0.0.1", 4500))
    assert set(got) == {1}
    own = b"\0\0\0\0" + os.urandom(8) + make_spi(2, os.urandom(8)) + bytes([35, 0x20, 2, 0x08])
    npu.received(local, own + bytes(8), ("10.0.0.1", 4500))
    assert got[-1] == 2


# --- hung or cut off: the card manager --------------------------------------------------------

TOPO = {"cards": [{"slot": 5, "type": "mio", "role": "active"},
                  {"slot": 1, "type": "dpc", "role": "active"},
                  {"slot": 2, "type": "dpc", "role": "active"}]}  # fmt: skip


def booted(clock) -> CardManager:
    cm = CardManager.from_topology(TOPO, interval=0.1, liveness=3)
    for slot in (1, 2):
        cm.on_started(slot, 100 + slot, clock.now())
        cm.on_register(slot, 100 + slot, f"boot{slot}", clock.now())
        cm.on_ready(slot, 1, clock.now())
    return cm


def step(cm: CardManager, clock: ManualClock, backplane_hears: set[int], until: float):
    """Run the supervisor's 25 ms checks: card 2 keeps beating to everyone, the cards in
    `backplane_hears` beat to the backplane; returns {slot: when its state changed}."""
    changed = {}
    while clock.now() < until:
        clock.advance(0.025)
        now = clock.now()
        if round(now * 40) % 4 == 0:  # a heartbeat every 100 ms
            cm.on_heartbeat(2, now)
            for slot in backplane_hears:
                cm.on_backplane_seen(slot, now)
        for slot in cm.check(now):
            changed[slot] = now
    return changed


def test_a_hung_card_is_failed_within_the_liveness():
    clock = ManualClock(10)
    cm = booted(clock)
    cm.on_backplane_seen(1, 10.00001)  # its last heartbeat to the backplane: the same tick
    changed = step(cm, clock, set(), 11)
    card = cm.cards[1]
    assert card.state == "failed" and changed[1] == card.failed_at
    assert card.failed_reason == "missed 3 heartbeats" and 299 < card.detection_ms <= 326
    assert cm.cards[2].state == "active"
    assert "reboot" in cm.on_register(1, 101, "boot1", clock.now())  # sticky, as before


def test_a_partitioned_card_is_unreachable_not_failed_and_comes_back():
    clock = ManualClock(10)
    cm = booted(clock)
    changed = step(cm, clock, {1}, 10.5)  # silent to the supervisor only
    card = cm.cards[1]
    assert card.state == "unreachable" and card.failed_at is None
    assert 10.29 < changed[1] <= 10.35 and card.unreachable_at == changed[1]
    assert "alive on the backplane" in card.failure and not card.in_service
    assert 1 in cm.late(clock.now())  # the supervisor keeps asking the backplane about it
    # healed: the same process registers again, resyncs, serves
    assert cm.on_register(1, 101, "boot1", clock.now()) is None
    assert card.state == "booting" and card.acked_seq == 0
    cm.on_ready(1, 4, clock.now())
    assert card.state == "active" and card.acked_seq == 4


def test_an_unreachable_card_that_the_backplane_stops_hearing_is_failed():
    clock = ManualClock(10)
    cm = booted(clock)
    step(cm, clock, {1}, 10.5)
    assert cm.cards[1].state == "unreachable"
    changed = step(cm, clock, set(), 11.5)  # then it hangs
    card = cm.cards[1]
    assert card.state == "failed" and "silent on the backplane" in card.failed_reason
    assert changed[1] - 10.5 <= 0.33


def test_late_lists_cards_whose_heartbeats_are_late():
    clock = ManualClock(10)
    cm = booted(clock)
    clock.advance(0.1)
    cm.on_heartbeat(1, clock.now())
    cm.on_heartbeat(2, clock.now())
    clock.advance(0.1)
    cm.on_heartbeat(2, clock.now())
    assert cm.late(clock.now()) == []
    clock.advance(0.06)
    assert cm.late(clock.now()) == [1]  # 160 ms since its last heartbeat
