"""A real strongSwan keeps its IKE SA through a `kill -9` of the card serving it (issue #10).

The chassis (MIO, DPC 1 active, DPC 2 standby) runs in one network namespace, charon with
kernel-libipsec in another (tests/test_e2e_strongswan_netns.py: real CHILD_SAs, real ESP).
charon starts c1 and sends DPDs every 2 s. DPC 1 checkpoints the SA to DPC 2 through the
MIO; `kill -9` of DPC 1 right after a DPD; DPC 2 takes it over and sends the
IKEV2_MESSAGE_ID_SYNC INFORMATIONAL (Message ID 0) before anything else. Afterwards, against
DPC 2: the sync answered by charon, charon's next DPD answered, ESP through every child both
ways (DPC 2 sends past DPC 1's sequence numbers, or libipsec's replay window would drop the
echoes), the same IKE SA and children at charon (same SPIs, no second IKE_SA_INIT), and a
child rekey by charon.

Three cases. With two payloads the gateway creates c2 itself (its CREATE_CHILD_SA, Message
ID 0, answered by charon), so charon expects ID 1 from us and the sync's ID 0 is the real
RFC 6311 case; with one payload charon still expects ID 0 and takes the sync as an ordinary
next request. The IKE SA uses AES-CBC + HMAC or AES-GCM: charon cannot send a second
response with ID 0 under AES-GCM (see explain_loss).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time

import pytest
from helpers import wait_until, write_topology
from netns import pair
from test_e2e_strongswan_netns import (
    ECHO,
    Setup,
    card_log,
    charon_packets,
    charon_sas,
    child_lines,
    counters,
    dump,
    gw_sas,
    installed,
    installed_names,
)

from cards.recovery import ESP_SEQ_MARGIN

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

# Lenient heartbeats (2 s) as in the netns tests: a kill is seen at once through the
# backplane's child watch, and a loaded host must not fail a card on a late heartbeat.
TOPO = """\
name: swanfo
platform: asr5500
timers:
  heartbeat-interval-ms: 200
  heartbeat-liveness: 10
cards:
  5: {type: mio, role: active}
  1: {type: dpc, role: active}
  2: {type: dpc, role: standby}
