"""Prometheus /metrics: valid text exposition whose numbers agree with the store."""
from __future__ import annotations

import math

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from cloud.api.metrics import Families
from cloud.ingest import IngestStats
from tests.cloud.api.conftest import client_for
from tests.prom_text import parse, value


def test_metrics_agree_with_the_store(api, world):
    r = api.get("/metrics")
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = parse(r.text)
    assert value(m, "harken_devices", status="online") == 5
    assert value(m, "harken_devices", status="offline") == 1
    assert value(m, "harken_devices_running_model", model=world.fleet.models["B"]) == 4
    assert value(m, "harken_ingest_rejected_total", code="not_json") == 2
    assert value(m, "harken_ingest_rejected_total", code="unsupported_major") == 1
    assert value(m, "harken_alerts", status="open") == 1
    assert value(m, "harken_alerts", status="acked") == 1
    assert value(m, "harken_alerts_open", cohort="device:dev-03", kind="input") == 1
    loud = world.store.alert(world.alert_id("device:dev-03", "input"))
    assert value(m, "harken_drift_severity", cohort="device:dev-03", kind="input") == loud["evidence"]["severity"]
    assert len(m["harken_drift_severity"]) == 2  # the open and the acknowledged alert
    kitchen = next(r for r in world.rollouts.list() if r.cohort == "tag:kitchen")
    assert value(m, "harken_rollout_info", rollout=kitchen.id, model=kitchen.model, cohort="tag:kitchen",
                 state="running") == 1
    assert value(m, "harken_rollout_stage", rollout=kitchen.id) == 1
    assert value(m, "harken_rollout_stages", rollout=kitchen.id) == 2
    assert value(m, "harken_rollout_devices", rollout=kitchen.id, status="converged") == 3
    assert m["harken_ingest_messages_total"] == []  # no ingest in this app: no sample rather than a fake 0


def test_drift_severity_covers_every_cohort_the_engine_scored(world):
    findings = world.drift.findings(world.now)
    m = parse(client_for(world.services(drift_findings=lambda: findings)).get("/metrics").text)
    assert len(m["harken_drift_severity"]) == len(findings) > 2
    assert {lab["cohort"] for lab, _ in m["harken_drift_severity"]} >= {"fleet", "device:dev-01", "tag:kitchen"}
    assert value(m, "harken_drift_severity", cohort="device:dev-03", kind="input") > 1
    assert value(m, "harken_drift_severity", cohort="device:dev-01", kind="input") < 1


def test_ingest_counters_come_from_the_running_ingest(world):
    stats = IngestStats(messages=120, windows_new=100, events_new=7, states=6, rejects=3, store_failures=1)
    stats.extra["lag_s"] = 0.75
    m = parse(client_for(world.services(ingest=stats)).get("/metrics").text)
    assert value(m, "harken_ingest_messages_total") == 120
    assert value(m, "harken_ingest_windows_total") == 100
    assert value(m, "harken_ingest_store_failures_total") == 1
    assert value(m, "harken_ingest_lag_seconds") == 0.75


def test_label_values_and_help_are_escaped():
    x = Families().family("harken_test", "gauge", "line one\nline two \\ end",
                          [({"cohort": 'tag:a"b\\c\nd'}, 1.5), ({"cohort": "x"}, float("nan")), ({"cohort": "v"}, None)])

    class One:
        def collect(self):
            return x.found

    reg = CollectorRegistry(auto_describe=False)
    reg.register(One())
    text = generate_latest(reg).decode()
    assert 'harken_test{cohort="tag:a\\"b\\\\c\\nd"} 1.5' in text
    assert 'harken_test{cohort="x"} NaN' in text and 'cohort="v"' not in text
    fam = parse(text)["harken_test"]
    assert fam[0] == ({"cohort": 'tag:a"b\\c\nd'}, 1.5) and math.isnan(fam[1][1])


def test_each_app_has_its_own_registry(world):
    """Two apps in one process: both serve their own figures, and the global registry stays clean."""
    a, b = client_for(world.services()), client_for(world.services(public_metrics=True))
    assert a.app.state.metrics_registry is not b.app.state.metrics_registry
    for client in (a, b):
        assert value(parse(client.get("/metrics").text), "harken_devices", status="online") == 5
    assert not any(f.name.startswith("harken_") for f in REGISTRY.collect())
