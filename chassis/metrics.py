"""Prometheus exposition of a running chassis (`chassis up --metrics-port N`), optional.

`samples(view)` is a pure function of a live-view snapshot (chassis/live.py: the backplane's
status, the card table, `show certificate`, `show cmp history|statistics`, `show ca-crl all`,
the cards' revocation verdicts): it returns the metric families as plain tuples, so it is
tested without prometheus_client. `Exporter` serves the latest view with prometheus_client on
a loopback port; `python -m chassis.metrics --run-dir R --port N` does the polling itself (what
`chassis up --detach --metrics-port N` leaves running; it exits when the chassis stops).

Every series is prefixed `segw_`. Counters are the chassis's own counts since each process
started (a restarted card starts from 0 again, as a Prometheus counter reset).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "pip install prometheus_client"


class MetricsUnavailable(Exception):
    pass


@dataclass
class Family:
    name: str  # without _total for counters (prometheus_client adds it)
    kind: str  # "gauge" | "counter"
    help: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, value, *labels) -> None:
        if value is None:
            return
        self.samples.append((tuple(str(v) for v in labels), float(value)))


def _families() -> dict[str, Family]:
    specs = [
        ("segw_up", "gauge", "1 while the backplane answers status", ()),
        ("segw_epoch", "gauge", "The management epoch the backplane granted", ()),
        ("segw_card_info", "gauge", "One per slot: its type, role and state", ("slot", "type", "role", "state")),
        ("segw_card_in_service", "gauge", "1 when the slot is active or standby", ("slot", "type")),
        ("segw_card_restarts", "counter", "Times the backplane restarted the slot", ("slot", "type")),
        ("segw_card_failures", "gauge", "1 while the slot carries a failure reason", ("slot", "type")),
        ("segw_ike_sas", "gauge", "IKE SAs on the packet card", ("slot",)),
        ("segw_child_sas", "gauge", "Child SAs on the packet card", ("slot",)),
        ("segw_npu_rx_datagrams", "counter", "Datagrams the NPU steered to the card", ("slot",)),
        ("segw_ike_established", "counter", "IKE SAs the card established", ("slot",)),
        ("segw_ike_children_established", "counter", "Child SAs the card established", ("slot",)),
        ("segw_ike_auth_failed", "counter", "IKE_AUTH exchanges the card refused", ("slot",)),
        ("segw_revocation_checks", "counter", "Peer certificates whose revocation the card checked", ("slot",)),
        ("segw_esp_packets", "counter", "ESP packets through the card's child SAs", ("slot", "direction")),
        ("segw_esp_bytes", "counter", "ESP payload bytes through the card's child SAs", ("slot", "direction")),
        ("segw_templates_ready", "gauge", "Crypto templates and maps the card reports ready", ("slot",)),
        ("segw_npu_datagrams", "counter", "Datagrams the NPU handled, by kind", ("kind",)),
        ("segw_certificate_version", "gauge", "The store's version of the certificate", ("name",)),
        ("segw_certificate_not_after_seconds", "gauge", "Expiry of the certificate (Unix time)", ("name",)),
        ("segw_certificate_card_version", "gauge", "Version of the certificate a packet card holds (0: none)", ("name", "slot")),
        ("segw_cmp_transactions", "counter", "CMP transactions by type and result", ("type", "result")),
        ("segw_cmp_messages", "counter", "CMP messages by type and direction", ("type", "direction")),
        ("segw_cmp_history_entries", "gauge", "Transactions in show cmp history, by type and result", ("type", "result")),
        ("segw_crl_number", "gauge", "CRL number of the CRL the MIO holds", ("name",)),
        ("segw_crl_entries", "gauge", "Revoked certificates in the CRL the MIO holds", ("name",)),
        ("segw_crl_fetch_ok", "gauge", "1 when the MIO's last fetch of the CRL succeeded", ("name",)),
        ("segw_revocation_verdicts", "counter", "Revocation verdicts the cards logged since the view started", ("source", "verdict")),
        ("segw_lab_ocsp_responses", "counter", "Answers of the lab OCSP responder by status", ("status",)),
        ("segw_lab_crl_number", "gauge", "CRL number the lab CRL publisher serves", ("ca",)),
        ("segw_lab_peer_up", "gauge", "1 while the lab peer's process runs", ("peer",)),
        ("segw_fleet_tunnels_up", "gauge", "Lab eNodeB tunnels up", ()),
        ("segw_fleet_tunnels_configured", "gauge", "Lab eNodeBs configured", ()),
        ("segw_fleet_tunnels_expected", "gauge", "Lab eNodeB tunnels expected up (all but the revoked)", ()),
        ("segw_fleet_children_up", "gauge", "Lab eNodeB child SAs up", ()),
        ("segw_fleet_tunnels_lost", "counter", "Lab eNodeB tunnels lost", ()),
        ("segw_fleet_attempts_failed", "counter", "Lab eNodeB attempts that failed", ()),
        ("segw_fleet_flow_packets", "counter", "Packets of the lab eNodeB flows", ("flow", "direction")),
        ("segw_fleet_flow_bytes", "counter", "Bytes of the lab eNodeB flows", ("flow", "direction")),
        ("segw_mgmt_takeovers", "counter", "Management-card takeovers", ()),
        ("segw_faults_in_force", "gauge", "Faults in force", ()),
        ("segw_events", "counter", "Events the live view saw, by kind", ("kind",)),
    ]  # fmt: skip
    return {n: Family(n, k, h, labels) for n, k, h, labels in specs}


def _gen(text) -> int:
    digits = "".join(ch for ch in str(text or "").split(" ")[0] if ch.isdigit())
    return int(digits) if digits else 0


def samples(view: dict) -> list[Family]:
    """The metric families of one view (a live.Tracker view or a bare gather() snapshot)."""
    import datetime as dt

    from chassis.client import expected_tunnels
    from chassis.live import crl_label

    f = _families()
    f["segw_up"].add(0 if any(e.startswith("backplane") for e in view.get("errors") or []) else 1)
    f["segw_epoch"].add(view.get("epoch"))
    for s in view.get("slots") or []:
        slot, kind = s["slot"], s["type"]
        f["segw_card_info"].add(1, slot, kind, s["role"], s["state"])
        f["segw_card_in_service"].add(int(s["state"] in ("active", "standby")), slot, kind)
        f["segw_card_restarts"].add(s.get("restarts") or 0, slot, kind)
        f["segw_card_failures"].add(int(bool(s.get("failed_reason"))), slot, kind)
    for c in view.get("cards") or []:
        if "counters" not in c:
            continue
        counters, slot = c["counters"], c["slot"]
        f["segw_ike_sas"].add(counters.get("ike_sas", 0), slot)
        f["segw_child_sas"].add(counters.get("child_sas", 0), slot)
        f["segw_npu_rx_datagrams"].add(counters.get("npu_rx", 0), slot)
        f["segw_ike_established"].add(counters.get("ike_established", 0), slot)
        f["segw_ike_children_established"].add(counters.get("ike_childestablished", 0), slot)
        f["segw_ike_auth_failed"].add(counters.get("ike_authfailed", 0), slot)
        f["segw_revocation_checks"].add(counters.get("ike_revocationchecked", 0), slot)
        templates = c.get("templates") or {}
        f["segw_templates_ready"].add(sum(1 for v in templates.values() if v == "ready"), slot)
    for slot, t in sorted((view.get("traffic") or {}).items()):
        for d in ("in", "out"):
            f["segw_esp_packets"].add(t.get(f"packets_{d}"), slot, d)
            f["segw_esp_bytes"].add(t.get(f"bytes_{d}"), slot, d)
    for kind, n in sorted((view.get("npu") or {}).items()):
        if isinstance(n, int | float):
            f["segw_npu_datagrams"].add(n, kind)
    for cert in view.get("certificates") or []:
        f["segw_certificate_version"].add(cert.get("generation"), cert["name"])
        try:
            expiry = dt.datetime.fromisoformat(cert["not_after"]).timestamp()
        except (KeyError, TypeError, ValueError):
            expiry = None
        f["segw_certificate_not_after_seconds"].add(expiry, cert["name"])
        for slot, held in sorted((cert.get("cards") or {}).items()):
            f["segw_certificate_card_version"].add(_gen(held), cert["name"], slot)
    stats = view.get("cmp_statistics") or {}
    for kind, counts in sorted((stats.get("transactions") or {}).items()):
        for result in ("success", "failure"):
            f["segw_cmp_transactions"].add(counts.get(result, 0), kind, result)
    for kind, counts in sorted((stats.get("messages") or {}).items()):
        for direction in ("sent", "received", "failed"):
            f["segw_cmp_messages"].add(counts.get(direction, 0), kind, direction)
    history: dict = {}
    for h in view.get("cmp_history") or []:
        key = (h.get("type"), h.get("result"))
        history[key] = history.get(key, 0) + 1
    for (kind, result), n in sorted(history.items(), key=str):
        f["segw_cmp_history_entries"].add(n, kind, result)
    for crl in view.get("crls") or []:
        name = crl_label(crl)
        f["segw_crl_number"].add(crl.get("number"), name)
        f["segw_crl_entries"].add(crl.get("count"), name)
        f["segw_crl_fetch_ok"].add(int(crl.get("last_result") == "ok"), name)
    for key, n in sorted((view.get("verdicts") or {}).items()):
        source, _, verdict = key.partition("/")
        f["segw_revocation_verdicts"].add(n, source, verdict)
    lab = view.get("lab") or {}
    for peer, entry in sorted(lab.items()):
        f["segw_lab_peer_up"].add(int(bool(entry.get("pid"))), peer)
    ocsp = (((lab.get("ocsp") or {}).get("status") or {}).get("behaviour") or {}).get("counts")
    for status in ("good", "revoked", "unknown", "errors", "malformed", "unauthorized"):
        if ocsp is not None:
            f["segw_lab_ocsp_responses"].add(ocsp.get(status, 0), status)
    for ca, crl in sorted((((lab.get("crl") or {}).get("status") or {}).get("crls") or {}).items()):
        f["segw_lab_crl_number"].add(crl.get("number"), ca)
    fleet = (lab.get("fleet") or {}).get("status") or {}
    if fleet:
        f["segw_fleet_tunnels_up"].add(fleet.get("up", 0))
        f["segw_fleet_tunnels_configured"].add(fleet.get("configured", 0))
        f["segw_fleet_tunnels_expected"].add(expected_tunnels(fleet))
        f["segw_fleet_children_up"].add(fleet.get("children_up", 0))
        f["segw_fleet_tunnels_lost"].add(fleet.get("lost", 0))
        f["segw_fleet_attempts_failed"].add(fleet.get("failed", 0))
        for flow in fleet.get("flows") or []:
            for d in ("sent", "received"):
                f["segw_fleet_flow_packets"].add(flow.get(f"packets_{d}"), flow.get("flow"), d)
                f["segw_fleet_flow_bytes"].add(flow.get(f"bytes_{d}"), flow.get("flow"), d)
    if "slots" in view:
        f["segw_mgmt_takeovers"].add(len(view.get("mgmt_takeovers") or []))
        f["segw_faults_in_force"].add(len(view.get("faults") or []))
    kinds: dict = {}
    for ev in view.get("events") or []:
        kinds[ev.get("kind")] = kinds.get(ev.get("kind"), 0) + 1
    for kind, n in sorted(kinds.items(), key=str):
        f["segw_events"].add(n, kind)
    return [fam for fam in f.values() if fam.samples]


# ------------------------------------------------------------------ prometheus_client
def require_prometheus():
    """prometheus_client, or MetricsUnavailable saying how to install it."""
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailable(
            f"--metrics-port needs the prometheus_client package: {INSTALL_HINT} "
            "(or pip install 'staros-segw-sim[metrics]')"
        ) from None
    return prometheus_client


def to_prometheus(families: list[Family]) -> list:
    """prometheus_client metric families of `samples()`'s output."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    out = []
    for fam in families:
        cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
        metric = cls(fam.name, fam.help, labels=list(fam.labels))
        for labels, value in fam.samples:
            metric.add_metric(list(labels), value)
        out.append(metric)
    return out


