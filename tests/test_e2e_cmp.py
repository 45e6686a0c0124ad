"""CMPv2 on a live chassis: the lab CA (real issuance, key rollover, polling, failures,
restart mid-poll) and the real OpenSSL mock CA (`openssl cmp -port 0`), driven through
the StarOS commands and checked in `show cmp history` / `show cmp statistics`."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest
from cryptography import x509
from helpers import slot_pid, wait_until, write_topology
from test_cmp_interop import SECRET, mock, pbm_server, pki  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

LAB = """\
name: {name}
platform: asr5500
cards:
  5: {{type: mio, role: active}}
  1: {{type: dpc, role: active}}
lab:
  ca: {{psk: s3cret}}
startup-config: |
  config
    ca-certificate name lab-root pem url ${{lab.ca.root}}
  end
  cmp initialize modulus 2048 cert-name segw subject-name "/O=Lab/CN=segw.example.net" ca-psk s3cret ca-root lab-root ca-url ${{lab.ca.url}}
"""


def history(ch):
    return ch.exec("show cmp history")[0].data["history"]


def certificate(ch, name="segw"):
    data = ch.exec(f"show certificate name {name}")[0].data
    return data["items"][0] if data else None


def lab_admin(ch, **changes):
    url = ch.manifest["lab"]["ca"]["admin"]
    resp = (
        httpx.post(url, json=changes, timeout=5, trust_env=False)
        if changes
        else httpx.get(url, timeout=5)
    )
    resp.raise_for_status()
    return resp.json()


@pytest.fixture
def lab(chassis_factory, tmp_path):
    ch = chassis_factory(write_topology(tmp_path, LAB.format(name="cmplab")))
    wait_until(lambda: certificate(ch), 10, what="boot-time enrolment")
    return ch


def update(ch, name="segw", ca="lab-root"):
    return ch.exec(
        f"cmp update current-cert {name} modulus 2048 ca-root {ca} ca-url {ch.manifest['lab']['ca']['url']}"
    )[0]


def test_boot_enrolment_issues_from_the_lab_ca_and_reaches_the_cards(lab):
    cert = certificate(lab)
    assert cert["issuer"] == "CN=SeGW Lab Issuing CA,O=SeGW Lab"
    assert cert["subject"] == "CN=segw.example.net,O=Lab"
    assert history(lab)[-1] | {"time": None} == {
        "time": None,
        "type": "ir",
        "cert": "segw",
        "ca": "lab-root",
        "result": "success",
        "reason": "",
        "polls": 0,
    }
    wait_until(
        lambda: certificate(lab)["cards"] == {"1": f"v{certificate(lab)['generation']}"},
        5,
        what="fan-out",
    )
    # The chain went into the store with it; the lab's database knows the serial.
    assert lab_admin(lab)["counts"]["issued"] == 1


def test_key_update_rolls_the_key_and_enroll_signs_with_the_current_certificate(lab):
    before = certificate(lab)
    res = update(lab)
    assert not res.error, res.output
    after = certificate(lab)
    assert after["sha256"] != before["sha256"] and after["generation"] > before["generation"]
    url = lab.manifest["lab"]["ca"]["url"]
    cr = lab.exec(
        f'cmp enroll current-cert segw modulus 2048 subject-name "/CN=second" cert-name second ca-root lab-root ca-url {url}'
    )[0]
    assert not cr.error, cr.output
    assert certificate(lab, "second")["subject"] == "CN=second"
    assert [h["type"] for h in history(lab)] == ["ir", "kur", "cr"]


def test_polling_goes_on_in_the_background(lab):
    lab_admin(lab, poll=2, check_after=1)
    res = update(lab)
    assert "polling" in res.output
    out = lab.exec("show cmp outstanding-req")[0].data["requests"]
    assert out[0]["cert"] == "segw" and out[0]["state"] == "polling"
    wait_until(lambda: history(lab)[-1]["type"] == "kur", 10, what="the polled kur")
    assert history(lab)[-1]["result"] == "success" and history(lab)[-1]["polls"] == 2
    assert lab.exec("show cmp outstanding-req")[0].data["requests"] == []
    stats = lab.exec("show cmp statistics")[0].data["messages"]
    assert stats["pollReq"]["sent"] == 2


@pytest.mark.parametrize(
    "behaviour, reason",
    [
        ({"reject": "badAlg"}, "badAlg"),
        ({"error": True}, "error response"),
        ({"down": True}, "unreachable"),
    ],
    ids=["rejected", "error", "down"],
)
def test_a_failed_transaction_never_replaces_the_certificate_in_force(lab, behaviour, reason):
    before = certificate(lab)
    lab_admin(lab, **behaviour)
    res = update(lab)
    assert res.error and reason in res.output
    assert certificate(lab)["sha256"] == before["sha256"]
    last = history(lab)[-1]
    assert last["result"] == "failure" and reason in last["reason"]
    assert lab.exec("show cmp statistics")[0].data["transactions"]["kur"]["failure"] == 1


def test_polling_survives_a_supervisor_kill(lab):
    lab_admin(lab, poll=3, check_after=1)
    before = certificate(lab)
    assert "polling" in update(lab).output
    journal = lab.run.flash / "cmp-journal" / "segw.json"
    assert journal.exists() and journal.stat().st_mode & 0o777 == 0o600
    epoch = lab.status()["epoch"]
    os.kill(slot_pid(lab, 5)[0], signal.SIGKILL)
    wait_until(lambda: lab.status()["epoch"] > epoch, 10, what="restarted supervisor")
    # The new supervisor's history holds only what it did: the resumed kur.
    wait_until(lambda: [h["type"] for h in history(lab)] == ["kur"], 15, what="resumed kur")
    assert not journal.exists()
    assert certificate(lab)["sha256"] != before["sha256"]
    assert history(lab)[-1]["result"] == "success"


def test_boot_enrolment_is_not_repeated_while_the_certificate_is_valid(lab):
    issued = lab_admin(lab)["counts"]["issued"]
    epoch = lab.status()["epoch"]
    os.kill(slot_pid(lab, 5)[0], signal.SIGKILL)
    wait_until(lambda: lab.status()["epoch"] > epoch, 10, what="restarted supervisor")
    wait_until(lambda: certificate(lab), 10, what="store reloaded")
    assert lab_admin(lab)["counts"]["issued"] == issued


# --- the real OpenSSL mock CA --------------------------------------------------------------

PLAIN = """\
name: {name}
platform: asr5500
cards:
  5: {{type: mio, role: active}}
  1: {{type: dpc, role: active}}
