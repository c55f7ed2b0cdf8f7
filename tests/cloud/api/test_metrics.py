"""Prometheus /metrics: valid text exposition whose numbers agree with the store."""
from __future__ import annotations

import re

from cloud.api.metrics import Exposition
from cloud.ingest import IngestStats
from tests.cloud.api.conftest import client_for

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? '
                       r'(-?[0-9.e+-]+|NaN|[+-]Inf)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse(text: str) -> dict[str, list[tuple[dict, float]]]:
    """A strict reader of the text format: TYPE before samples, every line well-formed."""
    assert text.endswith("\n")
    families: dict[str, list] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name not in typed
            typed.add(name)
            families[name] = []
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        assert name in typed, f"{name} has samples before its TYPE"
        families[name].append(({k: v for k, v in LABEL_RE.findall(labels or "")}, float(value)))
    return families


def value(families, name, **labels) -> float:
    hits = [v for lab, v in families[name] if lab == labels]
    assert len(hits) == 1, f"{name}{labels}: {families[name]}"
    return hits[0]


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
    x = Exposition().family("harken_test", "gauge", "line one\nline two \\ end",
                            [({"cohort": 'tag:a"b\\c\nd'}, 1.5), ({}, float("nan")), ({"k": "v"}, None)])
    text = x.text()
    assert 'harken_test{cohort="tag:a\\"b\\\\c\\nd"} 1.5' in text
    assert "harken_test NaN" in text and 'k="v"' not in text
    assert "# HELP harken_test line one line two \\\\ end" in text
    fam = parse(text)["harken_test"]
    assert fam[0][0] == {"cohort": 'tag:a\\"b\\\\c\\nd'}