"""
CHILDREN = ("c1", "c2")
DPD_DELAY = 2  # seconds: charon sends an empty INFORMATIONAL after this long without traffic


@pytest.fixture
def link():
    """As in the netns tests (requested before chassis_factory, so torn down after it). A
    host where network namespaces cannot be made fails the test: CI must have them."""
    with pair() as made:
        yield made


@pytest.fixture
def failover_setup(link, chassis_factory, tmp_path):
    made: list[Setup] = []

    def factory(*, cbc: bool, children: tuple[str, ...]) -> Setup:
        """``cbc``: the IKE SA with AES-CBC-256 + HMAC-SHA2-256 instead of Setup's AES-GCM-256
        at both ends; ``children``: the template's payloads and charon's children."""

        def standby_topology(_topology, **kw):  # Setup writes its own topology: ours instead
            return chassis_factory(write_topology(tmp_path, TOPO, "failover.yaml"), **kw)

        s = Setup(link, standby_topology, tmp_path, payloads=children, charon_children=children,
                  echo=True)  # fmt: skip
        made.append(s)
        if cbc:
            res = s.ch.exec("configure", "context segw", "ikev2-ikesa transform-set ike-gcm",
                            "encryption aes-cbc-256", "hmac sha2-256-128", "end")  # fmt: skip
            assert not any(r.error for r in res), [r.output for r in res if r.error]
            for slot in (1, 2):  # both cards serve the new transform set before charon asks
                wait_until(lambda slot=slot: "reconfigured" in card_log(s.ch, slot), 10,
                           what=f"DPC {slot} reconfigured")  # fmt: skip
        conf = s.charon.swanctl_dir / "swanctl.conf"
        text = conf.read_text().replace("mobike = no", f"mobike = no\n    dpd_delay = {DPD_DELAY}s")
        if cbc:
            text = text.replace("proposals = aes256gcm16-", "proposals = aes256-sha256-")
        conf.write_text(text)
        loaded = s.charon.swanctl("--load-all")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        return s

    yield factory
    for s in made:
        s.stop()


def dpc(ch) -> dict[int, dict]:
    return {c["slot"]: c for c in ch.exec("show card table")[0].data["cards"]
            if c["type"] == "dpc"}  # fmt: skip


def echo(s: Setup, i: int, n: int, port: int) -> int:
    """n UDP datagrams from charon's side of child i to its core /28 and back (the card echoes
    them: `ipsec sink echo`); how many came back within the script's 10 s."""
    target = str(ipaddress.ip_address(s.core(i)[0]) + 5)
    done = subprocess.run(
        s.link.exec_argv(s.link.peer, sys.executable, "-c", ECHO, s.enb_ts(i), target,
                         str(port), str(n)),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return int(done.stdout.strip() or 0)


def ipsec_rows(ch) -> dict[str, dict]:
    return {r["payload"]: r for r in
            ch.exec("show crypto ipsec security-associations")[0].data["sas"]}  # fmt: skip


def since(log: str, mark: int) -> str:
    return log[mark:]


# How an AES-GCM IKE SA is lost at the sync (strongSwan 5.9.8; upstream unchanged): charon
# takes AES-GCM IKE IVs from the Message ID (libstrongswan iv_gen_seq: one rising sequence for
# the requests it sends, one for its responses) and does not cache its answer to a sync, so it
# can send a response with Message ID 0 only once per IKE SA; a second time it logs
# "encrypting encrypted payload failed, no IV or padding" and destroys the IKE SA without a
# word to us. When the gateway created c2 (its CREATE_CHILD_SA, ID 0, answered by charon),
# charon's one response with ID 0 is used before the sync: the test names that (pytest.xfail)
# and fails on anything else. (A second copy of our sync, once sent when the NPU still steered
# charon's answer to the dead card, was a chassis bug: the sync now waits for the remap.)
NO_IV = "encrypting encrypted payload failed, no IV or padding"
SYNC_IN = "parsed INFORMATIONAL request 0 [ N(MSG_ID_SYN) ]"
AFTER_OUR_REQUEST = (
    "strongSwan limitation: its answer to our CREATE_CHILD_SA for c2 (ID 0) used up its "
    "response IV 0, so it cannot answer the sync (ID 0) under AES-GCM"
)


def explain_loss(log: str, *, cbc: bool, gateway_child: bool) -> None:
    """charon destroyed the IKE SA after the sync: xfail for the known strongSwan reason."""
    if cbc or NO_IV not in log:
        return
    if gateway_child and log.count(SYNC_IN) == 1 and log.index(NO_IV) > log.index(SYNC_IN):
        pytest.xfail(AFTER_OUR_REQUEST)


@pytest.mark.parametrize(
    "cbc, children",
    [
        pytest.param(True, CHILDREN, id="cbc-gateway-child"),
        pytest.param(False, CHILDREN[:1], id="gcm-charon-child"),
        pytest.param(False, CHILDREN, id="gcm-gateway-child"),
    ],
)
def test_charon_keeps_its_ike_sa_through_a_kill_of_the_serving_dpc(failover_setup, cbc, children):
    """charon starts c1. With two payloads the gateway creates c2 itself (Message ID 0 from us,
    answered), so charon expects ID 1 from us and our sync's ID 0 is the real RFC 6311 case;
    with one, charon expects ID 0 and takes the sync as an ordinary next request."""
    s = failover_setup(cbc=cbc, children=children)
    ch, charon = s.ch, s.charon
    gateway_child = len(children) > 1
    started = time.monotonic()
    try:
        wait_until(lambda: dpc(ch)[2]["state"] == "standby", 10, what="DPC 2 standby")
        s.initiate("c1")
        wait_until(lambda: installed_names(charon) == list(children), 10,
                   what=f"{', '.join(children)} installed at charon")  # fmt: skip
        assert s.serving() == 1
        suite = "AES_CBC_256/HMAC_SHA2_256_128" if cbc else "AES_GCM_16_256"
        assert f"selected proposal: IKE:{suite}/PRF_HMAC_SHA2_256/ECP_256" in charon.log()
        before = charon_sas(charon)
        for i, name in enumerate(children, 1):  # ESP both ways through DPC 1
            assert echo(s, i, 5, 2152 + i) == 5, name
        rows = ipsec_rows(ch)
        seq_before = {n: rows[n]["seq_out"] for n in children}
        assert all(rows[n]["card"] == 1 and seq_before[n] >= 5 for n in children), rows
        wait_until(lambda: counters(ch)[2].get("held_sas") == 1, 10,
                   what="DPC 2 holding the IKE SA")  # fmt: skip

        # Kill just after one of charon's DPD exchanges, so that none is in flight to DPC 1.
        dpd = re.compile(r"parsed INFORMATIONAL response (\d+) \[ \]")
        seen = len(dpd.findall(charon.log()))
        wait_until(lambda: len(dpd.findall(charon.log())) > seen, 3 * DPD_DELAY + 5,
                   interval=0.05, what="a DPD exchange with DPC 1")  # fmt: skip
        mark = len(charon.log())
        npu_dropped = ch.status()["npu"].get("dropped", 0)
        killed = ch.fault({"fault": "kill", "target": "slot-1"})
        killed_at = time.monotonic()
        assert killed["pid"]
        wait_until(lambda: dpc(ch)[2]["state"] == "active", 5, what="DPC 2 taking over")
        mio = wait_until(lambda: "took over" in (t := (ch.run.logs / "mio-5.log").read_text())
                         and t, 5, what="the takeover in the MIO's log")  # fmt: skip
        assert f"card 2 took over 1 IKE SAs ({len(children)} children)" in mio, mio[-2000:]
        assert dpc(ch)[1]["state"] == "failed"

        # 1. RFC 6311: DPC 2's INFORMATIONAL with Message ID 0, answered by charon.
        sync = re.compile(
            r"responder requested MID sync: initiating (\d+)\[(\d+)\], responding (\d+)\[(\d+)\]"
        )
        m = wait_until(lambda: sync.search(since(charon.log(), mark)), 10, interval=0.05,
                       what="charon taking the Message ID sync")  # fmt: skip
        time.sleep(0.2)  # the lines that follow it
        after_kill = since(charon.log(), mark)
        synced_s = time.monotonic() - killed_at

        def lost(log: str) -> None:
            explain_loss(log, cbc=cbc, gateway_child=gateway_child)

        if "ESTABLISHED => DESTROYING" in after_kill:
            lost(after_kill)
        for bad in (NO_IV, "ESTABLISHED => DESTROYING",
                    "ignore MSG_ID_SYN", "invalid MSG_ID_SYN"):  # fmt: skip
            assert bad not in after_kill, f"charon: {bad!r} after the sync:\n{after_kill}"
        assert SYNC_IN in after_kill, after_kill
        assert "generating INFORMATIONAL response 0 [ N(MSG_ID_SYN) ]" in after_kill, after_kill
        # the sync came first: nothing else of ours reached charon before it
        first = after_kill.index(SYNC_IN)
        assert "parsed" not in after_kill[:first], after_kill[:first]
        initiating, was_initiating, responding, was_responding = map(int, m.groups())
        assert was_responding == (1 if gateway_child else 0), m[0]
        assert responding > was_responding and initiating >= was_initiating, m[0]

        # 2. Liveness: charon's next DPD, with the Message ID agreed in the sync, answered.
        def dpd_or_gone():
            log = since(charon.log(), mark)
            return [int(x) for x in dpd.findall(log)] or ("ESTABLISHED => DESTROYING" in log and -1)

        dpd_after = wait_until(dpd_or_gone, 3 * DPD_DELAY + 10, interval=0.05,
                               what="charon's DPD answered by DPC 2")  # fmt: skip
        if dpd_after == -1:
            lost(since(charon.log(), mark))
            raise AssertionError(f"charon dropped the IKE SA:\n{since(charon.log(), mark)}")
        assert dpd_after[0] == initiating, (dpd_after, m[0])
        assert f"generating INFORMATIONAL request {initiating} [ ]" in since(charon.log(), mark)

        # 3. ESP both ways through every child, now at DPC 2, past DPC 1's sequence numbers
        # (libipsec's anti-replay window would drop the echoes otherwise).
        for i, name in enumerate(children, 1):
            assert echo(s, i, 5, 2160 + i) == 5, name
        rows = ipsec_rows(ch)
        for n in children:
            assert rows[n]["card"] == 2, rows[n]
            assert rows[n]["seq_out"] >= seq_before[n] + ESP_SEQ_MARGIN + 5, (rows[n], seq_before)
        packets = charon_packets(charon.swanctl("--list-sas").stdout)
        assert all(packets[n]["in"] >= 10 and packets[n]["out"] >= 10 for n in children), packets

        # 4. The same IKE SA and CHILD_SAs at charon, never re-established; DPC 2 serves it.
        now = charon_sas(charon)
        assert len(now["ikes"]) == 1 and now["ike"] == before["ike"], (before, now)
        kids = installed(charon)
        assert all(
            [(c["in"], c["out"]) for c in kids[n]]
            == [(c["in"], c["out"]) for c in before["children"][n]]
            for n in children
        )
        clog = charon.log()
        assert len(re.findall(r"generating IKE_SA_INIT request", clog)) == 1, clog
        assert len(re.findall(r"initiating IKE_SA segw\[", clog)) == 1, clog
        [row] = gw_sas(ch)
        assert row["card"] == 2 and row["state"] == "ESTABLISHED"
        assert (row["spi_i"], row["spi_r"]) == (before["ike"]["spi_i"], before["ike"]["spi_r"])

        # 5. A child rekey by charon, answered by DPC 2.
        [old_c1] = before["children"]["c1"]
        rekey_mark = len(charon.log())
        done = charon.swanctl("--rekey", "--child", "c1")
        assert done.returncode == 0, done.stdout + done.stderr

        def c1_rekeyed():
            sas = installed(charon)
            return len(sas.get("c1", [])) == 1 and sas["c1"][0]["in"] != old_c1["in"] and sas

        [new_c1] = wait_until(c1_rekeyed, 15, what="c1 rekeyed at charon")["c1"]
        rekey_log = since(charon.log(), rekey_mark)
        assert re.search(r"generating CREATE_CHILD_SA request \d+ \[ N\(REKEY_SA\) SA No",
                         rekey_log), rekey_log  # fmt: skip
        assert re.search(r"parsed CREATE_CHILD_SA response \d+ \[ SA No", rekey_log), rekey_log
        assert f"closing CHILD_SA c1{{1}} with SPIs {old_c1['in']}_i" in rekey_log, rekey_log
        assert int(new_c1["out"][:2], 16) == 2  # the new child's inbound SPI is DPC 2's
        wait_until(lambda: any(f"our SPI {new_c1['out']}, their SPI {new_c1['in']}" in u
                               for u in child_lines(ch, 2)), 5,
                   what="the rekeyed c1 up at DPC 2")  # fmt: skip
        assert echo(s, 1, 3, 2170) == 3  # and the new child carries traffic
        assert charon_sas(charon)["ike"] == before["ike"]
        copies = since(charon.log(), mark).count(SYNC_IN)
        dropped = ch.status()["npu"].get("dropped", 0) - npu_dropped
        print(
            f"RFC 6311 sync answered {synced_s:.2f} s after the kill ({m[0]}; charon saw "
            f"{copies} of our syncs, the NPU dropped {dropped} datagrams); "
            f"test {time.monotonic() - started:.1f} s"
        )
    except AssertionError:
        print(dump(s))
        print(f"--- dpc-2.log (all)\n{card_log(ch, 2)[-6000:]}")
        raise
