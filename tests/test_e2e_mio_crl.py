"""The CRL cache survives a management-card takeover (supervisor/ha.py): MIO 5 fetches a CRL
listing one eNodeB, both DPCs hold it, MIO 6 (the standby) receives it with its index and
version. Then the CRL file goes away and MIO 5 is killed: MIO 6 serves the same CRL (same
version, same fetch time, nothing fetched again), the DPCs keep that version, and the
revoked eNodeB is still refused while a good one comes up. The CRL number is 13 octets
(RFC 5280 allows 20), more than msgpack's integers hold."""

from __future__ import annotations

import pytest
from crl_material import write_crl
from helpers import ike_attempt, wait_until, write_topology
from test_e2e_crl_refresh import Lab
from test_e2e_mio_redundancy import served, slots

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOPO = """\
name: mio-crl
platform: asr5500
cards:
  5: {type: mio, role: active}
  6: {type: mio, role: standby}
  1: {type: dpc, role: active}
  2: {type: dpc, role: active}
"""
NUMBER = 2**100 + 1


def test_the_new_active_mio_serves_the_crls_the_old_one_fetched(chassis_factory, tmp_path):
    lab = Lab()
    ch = chassis_factory(write_topology(tmp_path, TOPO))
    flash = ch.run.flash
    write_crl(flash / "lab.crl", lab.ca, lab.keys["ca"], 50, seed=1, number=NUMBER,
              extra=(lab.bad.serial_number,))  # fmt: skip
    port = lab.configure(ch, "lab")

    def row() -> dict | None:
        r = ch.exec("show ca-crl name lab")[0]
        return None if r.error or not r.data["items"] else r.data["items"][0]

    before = wait_until(lambda: (r := row()) and set(r["cards"].values()) == {"v1"}
                        and len(r["cards"]) == 2 and r, 20, what="the CRL on both DPCs")  # fmt: skip
    assert before["number"] == str(NUMBER) and before["count"] == 51
    standby_log = ch.run.logs / "mio-6.log"
    wait_until(lambda: "CRL lab version 1 from the active MIO" in standby_log.read_text(), 10,
               what="the CRL at the standby MIO")  # fmt: skip
    (refused,) = ike_attempt(lab.enodeb("bad"), ("127.0.0.1", port))
    assert type(refused).__name__ == "AuthFailed"

    (flash / "lab.crl").unlink()  # a fetch now would fail: the takeover must not need one
    ch.fault({"fault": "kill", "target": "slot-5"})
    served(ch, 1)
    assert slots(ch)[6]["role"] == "active"
    after = wait_until(lambda: (r := row()) and len(r["cards"]) == 2
                       and set(r["cards"].values()) == {"v1"} and r, 20,
                       what="both DPCs holding v1 at MIO 6")  # fmt: skip
    same = ("version", "number", "count", "this_update", "next_update", "last_fetch",
            "last_result")  # fmt: skip
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    assert after["last_result"] == "ok"
    log6 = standby_log.read_text()
    assert "1 CRLs taken over from the old active MIO" in log6 and "fetching" not in log6

    (refused,) = ike_attempt(lab.enodeb("bad"), ("127.0.0.1", port))
    assert type(refused).__name__ == "AuthFailed"
    (event,) = ike_attempt(lab.enodeb("good"), ("127.0.0.1", port))
    assert type(event).__name__ == "Established", event
