"""Drift alerts raised by the real drift engine over the world (list, show with evidence
histograms, acknowledge) and the drift report."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cloud.api.auth import Principal, TokenBook
from cloud.drift import Alert
from shared.window import merge_windows
from tests.cloud.api.conftest import client_for
from tests.cloud.api.world import TOKEN
from tests.cloud.api.fleet_data import DRIFT_AFTER, WINDOW_S


@pytest.fixture(scope="module")
def loud(world) -> str:
    return world.alert_id("device:dev-03", "input")


def test_alerts_newest_first_and_filtered(api, world, loud):
    alerts = api.get("/api/alerts").json()["alerts"]
    assert {(a["cohort"], a["kind"], a["status"]) for a in alerts} == {
        ("device:dev-03", "input", "open"), ("device:dev-03", "output", "acked")}
    assert [a["updated_t"] for a in alerts] == sorted((a["updated_t"] for a in alerts), reverse=True)
    opened = api.get("/api/alerts", params={"status": "open"}).json()["alerts"]
    assert [a["id"] for a in opened] == [loud]
    a = opened[0]
    assert a["severity"] >= 1 and {"level_dbfs", "snr_db"} & {t["signal"] for t in a["top"]}
    assert a["top"][0]["model"] in world.fleet.models.values()
    assert api.get("/api/alerts", params={"cohort": "tag:lab"}).json()["alerts"] == []
    acked = api.get("/api/alerts", params={"status": "acked"}).json()["alerts"][0]
    assert (acked["acked_by"], acked["acked_t"]) == ("ops-lee", world.now - 60)


def test_bad_status_is_400(api):
    r = api.get("/api/alerts", params={"status": "burning"})
    assert r.status_code == 400 and "open, acked, resolved" in r.json()["detail"]


def test_an_alert_shows_the_histograms_it_was_scored_on(api, world, loud):
    a = api.get(f"/api/alerts/{loud}").json()
    hists = {h["score"]: h for h in a["histograms"]}
    row = next(t for t in a["top"] if t["signal"] in hists and not t["signal"].startswith("feature:"))
    h = hists[row["signal"]]
    assert h["edges"] == world.fleet.profile[h["signal"]]["edges"]
    assert h["reference"] == world.fleet.profile[h["signal"]]["counts"] and h["against"] == "baseline"
    mine = [w for w in world.fleet.windows if w["device"] == "dev-03" and w["model"] == row["model"]
            and row["t_start"] <= w["t_start"] < row["t_end"]]
    assert mine and h["counts"] == merge_windows(mine)["input"][h["signal"]]
    shift = np.average(range(len(h["counts"])), weights=h["counts"]) - np.average(range(len(h["reference"])),
                                                                                 weights=h["reference"])
    assert abs(shift) > 1  # more than a bin away from the reference
    feature = next(x for s, x in hists.items() if s.startswith("feature:"))
    assert len(feature["counts"]) == len(feature["edges"]) + 1
    r = api.get("/api/alerts/a-nope")
    assert r.status_code == 404 and "a-nope" in r.json()["detail"]


def test_ack_moves_an_open_alert_to_acked_and_keeps_who(fresh_world):
    # who acknowledged is the token's name; a "by" in the body is ignored (anyone could write it)
    api = client_for(fresh_world.services(tokens=TokenBook({TOKEN: Principal("ops-anna", "operate")})))
    aid = fresh_world.alert_id("device:dev-03", "input")
    r = api.post(f"/api/alerts/{aid}/ack", json={"by": "mallory", "note": "mic moved, checking"})
    assert r.status_code == 200
    a = r.json()
    assert (a["status"], a["acked_t"], a["acked_by"], a["ack_note"]) == ("acked", fresh_world.now, "ops-anna",
                                                                         "mic moved, checking")
    stored = Alert.from_row(fresh_world.store.alert(aid))
    assert stored.status == "acked" and stored.acked_by == "ops-anna" and stored.evidence["top"]
    assert api.post(f"/api/alerts/{aid}/ack", json={"by": "someone-else"}).json()["acked_by"] == "ops-anna"
    assert api.get("/api/alerts", params={"status": "open"}).json()["alerts"] == []
    fresh_world.store.save_alert(dataclasses.replace(stored, status="resolved", resolved_t=fresh_world.now).to_row())
    r = api.post(f"/api/alerts/{aid}/ack")
    assert r.status_code == 409 and "resolved" in r.json()["detail"]
    assert api.post("/api/alerts/a-nope/ack").status_code == 404


def test_drift_report_shows_when_the_level_stepped(api, world):
    r = api.get("/api/drift/report", params={"cohort": "device:dev-03", "step_s": 300}).json()
    assert (r["cohort"], r["step_s"], r["kinds"]) == ("device:dev-03", 300, ["input", "output", "concept"])
    rows = r["rows"]
    assert len(rows) == 12 and rows[0]["t_start"] == r["from"]
    t_drift = world.fleet.t0 + DRIFT_AFTER * WINDOW_S
    assert not any(x["input_flag"] for x in rows if x["t_end"] <= t_drift)
    after = [x for x in rows if x["t_start"] >= t_drift + 300 and x["input_cusum"] is not None]
    assert after and all(x["input_flag"] == "drift" and x["input_severity"] >= 1 for x in after)
    assert {x["input_top"] for x in after} <= {"level_dbfs", "snr_db"} | {
        f"feature:{n}" for n in world.fleet.profile["features"]["names"]}


@pytest.mark.parametrize("params, message", [({"cohort": "shelf:3"}, "fleet, tag:NAME"),
                                             ({"range_s": 86400, "step_s": 60}, "steps")])
def test_drift_report_refusals(api, params, message):
    r = api.get("/api/drift/report", params=params)
    assert r.status_code == 400 and message in r.json()["detail"]
