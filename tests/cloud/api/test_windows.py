"""Time series, summaries and raw windows: the API's figures agree with the windows stored."""
from __future__ import annotations

import numpy as np
import pytest

from shared.histogram import LATENCY_MS_EDGES, LEVEL_DBFS_EDGES, quantile
from shared.messages import validate
from shared.window import merge_windows, summarize
from tests.cloud.api.conftest import client_for
from tests.cloud.api.fleet_data import DRIFT_AFTER, FEATURES, WINDOW_S


def _in_range(world, series, **match):
    return [w for w in world.fleet.windows if series["from"] <= w["t_start"] < series["to"]
            and all(w.get(k) == v for k, v in match.items())]


def test_fleet_series_adds_up_to_the_stored_windows(api, world):
    s = api.get("/api/series").json()
    assert s["bucket_s"] == 60 and s["to"] == world.now and s["from"] == (world.now - 3600) // 60 * 60
    windows = _in_range(world, s)
    assert sum(b["n_windows"] for b in s["buckets"]) == len(windows) > 300
    assert sum(b["utterances"] for b in s["buckets"]) == sum(w["software"]["utterances"] for w in windows)
    assert s["labels"] == ["go", "no", "stop", "yes"] and s["stages"] == ["model", "shadow", "vad"]
    assert all(b["devices"] == 6 for b in s["buckets"][1:-1])
    assert all(abs(b["utterances_per_s"] - b["utterances"] / 60) < 1e-9 for b in s["buckets"])


def test_a_bucket_latency_quantile_is_that_of_its_merged_histogram(api, world):
    s = api.get("/api/series", params={"bucket_s": 300}).json()
    b = s["buckets"][3]
    inside = [w for w in world.fleet.windows if b["t"] <= w["t_start"] < b["t"] + 300]
    counts = np.sum([w["software"]["latency_ms"]["model"] for w in inside], axis=0).tolist()
    assert b["latency_ms"]["model"]["p99"] == pytest.approx(quantile(LATENCY_MS_EDGES, counts, 0.99))
    levels = np.sum([w["input"]["level_dbfs"] for w in inside], axis=0).tolist()
    assert b["level_dbfs"]["counts"] == levels
    assert b["level_dbfs"]["p50"] == pytest.approx(quantile(LEVEL_DBFS_EDGES, levels, 0.5))


def test_a_louder_device_shows_in_level_and_feature_drift(api, world):
    s = api.get("/api/series", params={"cohort": "device:dev-03", "bucket_s": 300}).json()
    a = world.fleet.models["A"]
    t_drift = world.fleet.t0 + DRIFT_AFTER * WINDOW_S
    before = [b for b in s["buckets"] if b["t"] + 300 <= t_drift]
    after = [b for b in s["buckets"] if b["t"] >= t_drift]
    assert len(before) >= 7 and len(after) >= 3
    assert np.mean([b["level_dbfs"]["p50"] for b in after]) > np.mean([b["level_dbfs"]["p50"] for b in before]) + 8
    # dev-03 runs model A, then B after the canary; drift is scored against each model's own profile
    drift_before = [b["feature_drift"][a]["max"] for b in before if a in b["feature_drift"]]
    drift_after = [max(v["max"] for v in b["feature_drift"].values()) for b in after]
    assert drift_before and np.median(drift_after) > 4 * np.median(drift_before)
    assert set(after[-1]["feature_drift"].popitem()[1]["scores"]) == set(FEATURES)


def test_cohorts_select_their_windows(api, world):
    b = world.fleet.models["B"]
    s = api.get("/api/series", params={"cohort": f"model:{b[:12]}"}).json()
    assert sum(x["n_windows"] for x in s["buckets"]) == len(_in_range(world, s, model=b))
    s = api.get("/api/series", params={"cohort": "tag:kitchen"}).json()
    assert max(x["devices"] for x in s["buckets"]) == 3
    s = api.get("/api/series", params={"cohort": "tag:shadow"}).json()
    assert all(x["shadow_compared"] > 0 and x["feedback_n"] > 0 for x in s["buckets"])
    shadow = _in_range(world, s, shadow_model=b)
    agree = sum(w["shadow"]["agree"] for w in shadow) / sum(w["shadow"]["compared"] for w in shadow)
    weights = [x["shadow_compared"] for x in s["buckets"]]
    assert np.average([x["shadow_agreement"] for x in s["buckets"]], weights=weights) == pytest.approx(agree)


@pytest.mark.parametrize("params, message", [
    ({"cohort": "building:7"}, "cohort"),
    ({"cohort": "tag:"}, "cohort"),
    ({"range_s": 365 * 86400}, "limit"),
    ({"from": 2000, "to": 1000}, "before"),
    ({"bucket_s": 1}, "buckets"),
])
def test_bad_series_requests_say_what_to_change(api, params, message):
    r = api.get("/api/series", params=params)
    assert r.status_code == 400 and message in r.json()["detail"]


def test_summary_is_the_exact_merge(api, world):
    s = api.get("/api/summary", params={"cohort": "tag:lab", "range_s": 1800}).json()
    lab = [w for w in world.fleet.windows if w["device"] in ("dev-04", "dev-05", "dev-06")
           and s["from"] <= w["t_start"] < s["to"]]
    for sha, got in s["by_model"].items():
        assert got == summarize(merge_windows(w for w in lab if w["model"] == sha))
    assert s["all"]["utterances"] == sum(w["software"]["utterances"] for w in lab)


def test_raw_windows_are_schema_valid_and_limited(api):
    ws = api.get("/api/windows", params={"cohort": "device:dev-01", "limit": 5}).json()
    assert len(ws) == 5 and all(validate(w)["device"] == "dev-01" for w in ws)


def test_ingest_shows_recent_rejects(api):
    r = api.get("/api/ingest", params={"limit": 2}).json()
    assert r["rejected"] == {"not_json": 2, "unsupported_major": 1}
    assert [x["code"] for x in r["recent_rejects"]] == ["not_json", "unsupported_major"]
    assert r["recent_rejects"][0]["head_hex"] == b"\x00".hex()


def test_series_read_rollups_for_whole_buckets_and_windows_for_finer_ones(fresh_world):
    api = client_for(fresh_world.services())
    rollup_s = fresh_world.services().rollup_bucket_s
    fine = {"range_s": 3600, "bucket_s": 60}
    coarse = {"range_s": 3600, "bucket_s": 3 * rollup_s}
    before = {k: api.get("/api/series", params=p).json() for k, p in (("fine", fine), ("coarse", coarse))}
    kept = fresh_world.store.rollup(rollup_s, 86400, now=fresh_world.now)  # everything rolled, nothing deleted
    assert kept.rolled == 360 and kept.deleted == 0
    assert api.get("/api/series", params=fine).json()["buckets"] == before["fine"]["buckets"]  # not lumped
    gone = fresh_world.store.rollup(rollup_s, 600, now=fresh_world.now)
    assert gone.deleted > 250  # most full windows are gone now
    after = api.get("/api/series", params=coarse).json()
    total = lambda s, k: sum(b[k] for b in s["buckets"])  # noqa: E731
    assert total(after, "n_windows") == total(before["coarse"], "n_windows") == 360
    assert total(after, "utterances") == total(before["coarse"], "utterances")
    assert [b["labels"] for b in after["buckets"]] == [b["labels"] for b in before["coarse"]["buckets"]]
    assert len(api.get("/api/windows", params={"limit": 10000}).json()) == 360 - gone.deleted
