"""The samples API: a read token lists and plays, an operate token labels (and is recorded as the
labeller); labels outside the model's list are refused unless asked for; commands are queued."""
from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.samples import control
from tests.cloud.samples_world import LABELS, OPERATE_TOKEN, READ_TOKEN, SENT, build
from tests.prom_text import parse, value


@pytest.fixture
def world(tmp_path):
    w = build(tmp_path / "world")
    yield w
    w.store.close()


def client(world, token: str | None) -> TestClient:
    c = TestClient(create_app(world.services()))
    if token:
        c.headers["Authorization"] = f"Bearer {token}"
    return c


def test_a_read_token_lists_shows_and_plays_the_samples(world):
    api = client(world, READ_TOKEN)
    body = api.get("/api/samples").json()
    assert [s["id"] for s in body["samples"]] == world.ids[::-1]  # newest first
    assert body["summary"] == {"total": 5, "labelled": 0, "unlabelled": 5, "conflicts": 0,
                               "by_reason": {"alert": 1, "audit": 2, "low_confidence": 2}, "by_label": {}}
    assert [s["device"] for s in api.get("/api/samples", params={"reason": "audit"}).json()["samples"]] == \
        ["porch-3", "kitchen-1"]
    one = api.get(f"/api/samples/{world.ids[3]}").json()
    assert (one["device"], one["reason"], one["alert"], one["predicted"], one["model_labels"]) == \
        ("hall-2", "alert", "al-1", "down", LABELS)
    audio = api.get(f"/api/samples/{world.ids[3][:6]}/audio")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert hashlib.sha256(audio.content).hexdigest() == one["sha256"] and audio.content[:4] == b"RIFF"
    assert api.get("/api/samples/ffffffffffff").status_code == 404
    assert api.get("/api/samples/xyz").status_code == 400  # not a hex id: says how to give one
    r = api.post(f"/api/samples/{world.ids[0]}/label", json={"label": "yes"})
    assert r.status_code == 403 and "operate" in r.json()["detail"]
    assert client(world, None).get(f"/api/samples/{world.ids[0]}/audio").status_code == 401


def test_an_operate_token_labels_and_is_recorded_as_the_labeller(world):
    api = client(world, OPERATE_TOKEN)
    sid = world.ids[2]
    r = api.post(f"/api/samples/{sid}/label", json={"label": "up", "by": "mallory"})  # "by" is not the body's to say
    assert r.status_code == 200
    assert r.json()["labels"] == [{"label": "up", "by": "ana", "t": world.now}] and r.json()["label"] == "up"
    refused = api.post(f"/api/samples/{sid}/label", json={"label": "left"})
    assert refused.status_code == 400 and "not a label of model" in refused.json()["detail"]
    assert api.post(f"/api/samples/{sid}/label", json={"label": "left", "new_label": True}).json()["label"] == "left"
    assert api.post(f"/api/samples/{sid}/label", json={"label": "../etc"}).status_code == 400
    listed = api.get("/api/samples", params={"unlabelled": "true"}).json()["samples"]
    assert sid not in [s["id"] for s in listed] and len(listed) == 4
    assert world.store.sample(sid)["labels"][-1]["by"] == "ana"


def test_switches_and_alert_requests_are_queued_for_the_collector(world):
    world.store.save_alert({"id": "al-1", "status": "open", "cohort": "device:hall-2", "signal": "input",
                            "pattern": "sudden", "opened_t": world.now - 600,
                            "evidence": {"onset_t": world.now - 900,
                                         "devices": [{"device": "hall-2", "driving": True}]}})
    api = client(world, OPERATE_TOKEN)
    r = api.post("/api/samples/switch", json={"devices": ["kitchen-1", "hall-2"], "on": False})
    assert r.status_code == 202 and r.json()["devices"] == ["hall-2", "kitchen-1"]
    r = api.post("/api/samples/request", json={"alert": "al-1", "before_s": 100, "after_s": 50, "max_clips": 7})
    assert r.status_code == 202 and r.json()["devices"] == ["hall-2"]
    queued = control.pending(world.store)
    assert [c["actor"] for c in queued] == ["ana", "ana"]
    req = queued[1]["config"]["hall-2"]["sample_request"]
    assert (req["alert"], req["from_t"], req["to_t"], req["max_clips"]) == \
        ("al-1", world.now - 1000, world.now + 50, 7)  # no clock offset measured: the collector's clock
    assert api.post("/api/samples/request", json={"alert": "nope"}).status_code == 400
    assert client(world, READ_TOKEN).post("/api/samples/switch", json={"devices": ["x"], "on": True}).status_code == 403
    assert json.loads(json.dumps(queued))  # plain JSON all the way


def test_metrics_count_samples_by_state_and_reason(world):
    world.store.label_sample(world.store.sample(world.ids[0])["sha256"], "yes", "ana", 1.0)
    m = parse(client(world, READ_TOKEN).get("/metrics").text)
    assert value(m, "harken_samples", state="labelled") == 1
    assert value(m, "harken_samples", state="unlabelled") == 4
    assert value(m, "harken_samples", state="conflicts") == 0
    assert value(m, "harken_samples_by_reason", reason="audit") == 2


def test_the_samples_routes_are_documented(world):
    doc = client(world, READ_TOKEN).get("/openapi.json").json()
    assert {"/api/samples", "/api/samples/{ref}", "/api/samples/{ref}/audio", "/api/samples/{ref}/label",
            "/api/samples/switch", "/api/samples/request"} <= set(doc["paths"])
    assert len(SENT) == 5
