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

import operator
from itertools import chain
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


def _column_sums(hists: list, what: str) -> list[int]:
    """Bin-by-bin sums of histograms over the same edges (``add_counts``, for many at once)."""
    size = len(hists[0])
    for n in map(len, hists):
        if n != size:
            raise ValueError(f"cannot merge histograms of {size} and {n} bins ({what}): edges differ")
    if len(hists) <= 3:  # the common case (a bucket and a window or two): C-level adds
        acc = list(hists[0])
        for h in hists[1:]:
            acc = list(map(operator.add, acc, h))
        return acc
    return list(map(sum, zip(*hists)))


def _hist_map(maps: list[dict], what: str) -> dict:
    """{key: histogram} maps merged key by key (keys in order of first appearance)."""
    by_key: dict = {}
    for m in maps:
        for k, v in m.items():
            by_key.setdefault(k, []).append(v)
    return {k: _column_sums(hs, f"{what}.{k}") for k, hs in by_key.items()}


def _count_map(maps: list[dict]) -> dict:
    out: dict = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0) + v
    return out


def _pairs(lists: Iterable[list]) -> list:
    """[[true, predicted, n]] lists merged: summed per (true, predicted), sorted."""
    acc: dict[tuple[str, str], int] = {}
    for pairs in lists:
        for t, p, n in pairs:
            acc[(t, p)] = acc.get((t, p), 0) + n
    return [[t, p, n] for (t, p), n in sorted(acc.items())]


def _pair_maps(maps: list[dict]) -> dict:
    """{model: pairs} maps merged. A model only the first window names keeps that window's list as
    it is (merging never touched it); every other one is summed and sorted."""
    by_model: dict[str, list] = {}
    for m in maps[1:]:
        for model, pairs in m.items():
            by_model.setdefault(model, []).append(pairs)
    out = dict(maps[0])
    for model, lists in by_model.items():
        out[model] = _pairs(([out[model]] if model in out else []) + lists)
    return {m: out[m] for m in sorted(out)}


def _feedback(ws: list[dict]) -> dict:
    fbs = [w["feedback"] for w in ws]
    out = {k: _pairs(fb.get(k) or [] for fb in fbs) for k in FEEDBACK_LISTS}
    out.update({k: _pair_maps([fb.get(k) or {} for fb in fbs]) for k in FEEDBACK_MAPS})
    return out


def _optional_hist(hists: list, what: str) -> list[int]:
    """A histogram some windows lack (None), merged as a fold merges it: a missing or empty one
    reads as zeros of the other side's length, which fails (TypeError) when the other side is
    missing too; the first window is merged with the identity, which lacks it."""
    size = None  # the length of the merge so far; None while no window had the histogram
    for i, h in enumerate(hists):
        if h is None and size is None:
            continue
        if i == 0:
            left, right = (len(h) if h else None), len(h)
        else:
            left = size if size else (len(h) if h is not None else None)
            right = len(h) if h else size
        if left is None or right is None:
            raise TypeError(f"{what}: an empty histogram beside a missing one has no bins to merge")
        if left != right:
            raise ValueError(f"cannot merge histograms of {left} and {right} bins ({what}): edges differ")
        size = left
    counted = [h for h in hists if h]
    return _column_sums(counted, what) if counted else [0] * size


_COUNTERS = [(section, n) for section, names in COUNTER_SECTIONS.items() for n in names]
_OPTIONAL_COUNTERS = [(section, n) for section, names in OPTIONAL_COUNTERS.items() for n in names]
_HISTS = [(section, n) for section, names in HIST_SECTIONS.items() for n in names]


def _columns(rows: list[list]) -> list:
    """Element-wise left fold of equally long rows: ``((r0 + 0) + r1) + ...`` per column."""
    acc = [v + 0 for v in rows[0]]
    for row in rows[1:]:
        acc = list(map(operator.add, acc, row))
    return acc


