"""Drift alerts (list, show, acknowledge) and the drift report route."""
from __future__ import annotations

from tests.cloud.api.conftest import client_for


def test_alerts_newest_first_and_filtered_by_status(api, world):
    alerts = api.get("/api/alerts").json()["alerts"]
    assert [a["id"] for a in alerts] == ["a-level-dev03", "a-output-lab", "a-old"]
    opened = api.get("/api/alerts", params={"status": "open"}).json()["alerts"]
    assert [a["id"] for a in opened] == ["a-level-dev03"]
    a = opened[0]
    assert (a["cohort"], a["signal"], a["pattern"], a["score"], a["threshold"]) == ("device:dev-03", "input",
                                                                                   "step", 3.4, 1.0)
    assert [t["feature"] for t in a["top"]] == ["level_dbfs", "mel_00"]
    by_cohort = api.get("/api/alerts", params={"cohort": "tag:lab"}).json()["alerts"]
    assert [x["id"] for x in by_cohort] == ["a-output-lab"]


def test_bad_status_is_400(api):
    r = api.get("/api/alerts", params={"status": "burning"})
    assert r.status_code == 400 and "open, acked, resolved" in r.json()["detail"]


def test_an_alert_shows_its_evidence(api, world):
    a = api.get("/api/alerts/a-level-dev03").json()
    expected = next(x for x in world.fleet.alerts if x["id"] == "a-level-dev03")["evidence"]
    assert a["evidence"]["level_dbfs"]["counts"] == expected["level_dbfs"]["counts"]
    assert a["evidence"]["level_dbfs"]["reference"] == world.fleet.profile["level_dbfs"]["counts"]
    r = api.get("/api/alerts/a-nope")
    assert r.status_code == 404 and "a-nope" in r.json()["detail"]


def test_ack_moves_an_open_alert_to_acked_and_keeps_who(fresh_world):
    api = client_for(fresh_world.services())
    r = api.post("/api/alerts/a-level-dev03/ack", json={"by": "ops-anna", "note": "mic moved, checking"})
    assert r.status_code == 200
    a = r.json()
    assert a["status"] == "acked" and a["acked_t"] == fresh_world.now and a["acked_by"] == "ops-anna"
    stored = fresh_world.store.alert("a-level-dev03")
    assert stored["status"] == "acked" and stored["evidence"]["ack_note"] == "mic moved, checking"
    assert stored["evidence"]["level_dbfs"] == a["evidence"]["level_dbfs"]  # the evidence is kept
    assert api.get("/api/alerts", params={"status": "open"}).json()["alerts"] == []
    assert api.post("/api/alerts/a-old/ack").json()["status"] == "resolved"  # nothing to acknowledge
    assert api.post("/api/alerts/a-nope/ack").status_code == 404


def test_drift_report_checks_the_cohort(api):
    assert api.get("/api/drift/report", params={"cohort": "tag:kitchen"}).json()["cohort"] == "tag:kitchen"
    r = api.get("/api/drift/report", params={"cohort": "shelf:3"})
    assert r.status_code == 400 and "fleet, tag:NAME" in r.json()["detail"]
