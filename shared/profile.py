"""The reference profile: what "healthy" looks like for one model, carried in its bundle.

Computed by the model lab on the dev split (utterances cut by the device's own gate, scored
by the bundle itself). It fixes the bin edges the agent counts into and holds the reference
counts the collector's drift detectors compare merged windows against.

    {"n": 1234,
     "features":     {"names": [...], "edges": [[...], ...], "counts": [[...], ...]},
     "utterance_ms": {"edges": [...], "counts": [...]},
     "level_dbfs":   {"edges": [...], "counts": [...]},
     "snr_db":       {"edges": [...], "counts": [...]},
     "confidence":   {"edges": [...], "counts": [...]},
     "labels":       {"names": [...], "counts": [...]},          (predicted labels)
     -- version 2 (optional: bundles made before lack them) --
     "chunks":       {"by": "speaker", "names": [...], "n": [utterances per chunk],
                      "counts": {signal: [[counts] per chunk]}},
     "accuracy":     {"names": labels, "correct": [...], "total": [...]},   (per TRUE label)
     "calibration":  {"edges": CONFIDENCE_EDGES, "labels": labels,
                      "n": [[per confidence bin] per predicted label], "correct": [[...]]}}

``chunks`` splits the dev stream into healthy chunks (its utterances grouped by the speaker
of the clip each overlaps most; utterances overlapping no clip form ``_background_``) so a
detector can learn how far healthy chunks spread. Its signals are ``feature:<name>`` per
feature, ``utterance_ms``, ``level_dbfs``, ``snr_db``, ``confidence`` and ``labels``; per
signal, the chunks' counts add up exactly to the aggregate counts above.

``accuracy`` and ``calibration`` come from the TEST split played as one stream through the
device's gate (each utterance credited to the clip it overlaps most; utterances crediting no
clip are left out). ``expected_accuracy`` turns the calibration table and a window's
``output.confidence_by_label`` into a label-free accuracy estimate.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from shared.errors import BundleError
from shared.histogram import (CONFIDENCE_EDGES, LEVEL_DBFS_EDGES, SNR_DB_EDGES, UTTERANCE_MS_EDGES,
                              counts_of)

SCALAR_SIGNALS = ("utterance_ms", "level_dbfs", "snr_db", "confidence")
FEATURE_QUANTILES = np.linspace(0.1, 0.9, 9)
BACKGROUND_CHUNK = "_background_"  # dev-stream utterances that overlap no clip
FEATURE_PREFIX = "feature:"


def quantile_edges(values: np.ndarray, quantiles: Sequence[float] = FEATURE_QUANTILES) -> list[float]:
    """Strictly increasing edges at the given quantiles (ties collapsed), 6 significant digits."""
    qs = np.quantile(np.asarray(values, dtype=float), quantiles)
    edges: list[float] = []
    for q in qs:
        q = float(f"{q:.6g}")
        if not edges or q > edges[-1]:
            edges.append(q)
    return edges


def build_profile(features: np.ndarray, feature_names: Sequence[str], *, utterance_ms, level_dbfs,
                  snr_db, confidence, labels: Sequence[int], label_names: Sequence[str],
                  chunks: Sequence[str] | None = None, chunk_by: str = "speaker") -> dict:
    """A reference profile from per-utterance arrays (``features`` is [n, F]).

    ``chunks`` names the chunk of each utterance (e.g. its speaker); with it the profile
    gets the ``chunks`` key.
    """
    features = np.asarray(features, dtype=float)
    if features.ndim != 2 or features.shape[1] != len(feature_names):
        raise ValueError("features must be [n, F] with one name per column")
    f_edges = [quantile_edges(features[:, j]) for j in range(features.shape[1])]
    labels = np.asarray(labels, dtype=int)
    grids = {"utterance_ms": (UTTERANCE_MS_EDGES, utterance_ms), "level_dbfs": (LEVEL_DBFS_EDGES, level_dbfs),
             "snr_db": (SNR_DB_EDGES, snr_db), "confidence": (CONFIDENCE_EDGES, confidence)}
    columns = {f"{FEATURE_PREFIX}{name}": (f_edges[j], features[:, j]) for j, name in enumerate(feature_names)}
    columns.update({s: (list(e), np.asarray(v, dtype=float)) for s, (e, v) in grids.items()})
    profile = {
        "n": int(features.shape[0]),
        "features": {"names": list(feature_names), "edges": f_edges,
                     "counts": [counts_of(e, features[:, j]) for j, e in enumerate(f_edges)]},
        "labels": {"names": list(label_names), "counts": _label_counts(labels, len(label_names))},
    }
    for signal, (edges, values) in grids.items():
        profile[signal] = {"edges": list(edges), "counts": counts_of(edges, values)}
    if chunks is not None:
        profile["chunks"] = _chunks(columns, labels, len(label_names), list(chunks), chunk_by)
    return profile


def _label_counts(labels: np.ndarray, n_labels: int) -> list[int]:
    return np.bincount(labels, minlength=n_labels).astype(int).tolist()


def chunk_names(names: Sequence[str]) -> list[str]:
    """The chunk order of a profile: sorted names, ``_background_`` last."""
    distinct = set(names)
    return sorted(distinct - {BACKGROUND_CHUNK}) + ([BACKGROUND_CHUNK] if BACKGROUND_CHUNK in distinct else [])


def _chunks(columns: dict, labels: np.ndarray, n_labels: int, chunk_of: list[str], by: str) -> dict:
    if len(chunk_of) != len(labels):
        raise ValueError(f"chunks names {len(chunk_of)} utterances, the profile has {len(labels)}")
    names = chunk_names(chunk_of)
    index = {name: i for i, name in enumerate(names)}
    member = np.array([index[c] for c in chunk_of], dtype=int)
    masks = [member == i for i in range(len(names))]
    counts = {signal: [counts_of(edges, values[m]) for m in masks] for signal, (edges, values) in columns.items()}
    counts["labels"] = [_label_counts(labels[m], n_labels) for m in masks]
    return {"by": by, "names": names, "n": [int(m.sum()) for m in masks], "counts": counts}


def chunk_signals(profile: dict) -> dict[str, list[int]]:
    """The aggregate counts of every signal ``chunks`` splits, by its chunk signal name."""
    out = {f"{FEATURE_PREFIX}{name}": counts
           for name, counts in zip(profile["features"]["names"], profile["features"]["counts"])}
    out.update({s: profile[s]["counts"] for s in SCALAR_SIGNALS})
    out["labels"] = profile["labels"]["counts"]
    return out


# -- the concept reference: accuracy per true label, and calibration ---------------------------

def accuracy_table(true: Sequence[int], predicted: Sequence[int], label_names: Sequence[str]) -> dict:
    """``{"names", "correct", "total"}`` per TRUE label, from class indices."""
    true, predicted = np.asarray(true, dtype=int), np.asarray(predicted, dtype=int)
    k = len(label_names)
    return {"names": list(label_names), "correct": _label_counts(true[true == predicted], k),
            "total": _label_counts(true, k)}


def calibration_table(predicted: Sequence[int], confidence: Sequence[float], correct: Sequence[bool],
                      label_names: Sequence[str]) -> dict:
    """How often a prediction of label L in confidence bin b was right: n and correct per (L, b)."""
    predicted = np.asarray(predicted, dtype=int)
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    rows = [predicted == i for i in range(len(label_names))]
    return {"edges": list(CONFIDENCE_EDGES), "labels": list(label_names),
            "n": [counts_of(CONFIDENCE_EDGES, confidence[r]) for r in rows],
            "correct": [counts_of(CONFIDENCE_EDGES, confidence[r & correct]) for r in rows]}


def expected_accuracy(calibration: dict, confidence_by_label: Mapping[str, Sequence[int]]) -> tuple[float | None, int]:
    """Label-free accuracy estimate of a window (or merge): ``(estimate, n)``.

    Each prediction counted in ``confidence_by_label[L][b]`` (the window's predictions of
    label L in confidence bin b, over the calibration's edges) is expected to be right as
    often as the reference's predictions of L in bin b were: ``correct[L][b] / n[L][b]``.
    A cell the reference never saw falls back to bin b's accuracy over all labels, then to
    label L's accuracy over all bins, then to the reference's overall accuracy (a label the
    reference does not know goes straight to bin b over all labels). The bin comes first
    because a shifted input moves predictions to confidences where one label's cells are
    empty, and a label's overall accuracy is that of its usual, confident predictions: in
    simulation (tests/shared/test_profile.py, a reference of 3,000 predictions, a shift that
    costs 0.20 accuracy) the label-first order overestimated the shifted accuracy by 0.048 on
    average, bin-first by 0.017.

    ``n`` is the number of predictions estimated; the estimate is None when there are none or
    the calibration holds no prediction at all. It assumes the reference's confidence →
    accuracy relation still holds: it follows covariate shift, not concept drift (a model
    right less often at the same confidence), which only feedback and the audit sample show.
    """
    cal_n = np.asarray(calibration["n"], dtype=float)
    cal_ok = np.asarray(calibration["correct"], dtype=float)
    n_total = int(sum(sum(c) for c in confidence_by_label.values()))
    if n_total == 0 or cal_n.sum() == 0:
        return None, n_total
    overall = cal_ok.sum() / cal_n.sum()
    bin_n, bin_ok = cal_n.sum(axis=0), cal_ok.sum(axis=0)
    row_of = {name: i for i, name in enumerate(calibration["labels"])}
    expected = 0.0
    for label, counts in confidence_by_label.items():
        counts = np.asarray(counts, dtype=float)
        if len(counts) != len(calibration["edges"]) + 1:
            raise ValueError(f"confidence_by_label[{label!r}] has {len(counts)} bins, the calibration "
                             f"{len(calibration['edges']) + 1}: count over the calibration's edges")
        i = row_of.get(label)
        label_n, label_ok = (cal_n[i], cal_ok[i]) if i is not None else (np.zeros_like(bin_n), bin_ok)
        fallback = label_ok.sum() / label_n.sum() if label_n.sum() else overall
        rate = _rates(label_ok, label_n, _rates(bin_ok, bin_n, np.full_like(bin_n, fallback)))
        expected += float(counts @ rate)
    return expected / n_total, n_total


def _rates(correct: np.ndarray, n: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """correct / n per bin; ``fallback`` where n is 0."""
    return np.where(n > 0, correct / np.where(n > 0, n, 1.0), fallback)


# -- validation ---------------------------------------------------------------------------------

def validate_profile(profile: dict) -> dict:
    """Check the shape of a profile; raise BundleError naming what is wrong."""
    try:
        feats = profile["features"]
        if not (len(feats["names"]) == len(feats["edges"]) == len(feats["counts"])):
            raise ValueError("features: names, edges and counts differ in length")
        for e, c in zip(feats["edges"], feats["counts"]):
            _check_hist(e, c)
        for signal in SCALAR_SIGNALS:
            _check_hist(profile[signal]["edges"], profile[signal]["counts"])
        if len(profile["labels"]["names"]) != len(profile["labels"]["counts"]):
            raise ValueError("labels: names and counts differ in length")
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"reference profile is malformed: {exc}") from exc
    for key, check in (("chunks", _check_chunks), ("accuracy", _check_accuracy),
                       ("calibration", _check_calibration)):
        if profile.get(key) is None:
            continue  # a bundle made before profile v2
        try:
            check(profile, profile[key])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"reference profile is malformed: {key}: {exc}") from exc
    return profile


def _check_hist(edges, counts) -> None:
    if len(counts) != len(edges) + 1:
        raise ValueError(f"{len(edges)} edges need {len(edges) + 1} counts, got {len(counts)}")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError("edges must increase strictly")


def _check_counts(name: str, counts, length: int) -> None:
    if not isinstance(counts, list) or len(counts) != length:
        raise ValueError(f"{name} must be a list of {length} counts")
    if not all(type(c) is int and c >= 0 for c in counts):
        raise ValueError(f"{name} must hold non-negative integers")


def _check_chunks(profile: dict, chunks: dict) -> None:
    names = chunks["names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("names must be a list of strings")
    _check_counts("n", chunks["n"], len(names))
    for signal, aggregate in chunk_signals(profile).items():
        per_chunk = chunks["counts"][signal]
        if not isinstance(per_chunk, list) or len(per_chunk) != len(names):
            raise ValueError(f"counts[{signal!r}] must hold one histogram per chunk ({len(names)})")
        for name, counts in zip(names, per_chunk):
            _check_counts(f"counts[{signal!r}][{name!r}]", counts, len(aggregate))


def _check_accuracy(profile: dict, acc: dict) -> None:
    k = len(acc["names"])
    _check_counts("correct", acc["correct"], k)
    _check_counts("total", acc["total"], k)
    if any(c > t for c, t in zip(acc["correct"], acc["total"])):
        raise ValueError("correct exceeds total")


def _check_calibration(profile: dict, cal: dict) -> None:
    edges, labels = cal["edges"], cal["labels"]
    _check_hist(edges, [0] * (len(edges) + 1))
    for key in ("n", "correct"):
        if not isinstance(cal[key], list) or len(cal[key]) != len(labels):
            raise ValueError(f"{key} must hold one row per label ({len(labels)})")
        for label, row in zip(labels, cal[key]):
            _check_counts(f"{key}[{label!r}]", row, len(edges) + 1)
    if any(c > n for rn, rc in zip(cal["n"], cal["correct"]) for n, c in zip(rn, rc)):
        raise ValueError("correct exceeds n")
