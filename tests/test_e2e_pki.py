"""Certificates and keys on a live chassis: install, fan-out, show, bad input, restarts.

Real processes; certificates made by tests/pki_material.py; every wait bounded.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading

import pytest
from helpers import slot_pid, slot_states, small_topology, wait_until, write_topology
from pki_material import key_forms, lab, one_line

from chassis import client
from supervisor.pki import credentials as cred
from supervisor.pki.cipher import ConfigCipher
from supervisor.pki.service import DEVICES
from supervisor.pki.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

INSTALL = [
    "configure",
    "ca-certificate name root pem url /flash/ca.crt",
    "certificate name segw pem url /flash/gw1.crt private-key pem url /flash/gw1.key",
    "end",
]


def ok(ch, *commands, **kw):
    results = ch.exec(*commands, **kw)
    bad = [r for r in results if r.error]
    assert not bad, bad[0].output
    return results


def put_files(ch):
    for name, data in lab().items():
        (ch.run.flash / name).write_bytes(data)


def store_of(ch) -> Store:
    return Store({dev: ch.run.root / folder for dev, folder in DEVICES.items()})


def report(ch, kind="certificate", name="segw"):
    rows = ch.exec(f"show {kind} name {name}")[0].data
    return rows["items"][0] if rows else None


@pytest.fixture
def asr5500(chassis_factory, tmp_path):
    ch = chassis_factory(small_topology(tmp_path, name="pki5500"))
    put_files(ch)
    return ch


def test_certificates_reach_every_packet_card(asr5500):
    ch = asr5500
    ok(ch, *INSTALL)
    wait_until(lambda: report(ch)["cards"] == {"1": "v2", "2": "v2"}, 5, what="both DPCs hold v2")
    assert report(ch, "ca-certificate", "root")["cards"] == {"1": "v1", "2": "v1"}
    row = report(ch)
    assert row["subject"] == "CN=segw.example.net" and row["issuer"] == "CN=Lab Root CA"
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", row["sha256"])
    for slot in (1, 2):
        log = (ch.run.logs / f"dpc-{slot}.log").read_text()
        assert "credential certificate/segw: installed" in log

    # A new version replaces the old one everywhere; removal reaches the cards too.
    ok(
        ch,
        "configure",
        "certificate name segw pem url /flash/gw2.crt private-key pem url /flash/gw2.key",
    )
    wait_until(lambda: report(ch)["cards"] == {"1": "v3", "2": "v3"}, 5, what="v3 everywhere")
    ok(ch, "configure", "no certificate name segw")
    assert ch.exec("show certificate name segw")[0].error
    assert ("certificate", "segw") not in store_of(ch).entries()
    assert not [p for p in (ch.run.flash / "cert-store/private").iterdir() if "segw" in p.name]
    wait_until(
        lambda: "credential certificate/segw: removed" in (ch.run.logs / "dpc-2.log").read_text(),
        5,
        what="DPC 2 dropped the certificate",
    )


def test_inline_encrypted_and_der_forms(asr5500):
    ch = asr5500
    material = lab()
    token = ConfigCipher.load_or_create(ch.run.keys / "config.key").encrypt(material["gw1.key"])
    ok(
        ch,
        "configure",
        f"ca-certificate name root pem data {one_line(material['ca.crt'])}",
        f"certificate name inline pem data {one_line(material['gw1.crt'])} "
        f"private-key pem data {one_line(material['gw1.key'])}",
        f"certificate name sealed pem url /flash/gw1.crt private-key pem encrypted data {token}",
        "certificate name der der url /flash/gw1.der private-key pem url /flash/gw1.key",
    )
    names = {r["name"] for r in ch.exec("show certificate")[0].data["items"]}
    assert names == {"inline", "sealed", "der"}
    assert report(ch, name="der")["sha256"] == report(ch, name="inline")["sha256"]


@pytest.mark.parametrize(
    "command, cause",
    [
        (
            'certificate name segw pem data "-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----" '
            "private-key pem url /flash/gw2.key",
            "malformed",
        ),
        (
            "certificate name segw pem url /flash/gw2.crt private-key pem url /flash/gw1.key",
            "does not match",
        ),
        (
            "certificate name segw pem url /flash/gw1.key private-key pem url /flash/gw1.key",
            "certificate",
        ),
        (
            "certificate name segw pem url /flash/nope.crt private-key pem url /flash/gw2.key",
            "/flash/nope.crt",
        ),
        (
            "certificate name segw pem url tftp://127.0.0.1:9/x.crt private-key pem url /flash/gw2.key",
            "tftp",
        ),
        (
            "certificate name segw pem url http://127.0.0.1:9/x.crt private-key pem url /flash/gw2.key",
            "refused",
        ),
        (
            "certificate name segw pem url ftp://u:secretpw@127.0.0.1:9/x.crt private-key pem url /flash/gw2.key",
            "refused",
        ),
        (
            "certificate name segw pem url /flash/gw2.crt private-key pem encrypted data v1-AAAA",
            "decrypt",
        ),
        (
            'certificate name segw pem data "'
            + "A" * 4096
            + '" private-key pem url /flash/gw2.key',
            "4095",
        ),
    ],
    ids=[
        "bad-pem",
        "mismatch",
        "key-as-cert",
        "missing-file",
        "tftp-down",
        "http-down",
        "ftp-down",
        "bad-token",
        "oversize",
    ],
)
def test_bad_input_names_the_cause_and_keeps_the_certificate_in_force(asr5500, command, cause):
    ch = asr5500
    ok(ch, *INSTALL)
    before = report(ch)
    files = sorted(p.name for p in (ch.run.flash / "cert-store/private").iterdir())
    res = ch.exec("configure", command)[1]
    assert res.error
    lines = res.output.strip().splitlines()
    assert cause in lines[-1], res.output
    assert "secretpw" not in res.output
    assert (
        report(ch)["sha256"] == before["sha256"]
        and report(ch)["generation"] == before["generation"]
    )
    assert sorted(p.name for p in (ch.run.flash / "cert-store/private").iterdir()) == files


def test_expired_certificate_is_accepted_with_a_warning(asr5500):
    res = ok(
        asr5500,
        "configure",
        "certificate name old pem url /flash/expired.crt private-key pem url /flash/gw1.key",
    )
    assert res[1].output.startswith("Warning:") and "expired" in res[1].output
    assert "expired" in asr5500.exec("show certificate name old")[0].output


def test_show_configuration_applies_unchanged(asr5500, tmp_path):
    ch = asr5500
    ok(
        ch,
        *INSTALL,
        "configure",
        "certificate name hashed pem url /flash/gw2.crt private-key pem url /flash/gw2.key "
        "cert-enc cert-hash-url http://certs.example.net/gw2.der",
        "cmp cert-store location /flash/certs key reuse",
        "end",
    )
    first = ok(ch, "show configuration")[0].output
    assert "file:/flash/certs/private/" in first
    assert "cert-hash-url http://certs.example.net/gw2.der" in first
    replay = [ln.strip() for ln in first.splitlines()]
    ok(ch, *replay)
    again = ok(ch, "show configuration")[0].output
    generation = re.compile(r"-\d+-(cert|key)\.pem")
    assert generation.sub(r"-N-\1.pem", again) == generation.sub(r"-N-\1.pem", first)


def test_key_files_are_private_and_no_key_appears_anywhere(chassis_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("CHASSIS_DEBUG", "1")
    ch = chassis_factory(small_topology(tmp_path, name="nokeys"))
    put_files(ch)
    material = lab()
    ok(
        ch,
        *INSTALL,
        "configure",
        f"certificate name inline pem data {one_line(material['gw2.crt'])} "
        f"private-key pem data {one_line(material['gw2.key'])}",
        "end",
        "crypto rsa-keygen modulus 1024 id-type fqdn id segw.example.net subject-name /CN=segw",
    )
    ch.exec(
        "configure", 'certificate name bad pem url /flash/gw2.crt private-key pem data "garbage"'
    )
    wait_until(
        lambda: report(ch, name="inline")["cards"] == {"1": "v3", "2": "v3"}, 5, what="fan-out"
    )
    outputs = [
        r.output
        for r in ch.exec(
            "show configuration",
            "show configuration errors verbose",
            "show certificate",
            "show ca-certificate",
            "show card table",
            "show crypto csr",
        )
    ]
    private = ch.run.flash / "cert-store" / "private"
    assert private.stat().st_mode & 0o777 == 0o700
    for f in private.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
    csr_key = store_of(ch).read("csr", "rsa-keygen", "key.pem")
    logs = "".join(p.read_text(errors="replace") for p in ch.run.logs.iterdir())
    assert "DEBUG" in logs  # debug logging really was on
    for pem in (material["gw1.key"], material["gw2.key"], csr_key):
        for form in key_forms(pem):
            assert form not in logs
            for out in outputs:
                assert form not in out


def test_supervisor_restart_reloads_the_store(asr5500):
    ch = asr5500
    ok(ch, *INSTALL)
    before = report(ch)
    epoch = ch.status()["epoch"]
    os.kill(slot_pid(ch, 5)[0], signal.SIGKILL)
    wait_until(lambda: ch.status()["epoch"] > epoch, 5, what="a new supervisor")
    wait_until(
        lambda: set(slot_states(ch).values()) == {"active", "standby"}, 10, what="cards back"
    )
    after = wait_until(lambda: report(ch), 5, what="certificate shown")
    assert after["sha256"] == before["sha256"]
    wait_until(
        lambda: set(report(ch)["cards"].values()) == {f"v{report(ch)['generation']}"},
        5,
        what="cards hold it",
    )


def test_kill_during_install_leaves_the_old_or_the_new_certificate_whole(asr5500):
    ch = asr5500
    ok(ch, *INSTALL)
    rng = random.Random(7)
    expected = {
        cred.load_certificate(lab()[f"gw{i}.crt"], "pem").fingerprint(cred.hashes.SHA256())
        for i in (1, 2)
    }
    for round_ in range(4):
        version = 2 - round_ % 2
        cmd = f"certificate name segw pem url /flash/gw{version}.crt private-key pem url /flash/gw{version}.key"
        epoch = ch.status()["epoch"]
        worker = threading.Thread(target=lambda c=cmd: _quietly(ch.exec, "configure", c, timeout=5))
        worker.start()
        threading.Event().wait(rng.uniform(0.0, 0.15))
        os.kill(slot_pid(ch, 5)[0], signal.SIGKILL)
        worker.join(10)
        wait_until(lambda e=epoch: ch.status()["epoch"] > e, 5, what="restart")
        wait_until(lambda: report(ch) is not None, 10, what="store reloaded")
        store = store_of(ch)
        cert = cred.load_certificate(store.read("certificate", "segw", "cert.pem"), "pem")
        key = cred.load_private_key(store.read("certificate", "segw", "key.pem"))
        cred.check_pair(cert, key, "segw")  # never a mix of old and new
        assert cert.fingerprint(cred.hashes.SHA256()) in expected


def _quietly(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception:  # the supervisor died under it: that is the point
        pass


def test_rsa_keygen_makes_a_key_and_a_request(asr5500):
    from cryptography import x509

    ch = asr5500
    res = ok(
        ch,
        'crypto rsa-keygen modulus 2048 id-type fqdn id segw.example.net subject-name "/C=US/O=Lab/CN=segw"',
    )
    assert res[0].output.startswith("Info:")
    csr_out = ok(ch, "show crypto csr")[0]
    csr = x509.load_pem_x509_csr(csr_out.data["csr_pem"].encode())
    assert csr.is_signature_valid and csr.public_key().key_size == 2048
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["segw.example.net"]
    assert "-----BEGIN CERTIFICATE REQUEST-----" in csr_out.output
    weak = ok(ch, "crypto rsa-keygen modulus 1024 id-type ip id 192.0.2.1 subject-name /CN=weak")
    assert "weak" in weak[0].output
    # 4096 bits takes about a second: the cards must not notice (the pool, not the loop).
    ok(
        ch,
        "crypto rsa-keygen modulus 4096 id-type rfc822-addr id ops@example.net subject-name /CN=big",
    )
    assert slot_states(ch) == {1: "active", 2: "standby", 5: "active"}


ASR9000 = """\
name: {name}
platform: asr9000
cards:
  8: {{type: rsp, role: active}}
  0: {{type: vsm, role: active}}
  1: {{type: vsm, role: active}}
