"""The pairwise fold ``shared.window.merge_windows`` used before it merged in one pass (kept
as the reference the one-pass merge must equal, key order and float sums included). The shadow
section is merged two at a time by both, so the fold uses ``shared.window``'s own helper."""
from __future__ import annotations

from typing import Iterable

from shared.histogram import add_counts
from shared.window import (COUNTER_SECTIONS, FEEDBACK_LISTS, FEEDBACK_MAPS, HIST_SECTIONS, OPTIONAL_COUNTERS,
                           OPTIONAL_HISTS, _merge_shadow)  # the shadow section is still merged two at a time


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


def fold_windows(windows: Iterable[dict]) -> dict | None:
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
