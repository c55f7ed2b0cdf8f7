"""Windows → time series: bucket a cohort's windows by time and derive what the dashboard plots.

Windows of different models cannot be merged as they are (their feature bins differ), but
every other histogram is over a fixed grid. So each bucket is merged twice: once across
models with the features stripped (load, latency, input and output figures), and once per
model with the features kept (feature drift against that model's reference profile).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable

from shared.histogram import CONFIDENCE_EDGES, LEVEL_DBFS_EDGES, SNR_DB_EDGES, quantile
from cloud.store.rollup import merge_by_model
from shared.window import merge_windows, summarize

MAX_BUCKETS = 720
EDGES = {"level_dbfs": LEVEL_DBFS_EDGES, "snr_db": SNR_DB_EDGES, "confidence": CONFIDENCE_EDGES}

# (model sha, merged window of that model) -> {feature name: score}; None when not scorable
DriftScorer = Callable[[str, dict], "dict[str, float] | None"]


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


def bucket_row(t: float, bucket_s: int, merges: dict[str, dict], scorer: DriftScorer | None,
               devices: int | None = None) -> dict:
    """The figures of one bucket from its per-model merges (model ``''`` = no model)."""
    merged = merge_cross_model(merges.values())
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
        "feature_drift": _feature_drift(merges, scorer) if scorer else {},
    }


def _feature_drift(merges: dict[str, dict], scorer: DriftScorer) -> dict:
    """Per model in the bucket: the largest feature score and the feature that has it."""
    out = {}
    for sha, merged in sorted(merges.items()):
        scores = scorer(sha, merged) if sha else None
        if not scores:
            continue
        top = max(scores, key=scores.get)
        out[sha] = {"max": scores[top], "top_feature": top, "scores": scores}
    return out


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
    buckets: dict[float, list[tuple[str, dict]]] = defaultdict(list)
    devices: dict[float, set] = defaultdict(set)
    for w in windows:
        t = w["t_start"]
        if t < start < t + w.get("bucket_s", 0):
            t = start
        if start <= t < t_to:
            b = start + ((t - start) // bucket_s) * bucket_s
            buckets[b].append((w.get("model") or "", w))
            devices[b].add(w["device"])
    rows, skipped = [], 0
    for t in sorted(buckets):
        merges = merge_by_model(buckets[t])
        skipped += sum(w.get("n_windows", 1) for _, w in buckets[t]) - sum(m.get("n_windows", 1) for m in merges.values())
        if merges:
            rows.append(bucket_row(t, bucket_s, merges, scorer, len(devices[t])))
    labels = sorted({k for r in rows for k in r["labels"]})
    stages = sorted({k for r in rows for k in r["latency_ms"]})
    return {"from": start, "to": t_to, "bucket_s": bucket_s, "labels": labels, "stages": stages,
            "edges": EDGES, "skipped": skipped, "buckets": rows}
