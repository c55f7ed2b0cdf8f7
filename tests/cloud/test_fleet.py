"""The fleet view and `harken fleet` against a real store."""
from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from cloud.fleet import Cohort, counts, device_detail, fleet_status, select
from cloud.store import open_store
from shared.cli import root
from shared.errors import ConfigError
from shared.window import merge_windows
from tests.cloud.conftest import MODEL_A, MODEL_B, random_window, state_message

NOW = 1_800_000_000.0


@pytest.fixture
def fleet(store):
    """Three devices: dev-1 online (model A, tagged eu), dev-2 gone offline (model B),
    dev-3 said online but silent for an hour (stale)."""
    rng = random.Random(4)
    store.upsert_device_state(state_message("dev-1", True, t=NOW - 50, agent_version="0.2.0", boot=3,
                                            automation="partial", health="ok",
                                            models={"active": MODEL_A, "previous": MODEL_B, "shadow": None}),
                              received_t=NOW - 50)
    store.upsert_device_state(state_message("dev-2", True, t=NOW - 500, agent_version="0.1.0", health="degraded",
                                            last_error="model timed out", models={"active": MODEL_B}),
                              received_t=NOW - 500)
    store.upsert_device_state(state_message("dev-2", False, t=NOW - 500), received_t=NOW - 400)
    store.upsert_device_state(state_message("dev-3", True, t=NOW - 3600), received_t=NOW - 3600)
    store.insert_windows([random_window(rng, "dev-1", 3, s, t_start=NOW - 600 + 10 * s) for s in range(30)],
                         received_t=NOW - 10)
    store.insert_windows([random_window(rng, "dev-2", 1, s, t_start=NOW - 900 + 10 * s, model=MODEL_B)
                          for s in range(20)], received_t=NOW - 400)
    store.tag("dev-1", ["eu", "lab"])
    store.tag("dev-2", ["eu"])
    store.insert_events([{"kind": "event", "v": "1.0", "device": "dev-1", "boot": 3, "seq": 0, "t": NOW - 40,
                          "event": "model_activated", "model": MODEL_A}])
    return store


def test_cohorts_parse_and_refuse_bad_names():
    assert Cohort.parse("fleet") == Cohort("fleet")
    assert Cohort.parse("tag:eu") == Cohort("tag", "eu")
    assert str(Cohort.parse("device:dev-1")) == "device:dev-1"
    assert Cohort.parse("model:ab12") == Cohort("model", "ab12")
    for bad in ("", "tag:", "group:x", "device:a/b", "model:XYZ", "fleet:1"):
        with pytest.raises(ConfigError):
            Cohort.parse(bad)


def test_selectors_pick_the_cohorts_windows(fleet):
    assert {w["device"] for w in select(fleet, "fleet").windows(fleet)} == {"dev-1", "dev-2"}
    eu = select(fleet, "tag:eu")
    assert eu.devices == ("dev-1", "dev-2")
    assert select(fleet, "tag:nobody").devices == ()
    assert list(select(fleet, "tag:nobody").windows(fleet)) == []
    one = select(fleet, "device:dev-2")
    assert {w["seq"] for w in one.windows(fleet)} == set(range(20))
    by_model = select(fleet, "model:bbbb")
    assert {w["device"] for w in by_model.windows(fleet)} == {"dev-2"}
    merged = select(fleet, "tag:lab").merged(fleet)
    assert list(merged) == [MODEL_A] and merged[MODEL_A]["n_windows"] == 30
    expected = merge_windows({k: v for k, v in w.items() if k not in ("kind", "v")}
                             for w in fleet.windows(device="dev-1"))
    assert merged[MODEL_A] == expected


def test_fleet_status_shows_online_offline_and_stale(fleet):
    views = {v.device: v for v in fleet_status(fleet, now=NOW, offline_after_s=120)}
    assert views["dev-1"].status == "online" and views["dev-1"].last_seen_ago_s == 10
    assert views["dev-1"].active_model == MODEL_A and views["dev-1"].previous_model == MODEL_B
    assert views["dev-1"].automation == "partial" and views["dev-1"].tags == ("eu", "lab")
    assert views["dev-2"].status == "offline" and views["dev-2"].last_error == "model timed out"
    assert views["dev-2"].health == "degraded" and views["dev-2"].active_model == MODEL_B
    assert views["dev-3"].status == "stale" and views["dev-3"].online is True
    assert counts(list(views.values())) == {"devices": 3, "online": 1, "offline": 1, "stale": 1}


def test_device_detail_has_state_summary_and_events(fleet):
    d = device_detail(fleet, "dev-1", now=NOW, horizon_s=3600)
    assert d["status"] == "online" and d["boot"] == 3
    assert d["summary"][MODEL_A]["n_windows"] == 30
    assert d["events"][0]["event"] == "model_activated"
    assert device_detail(fleet, "nope", now=NOW) is None


def _cli(args, db_url, **kw):
    return CliRunner().invoke(root, args, env={"HARKEN_DB": db_url}, catch_exceptions=False, **kw)


def test_cli_status_show_tag_untag(fleet, store_url):
    r = _cli(["fleet", "status", "--json"], store_url)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["counts"]["devices"] == 3
    assert {d["device"]: d["status"] for d in data["devices"]}["dev-2"] == "offline"
    r = _cli(["fleet", "status"], store_url)
    assert r.exit_code == 0 and "3 devices" in r.output and "dev-2" in r.output
    r = _cli(["fleet", "show", "dev-1", "--json"], store_url)
    assert r.exit_code == 0 and json.loads(r.output)["tags"] == ["eu", "lab"]
    r = _cli(["fleet", "tag", "dev-3", "canary", "eu"], store_url)
    assert r.exit_code == 0 and r.output.strip() == "dev-3: canary, eu"
    r = _cli(["fleet", "untag", "dev-1", "eu"], store_url)
    assert r.exit_code == 0 and r.output.strip() == "dev-1: lab"
    with open_store(store_url) as s:
        assert s.devices_with_tag("eu") == ["dev-2", "dev-3"]


def test_cli_errors_exit_1_and_usage_errors_2(store_url, tmp_path):
    from shared.cli import main

    assert main(["fleet", "show", "ghost", "--db", store_url]) == 1
    assert main(["fleet", "show", "bad/id", "--db", store_url]) == 2
    assert main(["fleet", "tag", "dev-1", "has space", "--db", store_url]) == 2
    assert main(["fleet", "status", "--db", "mysql://nowhere"]) == 1
    cfg = tmp_path / "c.toml"
    cfg.write_text("unknown_key = 1\n")
    assert main(["fleet", "status", "--config", str(cfg), "--db", store_url]) == 1
