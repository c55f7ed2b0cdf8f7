"""Windows → time series: bucket a cohort's windows by time and derive what the dashboard plots.

Windows of different models cannot be merged as they are (their feature bins differ), but
every other histogram is over a fixed grid. So each bucket is merged once across models with
the features stripped (load, latency, input and output figures), and the feature histograms
are summed per model on their own (feature drift against that model's reference profile).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable

import numpy as np

from cloud.store.rollup import merge_checked
from shared.histogram import CONFIDENCE_EDGES, LEVEL_DBFS_EDGES, SNR_DB_EDGES, quantile
from shared.window import merge_windows, summarize

MAX_BUCKETS = 720
EDGES = {"level_dbfs": LEVEL_DBFS_EDGES, "snr_db": SNR_DB_EDGES, "confidence": CONFIDENCE_EDGES}

# (model sha, summed feature histograms of that model) -> {feature name: score}; None when not scorable
DriftScorer = Callable[[str, list], "dict[str, float] | None"]


def pick_bucket_s(span_s: float, target: int = 60) -> int:
    """A round bucket width giving about ``target`` buckets over ``span_s``."""
    for step in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if span_s / step <= target:
            return step
    return 86400 * max(1, int(span_s / 86400 / target) + 1)


def _strip_features(w: dict) -> dict:
    """A shallow copy that merges across models: no model, no feature histograms."""
    out = dict(w)
    out["model"] = None
    out["input"] = {**w["input"], "features": []}
    return out


def merge_cross_model(merges: Iterable[dict]) -> dict | None:
    """One merge over windows (or merges) of any models, without the feature histograms."""
    return merge_windows(_strip_features(m) for m in merges)


def _quantiles(edges: list[float], counts: list[int]) -> dict:
    return {f"p{int(q * 100)}": quantile(edges, counts, q) for q in (0.1, 0.5, 0.9)}


def bucket_row(t: float, bucket_s: int, merged: dict, feature_drift: dict, devices: int | None = None) -> dict:
    """The figures of one bucket from its cross-model merge (features stripped)."""
    s = summarize(merged)
    inp, out = merged["input"], merged["output"]
    return {
        "t": t, "n_windows": s["n_windows"], "devices": devices,
        "utterances": s["utterances"], "inferences": s["inferences"], "errors": merged["software"]["errors"],
        "utterances_per_s": s["utterances"] / bucket_s, "inferences_per_s": s["inferences"] / bucket_s,
        "error_rate": s["error_rate"],
        "latency_ms": s["latency_ms"],
        "cpu_s_per_audio_s": s["cpu_s_per_audio_s"],
        "rss_mb_max": s["rss_mb"],
        "speech_ratio": s["speech_ratio"],
        "level_dbfs": {**_quantiles(LEVEL_DBFS_EDGES, inp["level_dbfs"]), "counts": inp["level_dbfs"]},
        "snr_db": {**_quantiles(SNR_DB_EDGES, inp["snr_db"]), "counts": inp["snr_db"]},
        "clipped_utterances": inp["clipped_utterances"],
        "labels": out["labels"],
        "confidence": {**_quantiles(CONFIDENCE_EDGES, out["confidence"]), "counts": out["confidence"]},
        "no_answer_rate": s["no_answer_rate"],
        "deferral_rate": s["deferral_rate"],
        "shadow_agreement": s["shadow_agreement"],
        "shadow_compared": s["shadow_compared"],
        "feedback_accuracy": s["feedback_accuracy"],
        "feedback_n": s["feedback_n"],
        "feature_drift": feature_drift,
    }


def _feature_sums(bodies: list[dict]) -> dict[str, list]:
    """Per model: its feature histograms summed (the shape most of its windows have)."""
    by_model: dict[str, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for w in bodies:
        feats = w["input"]["features"]
        if w.get("model") and feats:
            by_model[w["model"]][tuple(len(f) for f in feats)].append(feats)
    out = {}
    for sha, shapes in by_model.items():
        same = max(shapes.values(), key=len)
        out[sha] = np.sum(np.asarray(same, dtype=np.int64), axis=0).tolist()
    return out


def _feature_drift(bodies: list[dict], scorer: DriftScorer) -> dict:
    """Per model in the bucket: the largest feature score and the feature that has it."""
    out = {}
    for sha, counts in sorted(_feature_sums(bodies).items()):
        scores = scorer(sha, counts)
        if not scores:
            continue
        top = max(scores, key=scores.get)
        out[sha] = {"max": scores[top], "top_feature": top, "scores": scores}
    return out


def _bucket(t: float, bucket_s: int, bodies: list[dict], scorer: DriftScorer | None) -> tuple[dict | None, int]:
    """(row or None, windows left out because their histograms do not fit the others')."""
    merged, bad = merge_checked((i, _strip_features(w)) for i, w in enumerate(bodies))
    left_out = set(bad)
    kept = [w for i, w in enumerate(bodies) if i not in left_out]
    skipped = sum(bodies[i].get("n_windows", 1) for i in left_out)
    if merged is None:
        return None, skipped
    drift = _feature_drift(kept, scorer) if scorer else {}
    return bucket_row(t, bucket_s, merged, drift, len({w["device"] for w in kept})), skipped


def time_series(windows: Iterable[dict], *, t_from: float, t_to: float, bucket_s: int,
                scorer: DriftScorer | None = None) -> dict:
    """Bucketed figures of ``windows`` (or rollup bodies) in ``[t_from, t_to)``; empty buckets are omitted.

    Buckets sit on the absolute grid of ``bucket_s`` (``from`` moves back to it), like the
    store's rollups. A rollup body (it carries ``bucket_s``) that straddles ``from`` counts in
    the first bucket. Windows that do not fit their model's histogram shapes are left out of
    the merge (counted in ``skipped``) rather than failing the whole series.
    """
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    start = math.floor(t_from / bucket_s) * bucket_s
    if (t_to - start) / bucket_s > MAX_BUCKETS:
        raise ValueError(f"{t_to - start:.0f} s in {bucket_s} s buckets is over {MAX_BUCKETS} buckets: "
                         "choose a wider bucket_s or a shorter range")
    buckets: dict[float, list[dict]] = defaultdict(list)
    for w in windows:
        t = w["t_start"]
        if t < start < t + w.get("bucket_s", 0):
            t = start
        if start <= t < t_to:
            buckets[start + ((t - start) // bucket_s) * bucket_s].append(w)
    rows, skipped = [], 0
    for t in sorted(buckets):
        row, left_out = _bucket(t, bucket_s, buckets[t], scorer)
        skipped += left_out
        if row is not None:
            rows.append(row)
    labels = sorted({k for r in rows for k in r["labels"]})
    stages = sorted({k for r in rows for k in r["latency_ms"]})
    return {"from": start, "to": t_to, "bucket_s": bucket_s, "labels": labels, "stages": stages,
            "edges": EDGES, "skipped": skipped, "buckets": rows}
