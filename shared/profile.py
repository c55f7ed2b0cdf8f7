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
     "labels":       {"names": [...], "counts": [...]}}
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from shared.errors import BundleError
from shared.histogram import (CONFIDENCE_EDGES, LEVEL_DBFS_EDGES, SNR_DB_EDGES, UTTERANCE_MS_EDGES,
                              counts_of)

SCALAR_SIGNALS = ("utterance_ms", "level_dbfs", "snr_db", "confidence")
FEATURE_QUANTILES = np.linspace(0.1, 0.9, 9)


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
                  snr_db, confidence, labels: Sequence[int], label_names: Sequence[str]) -> dict:
    """A reference profile from per-utterance arrays (``features`` is [n, F])."""
    features = np.asarray(features, dtype=float)
    if features.ndim != 2 or features.shape[1] != len(feature_names):
        raise ValueError("features must be [n, F] with one name per column")
    f_edges = [quantile_edges(features[:, j]) for j in range(features.shape[1])]
    label_counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(label_names))
    grids = {"utterance_ms": (UTTERANCE_MS_EDGES, utterance_ms), "level_dbfs": (LEVEL_DBFS_EDGES, level_dbfs),
             "snr_db": (SNR_DB_EDGES, snr_db), "confidence": (CONFIDENCE_EDGES, confidence)}
    profile = {
        "n": int(features.shape[0]),
        "features": {"names": list(feature_names), "edges": f_edges,
                     "counts": [counts_of(e, features[:, j]) for j, e in enumerate(f_edges)]},
        "labels": {"names": list(label_names), "counts": label_counts.astype(int).tolist()},
    }
    for signal, (edges, values) in grids.items():
        profile[signal] = {"edges": list(edges), "counts": counts_of(edges, values)}
    return profile


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
    return profile


def _check_hist(edges, counts) -> None:
    if len(counts) != len(edges) + 1:
        raise ValueError(f"{len(edges)} edges need {len(edges) + 1} counts, got {len(counts)}")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError("edges must increase strictly")
