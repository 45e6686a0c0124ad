"""Malformed and unknown IPC messages crash neither a card nor the supervisor.

The supervisor is attacked through its own sockets with a listed key (a rogue key
would not even get through the handshake, see test_ipc_curve.py). The card is
attacked by the test playing its supervisor: it binds the card's control and state
endpoints with the chassis's management key and answers the card's registration
with garbage before answering it properly.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import msgpack
import pytest
import zmq
from helpers import BASIC, slot_states

from chassis import backplane, client, procs, topology
from chassis.ipc import keys as keyring
from chassis.ipc.envelope import Envelope, encode
from chassis.ipc.messages import Heartbeat, Ready, Register, Reply, Update
from chassis.ipc.rundir import RunDir
from chassis.ipc.sockets import Node

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

GARBAGE = [
    b"",
    b"\xc1\xc1\xc1",
    msgpack.packb(
        {
            "v": 1,
            "type": "no-such-type",
            "id": 9,
            "src": "x",
            "ts": 0,
            "epoch": 0,
            "seq": 0,
            "body": {},
        }
    ),
    msgpack.packb(
        {
            "v": 99,
            "type": "heartbeat",
            "id": 10,
            "src": "x",
            "ts": 0,
            "epoch": 0,
            "seq": 0,
            "body": {},
        }
    ),
    msgpack.packb(
        {
            "v": 1,
            "type": "register",
            "id": 11,
            "src": "x",
            "ts": 0,
            "epoch": 0,
            "seq": 0,
            "body": {"slot": "x"},
        }
    ),
    encode(Envelope(Update("config", {"x": 1}), id=12)),  # a valid message on the wrong socket
]


def test_supervisor_survives_garbage_on_every_socket(chassis_factory):
    ch = chassis_factory(BASIC)
    run, ep = ch.run, ch.manifest["endpoints"]
    ctx = zmq.Context()
    errors = 0
    try:
        for name, server, identity in (
            ("control", "mgmt", b"intruder"),
            ("cli", "mgmt", b"x"),
            ("backplane", "backplane", b"y"),
        ):
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.curve_publickey, sock.curve_secretkey = keyring.keypair(run.keys, "cli")
            sock.curve_serverkey = keyring.public_key(run.keys, server)
            sock.identity = identity
            sock.connect(ep[name])
            for data in GARBAGE:
                sock.send(data)
            sock.send_multipart([b"two", b"frames"])
            while sock.poll(1000):
                sock.recv()
                errors += 1
            sock.close()
    finally:
        ctx.destroy(linger=0)
    assert errors >= len(GARBAGE)  # every bad message got an error reply
    assert set(slot_states(ch).values()) <= {"active", "standby"}
    assert "Active" in ch.exec("show card table")[0].output


def test_card_survives_garbage_from_its_supervisor(tmp_path):
    topo = topology.load(BASIC)
    run = RunDir(tmp_path / "run")
    manifest = backplane.prepare(topo, run)
    card = subprocess.Popen(
        [sys.executable, "-m", "cards.runner", "--run-dir", str(run.root), "--slot", "1"],
        stdout=open(run.logs / "dpc-1.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    started = procs.start_time(card.pid)
    try:
        ready = asyncio.run(asyncio.wait_for(fake_supervisor(run, manifest), 20))
        assert ready is not None
        assert card.poll() is None and procs.alive(card.pid, started)
        log = (run.logs / "dpc-1.log").read_text()
        assert "bad message" in log and "Traceback" not in log
    finally:
        card.kill()
        card.wait(5)
        client.down(run.root)  # removes the socket directory


async def fake_supervisor(run: RunDir, manifest: dict):
    node = Node(run.keys, "mio-5", key_name="mgmt")
    node.epoch = 1
    node.start_auth()
    ctl = node.router(manifest["endpoints"]["control"])
    pub = node.publisher(manifest["endpoints"]["state"])
    try:
        while True:
            inc = await ctl.recv()
            if inc.env and isinstance(inc.env.msg, Register):
                break
        for data in GARBAGE:
            ctl.sock.send_multipart([inc.peer, data])
            pub.sock.send_multipart([b"slot-1\0", data])
        pub.sock.send_multipart([b"slot-1\0"])  # a single frame on the state stream
        ctl.send(Reply(inc.env.id, True, {"epoch": 1}), to=inc.peer)
        while True:
            req = await ctl.recv()
            if req.env and getattr(req.env.msg, "method", "") == "snapshot":
                ctl.send(Reply(req.env.id, True, {"seq": 0, "entries": {}}), to=req.peer)
            elif req.env and isinstance(req.env.msg, Ready):
                ctl.send(Heartbeat(0.0), to=req.peer)
                return req.env.msg
    finally:
        node.close()


def test_rogue_client_gets_no_key_material(chassis_factory, tmp_path):
    """A rogue knows the supervisor's public key but holds an unlisted key pair: while a
    certificate with its private key is installed and pushed, it receives nothing on the
    control socket (where credentials travel) nor on the state stream."""
    from helpers import small_topology
    from pki_material import lab

    ch = chassis_factory(small_topology(tmp_path, name="rogue"))
    for name, data in lab().items():
        (ch.run.flash / name).write_bytes(data)
    res = ch.exec(
        "configure",
        "certificate name segw pem url /flash/gw1.crt private-key pem url /flash/gw1.key",
    )
    assert not any(r.error for r in res)
    ep, server_key = ch.manifest["endpoints"], keyring.public_key(ch.run.keys, "mgmt")
    ctx = zmq.Context()
    got = []
    try:
        rogue_pub, rogue_sec = keyring.generate_unlisted()
        dealer = ctx.socket(zmq.DEALER)
        sub = ctx.socket(zmq.SUB)
        for sock in (dealer, sub):
            sock.linger = 0
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = (
                rogue_pub,
                rogue_sec,
                server_key,
            )
        dealer.identity = b"slot-9"
        dealer.connect(ep["control"])
        sub.subscribe(b"")
        sub.connect(ep["state"])
        from chassis.ipc.messages import Request

        for i in range(5):
            try:
                dealer.send(
                    encode(Envelope(Request("snapshot", {"stream": "cred"}), id=i)), zmq.NOBLOCK
                )
            except zmq.Again:
                pass  # refused at the handshake: nothing to send to
        # Make the supervisor push again while the rogue listens.
        ch.exec(
            "configure",
            "certificate name segw pem url /flash/gw2.crt private-key pem url /flash/gw2.key",
        )
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(sub, zmq.POLLIN)
        for _ in range(10):
            for sock, _ev in poller.poll(100):
                got.append(sock.recv_multipart())
    finally:
        ctx.destroy(linger=0)
    assert got == []
    # The cards did get it.
    rows = ch.exec("show certificate name segw")[0].data["items"]
    assert rows and set(rows[0]["cards"].values()) <= {f"v{rows[0]['generation']}", "pending"}