"""


def test_asr9000_vsms_hold_nothing_until_cmp_fetch(chassis_factory, tmp_path):
    ch = chassis_factory(write_topology(tmp_path, ASR9000.format(name="vsm1")))
    put_files(ch)
    ok(ch, *INSTALL)
    table = {r["slot"]: r for r in ch.exec("show card table")[0].data["cards"]}
    assert table[0]["attach"] == "no cert" and table[0]["cred_seq"] == 0
    for vsm in (0, 1):
        assert "credential certificate" not in (ch.run.logs / f"vsm-{vsm}.log").read_text()

    no_card = ch.exec("cmp fetch current-cert segw ca-root root")[0]
    assert no_card.error and "--card" in no_card.output
    fetched = ok(ch, "cmp fetch current-cert segw ca-root root", card=0)[0]
    assert "VSM 0 fetched certificate segw" in fetched.output
    table = {r["slot"]: r for r in ch.exec("show card table")[0].data["cards"]}
    assert table[0]["attach"] == "cert segw v2" and table[1]["attach"] == "no cert"
    assert "cert segw v2" in ch.exec("show card table")[0].output
    assert "cmp fetch: certificate/segw v2" in (ch.run.logs / "vsm-0.log").read_text()
    missing = ch.exec("cmp fetch current-cert nope ca-root root", card=1)[0]
    assert missing.error and "nope" in missing.output

    # auto-fetch: a renewed certificate is fetched again by every VSM that held it.
    ok(
        ch,
        "configure",
        "cmp auto-fetch current-name segw ca-root root time 30",
        "certificate name segw pem url /flash/gw2.crt private-key pem url /flash/gw2.key",
    )
    wait_until(
        lambda: (
            {r["slot"]: r.get("attach") for r in ch.exec("show card table")[0].data["cards"]}[0]
            == "cert segw v3"
        ),
        5,
        what="VSM 0 re-fetched",
    )


def test_cmp_fetch_is_refused_on_asr5500(asr5500):
    ok(asr5500, *INSTALL)
    res = asr5500.exec("cmp fetch current-cert segw ca-root root", card=1)[0]
    assert res.error and "pushed" in res.output


def test_card_restart_gets_credentials_before_ready(asr5500):
    ch = asr5500
    ok(ch, *INSTALL)
    ok(ch, "card reboot 1 -noconfirm")
    wait_until(lambda: slot_states(ch)[1] == "active", 10, what="DPC 1 back")
    log = (ch.run.logs / "dpc-1.log").read_text().split("ready:")
    assert re.search(r"credential seq [1-9]", log[-1])
    assert report(ch)["cards"]["1"] == "v2"


def test_exec_with_a_bad_card_is_refused(asr5500):
    with pytest.raises(client.ChassisError, match="--card 7"):
        asr5500.exec("show version", card=7)


def _json(text):
    return json.loads(text)


TEMPLATE = [
    "configure",
    "context segw",
    "crypto template segw-tmpl ikev2-dynamic",
    "authentication local certificate",
    "authentication remote certificate",
    "certificate name segw",
    "ca-certificate list ca-cert-name root",
    "end",
]


def templates(ch, slot):
    rows = ch.exec("show card table")[0].data["cards"]
    return next(r for r in rows if r["slot"] == slot).get("templates", {})


def test_a_vsm_without_fetched_credentials_refuses_certificate_ike_and_says_why(
    chassis_factory, tmp_path
):
    ch = chassis_factory(write_topology(tmp_path, ASR9000.format(name="vsmtmpl")))
    put_files(ch)
    ok(ch, *INSTALL, *TEMPLATE)
    wait_until(
        lambda: templates(ch, 0).get("segw/segw-tmpl", "").startswith("refusing"), 5, what="refusal"
    )
    assert "cmp fetch" in templates(ch, 0)["segw/segw-tmpl"]
    log = (ch.run.logs / "vsm-0.log").read_text()
    assert "crypto template segw/segw-tmpl: refusing certificate-based IKE" in log
    ok(ch, "cmp fetch current-cert segw ca-root root", card=0)
    wait_until(lambda: templates(ch, 0).get("segw/segw-tmpl") == "ready", 5, what="VSM 0 ready")
    assert templates(ch, 1)["segw/segw-tmpl"].startswith("refusing")  # VSM 1 fetched nothing


def test_dpcs_are_ready_once_the_certificate_is_pushed(asr5500):
    ok(asr5500, *TEMPLATE)
    wait_until(
        lambda: templates(asr5500, 1).get("segw/segw-tmpl", "").startswith("refusing"),
        5,
        what="refusal",
    )
    ok(asr5500, *INSTALL)
    wait_until(
        lambda: all(templates(asr5500, s).get("segw/segw-tmpl") == "ready" for s in (1, 2)),
        5,
        what="ready",
    )