"""


@pytest.fixture
def seeded(chassis_factory, tmp_path, pki):  # noqa: F811
    """A chassis whose store holds the mock's CA and rsp_cert with its key (`key reuse`)."""
    ch = chassis_factory(write_topology(tmp_path, PLAIN.format(name="cmpmock")))
    d = pki["dir"]
    for name in ("ca.crt", "rsp.crt", "rsp.key", "client.crt", "client.key"):
        (ch.run.flash / name).write_bytes((d / name).read_bytes())
    res = ch.exec(
        "configure",
        "cmp cert-store location /flash/cert-store key reuse",
        "ca-certificate name mockroot pem url /flash/ca.crt",
        "certificate name gw pem url /flash/rsp.crt private-key pem url /flash/rsp.key",
        "certificate name client pem url /flash/client.crt private-key pem url /flash/client.key",
        "end",
    )
    assert not any(r.error for r in res), [r.output for r in res if r.error]
    return ch


def ir(ch, port, secret="1234-5678", name="gw"):
    return ch.exec(
        f'cmp initialize modulus 2048 cert-name {name} subject-name "/CN=Chassis" ca-psk {secret} '
        f"ca-root mockroot ca-url http://127.0.0.1:{port}/pkix/"
    )[0]


def last(ch):
    return history(ch)[-1]


def test_openssl_ir_pbm(seeded, mock, pki):  # noqa: F811
    server = pbm_server(mock, "-rsp_capubs", str(pki["dir"] / "ca.crt"))
    res = ir(seeded, server.port)
    assert not res.error, res.output
    assert last(seeded)["result"] == "success"
    assert seeded.exec("show cmp statistics")[0].data["messages"]["certConf"]["sent"] == 1


def test_openssl_implicit_confirm(seeded, mock):  # noqa: F811
    server = pbm_server(mock, "-grant_implicitconf")
    assert not ir(seeded, server.port).error
    stats = seeded.exec("show cmp statistics")[0].data["messages"]
    assert last(seeded)["result"] == "success" and "certConf" not in stats


def test_openssl_polling(seeded, mock):  # noqa: F811
    server = pbm_server(mock, "-poll_count", "2", "-check_after", "1")
    res = ir(seeded, server.port)
    assert not res.error
    wait_until(
        lambda: last(seeded)["result"] == "success" if history(seeded) else False,
        10,
        what="polled ir",
    )
    assert last(seeded)["polls"] == 2