def _fixed_hists(ws: list[dict]) -> list[list[int]]:
    """The histograms every window has (HIST_SECTIONS, then each feature), merged. When every
    window has the same bins (the rule), one flat list per window is added in one go."""
    per_window = [[w[s][n] for s, n in _HISTS] + list(w["input"]["features"]) for w in ws]
    shape = list(map(len, per_window[0]))
    if all(list(map(len, hs)) == shape for hs in per_window[1:]):
        flat = _column_sums([list(chain.from_iterable(hs)) for hs in per_window], "histograms")
        out, at = [], 0
        for size in shape:
            out.append(flat[at:at + size])
            at += size
        return out
    for (_, n), column in zip(_HISTS, zip(*(hs[:len(_HISTS)] for hs in per_window))):
        _column_sums(list(column), n)  # raises on the histogram whose bins differ
    raise ValueError("windows disagree on the feature count or bins: merge windows of one model only")


def _fold(values: list, zero):
    """``((v0 + zero) + v1) + ...``: floats added in the order windows came, as a fold would."""
    acc = values[0] + zero
    for v in values[1:]:
        acc = acc + v
    return acc


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
                      "labels": _count_map([sa["labels"], sb["labels"]])}


def merge_windows(windows: Iterable[dict]) -> dict | None:
    """Exact merge of windows (or of earlier merges) of one model; None for no windows.

    One pass over them all: each count is summed once, where merging two at a time rebuilt the
    whole merge per window. The result is what merging them two at a time from the first gives,
    key order and float rounding included (tests/shared/test_window_merge.py holds the two equal).
    """
    ws = list(windows)
    if not ws:
        return None
    model = ws[0].get("model")
    if any(w.get("model") != model for w in ws):
        raise ValueError("windows of different models have different feature bins: group by model first")
    out = {"n_windows": sum(w.get("n_windows", 1) for w in ws), "duration_s": _fold([w["duration_s"] for w in ws], 0.0),
           "model": model}
    counts = _columns([[w[s][n] for s, n in _COUNTERS] + [w[s].get(n, 0) for s, n in _OPTIONAL_COUNTERS]
                       for w in ws])
    for section in COUNTER_SECTIONS:
        out[section] = {}
    for (section, n), v in zip(_COUNTERS + _OPTIONAL_COUNTERS, counts):
        out[section][n] = v
    sws = [w["software"] for w in ws]
    rss = max(sws[0]["rss_mb"], 0.0)
    for sw in sws[1:]:
        rss = max(rss, sw["rss_mb"])
    out["software"].update(cpu_s=_fold([sw["cpu_s"] for sw in sws], 0.0), rss_mb=rss,
                           latency_ms=_hist_map([sw["latency_ms"] for sw in sws], "latency_ms"))
    fixed = _fixed_hists(ws)
    for (section, n), h in zip(_HISTS, fixed):
        out[section][n] = h
    for section, names in OPTIONAL_HISTS.items():
        for n in names:
            hists = [w[section].get(n) for w in ws]
            if any(h is not None for h in hists):
                out[section][n] = _optional_hist(hists, n)
    out["input"]["features"] = fixed[len(_HISTS):]
    outs = [w["output"] for w in ws]
    out["output"]["labels"] = _count_map([o["labels"] for o in outs])
    out["output"]["confidence_by_label"] = _hist_map([o.get("confidence_by_label") or {} for o in outs],
                                                     "confidence_by_label")
    out["feedback"] = _feedback(ws)
    shadow_model, shadow = _merge_shadow(ws[0], {})
    for w in ws[1:]:
        if w.get("shadow_model") is None and w.get("shadow") is None:
            continue  # nothing shadowed: merging it changes nothing (the first merge added "errors")
        shadow_model, shadow = _merge_shadow({"shadow_model": shadow_model, "shadow": shadow}, w)
    out["shadow_model"], out["shadow"] = shadow_model, shadow
    return out


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