class Exporter:
    """The latest view, served on http://127.0.0.1:PORT/metrics (loopback only)."""

    def __init__(self, port: int, host: str = LOOPBACK) -> None:
        prom = require_prometheus()
        from prometheus_client.registry import CollectorRegistry

        if host not in ("127.0.0.1", "::1", "localhost"):
            raise MetricsUnavailable(f"metrics listen on loopback only, not {host}")
        self.lock = threading.Lock()
        self.view: dict = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        try:
            started = prom.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsUnavailable(f"metrics port {host}:{port}: {exc.strerror or exc}") from None
        self.server, self.thread = started if isinstance(started, tuple) else (None, None)
        self.port = self.server.server_address[1] if self.server is not None else port
        self.url = f"http://{host}:{self.port}/metrics"

    def update(self, view: dict) -> None:
        with self.lock:
            self.view = view

    def collect(self):  # prometheus_client's Collector protocol
        with self.lock:
            view = self.view
        return to_prometheus(samples(view)) if view else []

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def serve(run_dir: str, port: int, interval: float, ready=None) -> int:
    """Poll the chassis in `run_dir` and serve its metrics until the backplane exits."""
    from chassis import live
    from chassis.client import Chassis

    chassis = Chassis(run_dir)
    exporter = Exporter(port)
    poller = live.Poller(chassis)
    if ready is not None:
        ready(exporter)
    try:
        while chassis.running():
            exporter.update(poller.poll())
            time.sleep(max(live.MIN_POLL_S, interval))
    finally:
        exporter.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chassis.metrics", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)

    def ready(exporter: Exporter) -> None:
        print(f"serving {exporter.url}", flush=True)  # the parent reads this line
        sys.stdout.close()

    try:
        return serve(args.run_dir, args.port, args.interval, ready)
    except MetricsUnavailable as exc:
        print(f"error: {exc}", flush=True)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