def test_openssl_cr_with_signature(seeded, mock, pki):  # noqa: F811
    server = mock()
    res = seeded.exec(
        'cmp enroll current-cert client modulus 2048 subject-name "/CN=Chassis" cert-name gw '
        f"ca-root mockroot ca-url http://127.0.0.1:{server.port}/pkix/"
    )[0]
    assert not res.error, res.output
    assert last(seeded)["type"] == "cr" and last(seeded)["result"] == "success"


def test_openssl_kur(seeded, mock):  # noqa: F811
    server = mock()
    res = seeded.exec(
        f"cmp update current-cert gw modulus 2048 ca-root mockroot ca-url http://127.0.0.1:{server.port}/pkix/"
    )[0]
    assert not res.error, res.output
    assert last(seeded)["type"] == "kur" and last(seeded)["result"] == "success"


def test_openssl_fresh_key_is_refused(seeded, mock):  # noqa: F811
    server = pbm_server(mock)
    res = ir(seeded, server.port, name="fresh")  # no stored key for "fresh": a new one is made
    assert res.error and "public key mismatch" in res.output
    assert last(seeded)["result"] == "failure"
    assert (
        seeded.exec("show cmp statistics")[0].data["messages"]["certConf"]["sent"] == 1
    )  # the rejection


@pytest.mark.parametrize(
    "args, reason",
    [
        (("-pkistatus", "2", "-failurebits", "4", "-statusstring", "denied"), "badRequest"),
        (("-send_error",), "error response"),
    ],
    ids=["rejection", "error"],
)
def test_openssl_refusals(seeded, mock, args, reason):  # noqa: F811
    server = pbm_server(mock, *args)
    res = ir(seeded, server.port)
    assert res.error and reason in res.output
    assert last(seeded)["result"] == "failure" and reason in last(seeded)["reason"]


def test_openssl_wrong_secret(seeded, mock):  # noqa: F811
    server = pbm_server(mock)
    res = ir(seeded, server.port, secret="WRONG")
    assert res.error and "unverifiable error response" in res.output
    assert "WRONG" not in json.dumps(history(seeded))


def test_issued_certificate_chain_is_stored(seeded, mock, pki):  # noqa: F811
    server = pbm_server(mock, "-rsp_capubs", str(pki["dir"] / "ca.crt"))
    assert not ir(seeded, server.port).error
    from chassis.ipc.rundir import RunDir  # noqa: F401
    from supervisor.pki.service import DEVICES
    from supervisor.pki.store import Store

    store = Store({dev: seeded.run.root / folder for dev, folder in DEVICES.items()})
    chain = x509.load_pem_x509_certificates(store.read("certificate", "gw", "chain.pem"))
    assert (
        chain[-1].public_bytes(
            __import__("cryptography").hazmat.primitives.serialization.Encoding.DER
        )
        == pki["ca"]
    )


@pytest.mark.parametrize(
    "tamper, reason",
    [
        ("garbage", "malformed"),
        ("unprotected", "unprotected"),
        ("wrong_tid", "transactionID"),
        ("wrong_nonce", "recipNonce"),
        ("bad_protection", "protection"),
        ("replay", "protection"),  # the boot ir's answer: PBM, another transaction
    ],
)
def test_spoiled_answers_are_rejected_with_the_reason_in_history(lab, tamper, reason):
    before = certificate(lab)
    lab_admin(lab, tamper=tamper)
    res = update(lab)
    assert res.error, res.output
    last_entry = history(lab)[-1]
    assert last_entry["result"] == "failure" and reason.lower() in last_entry["reason"].lower(), (
        last_entry
    )
    assert certificate(lab)["sha256"] == before["sha256"]


def test_sha1_only_when_configured_and_vendor_certificate_enrolment(lab):
    url = lab.manifest["lab"]["ca"]["url"]
    ok = lab.exec(
        "configure",
        "cmp hash-algorithm sha1",
        "end",
        f'cmp enroll current-cert segw modulus 2048 subject-name "/CN=sha1" cert-name sha1 ca-root lab-root ca-url {url}',
    )
    assert not any(r.error for r in ok), [r.output for r in ok]
    assert "cmp hash-algorithm sha1" in lab.exec("show configuration")[0].output
    # 3GPP TS 33.310: the initial request signed with a (vendor) certificate instead of a PSK.
    vendor = lab.exec(
        "configure",
        "no cmp hash-algorithm",
        "end",
        f'cmp initialize modulus 2048 cert-name operator subject-name "/CN=operator" vendor-cert segw '
        f"ca-root lab-root ca-url {url}",
    )
    assert not any(r.error for r in vendor), [r.output for r in vendor]
    assert certificate(lab, "operator")["subject"] == "CN=operator"


