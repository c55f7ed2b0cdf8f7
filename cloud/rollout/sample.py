"""What the gates read from a set of windows, kept per device (the device is the unit of variance).

``Sample.of(windows)`` sums each window into its device's ``Totals`` (windows carry
``device``; a merge without one counts under ``""``) and stores the devices column-wise: one
row per device, counters in ``counts``, latency histograms and label counts as matrices.
Latency and confidence grids are fixed and labels are names, so windows of any models add up.
``Sample.total`` is the sum over devices, for figures; the gates read per-device columns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from shared.histogram import LATENCY_MS_EDGES, quantile

LATENCY_BINS = len(LATENCY_MS_EDGES) + 1
COUNTERS = ("windows", "inferences", "errors", "no_answer", "shadow_compared", "shadow_agree", "shadow_errors",
            "feedback_n", "feedback_correct")
DERIVED = {"attempts": ("inferences", "errors"), "shadow_attempts": ("shadow_compared", "shadow_errors")}
LABEL_TABLES = ("labels", "shadow_labels", "shadow_active_labels")
HISTOGRAMS = ("latency_ms", "shadow_latency_ms")


def _log_midpoints(edges: list[float]) -> np.ndarray:
    """ln of each latency bin's geometric midpoint (the open end bins: half a step outside)."""
    logs = np.log(np.asarray(edges, dtype=float))
    step = float(np.mean(np.diff(logs)))
    mids = (logs[:-1] + logs[1:]) / 2
    return np.concatenate([[logs[0] - step / 2], mids, [logs[-1] + step / 2]])


LOG_MS_MIDPOINTS = _log_midpoints(LATENCY_MS_EDGES)
# a histogram cannot resolve a spread finer than its bins: variance of a uniform bin on the log scale
LOG_MS_BIN_VARIANCE = float(np.mean(np.diff(np.log(LATENCY_MS_EDGES)))) ** 2 / 12.0


def _add_map(target: dict, source: dict) -> None:
    for k, v in source.items():
        target[k] = target.get(k, 0) + v


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass
class Totals:
    """Summed gate inputs of one device (or of a whole sample)."""

    windows: int = 0
    inferences: int = 0
    errors: int = 0
    no_answer: int = 0
    shadow_compared: int = 0
    shadow_agree: int = 0
    shadow_errors: int = 0
    feedback_n: int = 0
    feedback_correct: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    shadow_labels: dict[str, int] = field(default_factory=dict)
    shadow_active_labels: dict[str, int] = field(default_factory=dict)  # the active's answers in shadowed windows
    latency_ms: list[int] = field(default_factory=lambda: [0] * LATENCY_BINS)
    shadow_latency_ms: list[int] = field(default_factory=lambda: [0] * LATENCY_BINS)

    def add(self, w: dict) -> "Totals":
        sw, out = w["software"], w["output"]
        self.windows += w.get("n_windows", 1)
        self.inferences += sw["inferences"]
        self.errors += sw["errors"]
        self.no_answer += out["no_answer"]
        _add_map(self.labels, out["labels"])
        for stage, target in (("model", self.latency_ms), ("shadow", self.shadow_latency_ms)):
            for i, c in enumerate(sw["latency_ms"].get(stage, ())[:LATENCY_BINS]):
                target[i] += c
        shadow = w.get("shadow")
        if shadow:
            self.shadow_compared += shadow.get("compared", 0)
            self.shadow_agree += shadow.get("agree", 0)
            self.shadow_errors += shadow.get("errors", 0)
            _add_map(self.shadow_labels, shadow.get("labels") or {})
            _add_map(self.shadow_active_labels, out["labels"])
        for truth, pred, n in w["feedback"]["pairs"]:
            self.feedback_n += n
            self.feedback_correct += n if truth == pred else 0
        return self

    # -- derived figures ------------------------------------------------------------------
    @property
    def attempts(self) -> int:
        """Inferences tried: the ones that answered and the ones that failed."""
        return self.inferences + self.errors

    @property
    def shadow_attempts(self) -> int:
        return self.shadow_compared + self.shadow_errors

    error_rate = property(lambda self: _ratio(self.errors, self.attempts))
    no_answer_rate = property(lambda self: _ratio(self.no_answer, self.inferences))
    shadow_error_rate = property(lambda self: _ratio(self.shadow_errors, self.shadow_attempts))
    shadow_agreement = property(lambda self: _ratio(self.shadow_agree, self.shadow_compared))
    feedback_accuracy = property(lambda self: _ratio(self.feedback_correct, self.feedback_n))
    latency_p99_ms = property(lambda self: quantile(LATENCY_MS_EDGES, self.latency_ms, 0.99))


