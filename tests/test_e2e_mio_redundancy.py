"""Management-card redundancy, end to end: MIO 5 active, MIO 6 standby in sync, a DPC with an
eNodeB's tunnel. `kill -9` of the active MIO: the backplane promotes the standby (a higher
epoch), which serves with the replicated running configuration; the DPC re-attaches and
resyncs without dropping the tunnel; the old MIO comes back as the standby. Then the new
active hangs: the other takes over again, and when the hung one resumes it sees the higher
epoch and steps down (restarted as the standby): two actives are never both obeyed.
"""

from __future__ import annotations

import time

import pytest
from helpers import wait_until
from test_e2e_failover import Enodeb, bring_up, serving_chassis

from cards.ike.events import Alive

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPO = """\
name: mio-pair
platform: asr5500
cards:
  5: {type: mio, role: active}
  6: {type: mio, role: standby}
  1: {type: dpc, role: active}
"""


def slots(ch) -> dict[int, dict]:
    return {s["slot"]: s for s in ch.status()["slots"]}


def served(ch, n: int) -> dict:
    """The n-th management takeover, once the new active MIO answered it is serving (the
    CLI must not reach the old active's sockets before the new one has bound them)."""
    return wait_until(lambda: len(t := ch.status()["mgmt_takeovers"]) >= n
                      and "active_ms" in t[n - 1] and t[n - 1], 10,
                      what=f"takeover {n} done")  # fmt: skip


def alive(e: Enodeb) -> None:
    before = len(e.of(Alive))
    e.handle(e.ep.check_liveness(e.sa.spi_i, time.monotonic()))
    e.pump(lambda: len(e.of(Alive)) > before, what="liveness through the DPC")


def test_the_standby_mio_takes_over_and_an_old_active_steps_down(chassis_factory, tmp_path):
    ch, config, gateway = serving_chassis(
        chassis_factory,
        tmp_path,
        TOPO,
        ["ip pool run-time-pool 10.77.0.0 255.255.0.0 public 0"],
        standby=None,
    )
    (e,) = bring_up(config, gateway, 1)
    try:
        epoch = ch.status()["epoch"]
        time.sleep(0.5)  # the standby received the running configuration (acked pushes)
        ch.fault({"fault": "kill", "target": "slot-5"})
        takeover = served(ch, 1)
        assert ch.status()["epoch"] == epoch + 1 and slots(ch)[6]["role"] == "active"
        shown = wait_until(lambda: (r := ch.exec("show configuration")[0]) and not r.error
                           and r.output, 5, what="the CLI through MIO 6")  # fmt: skip
        assert "ip pool run-time-pool 10.77.0.0 255.255.0.0" in shown  # replicated, not boot
        assert takeover["from"] == 5 and takeover["to"] == 6 and takeover["why"] == "process exited"
        wait_until(lambda: slots(ch)[5]["state"] == "standby", 10, what="MIO 5 back as standby")
        wait_until(lambda: {c["slot"]: c["state"] for c in ch.exec("show card table")[0]
                            .data["cards"]}.get(1) == "active", 10, what="DPC 1 re-attached")  # fmt: skip
        alive(e)
        assert e.sa.state.name == "ESTABLISHED" and len(e.ep.sas) == 1  # the same tunnel

        time.sleep(0.5)  # MIO 5 in sync with MIO 6
        hung_pid = slots(ch)[6]["pid"]
        ch.fault({"fault": "hang", "target": "slot-6"})
        second = served(ch, 2)
        assert second["to"] == 5 and second["why"].startswith("missed")
        assert ch.status()["epoch"] == epoch + 2 and slots(ch)[5]["role"] == "active"
        wait_until(lambda: {c["slot"]: c["state"] for c in ch.exec("show card table")[0]
                            .data["cards"]}.get(1) == "active", 10,
                   what="DPC 1 re-attached to MIO 5 while MIO 6 hangs")  # fmt: skip
        alive(e)
        ch.fault({"fault": "resume", "target": "slot-6"})
        # the resumed old active hears the higher epoch, steps down, comes back as standby
        wait_until(lambda: slots(ch)[6]["pid"] not in (None, hung_pid)
                   and slots(ch)[6]["state"] == "standby", 10, what="MIO 6 stepped down")  # fmt: skip
        assert slots(ch)[5]["role"] == "active" and ch.status()["epoch"] == epoch + 2
        assert "stepping down" in (ch.run.logs / "mio-6.log").read_text()
        wait_until(lambda: {c["slot"]: c["state"] for c in ch.exec("show card table")[0]
                            .data["cards"]}.get(1) == "active", 10, what="DPC 1 attached")  # fmt: skip
        alive(e)
        assert len(e.ep.sas) == 1
    finally:
        e.close()
