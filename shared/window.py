"""One window of statistics: merging and derived figures.

A window's histograms are over pre-agreed edges (``shared.histogram`` grids, and the
active bundle's reference profile for features), so any set of windows of the same model
merges exactly by adding counts. ``merge_windows`` does that; ``summarize`` derives the rates
and quantiles that gates, drift and the dashboard read.
"""
from __future__ import annotations

from typing import Iterable

from shared.histogram import LATENCY_MS_EDGES, add_counts, quantile

COUNTER_SECTIONS = {
    "software": ("frames", "voiced_frames", "dropped_frames", "invalid_frames", "utterances",
                 "inferences", "errors"),
    "input": ("clipped_utterances",),
    "output": ("no_answer", "deferred", "acted", "suggested"),
}
HIST_SECTIONS = {"input": ("utterance_ms", "level_dbfs", "snr_db"), "output": ("confidence",)}


def _add_map(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _add_hist_map(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = add_counts(out[k], v) if k in out else list(v)
    return out


def _merge_pairs(a: list, b: list) -> list:
    acc: dict[tuple[str, str], int] = {(t, p): n for t, p, n in a}
    for t, p, n in b:
        acc[(t, p)] = acc.get((t, p), 0) + n
    return [[t, p, n] for (t, p), n in sorted(acc.items())]


def _merge_two(a: dict, b: dict) -> dict:
    out = {"n_windows": a.get("n_windows", 1) + b.get("n_windows", 1),
           "duration_s": a["duration_s"] + b["duration_s"],
           "model": a.get("model")}
    for section, names in COUNTER_SECTIONS.items():
        out[section] = {n: a[section][n] + b[section][n] for n in names}
    sw_a, sw_b = a["software"], b["software"]
    out["software"].update(
        cpu_s=sw_a["cpu_s"] + sw_b["cpu_s"],
        rss_mb=max(sw_a["rss_mb"], sw_b["rss_mb"]),
        latency_ms=_add_hist_map(sw_a["latency_ms"], sw_b["latency_ms"]),
    )
    for section, names in HIST_SECTIONS.items():
        for n in names:
            out[section][n] = add_counts(a[section][n], b[section][n])
    fa, fb = a["input"]["features"], b["input"]["features"]
    if len(fa) != len(fb):
        raise ValueError("windows disagree on the feature count: merge windows of one model only")
    out["input"]["features"] = [add_counts(x, y) for x, y in zip(fa, fb)]
    out["output"]["labels"] = _add_map(a["output"]["labels"], b["output"]["labels"])
    out["feedback"] = {"pairs": _merge_pairs(a["feedback"]["pairs"], b["feedback"]["pairs"])}
    sa, sb = a.get("shadow"), b.get("shadow")
    if sa and sb:
        out["shadow"] = {"compared": sa["compared"] + sb["compared"], "agree": sa["agree"] + sb["agree"],
                         "confidence": add_counts(sa["confidence"], sb["confidence"]),
                         "labels": _add_map(sa["labels"], sb["labels"])}
    else:
        out["shadow"] = sa or sb
    return out


def merge_windows(windows: Iterable[dict]) -> dict | None:
    """Exact merge of windows (or of earlier merges) of one model; None for no windows."""
    merged = None
    for w in windows:
        if merged is None:
            merged = _merge_two(w, _zero_like(w))
            merged["n_windows"] = w.get("n_windows", 1)
            continue
        if w.get("model") != merged.get("model"):
            raise ValueError("windows of different models have different feature bins: group by model first")
        merged = _merge_two(merged, w)
    return merged


def _zero_like(w: dict) -> dict:
    """A window of the same shape with every count at zero (the merge identity)."""
    zero = {"n_windows": 0, "duration_s": 0.0, "model": w.get("model")}
    for section, names in COUNTER_SECTIONS.items():
        zero[section] = {n: 0 for n in names}
    zero["software"].update(cpu_s=0.0, rss_mb=0.0, latency_ms={})
    for section, names in HIST_SECTIONS.items():
        for n in names:
            zero[section][n] = [0] * len(w[section][n])
    zero["input"]["features"] = [[0] * len(f) for f in w["input"]["features"]]
    zero["output"]["labels"] = {}
    zero["feedback"] = {"pairs": []}
    zero["shadow"] = None
    return zero


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def summarize(w: dict) -> dict:
    """Derived figures of a window or a merge: rates, latency quantiles, feedback accuracy."""
    sw, out, fb = w["software"], w["output"], w["feedback"]
    inferences = sw["inferences"]
    fb_total = sum(n for _, _, n in fb["pairs"])
    fb_correct = sum(n for t, p, n in fb["pairs"] if t == p)
    latency = {
        stage: {"p50": quantile(LATENCY_MS_EDGES, c, 0.5), "p99": quantile(LATENCY_MS_EDGES, c, 0.99)}
        for stage, c in sw["latency_ms"].items()
    }
    shadow = w.get("shadow") or {}
    return {
        "n_windows": w.get("n_windows", 1),
        "duration_s": w["duration_s"],
        "utterances": sw["utterances"],
        "inferences": inferences,
        "speech_ratio": _ratio(sw["voiced_frames"], sw["frames"]),
        "error_rate": _ratio(sw["errors"], inferences + sw["errors"]),
        "no_answer_rate": _ratio(out["no_answer"], inferences),
        "deferral_rate": _ratio(out["deferred"], inferences),
        "latency_ms": latency,
        "cpu_s_per_audio_s": _ratio(sw["cpu_s"], w["duration_s"]),
        "rss_mb": sw["rss_mb"],
        "shadow_agreement": _ratio(shadow.get("agree", 0), shadow.get("compared", 0)),
        "shadow_compared": shadow.get("compared", 0),
        "feedback_n": fb_total,
        "feedback_accuracy": _ratio(fb_correct, fb_total),
    }
