import json

import numpy as np
import pytest

from shared.histogram import Histogram, add_counts, counts_of, log_edges, quantile
from shared.window import MIXED_SHADOW, merge_windows, summarize
from tests.shared.windows import make_window


def test_bin_convention_matches_numpy_searchsorted():
    edges = [0.0, 1.0, 2.5]
    values = np.array([-1, 0, 0.5, 1, 2.4, 2.5, 9])
    assert counts_of(edges, values) == [1, 2, 2, 2]
    h = Histogram(edges)
    for v in values:
        h.update(float(v))
    assert h.counts == [1, 2, 2, 2]


def test_histograms_merge_exactly_by_addition():
    rng = np.random.default_rng(0)
    edges = [-1.0, 0.0, 1.0]
    a, b = rng.normal(size=500), rng.normal(size=300)
    assert add_counts(counts_of(edges, a), counts_of(edges, b)) == counts_of(edges, np.concatenate([a, b]))
    with pytest.raises(ValueError):
        add_counts([1, 2], [1, 2, 3])


def test_quantile_interpolates_inside_a_bin():
    edges = log_edges(1, 100, 2)  # 1, 3.162, 10, 31.62, 100
    counts = counts_of(edges, [5.0] * 100)
    assert 3.162 <= quantile(edges, counts, 0.99) <= 10
    assert quantile(edges, [0] * 6, 0.5) is None


def test_merge_windows_adds_every_count_and_summary_derives_rates():
    ws = [make_window(seq=i) for i in range(4)]
    m = merge_windows(ws)
    assert m["n_windows"] == 4
    assert m["software"]["frames"] == 4 * ws[0]["software"]["frames"]
    assert m["input"]["features"][0] == [4 * c for c in ws[0]["input"]["features"][0]]
    assert m["output"]["labels"] == {"yes": 12, "no": 8}
    assert m["feedback"]["pairs"] == [["no", "yes", 4], ["yes", "yes", 4]]
    s = summarize(m)
    assert s["speech_ratio"] == pytest.approx(120 / 333)
    assert s["feedback_accuracy"] == pytest.approx(0.5)
    assert s["no_answer_rate"] == pytest.approx(1 / 5)


def test_merge_is_associative():
    ws = [make_window(seq=i, scale=i + 1) for i in range(5)]
    whole = merge_windows(ws)
    parts = merge_windows([merge_windows(ws[:2]), merge_windows(ws[2:])])
    assert parts == whole


def test_a_pair_listed_twice_in_a_window_counts_twice_in_any_merge_order():
    ws = [make_window(seq=i, scale=i + 1) for i in range(3)]
    ws[0]["feedback"]["pairs"] = [["no", "yes", 2], ["no", "yes", 3]]  # a window may repeat a pair
    for order in (ws, ws[::-1], [ws[1], ws[0], ws[2]]):
        merged = merge_windows(order)
        assert dict(((t, p), n) for t, p, n in merged["feedback"]["pairs"])[("no", "yes")] == 5 + 1 + 1
    assert merge_windows([merge_windows(ws[:1]), merge_windows(ws[1:])]) == merge_windows(ws)


def _shadowed(seq: int, candidate: str | None, errors: int | None = 1) -> dict:
    w = make_window(seq=seq)
    if candidate is not None:
        w["shadow_model"] = candidate
        w["shadow"] = {"compared": 4, "agree": 3, "confidence": [0] * 11, "labels": {"yes": 4}}
        if errors is not None:
            w["shadow"]["errors"] = errors
    return w


def test_shadow_errors_survive_merges_and_a_window_without_them_counts_none():
    ws = [_shadowed(0, "c" * 64), _shadowed(1, "c" * 64, errors=3), _shadowed(2, None), _shadowed(3, "c" * 64, None)]
    m = merge_windows(ws)
    assert m["shadow_model"] == "c" * 64
    assert m["shadow"]["errors"] == 4 and m["shadow"]["compared"] == 12
    assert summarize(m)["shadow_errors"] == 4
    assert merge_windows([merge_windows(ws[:2]), merge_windows(ws[2:])]) == m  # through rollups too
    assert merge_windows(ws[3:])["shadow"]["errors"] == 0  # sent without the field: none counted


def test_a_merge_over_two_candidates_keeps_no_shadow_section_in_any_order():
    import itertools

    ws = [_shadowed(0, "c" * 64), _shadowed(1, "d" * 64), _shadowed(2, "c" * 64), _shadowed(3, None)]
    results = {json.dumps(merge_windows(list(order)), sort_keys=True) for order in itertools.permutations(ws)}
    results.add(json.dumps(merge_windows([merge_windows(ws[:1]), merge_windows(ws[1:])]), sort_keys=True))
    assert len(results) == 1
    m = json.loads(results.pop())
    assert m["shadow_model"] == MIXED_SHADOW and m["shadow"] is None
    assert m["software"]["inferences"] == sum(w["software"]["inferences"] for w in ws)


def test_merging_windows_of_two_models_is_refused():
    with pytest.raises(ValueError):
        merge_windows([make_window(model="a" * 64), make_window(model="b" * 64)])
    assert merge_windows([]) is None
