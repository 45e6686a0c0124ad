"""CURVE + ZAP: only the chassis's own key pairs receive anything.

A rogue client knows the server's public key (it is not secret) but uses a key pair
the chassis never listed. With the ZAP handler it receives nothing while a listed
client beside it does; the same scenario without the allow-list shows the rogue
*would* receive, so the first assertion cannot pass by accident.
"""

import asyncio

import pytest

from chassis.ipc import keys as keyring
from chassis.ipc.messages import Request, Update
from chassis.ipc.rpc import Pending, RpcError
from chassis.ipc.sockets import Node


@pytest.fixture
def keys(tmp_path):
    for name in ("mgmt", "slot-1"):
        keyring.ensure_keypair(tmp_path / "keys", name)
    return tmp_path / "keys"


def test_secret_keys_are_private(keys):
    secret = keys / "private" / "mgmt.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (keys / "private").stat().st_mode & 0o777 == 0o700


async def scenario(keys, tmp_path, enforce: bool) -> tuple[int, int, bool]:
    """Returns (updates the listed client got, updates the rogue got, rogue got an RPC reply)."""
    server = Node(keys, "mgmt")
    server.start_auth(enforce=enforce)
    pub = server.publisher(f"ipc://{tmp_path}/state")
    router = server.router(f"ipc://{tmp_path}/ctl")
    server_key = keyring.public_key(keys, "mgmt")

    listed = Node(keys, "card", key_name="slot-1")
    rogue = Node(keys, "rogue", keypair=keyring.generate_unlisted())
    subs = {n: n.subscriber(f"ipc://{tmp_path}/state", server_key, [b""]) for n in (listed, rogue)}
    got = {listed: 0, rogue: 0}

    async def count(node):
        while True:
            inc = await subs[node].recv()
            got[node] += isinstance(inc.env.msg, Update)

    async def answer():
        while True:
            inc = await router.recv()
            router.reply(inc, True, "secret")

    tasks = [asyncio.create_task(c) for c in (count(listed), count(rogue), answer())]
    dealer = rogue.dealer(f"ipc://{tmp_path}/ctl", server_key, "rogue")
    rpc = Pending()
    tasks.append(asyncio.create_task(_resolve(dealer, rpc)))
    for i in range(40):
        pub.send(Update("config", {"n": i}), topic=b"slot-1\0")
        await asyncio.sleep(0.01)
    try:
        await rpc.call(dealer, Request("snapshot", {}), timeout=0.3)
        rogue_reply = True
    except (TimeoutError, RpcError):  # refused at the handshake: nothing to send to
        rogue_reply = False
    for t in tasks:
        t.cancel()
    for n in (listed, rogue, server):
        n.close()
    return got[listed], got[rogue], rogue_reply


async def _resolve(channel, rpc):
    while True:
        rpc.resolve(await channel.recv())


def test_rogue_receives_nothing_while_a_listed_client_does(keys, tmp_path):
    listed, rogue, rogue_reply = asyncio.run(asyncio.wait_for(scenario(keys, tmp_path, True), 20))
    assert listed > 0
    assert rogue == 0 and not rogue_reply


def test_without_the_allow_list_the_rogue_would_receive(keys, tmp_path):
    listed, rogue, rogue_reply = asyncio.run(asyncio.wait_for(scenario(keys, tmp_path, False), 20))
    assert listed > 0 and rogue > 0 and rogue_reply


def test_binding_before_the_zap_handler_is_refused(keys, tmp_path):
    server = Node(keys, "mgmt")
    try:
        with pytest.raises(RuntimeError, match="ZAP"):
            server.publisher(f"ipc://{tmp_path}/x")
    finally:
        server.close()
