"""Metrics (`chassis up --metrics-port`): the families as a pure function of a live view, their
Prometheus exposition, the loopback exporter, and the error that says how to install
prometheus_client when it is missing (the test extra installs it: these tests need it)."""

from __future__ import annotations

import socket
import sys

import httpx
import pytest
from click.testing import CliRunner
from test_live import NOW, card, cert, fleet_status, slot, snapshot

from chassis import live, metrics
from chassis.cli import main


def full_view() -> dict:
    lab = {
        "ca": {"pid": 7},
        "ocsp": {"pid": 8, "status": {"behaviour": {"counts": {"good": 40, "revoked": 2}}}},
        "crl": {"pid": None, "status": {"crls": {"issuing": {"number": 3}}}},
        "fleet": {"pid": 9, "status": fleet_status(up=3, children_up=6, lost=1, failed=2)},
    }
    tr = live.Tracker("certs", started=NOW - 5)
    tr.update(snapshot(lab=lab))
    return tr.update(
        snapshot(
            wall=NOW + 1,
            mono=101.0,
            lab=lab,
            epoch=2,
            slots=[
                slot(1),
                slot(2, role="standby", state="failed", failed_reason="hung", restarts=1),
                slot(5, "mio"),
            ],
            mgmt_takeovers=[{"from": 6, "to": 5, "why": "crash", "epoch": 2}],
            cards=[
                card(
                    1,
                    ike_sas=3,
                    child_sas=6,
                    npu_rx=500,
                    ike_established=4,
                    ike_childestablished=8,
                    ike_authfailed=1,
                    ike_revocationchecked=5,
                ),
                card(2),
                card(5, "mio"),
            ],
            certificates=[cert(3, {"1": "v3", "2": "pending"})],
            crls=[
                {"name": "lab-issuing", "number": 3, "count": 1, "version": 2, "last_result": "ok"},
                {
                    "name": None,
                    "url": "http://ca/x.crl",
                    "number": 1,
                    "count": 0,
                    "last_result": "timed out",
                },
            ],
            ipsec=[
                {
                    "card": 1,
                    "packets_in": 10,
                    "packets_out": 12,
                    "bytes_in": 1000,
                    "bytes_out": 1200,
                }
            ],
            log=[
                (
                    "dpc-1",
                    "2026-11-29 10:00:01,000 slot1 card WARNING revocation of CN=e: "
                    "REFUSED: OCSP revoked",
                )
            ],
        )
    )


def by_name(families) -> dict[str, dict]:
    return {f.name: {labels: value for labels, value in f.samples} for f in families}


def test_samples_of_a_view():
    fams = metrics.samples(full_view())
    m = by_name(fams)
    assert m["segw_up"] == {(): 1.0} and m["segw_epoch"] == {(): 2.0}
    assert m["segw_card_info"][("2", "dpc", "standby", "failed")] == 1.0
    assert m["segw_card_in_service"] == {("1", "dpc"): 1.0, ("2", "dpc"): 0.0, ("5", "mio"): 1.0}
    assert m["segw_card_restarts"][("2", "dpc")] == 1.0
    assert m["segw_card_failures"][("2", "dpc")] == 1.0
    assert m["segw_ike_sas"] == {("1",): 3.0, ("2",): 0.0}
    assert m["segw_child_sas"][("1",)] == 6.0
    assert m["segw_npu_rx_datagrams"][("1",)] == 500.0
    assert m["segw_ike_established"][("1",)] == 4.0
    assert m["segw_ike_children_established"][("1",)] == 8.0
    assert m["segw_ike_auth_failed"][("1",)] == 1.0
    assert m["segw_revocation_checks"][("1",)] == 5.0
    assert m["segw_esp_packets"] == {("1", "in"): 10.0, ("1", "out"): 12.0}
    assert m["segw_esp_bytes"][("1", "out")] == 1200.0
    assert m["segw_templates_ready"] == {("1",): 1.0, ("2",): 1.0}
    assert m["segw_npu_datagrams"] == {("esp",): 200.0, ("ike",): 10.0}
    assert m["segw_certificate_version"] == {("segw",): 3.0}
    assert m["segw_certificate_not_after_seconds"][("segw",)] == pytest.approx(1827482518.0)
    assert m["segw_certificate_card_version"] == {("segw", "1"): 3.0, ("segw", "2"): 0.0}
    assert m["segw_cmp_transactions"] == {("ir", "success"): 1.0, ("ir", "failure"): 0.0}
    assert m["segw_cmp_messages"][("ir", "sent")] == 1.0
    assert m["segw_cmp_history_entries"] == {("ir", "success"): 1.0}
    assert m["segw_crl_number"] == {("lab-issuing",): 3.0, ("http://ca/x.crl",): 1.0}
    assert m["segw_crl_entries"] == {("lab-issuing",): 1.0, ("http://ca/x.crl",): 0.0}
    assert m["segw_crl_fetch_ok"] == {("lab-issuing",): 1.0, ("http://ca/x.crl",): 0.0}
    assert m["segw_revocation_verdicts"] == {("ocsp", "refused"): 1.0}
    assert m["segw_lab_ocsp_responses"][("good",)] == 40.0
    assert m["segw_lab_ocsp_responses"][("revoked",)] == 2.0
    assert m["segw_lab_crl_number"] == {("issuing",): 3.0}
    assert m["segw_lab_peer_up"] == {("ca",): 1.0, ("crl",): 0.0, ("fleet",): 1.0, ("ocsp",): 1.0}
    assert m["segw_fleet_tunnels_up"] == {(): 3.0}
    assert m["segw_fleet_tunnels_configured"] == {(): 4.0}
    assert m["segw_fleet_tunnels_expected"] == {(): 4.0}
    assert m["segw_fleet_children_up"] == {(): 6.0}
    assert m["segw_fleet_tunnels_lost"] == {(): 1.0}
    assert m["segw_fleet_attempts_failed"] == {(): 2.0}
    assert m["segw_fleet_flow_packets"][("udp/2152", "received")] == 99.0
    assert m["segw_mgmt_takeovers"] == {(): 1.0}
    assert m["segw_faults_in_force"] == {(): 0.0}
    assert m["segw_events"][("failure",)] >= 1
    assert all(f.kind in ("gauge", "counter") and f.help for f in fams)
    assert all(len(labels) == len(f.labels) for f in fams for labels, _ in f.samples)


