import numpy as np
import pytest

from shared.histogram import Histogram, add_counts, counts_of, log_edges, quantile
from shared.window import merge_windows, summarize
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


def test_merging_windows_of_two_models_is_refused():
    with pytest.raises(ValueError):
        merge_windows([make_window(model="a" * 64), make_window(model="b" * 64)])
    assert merge_windows([]) is None
