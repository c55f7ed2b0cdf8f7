"""Rollouts: status with stages, gate verdicts and log; start; actions carried out by the real
controller at its next tick."""
from __future__ import annotations

import pytest

from cloud.api.auth import Principal, TokenBook
from tests.cloud.api.conftest import client_for
from tests.cloud.api.world import TOKEN


def _by_cohort(api) -> dict:
    return {r["cohort"]: r for r in api.get("/api/rollouts").json()["rollouts"]}


def test_list_shows_state_progress_and_devices(api):
    rs = _by_cohort(api)
    kitchen, shadow = rs["tag:kitchen"], rs["tag:shadow"]
    assert (kitchen["state"], kitchen["strategy"], kitchen["stage_index"]) == ("running", "canary", 1)
    assert [s["status"] for s in kitchen["stages"]] == ["passed", "running"]
    assert [s["name"] for s in kitchen["stages"]] == ["canary 34%", "canary 100%"]
    assert kitchen["devices"] == {"total": 3, "converged": 3, "pending": 0, "failed": 0}
    assert kitchen["model_name"] == "kws:1.1.0" and kitchen["actions"] == ["pause", "abort", "rollback"]
    assert (shadow["state"], shadow["approval"]) == ("awaiting_approval", "manual")
    assert "approve" in shadow["actions"]


def test_status_has_every_gate_verdict_and_the_transition_log(api):
    rid = _by_cohort(api)["tag:kitchen"]["id"]
    r = api.get(f"/api/rollouts/{rid}").json()
    gates = {(g["stage"], g["gate"]): g for g in r["gates"]}
    assert {g for _, g in gates} == {"error_rate", "latency", "no_answer_rate", "label_mix", "feedback_accuracy"}
    assert {s for s, _ in gates} == {"canary 34%", "canary 100%"}
    assert all(g["verdict"] == "pass" and g["reason"] for g in gates.values())
    assert gates[("canary 34%", "latency")]["figures"]["candidate_n"] >= 50
    assert gates[("canary 34%", "error_rate")]["figures"]["high"] <= 0.2  # the fixture's margin
    events = [e["event"] for e in r["log"]]
    assert events[:3] == ["created", "started", "stage_started"]
    assert "promoted" in events and events.count("stage_started") == 2
    assert r["log"][0]["to"] == "pending" and r["pending_commands"] == []
    assert api.get(f"/api/rollouts/{rid[:6]}").json()["id"] == rid  # a unique prefix works


def test_approve_is_queued_then_carried_out_by_the_controller(fresh_world):
    # the log names the token that approved; a "by" in the body is ignored
    api = client_for(fresh_world.services(tokens=TokenBook({TOKEN: Principal("ops-anna", "operate")})))
    rid = _by_cohort(api)["tag:shadow"]["id"]
    r = api.post(f"/api/rollouts/{rid}/approve", json={"reason": "agreement is fine", "by": "mallory"})
    assert r.status_code == 202
    body = r.json()
    assert body["state"] == "awaiting_approval"
    assert [(c["action"], c["actor"], c["note"]) for c in body["pending_commands"]] == [
        ("approve", "ops-anna", "agreement is fine")]
    fresh_world.controller().tick(fresh_world.now)
    after = api.get(f"/api/rollouts/{rid}").json()
    assert after["state"] != "awaiting_approval" and after["pending_commands"] == []
    assert "approved" in [e["event"] for e in after["log"]]


def test_pause_and_abort_reach_the_rollout(fresh_world):
    api = client_for(fresh_world.services())
    rid = _by_cohort(api)["tag:kitchen"]["id"]
    assert api.post(f"/api/rollouts/{rid}/pause").status_code == 202
    fresh_world.controller().tick(fresh_world.now)
    assert api.get(f"/api/rollouts/{rid}").json()["state"] == "paused"
    api.post(f"/api/rollouts/{rid}/abort", json={"reason": "test"})
    fresh_world.controller().tick(fresh_world.now + 1)
    r = api.get(f"/api/rollouts/{rid}").json()
    assert r["state"] == "aborted" and r["terminal"] and r["actions"] == []


def test_bad_actions_and_unknown_rollouts(api):
    assert api.post("/api/rollouts/r-nope/pause").status_code == 404
    assert api.get("/api/rollouts/r-nope").status_code == 404
    rid = _by_cohort(api)["tag:kitchen"]["id"]
    assert api.post(f"/api/rollouts/{rid}/explode").status_code == 422


def test_start_creates_a_pending_rollout(fresh_world):
    api = client_for(fresh_world.services())
    r = api.post("/api/rollouts", json={"model": "production", "cohort": "device:dev-06", "strategy": "blue-green",
                                        "bake": "5m"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["state"], body["strategy"], body["cohort"]) == ("pending", "blue-green", "device:dev-06")
    assert body["stages"] == [{"name": "blue-green 100%", "kind": "blue-green", "percent": 100.0, "bake_s": 300.0,
                               "automation": None, "status": "pending"}]
    assert body["created_t"] == fresh_world.now
    assert body["id"] in [x["id"] for x in api.get("/api/rollouts").json()["rollouts"]]


@pytest.mark.parametrize("spec, message", [
    ({"model": "production", "strategy": "yolo"}, "strategy"),
    ({"model": "kws:9.9.9"}, "no model"),
    ({"model": "candidate", "cohort": "tag:kitchen"}, "in rollout"),
    ({"model": "production", "cohort": "tag:nowhere"}, "matches no device"),
])
def test_start_refusals_say_why(api, spec, message):
    r = api.post("/api/rollouts", json=spec)
    assert r.status_code == 400 and message in r.json()["detail"]
