"""``harken model diff A B``: what changed between two registered models, in figures.

Evaluation metrics (accuracy, macro F1, per-class F1, as the lab writes them into the
manifest's ``metrics``) side by side with their deltas, and the two reference profiles
compared: PSI per watched feature where both profiles use the same bin edges (features
whose edges differ cannot be compared bin by bin and are listed as such), PSI of the fixed
grids (utterance length, level, SNR, confidence), and the two label mixes. PSI uses the
drift monitor's convention: symmetric KL with 0.5 pseudo-counts per bin.
"""
from __future__ import annotations

import math

PSEUDO_COUNT = 0.5
SCALARS = ("utterance_ms", "level_dbfs", "snr_db", "confidence")


def psi(a, b, pseudo: float = PSEUDO_COUNT) -> float:
    """Population stability index of two histograms over the same bins."""
    if len(a) != len(b):
        raise ValueError("histograms over different bins cannot be compared")
    na, nb = sum(a) + pseudo * len(a), sum(b) + pseudo * len(b)
    total = 0.0
    for x, y in zip(a, b):
        p, q = (x + pseudo) / na, (y + pseudo) / nb
        total += (p - q) * math.log(p / q)
    return total


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def per_class_f1(metrics: dict) -> dict[str, float]:
    """Per-class F1 from ``per_class: {label: {f1}}``, ``f1_per_class: {label: f1}`` or a report."""
    pc = metrics.get("per_class") or metrics.get("classes") or {}
    out = {k: _num(v.get("f1", v.get("f1-score"))) for k, v in pc.items() if isinstance(v, dict)}
    for k, v in (metrics.get("f1_per_class") or metrics.get("per_class_f1") or {}).items():
        out[k] = _num(v)
    return {k: v for k, v in out.items() if v is not None}


def _pair(a, b) -> dict:
    a, b = _num(a), _num(b)
    return {"a": a, "b": b, "delta": None if a is None or b is None else round(b - a, 6)}


def diff_metrics(ma: dict, mb: dict) -> dict:
    out = {name: _pair(ma.get(name), mb.get(name)) for name in ("accuracy", "macro_f1")}
    fa, fb = per_class_f1(ma), per_class_f1(mb)
    out["per_class_f1"] = {label: _pair(fa.get(label), fb.get(label)) for label in sorted(set(fa) | set(fb))}
    return out


def _mix(labels: dict) -> dict[str, float]:
    counts = dict(zip(labels.get("names", []), labels.get("counts", [])))
    n = sum(counts.values())
    return {k: round(v / n, 4) for k, v in counts.items()} if n else {}


def diff_profiles(pa: dict | None, pb: dict | None) -> dict:
    if not pa or not pb:
        return {"comparable": False, "reason": "a model has no reference profile"}
    features = []
    fa, fb = pa.get("features") or {}, pb.get("features") or {}
    by_name_b = {n: (e, c) for n, e, c in zip(fb.get("names", []), fb.get("edges", []), fb.get("counts", []))}
    for name, edges, counts in zip(fa.get("names", []), fa.get("edges", []), fa.get("counts", [])):
        if name not in by_name_b:
            features.append({"name": name, "psi": None, "comparable": False, "why": "only in A"})
        elif by_name_b[name][0] != edges:
            features.append({"name": name, "psi": None, "comparable": False, "why": "bin edges differ"})
        else:
            features.append({"name": name, "psi": round(psi(counts, by_name_b[name][1]), 6), "comparable": True})
    features += [{"name": n, "psi": None, "comparable": False, "why": "only in B"}
                 for n in by_name_b if n not in set(fa.get("names", []))]
    scalars = {}
    for s in SCALARS:
        ha, hb = pa.get(s), pb.get(s)
        if ha and hb and ha.get("edges") == hb.get("edges"):
            scalars[s] = round(psi(ha["counts"], hb["counts"]), 6)
    la, lb = pa.get("labels") or {}, pb.get("labels") or {}
    names = sorted(set(la.get("names", [])) | set(lb.get("names", [])))
    ca, cb = dict(zip(la.get("names", []), la.get("counts", []))), dict(zip(lb.get("names", []), lb.get("counts", [])))
    return {"comparable": True, "features": features, "scalars": scalars,
            "labels": {"a": _mix(la), "b": _mix(lb),
                       "psi": round(psi([ca.get(n, 0) for n in names], [cb.get(n, 0) for n in names]), 6)
                       if names else None},
            "n": {"a": pa.get("n"), "b": pb.get("n")}}


def diff_models(a, b) -> dict:
    """Compare two ``ModelRecord``s (A is the baseline, deltas are B − A)."""
    return {
        "a": {"sha256": a.sha256, "label": a.label, "run_id": a.run_id, "dataset_hash": a.dataset_hash},
        "b": {"sha256": b.sha256, "label": b.label, "run_id": b.run_id, "dataset_hash": b.dataset_hash},
        "same_dataset": a.dataset_hash is not None and a.dataset_hash == b.dataset_hash,
        "labels_changed": list(a.manifest.get("labels", [])) != list(b.manifest.get("labels", [])),
        "metrics": diff_metrics(a.metrics, b.metrics),
        "profile": diff_profiles(a.manifest.get("profile"), b.manifest.get("profile")),
    }
