"""What the standby MIO keeps beyond the configuration (supervisor/ha.py): the CRL cache and
the CMP statistics and history. Each goes through the real envelope codec (msgpack), as on
the sync socket, and is restored the way a takeover restores it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from types import SimpleNamespace

from test_crl import T0, URL, Rig, lab, make_crl, run

from chassis.ipc.crl_index import CrlIndex
from chassis.ipc.envelope import Envelope, decode, encode
from chassis.ipc.messages import Request
from supervisor.ha import Follower, Replicator
from supervisor.pki.crl import portable
from supervisor.pki.enrollment import CmpService

BIG = 2**100 + 7  # a 13-octet CRL number: too big for msgpack's integers


def over_the_wire(update: dict) -> dict:
    """``update`` as the standby receives it."""
    return decode(encode(Envelope(Request("sync.update", update), id=1))).msg.args


def test_a_crl_entry_taken_over_is_the_same_and_not_fetched_again():
    ca, k, _ = lab()
    body = make_crl(ca, k, [5, 2**64 + 1], next=T0 + 7200, number=BIG)

    async def scenario():
        old = Rig()
        old.net.bodies[URL] = body
        await old.cache.configure("lab", URL, "der", [ca], refresh_s=600)
        await old.cache.need(URL + "?cdp", [ca])  # a CDP URL that failed: kept too
        e = old.cache.get("lab")
        assert e.version == 1 and e.meta["number"] == BIG
        wire = over_the_wire({"crls": [old.cache.export(x) for x in old.cache.entries()]})

        new = Rig()
        new.t = T0 + 60  # the takeover, a minute later
        restored = new.cache.restore(wire["crls"])
        assert [r.key for r in restored] == ["lab", URL + "?cdp"]
        r = new.cache.get("lab")
        assert (r.version, r.meta, r.digest, r.index) == (e.version, e.meta, e.digest, e.index)
        assert (r.last_fetch, r.last_result, r.next_refresh) == (T0, "ok", T0 + 600)
        assert 2**64 + 1 in CrlIndex(r.index) and r.error(new.t) is None
        failed = new.cache.get(URL + "?cdp")
        assert failed.index is None and failed.last_result.endswith("(HTTP 404 Not Found)")
        # The configuration's `ca-crl` line, published after the restore, fetches nothing.
        assert new.cache.configure("lab", URL, "der", [ca], refresh_s=600) is None
        assert new.net.calls == [] and new.cache.due(new.t) == [failed]  # its back-off ended
        # At its refresh time the same body is not a new version: the cards keep v1.
        new.t, new.net.bodies[URL] = T0 + 600, body
        new.cache.remove(URL + "?cdp")
        await new.cache.refresh_due()
        assert r.version == 1 and new.updates == [] and [c[0] for c in new.net.calls] == [URL]
        # A newer CRL goes on from the replicated version.
        new.net.bodies[URL] = make_crl(ca, k, [5], next=T0 + 9000, number=BIG + 1, this=T0)
        await new.cache.fetch_now("lab")
        assert r.version == 2 and new.updates == [("lab", 2)]

    run(scenario())


def test_portable_only_touches_big_numbers():
    assert portable(None) is None
    small = {"number": 5, "count": 1}
    assert portable(small) is small and portable({"number": None}) == {"number": None}
    assert portable({"number": BIG, "count": 2}) == {"number": str(BIG), "count": 2}


def fake_supervisor(cache) -> SimpleNamespace:
    """What Replicator.tick reads of a Supervisor."""
    cmp = CmpService.__new__(CmpService)
    cmp.sent, cmp.received, cmp.failed, cmp.results = Counter(), Counter(), Counter(), Counter()
    cmp.history = []
    return SimpleNamespace(
        engine=SimpleNamespace(version=3, config_text=lambda: "config\n"),
        cards=SimpleNamespace(cards={1: SimpleNamespace(role="active")}),
        recovery=SimpleNamespace(owners={}),
        certs=SimpleNamespace(cmp=cmp),
        crls=SimpleNamespace(_cache=cache),
        interval=0.1,
        _spawn=asyncio.ensure_future,
    )


def test_the_replicator_sends_an_index_once_per_version_and_the_follower_keeps_it():
    ca, k, _ = lab()
    first = make_crl(ca, k, [5], next=T0 + 7200, number=1)
    second = make_crl(ca, k, [5, 6], next=T0 + 7200, number=2, this=T0)

    async def scenario():
        rig = Rig()
        sup = fake_supervisor(rig.cache)
        rep, fol = Replicator(sup), Follower(sup)
        pushed: list[dict] = []

        async def push(update, timeout=None):
            pushed.append(update)
            fol.on_message(None, SimpleNamespace(msg=Request("sync.update", over_the_wire(update))))
            return True

        rep.push = push
        fol.chan = SimpleNamespace(reply=lambda inc, ok, body: None)
        rep.peer = b"mio-sync-6"

        async def tick() -> dict | None:
            before = len(pushed)
            rep.tick()
            if rep.pushing is not None:
                await rep.pushing
            return pushed[-1] if len(pushed) > before else None

        fol.state = {"version": 0}  # said hello before any CRL
        first_push = await tick()
        assert first_push["state"]["version"] == 3 and "crls" not in first_push
        assert await tick() is None  # nothing moved

        rig.net.bodies[URL] = first
        await rig.cache.configure("lab", URL, "der", [ca])
        update = await tick()
        assert "state" not in update and update["crl_gone"] == []
        assert [(c["name"], c["version"]) for c in update["crls"]] == [("lab", 1)]
        assert update["crls"][0]["index"] == rig.cache.get("lab").index

        rig.t += 3600  # refreshed, unchanged: the fetch times only, no index
        await rig.cache.fetch_now("lab")
        update = await tick()
        assert "index" not in update["crls"][0] and update["crls"][0]["last_fetch"] == rig.t
        assert fol.crls["lab"]["index"] == rig.cache.get("lab").index  # kept
        assert fol.crls["lab"]["last_fetch"] == rig.t

        rig.net.bodies[URL] = second  # a new version: its index goes again
        await rig.cache.fetch_now("lab")
        update = await tick()
        assert update["crls"][0]["version"] == 2 and update["crls"][0]["index"] is not None
        assert 6 in CrlIndex(fol.crls["lab"]["index"])

        sup.certs.cmp.sent["ir"] += 1  # CMP statistics move: the state goes again
        update = await tick()
        assert update["state"]["cmp_stats"]["sent"] == {"ir": 1} and "crls" not in update

        rig.cache.remove("lab")
        update = await tick()
        assert update["crls"] == [] and update["crl_gone"] == ["lab"] and fol.crls == {}
        taken = fol.taken_over()
        assert taken["crls"] == [] and taken["cmp_stats"]["sent"] == {"ir": 1}

    run(scenario())


def test_cmp_statistics_and_history_survive_a_takeover(tmp_path):
    now = dt.datetime(2030, 3, 17, tzinfo=dt.UTC)
    old = CmpService(tmp_path / "a", lambda: now, lambda n: b"\0" * n)
    old.sent.update({"ir": 1, "pollReq": 3})
    old.received.update({"ip": 1, "pollRep": 3})
    old.failed["cr"] += 1
    old.results[("ir", "success")] += 1
    old.history.append({"time": now.isoformat(), "type": "ir", "cert": "segw", "ca": "lab",
                        "result": "success", "reason": "", "polls": 3})  # fmt: skip
    wire = over_the_wire({"state": {"cmp_stats": old.stats()}})["state"]["cmp_stats"]

    new = CmpService(tmp_path / "b", lambda: now, lambda n: b"\0" * n)
    new.sent["kur"] += 1  # counted at the new active before the restore: kept, added to
    new.restore_stats(wire)
    assert new.sent == Counter({"ir": 1, "pollReq": 3, "kur": 1})
    assert new.received == old.received and new.failed == old.failed
    assert new.results == old.results and list(new.history) == list(old.history)


class Outline:
    """A kur's outline, counting what it sends and receives as the real transaction does
    (supervisor/pki/cmp/client.py); its counts are what its journal entry holds."""

    def __init__(self, sent=None, received=None, polls_left: int = 1) -> None:
        self.sent, self.received = Counter(sent or {}), Counter(received or {})
        self.polls_left = polls_left

    def to_journal(self) -> dict:
        return {"sent": dict(self.sent), "received": dict(self.received)}

    def poll(self) -> bytes:
        self.sent["pollReq"] += 1
        return b"pollReq"

    def receive(self, answer: bytes):
        from supervisor.pki.cmp.client import Done, Wait

        self.received[{b"kur": "kup", b"pollReq": "pollRep"}[answer]] += 1
        if self.polls_left:
            self.polls_left -= 1
            return Wait(0.0)
        return Done(b"cert", (), (), False)


def test_a_resumed_cmp_transaction_is_counted_once(tmp_path):
    """MIO 5 sends a kur and a pollReq and dies waiting for the pollRep; MIO 6 takes the
    statistics over and resumes from the journal: its own pollReq and the answers are the
    only messages it adds."""
    from supervisor.pki.enrollment import Outstanding

    now = dt.datetime(2030, 3, 17, tzinfo=dt.UTC)
    hang = asyncio.Event()

    async def wire_then_die(url, der):
        if der == b"pollReq":
            await hang.wait()  # the kill: no answer ever
        return der

    async def scenario():
        old = CmpService(tmp_path / "a", lambda: now, lambda n: b"\0" * n, wire_then_die)
        tx = Outline()
        tx.sent["kur"] += 1  # the first request, built by the transaction
        task = asyncio.ensure_future(
            old.run(tx, Outstanding("kur", "segw", "lab", "http://ca", ""), first=b"kur")
        )
        while old.sent["pollReq"] == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        # the journal entry on /flash, written before the poll went: the kur and its answer
        journal = json.loads((tmp_path / "a" / "segw.json").read_text())["transaction"]
        assert journal == {"sent": {"kur": 1}, "received": {"kup": 1}}
        stats = over_the_wire({"state": {"cmp_stats": old.stats()}})["state"]["cmp_stats"]
        assert stats["sent"] == {"kur": 1, "pollReq": 1}

        async def answer(url, der):
            return der

        new = CmpService(tmp_path / "b", lambda: now, lambda n: b"\0" * n, answer)
        new.restore_stats(stats)
        resumed = Outline(journal["sent"], journal["received"], polls_left=0)
        out = await new.run(resumed, Outstanding("kur", "segw", "lab", "http://ca", ""))
        assert out.ok
        assert new.sent == Counter({"kur": 1, "pollReq": 2})  # one kur, two polls on the wire
        assert new.received == Counter({"kup": 1, "pollRep": 1})
        assert new.results == Counter({("kur", "success"): 1})

    asyncio.run(asyncio.wait_for(scenario(), 10))
