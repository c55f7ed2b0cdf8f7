"""Registered models: list, and one model with lineage and evaluation from its manifest."""
from __future__ import annotations

import pytest


def test_models_list_with_devices_running_them(api, world):
    models = api.get("/api/models").json()["models"]
    a, b = world.fleet.models["A"], world.fleet.models["B"]
    assert [(m["sha256"], m["version"]) for m in models] == [(a, "1.0.0"), (b, "1.1.0")]
    assert [m["aliases"] for m in models] == [["production"], ["candidate"]]
    assert [(m["devices"], m["shadow_devices"]) for m in models] == [(2, 0), (4, 2)]
    assert 0.85 < models[0]["metrics"]["accuracy"] < 1


@pytest.mark.parametrize("ref", ["candidate", "kws:1.1.0", "PREFIX"])
def test_a_model_by_alias_label_or_prefix(api, world, ref):
    b = world.fleet.models["B"]
    m = api.get(f"/api/models/{b[:10] if ref == 'PREFIX' else ref}").json()
    manifest = world.registry.resolve(b).manifest
    assert m["sha256"] == b and m["labels"] == ["yes", "no", "stop", "go"]
    assert m["lineage"]["parent"] == world.fleet.models["A"]
    assert m["lineage"]["hyperparameters"] == {"C": 2.0, "kind": "logistic"}
    assert m["confusion"] == {"labels": m["labels"], "matrix": manifest["metrics"]["confusion"]}
    assert sum(map(sum, m["confusion"]["matrix"])) == m["metrics"]["n"] == 400
    assert [r["label"] for r in m["per_class"]] == m["labels"]
    assert m["slices"] == manifest["metrics"]["slices"] and {"tag", "value", "error_rate"} <= set(m["slices"][0])
    assert "confusion" not in m["metrics"] and "per_class" not in m["metrics"]
    assert m["threshold"] == 0.5


def test_unknown_model_is_404_and_says_what_exists(api):
    r = api.get("/api/models/ffffff")
    assert r.status_code == 404 and "kws:1.1.0" in r.json()["detail"]


def test_without_a_registry_models_are_empty_and_lookups_404(world):
    from tests.cloud.api.conftest import client_for

    api = client_for(world.services(registry=None, rollouts=None))
    assert api.get("/api/models").json() == {"models": []}
    assert api.get("/api/models/candidate").status_code == 404
    assert api.get("/api/rollouts").json()["rollouts"] == []
    r = api.post("/api/rollouts", json={"model": "candidate"})
    assert r.status_code == 503 and "without rollouts" in r.json()["detail"]
