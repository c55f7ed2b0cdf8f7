"""One window of statistics: merging and derived figures.

A window's histograms are over pre-agreed edges (``shared.histogram`` grids, and the
active bundle's reference profile for features), so any set of windows of the same model
merges exactly by adding counts. ``merge_windows`` does that; ``summarize`` derives the rates
and quantiles that gates, drift and the dashboard read.

Schema 1.1 fields a 1.0 window lacks are read as empty (no counts), so 1.0 and 1.1 windows
merge together; a merge always carries the 1.1 fields:

    output.confidence_by_label  {predicted label: confidence counts}; sums to output.confidence
    output.audit_requested      decisions flagged for a person to label (the audit sample)
    feedback.pairs / audit      [[true, predicted, n]] on predictions of the window's own model
                                (audit: the audited subset)
    feedback.by_model / audit_by_model
                                {model sha256: [[true, predicted, n]]} on predictions another
                                model made (the previous active model, after a swap)

The shadow section belongs to the window's ``shadow_model``: merges of windows that shadowed
the same candidate (or none) keep it, with ``shadow.errors`` (the candidate's failures) summed
like the other counts; a merge over different candidates keeps no shadow section and names
its ``shadow_model`` ``MIXED_SHADOW``, whatever else is merged into it later (so the merge
stays associative). A body without ``shadow_model`` (rollups written before it was kept)
adds its shadow counts to whichever candidate it is merged with.
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
OPTIONAL_COUNTERS = {"output": ("audit_requested",)}  # 1.1: absent in 1.0 windows
FEEDBACK_LISTS = ("pairs", "audit")
FEEDBACK_MAPS = ("by_model", "audit_by_model")
HIST_SECTIONS = {"input": ("utterance_ms", "level_dbfs", "snr_db"), "output": ("confidence",)}
MIXED_SHADOW = "*"  # shadow_model of a merge over windows that shadowed different candidates
# Histograms newer agents send (schema 1.1); absent means none were counted.
OPTIONAL_HISTS = {"input": ("noise_dbfs",)}


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
    acc: dict[tuple[str, str], int] = {}
    for t, p, n in (*a, *b):  # a window may list one pair twice: both count, on either side
        acc[(t, p)] = acc.get((t, p), 0) + n
    return [[t, p, n] for (t, p), n in sorted(acc.items())]


def _merge_pair_maps(a: dict, b: dict) -> dict:
    out = dict(a)
    for model, pairs in b.items():
        out[model] = _merge_pairs(out.get(model, []), pairs)
    return {m: out[m] for m in sorted(out)}


def _merge_feedback(a: dict, b: dict) -> dict:
    out = {k: _merge_pairs(a.get(k) or [], b.get(k) or []) for k in FEEDBACK_LISTS}
    out.update({k: _merge_pair_maps(a.get(k) or {}, b.get(k) or {}) for k in FEEDBACK_MAPS})
    return out


def _merge_two(a: dict, b: dict) -> dict:
    out = {"n_windows": a.get("n_windows", 1) + b.get("n_windows", 1),
           "duration_s": a["duration_s"] + b["duration_s"],
           "model": a.get("model")}
    for section, names in COUNTER_SECTIONS.items():
        out[section] = {n: a[section][n] + b[section][n] for n in names}
    for section, names in OPTIONAL_COUNTERS.items():
        out[section].update({n: a[section].get(n, 0) + b[section].get(n, 0) for n in names})
    sw_a, sw_b = a["software"], b["software"]
    out["software"].update(
        cpu_s=sw_a["cpu_s"] + sw_b["cpu_s"],
        rss_mb=max(sw_a["rss_mb"], sw_b["rss_mb"]),
        latency_ms=_add_hist_map(sw_a["latency_ms"], sw_b["latency_ms"]),
    )
    for section, names in HIST_SECTIONS.items():
        for n in names:
            out[section][n] = add_counts(a[section][n], b[section][n])
    for section, names in OPTIONAL_HISTS.items():
        for n in names:
            ha, hb = a[section].get(n), b[section].get(n)
            if ha is not None or hb is not None:
                out[section][n] = add_counts(ha or [0] * len(hb), hb or [0] * len(ha))
    fa, fb = a["input"]["features"], b["input"]["features"]
    if len(fa) != len(fb):
        raise ValueError("windows disagree on the feature count: merge windows of one model only")
    out["input"]["features"] = [add_counts(x, y) for x, y in zip(fa, fb)]
    out["output"]["labels"] = _add_map(a["output"]["labels"], b["output"]["labels"])
    out["output"]["confidence_by_label"] = _add_hist_map(a["output"].get("confidence_by_label") or {},
                                                         b["output"].get("confidence_by_label") or {})
    out["feedback"] = _merge_feedback(a["feedback"], b["feedback"])
    out["shadow_model"], out["shadow"] = _merge_shadow(a, b)
    return out


def _merge_shadow(a: dict, b: dict) -> tuple[str | None, dict | None]:
    """(shadow_model, shadow section) of a merge of ``a`` and ``b``."""
    ma, mb = a.get("shadow_model"), b.get("shadow_model")
    if MIXED_SHADOW in (ma, mb) or (ma and mb and ma != mb):
        return MIXED_SHADOW, None
    sa, sb = a.get("shadow"), b.get("shadow")
    if not (sa and sb):
        one = sa or sb
        return ma or mb, None if one is None else {**one, "errors": one.get("errors", 0)}
    return ma or mb, {"compared": sa["compared"] + sb["compared"], "agree": sa["agree"] + sb["agree"],
                      "errors": sa.get("errors", 0) + sb.get("errors", 0),
                      "confidence": add_counts(sa["confidence"], sb["confidence"]),
                      "labels": _add_map(sa["labels"], sb["labels"])}


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
    for section, names in OPTIONAL_COUNTERS.items():
        zero[section].update({n: 0 for n in names})
    zero["software"].update(cpu_s=0.0, rss_mb=0.0, latency_ms={})
    for section, names in HIST_SECTIONS.items():
        for n in names:
            zero[section][n] = [0] * len(w[section][n])
    zero["input"]["features"] = [[0] * len(f) for f in w["input"]["features"]]
    zero["output"]["labels"] = {}
    zero["output"]["confidence_by_label"] = {}
    zero["feedback"] = {**{k: [] for k in FEEDBACK_LISTS}, **{k: {} for k in FEEDBACK_MAPS}}
    zero["shadow_model"], zero["shadow"] = None, None
    return zero


def credited_feedback(w: dict, model: str, audit: bool = False) -> list:
    """[[true, predicted, n]] on predictions ``model`` made, from a window (or a merge of one
    model's windows) of any model: its own pairs, or what it credits to ``model`` by model."""
    fb = w["feedback"]
    if w.get("model") == model:
        return fb.get("audit") or [] if audit else fb["pairs"]
    return (fb.get("audit_by_model" if audit else "by_model") or {}).get(model, [])


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def summarize(w: dict) -> dict:
    """Derived figures of a window or a merge: rates, latency quantiles, feedback accuracy."""
    sw, out, fb = w["software"], w["output"], w["feedback"]
    inferences = sw["inferences"]
    fb_total, fb_correct = _tally(fb["pairs"])
    audit_total, audit_correct = _tally(fb.get("audit") or [])
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
        "shadow_errors": shadow.get("errors", 0),
        "feedback_n": fb_total,
        "feedback_accuracy": _ratio(fb_correct, fb_total),
        "audit_requested": out.get("audit_requested", 0),
        "audit_n": audit_total,
        "audit_accuracy": _ratio(audit_correct, audit_total),
    }


def _tally(pairs: list) -> tuple[int, int]:
    """(total, correct) of [[true, predicted, n]] pairs."""
    return sum(n for _, _, n in pairs), sum(n for t, p, n in pairs if t == p)
