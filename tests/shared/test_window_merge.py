"""``merge_windows`` merges in one pass; it must give exactly what the pairwise fold it replaced
gave (``tests/shared/window_fold.py``): same keys in the same order, same float rounding, and
the same failures (ValueError, KeyError or TypeError: rollups leave out what a merge refuses,
whichever it raises). One difference is deliberate: a
pair repeated within the first window is summed; the fold kept only the last of them."""
from __future__ import annotations

import copy
import json
import random

import pytest

from shared.window import MIXED_SHADOW, merge_windows
from tests.cloud.conftest import MODEL_A, MODEL_B, random_window
from tests.shared.window_fold import fold_windows
from tests.shared.windows import make_window, make_window_v11

MODEL_C = "c" * 64


def outcome(fn, windows):
    try:
        return "ok", json.dumps(fn(copy.deepcopy(windows)))  # no sort_keys: key order is compared too
    except (ValueError, KeyError, TypeError):  # which one may differ: a bad window can be bad twice over
        return "error", None


def varied(rng: random.Random, i: int) -> dict:
    """A window of model A with the optional parts present, absent or odd."""
    w = random_window(rng, f"dev-{i % 3}", 1, i, shadow=rng.random() < 0.5)
    pairs: dict = {}
    for t, p, n in w["feedback"]["pairs"]:  # one row per pair, as the agent sends them
        pairs[(t, p)] = pairs.get((t, p), 0) + n
    w["feedback"]["pairs"] = [[t, p, n] for (t, p), n in pairs.items()]
    w["duration_s"] = rng.uniform(1, 20)  # not multiples of 1/64: the order of float additions shows
    w["software"]["cpu_s"] = rng.uniform(0, 1)
    w["software"]["rss_mb"] = rng.choice([rng.uniform(-5, 200), 80, 80.0])
    if rng.random() < 0.5:
        w["input"]["noise_dbfs"] = rng.choice([[rng.randrange(5) for _ in range(13)]] * 12 + [[1] * 12, [], None])
    if rng.random() < 0.4:
        w["output"]["audit_requested"] = rng.randrange(4)
        w["output"]["confidence_by_label"] = {"yes": [rng.randrange(3) for _ in w["output"]["confidence"]]}
    if rng.random() < 0.4:  # unsorted pairs (a fold leaves them so when only the first window has them)
        w["feedback"]["by_model"] = {rng.choice([MODEL_B, MODEL_C]): [["no", "yes", 1], ["a", "b", 2]]}
        w["feedback"]["audit"] = [["go", "no", 1], ["go", "go", 1]]
    if w.get("shadow") and rng.random() < 0.3:
        w["shadow_model"] = rng.choice([MODEL_C, MIXED_SHADOW])
    if w.get("shadow") and rng.random() < 0.3:
        w["shadow"]["errors"] = rng.randrange(3)
    if rng.random() < 0.2:
        w["n_windows"] = rng.randrange(1, 40)  # an earlier merge
    if rng.random() < 0.05:
        w["input"]["features"] = w["input"]["features"][:-1]  # a device bug: a merge must refuse it
    if rng.random() < 0.03:
        w["software"]["latency_ms"]["vad"] = [1, 2]  # bins that do not fit
    return w


def test_one_pass_merges_equal_the_pairwise_fold_on_random_window_sets():
    rng = random.Random(5)
    pool = [varied(rng, i) for i in range(300)]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(600):
        ws = rng.sample(pool, rng.choice([1, 1, 2, 3, 5, 12, 30]))
        expected = outcome(fold_windows, ws)
        assert outcome(merge_windows, ws) == expected
        outcomes[expected[0]] += 1
    assert outcomes["ok"] > 300 and outcomes["error"] > 30, outcomes


@pytest.mark.parametrize("windows", [
    [make_window(seq=i) for i in range(4)],
    [make_window_v11(seq=i) for i in range(4)] + [make_window(seq=9)],
    [make_window(seq=0, model=None), make_window(seq=1, model=None)],
    [make_window(), make_window(model="b" * 64)],  # two models: refused
    [{**make_window(), "input": {**make_window()["input"], "noise_dbfs": []}}, make_window()],
    [make_window(), {**make_window(), "input": {**make_window()["input"], "noise_dbfs": []}}],
], ids=["1.0", "1.0+1.1", "no-model", "two-models", "empty-noise-first", "empty-noise-later"])
def test_one_pass_merges_equal_the_fold_on_the_contract_windows(windows):
    assert outcome(merge_windows, windows) == outcome(fold_windows, windows)
    assert merge_windows([]) is None


def test_a_pair_repeated_in_the_first_window_is_counted_each_time():
    first = make_window(seq=0)
    first["feedback"]["pairs"] = [["yes", "no", 1], ["yes", "no", 2]]
    merged = merge_windows([first, make_window(seq=1)])
    assert merged["feedback"]["pairs"] == [["no", "yes", 1], ["yes", "no", 3], ["yes", "yes", 1]]
    assert fold_windows([first, make_window(seq=1)])["feedback"]["pairs"][1] == ["yes", "no", 2]  # the old loss


def test_windows_without_a_shadow_section_merge_as_the_fold_merges_them():
    """Every mix of shadow sections (absent, null, empty, counted) and shadow models over three
    windows: the merge skips windows that shadowed nothing, which must change nothing."""
    import itertools

    shadows = ["absent", None, {}, {"compared": 2, "agree": 1, "confidence": [0] * 11, "labels": {"yes": 2}}]
    models = ["absent", None, MODEL_C, MIXED_SHADOW]
    for picks in itertools.product(range(len(shadows)), range(len(models)), repeat=3):
        ws = []
        for seq in range(3):
            w = make_window(seq=seq)
            for key, value in (("shadow", shadows[picks[2 * seq]]), ("shadow_model", models[picks[2 * seq + 1]])):
                if value != "absent":
                    w[key] = copy.deepcopy(value)
            ws.append(w)
        assert outcome(merge_windows, ws) == outcome(fold_windows, ws), picks
