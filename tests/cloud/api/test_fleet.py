"""Fleet and device routes against the world's real store."""
from __future__ import annotations

from collections import Counter

from tests.cloud.api.fleet_data import DEVICES


def test_fleet_headline_figures(api, world):
    f = api.get("/api/fleet").json()
    assert (f["devices"], f["online"], f["offline"]) == (6, 5, 1)
    running = Counter(d["state"]["models"]["active"] for d in world.store.devices() if d["state"].get("models"))
    assert {m["model"]: m["devices"] for m in f["by_model"]} == dict(running)
    b = world.fleet.models["B"]
    assert f["by_model"][0] == {"model": b, "name": "kws", "version": "1.1.0", "devices": 4}
    assert f["open_alerts"] == 1
    assert f["rollouts_active"] == 2
    assert f["ingest"]["rejected"] == {"not_json": 2, "unsupported_major": 1}
    assert f["ingest"]["rejected_total"] == 3
    assert f["now"] == world.now


def test_devices_carry_state_status_and_tags(api):
    devices = {d["device"]: d for d in api.get("/api/devices").json()}
    assert sorted(devices) == sorted(DEVICES)
    assert devices["dev-05"]["status"] == "offline" and devices["dev-05"]["online"] is False
    assert devices["dev-06"]["health"] == "probation"
    assert devices["dev-04"]["models"]["shadow"] is not None
    assert devices["dev-03"]["tags"] == ["kitchen", "loud"]


def test_devices_filter_by_tag_and_status(api):
    assert [d["device"] for d in api.get("/api/devices?tag=kitchen").json()] == ["dev-01", "dev-02", "dev-03"]
    assert [d["device"] for d in api.get("/api/devices?online=false").json()] == ["dev-05"]
    assert api.get("/api/devices?tag=nowhere").json() == []


def test_a_device_with_its_recent_events(api):
    d = api.get("/api/devices/dev-05?limit=5").json()
    assert d["device"] == "dev-05" and d["status"] == "offline"
    events = d["events"]
    assert [e["event"] for e in events] == ["model_activated", "agent_started"]  # newest first
    kitchen = api.get("/api/devices/dev-02?limit=3").json()["events"]
    assert [e["event"] for e in kitchen] == ["model_activated", "model_installed", "bundle_verified"]
    assert api.get("/api/devices/dev-05/events?limit=1").json() == events[:1]


def test_unknown_device_is_404_with_its_name(api):
    for path in ("/api/devices/dev-99", "/api/devices/dev-99/events"):
        r = api.get(path)
        assert r.status_code == 404 and "dev-99" in r.json()["detail"]


def test_cohort_picker_lists_fleet_tags_models_devices(api, world):
    selectors = [c["selector"] for c in api.get("/api/cohorts").json()]
    assert selectors[0] == "fleet"
    assert {"tag:kitchen", "tag:lab", "tag:shadow", "device:dev-01"} <= set(selectors)
    assert {f"model:{s}" for s in world.fleet.models.values()} <= set(selectors)
