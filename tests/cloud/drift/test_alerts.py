"""The alert state machine: open, acknowledge, update, resolve with hysteresis; evidence travels."""
from __future__ import annotations

import json

import pytest

from cloud.drift.alerts import (Alert, AlertPolicy, Finding, acknowledge, alert_id, reconcile, step)
from shared.messages import validate

POLICY = AlertPolicy(resolve_below=0.7, resolve_after=3)


def finding(severity: float, *, detected: bool | None = None, cohort: str = "fleet", kind: str = "input",
            pattern: str = "sudden", top: str = "feature:logmel_mean", drivers=("d1",)) -> Finding:
    detected = severity >= 1.0 if detected is None else detected
    return Finding(cohort=cohort, kind=kind, detected=detected, level=severity, severity=severity, n=500,
                   horizon="short", pattern=pattern if detected else None, onset_t=100.0,
                   top=({"model": "m1", "signal": top, "score": 0.4 * severity, "threshold": 0.4,
                         "severity": severity, "n": 500},),
                   devices=tuple({"device": d, "share": 0.5, "effect": 1.0, "contribution": 0.5, "driving": True,
                                  "alarm": False} for d in drivers),
                   tags=({"tag": "hall", "share": 0.5, "contribution": 1.0, "lift": 2.0, "driving": True},),
                   models=({"model": "m1", "n": 500, "severity": severity},), rule="robust")


def run(severities, policy=POLICY, **kw):
    """Evaluate a sequence of severities as successive evaluations; returns every change."""
    alerts: dict = {}
    changes = []
    for t, sev in enumerate(severities):
        for c in reconcile(list(alerts.values()), [finding(sev, **kw)], float(t), policy):
            changes.append((t, c))
            if c.change == "resolved":
                alerts.pop(c.alert.key)
            else:
                alerts[c.alert.key] = c.alert
    return changes


def test_opens_on_detection_and_carries_the_evidence():
    (t, change), = run([0.2, 0.3, 2.5])
    a = change.alert
    assert (t, change.change, a.status) == (2, "opened", "open")
    assert (a.cohort, a.kind, a.pattern) == ("fleet", "input", "sudden")
    assert a.opened_t == 2.0 and a.onset_t == 100.0 and a.severity == 2.5
    ev = a.evidence
    assert ev["horizon"] == "short" and ev["n"] == 500 and ev["rule"] == "robust"
    assert ev["top"][0]["signal"] == "feature:logmel_mean" and ev["top"][0]["threshold"] == 0.4
    assert ev["devices"][0]["device"] == "d1" and ev["tags"][0]["tag"] == "hall"
    json.dumps(a.to_dict())  # JSON-safe


def test_a_score_hovering_at_the_threshold_opens_once_and_never_flaps():
    hover = [1.05, 0.95, 1.1, 0.9, 1.02, 0.85, 1.2, 0.75, 0.99, 1.01] * 5
    changes = run([0.3] * 3 + hover)
    assert [c.change for _, c in changes].count("opened") == 1
    assert not any(c.change == "resolved" for _, c in changes)
    # bookkeeping updates only: nothing material while severity stays within a factor 1.5
    assert not any(c.material for _, c in changes if c.change == "updated")


def test_resolves_only_after_three_consecutive_healthy_evaluations():
    changes = run([2.0, 0.5, 0.5, 0.8, 0.5, 0.5, 0.4])
    kinds = [(t, c.change, c.alert.healthy_streak) for t, c in changes]
    # t=3 (0.8) is below 1 but above resolve_below: not healthy, the streak resets
    assert kinds == [(0, "opened", 0), (1, "updated", 1), (2, "updated", 2), (3, "updated", 0),
                     (4, "updated", 1), (5, "updated", 2), (6, "resolved", 3)]
    resolved = changes[-1][1].alert
    assert resolved.status == "resolved" and resolved.resolved_t == 6.0
    # and a new episode opens a new alert with a new id
    again = run([2.0, 0.5, 0.5, 0.5, 3.0])
    ids = {c.alert.id for _, c in again}
    assert [c.change for _, c in again][-1] == "opened" and len(ids) == 2


def test_material_updates_on_pattern_top_signal_drivers_or_severity():
    a = step(None, finding(2.0), 0.0).alert
    assert not step(a, finding(2.4), 1.0).material
    assert step(a, finding(3.5), 1.0).material  # × 1.75
    assert step(a, finding(2.0, pattern="gradual"), 1.0).material
    assert step(a, finding(2.0, top="snr_db"), 1.0).material
    assert step(a, finding(2.0, drivers=("d1", "d2")), 1.0).material
    moved = step(a, finding(2.4), 1.0).alert
    assert moved.severity == 2.4 and moved.announced["severity"] == 2.0  # fresh evidence, old announcement


def test_no_data_is_not_health():
    a = step(None, finding(2.0), 0.0).alert
    assert step(a, None, 1.0) is None
    unknown = Finding(cohort="fleet", kind="input", detected=False, level=None, severity=0.0)
    assert step(a, unknown, 1.0) is None


def test_acknowledge_keeps_updating_and_resolving():
    a = step(None, finding(2.0), 0.0).alert
    acked = acknowledge(a, 5.0, by="ops")
    assert (acked.status, acked.acked_t, acked.acked_by) == ("acked", 5.0, "ops")
    assert acknowledge(acked, 9.0) is acked
    updated = step(acked, finding(2.0), 6.0).alert
    assert updated.status == "acked"
    alert = updated
    for t in (7.0, 8.0, 9.0):
        change = step(alert, finding(0.2), t)
        alert = change.alert
    assert change.change == "resolved"
    with pytest.raises(ValueError, match="resolved"):
        acknowledge(alert, 10.0)


def test_store_row_and_wire_message_round_trip():
    a = acknowledge(step(None, finding(2.0), 0.0).alert, 1.0, by="ops")
    row = a.to_row()
    assert set(row) == {"id", "status", "cohort", "signal", "pattern", "opened_t", "updated_t", "resolved_t",
                        "acked_t", "evidence"}
    assert row["signal"] == "input" and row["evidence"]["threshold"] == 0.4
    assert Alert.from_row(json.loads(json.dumps(row))) == a
    msg = validate(a.to_message())
    assert msg["id"] == a.id and msg["signal"] == "input" and msg["status"] == "acked"
    assert Alert.from_dict(a.to_dict()) == a


def test_reconcile_handles_several_keys_and_ignores_resolved_alerts():
    a = step(None, finding(2.0, cohort="device:d1"), 0.0).alert
    changes = reconcile([a], [finding(2.0, cohort="device:d1"), finding(3.0, cohort="fleet", kind="output"),
                              finding(0.1, cohort="tag:hall")], 1.0, POLICY)
    assert [(c.change, c.alert.cohort, c.alert.kind) for c in changes] == [
        ("updated", "device:d1", "input"), ("opened", "fleet", "output")]
    from dataclasses import replace
    gone = replace(a, status="resolved")
    assert [c.change for c in reconcile([gone], [finding(2.0, cohort="device:d1")], 2.0, POLICY)] == ["opened"]


def test_alert_ids_are_deterministic():
    assert alert_id("fleet", "input", 12.0) == alert_id("fleet", "input", 12.0) != alert_id("fleet", "output", 12.0)
