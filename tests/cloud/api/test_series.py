"""The bucketing behind /api/series, on windows alone (no store)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from cloud.api.series import MAX_BUCKETS, pick_bucket_s, time_series
from tests.cloud.api.fleet_data import make_window, reference_profile

T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def windows():
    rng, prof = np.random.default_rng(3), reference_profile()
    return [make_window(rng, prof, f"d{i % 2}", i, T0 + 30 * i, "m" * 64) for i in range(20)]


@pytest.mark.parametrize("span_s, expected", [(600, 10), (3600, 60), (6 * 3600, 600), (86400, 1800),
                                              (7 * 86400, 21600)])
def test_bucket_width_gives_about_sixty_buckets(span_s, expected):
    assert pick_bucket_s(span_s) == expected


def test_buckets_start_at_from_and_empty_ones_are_left_out(windows):
    s = time_series(windows[:4] + windows[10:], t_from=T0, t_to=T0 + 600, bucket_s=60)
    starts = [b["t"] for b in s["buckets"]]
    assert starts == [T0, T0 + 60] + [T0 + 60 * k for k in range(5, 10)]
    assert [b["n_windows"] for b in s["buckets"]] == [2, 2, 2, 2, 2, 2, 2]
    assert s["skipped"] == 0


def test_a_window_that_does_not_fit_is_skipped_not_fatal(windows):
    bad = copy.deepcopy(windows[1])
    bad["seq"] = 99
    bad["input"]["level_dbfs"] = bad["input"]["level_dbfs"][:3]
    odd = copy.deepcopy(windows[2])
    odd["seq"] = 98
    odd["input"]["features"] = odd["input"]["features"][:3]  # left out of feature drift only
    seen = []
    s = time_series(windows[:4] + [bad, odd], t_from=T0, t_to=T0 + 120, bucket_s=60,
                    scorer=lambda sha, feats: seen.append(len(feats)))
    assert s["skipped"] == 1
    assert sum(b["n_windows"] for b in s["buckets"]) == 5
    assert seen == [len(windows[0]["input"]["features"])] * 2


def test_windows_outside_the_range_are_ignored_and_huge_requests_refused(windows):
    s = time_series(windows, t_from=T0 + 60, t_to=T0 + 120, bucket_s=60)
    assert [b["n_windows"] for b in s["buckets"]] == [2]
    with pytest.raises(ValueError, match="buckets"):
        time_series(windows, t_from=T0, t_to=T0 + 60 * (MAX_BUCKETS + 1), bucket_s=60)


def test_drift_scorer_sees_each_model_separately(windows):
    other = [dict(w, model="n" * 64, seq=w["seq"] + 100) for w in windows[:4]]
    seen = []

    def scorer(sha, feats):
        seen.append((sha, feats))
        return {"f0": 0.1 if sha.startswith("m") else 0.9, "f1": 0.2}

    s = time_series(windows[:4] + other, t_from=T0, t_to=T0 + 120, bucket_s=60, scorer=scorer)
    summed = np.sum([w["input"]["features"] for w in windows[:2]], axis=0).tolist()
    assert sorted(x[0] for x in seen) == ["m" * 64, "m" * 64, "n" * 64, "n" * 64]
    assert seen[0][1] == summed  # the first bucket's two windows of model m, feature by feature
    fd = s["buckets"][0]["feature_drift"]
    assert fd["m" * 64] == {"max": 0.2, "top_feature": "f1", "scores": {"f0": 0.1, "f1": 0.2}}
    assert fd["n" * 64]["top_feature"] == "f0"
    assert s["buckets"][0]["n_windows"] == 4  # the cross-model figures merge both models


def test_a_rollup_straddling_the_start_counts_in_the_first_bucket(windows):
    from shared.window import merge_windows

    rolled = dict(merge_windows(windows[:10]), device="d0", t_start=T0, bucket_s=900)
    s = time_series([rolled], t_from=T0 + 300, t_to=T0 + 900, bucket_s=60)
    assert [(b["t"], b["n_windows"]) for b in s["buckets"]] == [(T0 + 300, 10)]
    assert time_series([rolled], t_from=T0 + 900, t_to=T0 + 1800, bucket_s=60)["buckets"] == []