def geometric_mean_ms(counts: Sequence[float]) -> float | None:
    n = float(np.sum(counts))
    return math.exp(float(np.dot(counts, LOG_MS_MIDPOINTS)) / n) if n else None


class Sample:
    """Gate inputs per device, column-wise: row ``i`` of every array is device ``ids[i]``."""

    def __init__(self, ids: Sequence[str] = (), counts: np.ndarray | None = None,
                 histograms: dict[str, np.ndarray] | None = None,
                 tables: dict[str, dict[str, np.ndarray]] | None = None):
        self.ids = list(ids)
        m = len(self.ids)
        self.counts = np.zeros((m, len(COUNTERS))) if counts is None else np.asarray(counts, dtype=float)
        self.histograms = {h: np.zeros((m, LATENCY_BINS)) for h in HISTOGRAMS}
        self.histograms.update({k: np.asarray(v, dtype=float) for k, v in (histograms or {}).items()})
        self.tables = {t: {} for t in LABEL_TABLES}
        for t, by_label in (tables or {}).items():
            self.tables[t] = {lab: np.asarray(col, dtype=float) for lab, col in by_label.items()}

    @classmethod
    def of(cls, windows: Iterable[dict]) -> "Sample":
        per_device: dict[str, Totals] = {}
        for w in windows:
            per_device.setdefault(w.get("device") or "", Totals()).add(w)
        return cls.from_totals(per_device)

    @classmethod
    def from_totals(cls, per_device: dict[str, Totals]) -> "Sample":
        rows = list(per_device.values())
        counts = np.array([[getattr(t, c) for c in COUNTERS] for t in rows], dtype=float).reshape(
            len(rows), len(COUNTERS))
        hists = {h: np.array([getattr(t, h) for t in rows], dtype=float).reshape(len(rows), LATENCY_BINS)
                 for h in HISTOGRAMS}
        tables = {}
        for name in LABEL_TABLES:
            labels = sorted({lab for t in rows for lab in getattr(t, name)})
            tables[name] = {lab: np.array([getattr(t, name).get(lab, 0) for t in rows], dtype=float)
                            for lab in labels}
        return cls(list(per_device), counts, hists, tables)

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> np.ndarray:
        """One per-device counter (or a sum of counters, see ``DERIVED``)."""
        if name in DERIVED:
            return sum(self.column(part) for part in DERIVED[name])
        return self.counts[:, COUNTERS.index(name)]

    def label_names(self, table: str = "labels") -> list[str]:
        return [lab for lab, col in self.tables[table].items() if col.sum() > 0]

    def label_counts(self, labels: Sequence[str], table: str = "labels") -> np.ndarray:
        """devices × labels count matrix."""
        zero = np.zeros(len(self))
        cols = [self.tables[table].get(lab, zero) for lab in labels]
        return np.stack(cols, axis=1) if cols else np.zeros((len(self), 0))

    def latency_moments(self, histogram: str = "latency_ms") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per device: (count, Σ ln ms, Σ (ln ms)²) of a latency histogram."""
        h = self.histograms[histogram]
        return h.sum(axis=1), h @ LOG_MS_MIDPOINTS, h @ (LOG_MS_MIDPOINTS ** 2)

    def subset(self, keep: np.ndarray) -> "Sample":
        """The devices where ``keep`` (a boolean array) is true."""
        keep = np.asarray(keep, dtype=bool)
        return Sample([d for d, k in zip(self.ids, keep) if k], self.counts[keep],
                      {h: v[keep] for h, v in self.histograms.items()},
                      {t: {lab: col[keep] for lab, col in by.items()} for t, by in self.tables.items()})

    @property
    def total(self) -> Totals:
        """The sum over devices (for figures)."""
        sums = self.counts.sum(axis=0)
        t = Totals(**{c: int(sums[i]) for i, c in enumerate(COUNTERS)})
        for name in LABEL_TABLES:
            setattr(t, name, {lab: int(col.sum()) for lab, col in self.tables[name].items() if col.sum() > 0})
        for h in HISTOGRAMS:
            setattr(t, h, [int(x) for x in self.histograms[h].sum(axis=0)])
        return t
