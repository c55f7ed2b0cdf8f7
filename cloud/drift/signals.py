"""What drift reads from a window (or a rollup: an exact merge of windows), as count vectors.

``extract(body, ref)`` returns ``{kind: {signal: counts}}`` in the bins of the model's reference
(``cloud.drift.reference``); every count adds across windows, so the counts of a rollup equal
the sum over its windows. Signals a window does not carry (older agents: no ``noise_dbfs``,
no ``confidence_by_label``, no audit) come out as zeros, which is "no data", never "healthy".

Feedback is credited to the model that made the prediction: ``feedback.pairs`` and
``feedback.audit`` belong to the window's model, ``feedback.by_model`` and
``feedback.audit_by_model`` to the models they name (``credits``).
"""
from __future__ import annotations

import numpy as np

from cloud.drift.reference import INPUT_SCALARS, KINDS, ModelReference

__all__ = ["KINDS", "extract", "credits", "concept_counts"]


def _arr(counts, size: int, what: str) -> np.ndarray:
    a = np.asarray(counts, dtype=np.int64)
    if a.shape != (size,):
        raise ValueError(f"{what} has {a.size} bins, the profile {size}")
    return a


def extract(body: dict, ref: ModelReference) -> dict[str, dict[str, np.ndarray]]:
    """Counts of one body for its own model. Raises ValueError when its bins do not fit ``ref``."""
    inp, out = body["input"], body["output"]
    if len(inp["features"]) != len(ref.feature_names):
        raise ValueError(f"window has {len(inp['features'])} feature histograms, the profile "
                         f"{len(ref.feature_names)}")
    obs_in = {f"feature:{n}": _arr(c, ref.shapes[f"feature:{n}"], f"feature {n}")
              for n, c in zip(ref.feature_names, inp["features"])}
    for s in INPUT_SCALARS:
        obs_in[s] = _arr(inp[s], ref.shapes[s], s)
    noise = inp.get("noise_dbfs")
    obs_in["noise_dbfs"] = (_arr(noise, ref.shapes["noise_dbfs"], "noise_dbfs") if noise is not None
                            else np.zeros(ref.shapes["noise_dbfs"], dtype=np.int64))
    obs_out = {"confidence": _arr(out["confidence"], ref.shapes["confidence"], "confidence"),
               "labels": _labels(out["labels"], ref)}
    fb = body.get("feedback") or {}
    concept = concept_counts(fb.get("pairs") or [], fb.get("audit") or [], ref)
    concept["conf_by_label"] = _conf_by_label(out.get("confidence_by_label") or {}, ref)
    return {"input": obs_in, "output": obs_out, "concept": concept}


def credits(body: dict) -> dict[str, tuple[list, list]]:
    """Feedback this body carries for other models: {model: (pairs, audit pairs)}."""
    fb = body.get("feedback") or {}
    out: dict[str, tuple[list, list]] = {}
    for model, pairs in (fb.get("by_model") or {}).items():
        out.setdefault(model, ([], []))[0].extend(pairs)
    for model, pairs in (fb.get("audit_by_model") or {}).items():
        out.setdefault(model, ([], []))[1].extend(pairs)
    return out


def _labels(counts: dict, ref: ModelReference) -> np.ndarray:
    index = {name: i for i, name in enumerate(ref.label_names)}
    labels = np.zeros(len(ref.label_names) + 1, dtype=np.int64)
    for name, n in counts.items():
        labels[index.get(name, len(ref.label_names))] += int(n)
    return labels


def _conf_by_label(by_label: dict, ref: ModelReference) -> np.ndarray:
    rows = len(ref.label_names) + 1
    k = ref.shapes["conf_by_label"] // rows
    grid = np.zeros((rows, k), dtype=np.int64)
    index = {name: i for i, name in enumerate(ref.label_names)}
    for name, counts in by_label.items():
        grid[index.get(name, rows - 1)] += _arr(counts, k, f"confidence_by_label[{name}]")
    return grid.reshape(-1)


def concept_counts(pairs: list, audit: list, ref: ModelReference) -> dict[str, np.ndarray]:
    """``feedback`` [correct, wrong] over every pair; ``audit`` [correct, wrong] per true label."""
    feedback = np.zeros(2, dtype=np.int64)
    for true, predicted, n in pairs:
        feedback[0 if true == predicted else 1] += int(n)
    index = {name: i for i, name in enumerate(ref.label_names)}
    audited = np.zeros(2 * len(ref.label_names), dtype=np.int64)
    for true, predicted, n in audit:
        i = index.get(true)
        if i is not None:
            audited[2 * i + (0 if true == predicted else 1)] += int(n)
    return {"feedback": feedback, "audit": audited}