def test_samples_of_an_empty_or_blind_view():
    assert by_name(metrics.samples({})) == {"segw_up": {(): 1.0}}
    blind = by_name(metrics.samples({"errors": ["backplane: not running"]}))
    assert blind == {"segw_up": {(): 0.0}}


def test_exposition_text():
    import prometheus_client as prom
    from prometheus_client.registry import CollectorRegistry

    class Collector:
        def collect(self):
            return metrics.to_prometheus(metrics.samples(full_view()))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    text = prom.generate_latest(registry).decode()
    assert 'segw_ike_sas{slot="1"} 3.0' in text
    assert "# TYPE segw_npu_rx_datagrams_total counter" in text
    assert 'segw_npu_rx_datagrams_total{slot="1"} 500.0' in text
    assert 'segw_certificate_card_version{name="segw",slot="2"} 0.0' in text
    assert 'segw_card_info{role="standby",slot="2",state="failed",type="dpc"} 1.0' in text


def test_exporter_serves_on_loopback():
    exporter = metrics.Exporter(0)
    try:
        assert exporter.url.startswith("http://127.0.0.1:") and exporter.port > 0
        empty = httpx.get(exporter.url, timeout=5, trust_env=False)
        assert empty.status_code == 200 and "segw_" not in empty.text
        exporter.update(full_view())
        text = httpx.get(exporter.url, timeout=5, trust_env=False).text
        assert "segw_fleet_tunnels_up 3.0" in text and "segw_cmp_transactions_total" in text
        # the port is taken: a clear error
        with pytest.raises(metrics.MetricsUnavailable, match=f"127.0.0.1:{exporter.port}"):
            metrics.Exporter(exporter.port)
    finally:
        exporter.close()
    with pytest.raises(httpx.HTTPError):
        httpx.get(exporter.url, timeout=2, trust_env=False)
    with pytest.raises(metrics.MetricsUnavailable, match="loopback only"):
        metrics.Exporter(0, host="0.0.0.0")


def test_without_prometheus_client_the_option_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    with pytest.raises(metrics.MetricsUnavailable, match="pip install prometheus_client"):
        metrics.require_prometheus()
    with pytest.raises(metrics.MetricsUnavailable, match="pip install prometheus_client"):
        metrics.Exporter(0)
    res = CliRunner().invoke(main, ["up", "--metrics-port", "9", "--run-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "--metrics-port needs the prometheus_client package: pip install prometheus_client" in (
        res.output
    )
    assert not (tmp_path / "chassis.json").exists()  # refused before anything started
    # everything else works without it: the pure families, the graph
    assert metrics.samples({"epoch": 1})
    assert CliRunner().invoke(main, ["graph", "--out", str(tmp_path), "--no-dot"]).exit_code == 0


def test_metrics_main_reports_a_port_it_cannot_take(tmp_path, capsys):
    (tmp_path / "chassis.json").write_text('{"name": "x", "platform": "asr5500"}')  # no process
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code = metrics.main(["--run-dir", str(tmp_path), "--port", str(taken.getsockname()[1])])
    assert code == 2 and "error: metrics port 127.0.0.1:" in capsys.readouterr().out
