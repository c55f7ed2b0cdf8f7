"""Reference profile v2: chunks by speaker, the concept reference (accuracy, calibration) and
the label-free accuracy estimate."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from shared.errors import BundleError
from shared.histogram import CONFIDENCE_EDGES, counts_of
from shared.profile import (BACKGROUND_CHUNK, accuracy_table, build_profile, calibration_table, chunk_signals,
                            expected_accuracy, validate_profile)

LABELS = ["yes", "no", "up"]
NAMES = ["f0", "f1"]


def _profile(n: int = 300, chunks: bool = True, seed: int = 0) -> tuple[dict, list[str]]:
    rng = np.random.default_rng(seed)
    speaker = list(rng.choice(["s2", "s1", BACKGROUND_CHUNK, "s3"], n, p=[0.4, 0.3, 0.05, 0.25]))
    p = build_profile(rng.normal(size=(n, 2)), NAMES, utterance_ms=rng.uniform(200, 1800, n),
                      level_dbfs=rng.uniform(-50, -5, n), snr_db=rng.uniform(0, 45, n),
                      confidence=rng.uniform(0.1, 1.0, n), labels=rng.integers(0, 3, n), label_names=LABELS,
                      chunks=speaker if chunks else None)
    return p, speaker


def test_chunk_counts_add_up_to_the_aggregate_of_every_signal():
    p, speaker = _profile()
    ch = p["chunks"]
    assert ch["by"] == "speaker" and ch["names"] == ["s1", "s2", "s3", BACKGROUND_CHUNK]
    assert ch["n"] == [speaker.count(s) for s in ch["names"]] and sum(ch["n"]) == p["n"]
    aggregates = chunk_signals(p)
    assert sorted(ch["counts"]) == sorted(aggregates) == sorted(
        ["feature:f0", "feature:f1", "utterance_ms", "level_dbfs", "snr_db", "confidence", "labels"])
    for signal, total in aggregates.items():
        assert [sum(col) for col in zip(*ch["counts"][signal])] == total, signal
        assert [sum(c) for c in ch["counts"][signal]] == ch["n"], signal
    validate_profile(p)


def test_profiles_without_the_v2_keys_still_validate():
    p, _ = _profile(chunks=False)
    assert "chunks" not in p and "accuracy" not in p
    assert validate_profile(p) is p


def _with_concept(p: dict) -> dict:
    p = copy.deepcopy(p)
    p["accuracy"] = accuracy_table([0, 1, 1, 2], [0, 1, 2, 2], LABELS)
    p["calibration"] = calibration_table([0, 1, 2, 2], [0.9, 0.5, 0.35, 0.97], [True, True, False, True], LABELS)
    return p


@pytest.mark.parametrize("key, damage", [
    ("chunks", lambda c: c["counts"].pop("snr_db")),
    ("chunks", lambda c: c["counts"]["feature:f1"][0].append(0)),
    ("chunks", lambda c: c["n"].pop()),
    ("chunks", lambda c: c["counts"]["labels"][1].__setitem__(0, -1)),
    ("accuracy", lambda a: a["correct"].__setitem__(0, 5)),
    ("accuracy", lambda a: a["total"].pop()),
    ("calibration", lambda c: c["n"][1].pop()),
    ("calibration", lambda c: c["correct"][2].__setitem__(10, 9)),
    ("calibration", lambda c: c["edges"].reverse()),
    ("calibration", lambda c: c.pop("labels")),
])
def test_a_malformed_v2_key_is_a_bundle_error_naming_it(key, damage):
    p = _with_concept(_profile()[0])
    validate_profile(p)
    damage(p[key])
    with pytest.raises(BundleError, match=f"profile is malformed: {key}"):
        validate_profile(p)


def test_accuracy_is_per_true_label_and_calibration_per_predicted_label_and_bin():
    acc = accuracy_table([0, 1, 1, 2, 2], [0, 1, 2, 2, 0], LABELS)
    assert acc == {"names": LABELS, "correct": [1, 1, 1], "total": [1, 2, 2]}
    cal = calibration_table([0, 1, 2, 2, 0], [0.95, 0.55, 0.35, 0.97, 0.1], [True, True, False, True, False], LABELS)
    assert cal["edges"] == CONFIDENCE_EDGES and cal["labels"] == LABELS
    hist = lambda *conf: counts_of(CONFIDENCE_EDGES, conf)  # noqa: E731
    assert cal["n"][0] == hist(0.95, 0.1) and cal["correct"][0] == hist(0.95)
    assert cal["n"][2] == hist(0.35, 0.97) and cal["correct"][2] == hist(0.97)
    assert sum(map(sum, cal["n"])) == 5 and sum(map(sum, cal["correct"])) == sum(acc["correct"])


def _bins(**at) -> list[int]:
    counts = [0] * (len(CONFIDENCE_EDGES) + 1)
    for conf, n in at.items():
        counts[int(conf[1:])] = n
    return counts


def test_expected_accuracy_reads_the_table_and_falls_back_bin_then_label_then_global():
    cal = {"edges": CONFIDENCE_EDGES, "labels": LABELS,
           "n": [_bins(b9=10, b5=10), _bins(b3=4), _bins()], "correct": [_bins(b9=9, b5=5), _bins(b3=1), _bins()]}
    overall = (9 + 5 + 1) / 24
    assert expected_accuracy(cal, {"yes": _bins(b9=2)}) == (pytest.approx(0.9), 2)
    # "no" at b9 and "up" at b5: cells never seen, their bins over all labels were (0.9, 0.5);
    # "yes" at b2: no label was seen there, so "yes" over all bins (14/20); "up" at b7: global
    est, n = expected_accuracy(cal, {"yes": _bins(b2=1), "no": _bins(b3=2, b9=1), "up": _bins(b5=2, b7=4)})
    assert n == 10
    assert est == pytest.approx((14 / 20 + 2 * 0.25 + 0.9 + 2 * 0.5 + 4 * overall) / 10)
    assert expected_accuracy(cal, {"maybe": _bins(b1=3, b9=1)}) == (pytest.approx((3 * overall + 0.9) / 4), 4)
    assert expected_accuracy(cal, {}) == (None, 0)
    assert expected_accuracy(cal, {"yes": _bins()}) == (None, 0)
    empty = {**cal, "n": [_bins()] * 3, "correct": [_bins()] * 3}
    assert expected_accuracy(empty, {"yes": _bins(b9=2)}) == (None, 2)
    with pytest.raises(ValueError, match="bins"):
        expected_accuracy(cal, {"yes": [1, 2, 3]})


def _label_first(cal: dict, by_label: dict) -> float:
    """The estimate with the other fallback order (cell, label, global), for comparison."""
    n, ok = np.asarray(cal["n"], float), np.asarray(cal["correct"], float)
    total = expected = 0.0
    for label, counts in by_label.items():
        i = cal["labels"].index(label)
        fallback = ok[i].sum() / n[i].sum() if n[i].sum() else ok.sum() / n.sum()
        expected += float(np.asarray(counts) @ np.where(n[i] > 0, ok[i] / np.maximum(n[i], 1), fallback))
        total += sum(counts)
    return expected / total


class _Model:
    """A simulated classifier: per label a confidence distribution and P(right | confidence)."""

    def __init__(self, rng, k: int = 12):
        self.k, self.rng = k, rng
        self.power = rng.uniform(0.7, 2.5, k)  # P(right | c, label) = c ** power[label]

    def predictions(self, n: int, mix, beta=(5.0, 1.5), concept_factor: float = 1.0):
        label = self.rng.choice(self.k, n, p=mix)
        conf = 0.15 + 0.85 * self.rng.beta(*beta, n)
        right = self.rng.random(n) < concept_factor * conf ** self.power[label]
        return label, conf, right

    def by_label(self, label, conf) -> dict:
        return {str(i): counts_of(CONFIDENCE_EDGES, conf[label == i]) for i in range(self.k)}


def test_the_estimate_tracks_accuracy_under_covariate_shift_but_not_concept_drift():
    """200 trials, each a new model: a reference of 3,000 predictions (the size of a lab test
    stream), then 2,000 predictions with another label mix at lower confidence, whose true
    accuracy is ~0.2 lower. The estimate recovers that drop to within 0.035 on average (what
    remains is mostly the shift of confidences inside a bin, which fixed bins cannot see);
    the label-first fallback order errs 1.4 times as much. Under concept drift (right less
    often at the same confidence) the estimate keeps the reference's value: only feedback and
    the audit sample show that."""
    rng = np.random.default_rng(11)
    errors, label_first, shifts, blind = [], [], [], []
    names = [str(i) for i in range(12)]
    for _ in range(200):
        model = _Model(rng)
        label, conf, right = model.predictions(3000, np.full(12, 1 / 12))
        cal = calibration_table(label, conf, right, names)
        ref_accuracy = right.mean()
        label, conf, right = model.predictions(2000, rng.dirichlet(np.ones(12)), beta=(2.0, 1.5))
        by_label = model.by_label(label, conf)
        est, n = expected_accuracy(cal, by_label)
        assert n == 2000
        errors.append(est - right.mean())
        label_first.append(_label_first(cal, by_label) - right.mean())
        shifts.append(ref_accuracy - right.mean())
        label, conf, right = model.predictions(2000, np.full(12, 1 / 12), concept_factor=0.7)
        blind.append(expected_accuracy(cal, model.by_label(label, conf))[0] - right.mean())
    errors, label_first = np.abs(errors), np.abs(label_first)
    assert np.mean(shifts) > 0.15
    assert np.mean(errors) < 0.035 and np.quantile(errors, 0.95) < 0.08
    assert np.mean(label_first) > 1.4 * np.mean(errors)
    assert np.mean(blind) > 0.15  # concept drift is invisible to confidence alone