TRAPD_CONF = "authCommunity log public\n"


@pytest.fixture
def snmptrapd(tmp_path):
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("snmptrapd") or "/usr/sbin/snmptrapd"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "snmptrapd.conf").write_text(TRAPD_CONF)
    log = tmp_path / "traps.log"
    proc = subprocess.Popen(
        [binary, "-f", "-C", "-c", str(tmp_path / "snmptrapd.conf"), "-m", "", "-M", "/dev/null",
         "-Lf", str(log), "-On", "-n", f"udp:127.0.0.1:{port}"],
        env={**os.environ, "SNMP_PERSISTENT_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not log.exists():
        time.sleep(0.05)
    time.sleep(0.2)
    yield port, log
    proc.kill()
    proc.wait(5)


def test_expiry_trap_fires_once_and_the_automatic_update_renews(lab, snmptrapd):
    port, log = snmptrapd
    before = certificate(lab)
    res = lab.exec(
        "configure",
        f"snmp target lab 127.0.0.1 port {port} community public",
        "cmp cert-trap time 240",
        "cmp auto-fetch current-name segw ca-root lab-root time 5",
        "end",
    )
    assert not any(r.error for r in res)
    assert "1.3.6.1.3.8164.1.1" not in log.read_text()
    lab.warp(361 * 86400)  # 4 days before notAfter: inside both thresholds
    wait_until(lambda: "1.3.6.1.3.8164.1.1" in log.read_text(), 10, what="the expiry trap")
    assert "segw" in log.read_text()
    wait_until(lambda: certificate(lab)["sha256"] != before["sha256"], 15, what="the automatic kur")
    assert history(lab)[-1]["type"] == "kur" and history(lab)[-1]["result"] == "success"
    # Once per crossing: the renewed certificate is far from expiry, no second trap.
    import time

    time.sleep(2.5)
    assert log.read_text().count("1.3.6.1.3.8164.1.1") == 1


ASR9000_LAB = """\
name: {name}
platform: asr9000
cards:
  8: {{type: rsp, role: active}}
  0: {{type: vsm, role: active}}
  1: {{type: vsm, role: active}}
lab:
  ca: {{psk: s3cret}}
startup-config: |
  config
    ca-certificate name lab-root pem url ${{lab.ca.root}}
  end
"""


def test_asr9000_cmp_runs_for_one_vsm(chassis_factory, tmp_path):
    ch = chassis_factory(write_topology(tmp_path, ASR9000_LAB.format(name="vsmcmp")))
    url = ch.manifest["lab"]["ca"]["url"]
    cmd = (
        f'cmp initialize modulus 2048 cert-name segw subject-name "/CN=vsm" ca-psk s3cret '
        f"ca-root lab-root ca-url {url}"
    )
    refused = ch.exec(cmd)[0]
    assert refused.error and "--card" in refused.output
    res = ch.exec(cmd, card=0)[0]
    assert not res.error, res.output
    table = {r["slot"]: r.get("attach") for r in ch.exec("show card table")[0].data["cards"]}
    assert table[0].startswith("cert segw v") and table[1] == "no cert"
    assert certificate(ch)["subject"] == "CN=vsm"  # stored on the RSP too


def test_manual_poll_clear_and_statistics_reset(lab):
    lab_admin(lab, poll=1, check_after=3600)  # the CA says: come back in an hour
    assert "polling" in update(lab).output
    poll = lab.exec("cmp poll current-cert segw")[0]
    assert not poll.error, poll.output
    wait_until(lambda: history(lab)[-1]["type"] == "kur", 10, what="the kur after a manual poll")
    assert lab.exec("cmp poll current-cert segw")[0].error  # nothing outstanding any more
    lab_admin(lab, poll=2, check_after=3600)
    assert "polling" in update(lab).output
    assert not lab.exec("clear cmp cert-name segw")[0].error
    assert lab.exec("show cmp outstanding-req")[0].data["requests"] == []
    assert not (lab.run.flash / "cmp-journal" / "segw.json").exists()
    assert lab.exec("cmp poll current-cert segw")[0].error  # nothing left to poll
    assert [h["type"] for h in history(lab)] == ["ir", "kur"]  # the cleared request never finished
    assert not lab.exec("clear cmp statistics")[0].error
    stats = lab.exec("show cmp statistics")[0].data
    assert stats["messages"] == {} and stats["transactions"]["ir"] == {"success": 0, "failure": 0}
