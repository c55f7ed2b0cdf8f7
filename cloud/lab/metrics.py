"""Classification metrics as plain JSON-ready dicts, and the confidence threshold rule."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

log = logging.getLogger(__name__)

THRESHOLD_GRID = tuple(round(x, 2) for x in np.arange(0.3, 0.96, 0.05))
WRONG_ACTION_COST = 5.0  # acting on a wrong answer costs this many deferrals to a human


def classification(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix."""
    idx = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    per_class = {name: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                        "f1": round(float(f[i]), 4), "support": int(s[i])} for i, name in enumerate(labels)}
    present = [i for i in idx if s[i] > 0]
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(np.mean(y_true == y_pred)) if len(y_true) else 0.0, 4),
        "macro_f1": round(float(np.mean(f[present])) if present else 0.0, 4),
        "min_f1": round(float(np.min(f[present])) if present else 0.0, 4),
        "per_class": per_class,
        "confusion": confusion_matrix(y_true, y_pred, labels=idx).astype(int).tolist(),
    }


def choose_threshold(y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray) -> dict:
    """The confidence threshold that minimises cost on dev: each accepted wrong answer costs
    WRONG_ACTION_COST, each deferred answer costs 1 (ties → the lower threshold)."""
    best = None
    for t in THRESHOLD_GRID:
        accept = confidence >= t
        wrong = int(np.sum(accept & (y_true != y_pred)))
        cost = WRONG_ACTION_COST * wrong + int(np.sum(~accept))
        if best is None or cost < best[0]:
            best = (cost, t, accept)
    _, t, accept = best
    n_acc = int(accept.sum())
    return {"value": float(t),
            "rule": f"min over {THRESHOLD_GRID[0]}..{THRESHOLD_GRID[-1]} of "
                    f"{WRONG_ACTION_COST:g} x accepted errors + deferrals, on dev",
            "dev_coverage": round(n_acc / max(1, len(accept)), 4),
            "dev_accepted_accuracy": round(float(np.mean(y_true[accept] == y_pred[accept])) if n_acc else 0.0, 4)}


def confusion_text(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """The confusion matrix as an aligned text table (rows: true label, columns: predicted)."""
    short = [name[:6] for name in labels]
    width = max(6, max(len(str(v)) for row in confusion for v in row) if confusion else 1)
    head = " " * 11 + " ".join(f"{s:>{width}}" for s in short)
    lines = [head] + [f"{labels[i][:10]:>10} " + " ".join(f"{v:>{width}}" for v in row)
                      for i, row in enumerate(confusion)]
    return "\n".join(lines)
