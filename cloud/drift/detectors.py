"""Drift over time: is the score drifting now, did it start with a step or a slope, and when?

``SuddenGradualDetector`` reads one calibrated severity per window (``score / threshold`` from
``cloud.drift.calibrate``: ≥ 1 means that window alone fails its check) and keeps two views:

- **short horizon** (the last ``short`` windows): drift when at least ``confirm`` of them are
  ≥ ``high``. A step therefore raises the flag on its second drifted window (at most on its
  third), which meets the requirement that sudden changes are flagged within 3 windows.
- **long horizon** (the last ``long`` windows): drift when the least-squares slope of the
  severities (each capped at ``high``, so one wild window cannot make a trend) is positive
  with a t-statistic ≥ ``trend_t`` *and* the fitted line has reached ``trend_level × high`` at
  the newest window — a slope that is about to cross, seen before two single windows do.

When a drift episode starts, its onset is the CUSUM change-point estimate: the window after
the minimum of the cumulative excess of the severities (capped at ``high``) over an allowance
a quarter of the way from the healthy baseline (the lowest median of blocks of 5 windows) to
``high``. Its pattern
is decided against ``j``, the first window of the short view that reached ``high``:
**sudden** when the change began at most one window before ``j`` (a step, possibly falling
inside window ``j − 1``) or ``j`` is the very first window (drifted from the start);
**gradual** when the level was already climbing for longer (a slope), and always when the
long view raised the episode before any window crossed. The episode ends
(``drift_detected`` false) when neither view holds.

**False-alarm rate:** if healthy windows fail their checks independently with probability
≤ alpha, the short view fires with probability ≤ C(short, confirm) · alpha² per window
(3e-6 at alpha = 0.001); the long view needs a significant slope (≈ 0.003 under the null at
``trend_t`` = 3 with 30 windows) that also reaches ``trend_level``, which healthy severities
(well below 1) rarely do. ``tests/cloud/drift/test_detectors.py`` measures both on seeded
healthy streams of calibrated severities: no alarm in 20,000 windows.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from statistics import median
from typing import Sequence

PATTERNS = ("sudden", "gradual")


@dataclass(frozen=True)
class DetectorConfig:
    """Constructor arguments of ``SuddenGradualDetector`` (kept together for the engine)."""

    high: float = 1.0
    short: int = 3
    confirm: int = 2
    long: int = 30
    trend_t: float = 3.0
    trend_level: float = 0.8
    min_trend: int = 10


def _baseline(scores: Sequence[float], high: float, block: int = 5) -> float:
    """A healthy level: the lowest median of consecutive blocks (robust to a drifted tail)."""
    if not scores:
        return 0.0
    blocks = [scores[i:i + block] for i in range(0, len(scores), block)]
    return min(min(median(b) for b in blocks if b), 0.5 * high)


def changepoint(scores: Sequence[float], high: float = 1.0, frac: float = 0.25) -> int:
    """Index of the first drifted window: the CUSUM change-point estimate (0 … len − 1).

    The allowance sits ``frac`` of the way from the healthy baseline to ``high``; each window's
    severity is capped at ``high``, so one outlier window long ago cannot pull the onset back.
    """
    if not scores:
        return 0
    base = _baseline(scores, high)
    allowance = base + frac * (high - base)
    total, lowest, at = 0.0, 0.0, 0
    for i, s in enumerate(scores):
        total += min(s, high) - allowance
        if total < lowest:
            lowest, at = total, i + 1
    return min(at, len(scores) - 1)


def classify(scores: Sequence[float], high: float = 1.0) -> tuple[int, str]:
    """(onset index, pattern) of a series that drifted somewhere: the onset is the change point;
    the pattern is "sudden" when a window reached ``high`` at most one window after it (a step),
    else "gradual" (a slope, or a shift no window shows on its own)."""
    at = changepoint(scores, high)
    j = next((i for i in range(at, len(scores)) if scores[i] >= high), None)
    return at, "sudden" if j is not None and j <= at + 1 else "gradual"


def trend(scores: Sequence[float]) -> tuple[float, float]:
    """(t-statistic of the least-squares slope, fitted value at the newest window)."""
    n = len(scores)
    if n < 3:
        return 0.0, scores[-1] if scores else 0.0
    x_mean = (n - 1) / 2
    y_mean = sum(scores) / n
    sxx = sum((i - x_mean) ** 2 for i in range(n))
    slope = sum((i - x_mean) * (y - y_mean) for i, y in enumerate(scores)) / sxx
    fitted_end = y_mean + slope * (n - 1 - x_mean)
    resid = sum((y - (y_mean + slope * (i - x_mean))) ** 2 for i, y in enumerate(scores))
    se = math.sqrt(resid / (n - 2) / sxx)
    if se == 0:
        return (math.inf if slope > 0 else 0.0), fitted_end
    return slope / se, fitted_end


class SuddenGradualDetector:
    """River-style detector over per-window severities: ``update(x)`` returns self.

    ``x`` is a float severity, an object with a ``severity`` attribute, or None (a window with
    too little data: ignored, it does not count as a window). Results are read-only properties.
    """

    def __init__(self, high: float = 1.0, short: int = 3, confirm: int = 2, long: int = 30,
                 trend_t: float = 3.0, trend_level: float = 0.8, min_trend: int = 10):
        if not 1 <= confirm <= short:
            raise ValueError("confirm must be between 1 and short")
        self.high = high
        self.short = short
        self.confirm = confirm
        self.long = long
        self.trend_t = trend_t
        self.trend_level = trend_level
        self.min_trend = min_trend
        self._scores: deque[float] = deque(maxlen=2 * long + short)
        self._seen = 0
        self._detected = False
        self._pattern: str | None = None
        self._onset: int | None = None
        self._view: str | None = None

    @classmethod
    def from_config(cls, config: DetectorConfig) -> "SuddenGradualDetector":
        return cls(**config.__dict__)

    @property
    def drift_detected(self) -> bool:
        return self._detected

    @property
    def pattern(self) -> str | None:
        """"sudden" or "gradual" while drift is detected, else None."""
        return self._pattern

    @property
    def onset_index(self) -> int | None:
        """Index (0-based, counting updated windows) where the current drift episode began."""
        return self._onset

    @property
    def view(self) -> str | None:
        """Which view raised the current episode: "short" (level) or "long" (trend)."""
        return self._view

    @property
    def n_seen(self) -> int:
        return self._seen

    def update(self, x) -> "SuddenGradualDetector":
        if x is not None and not isinstance(x, (int, float)):
            x = getattr(x, "severity")
        if x is None or x != x:  # None or NaN: no evidence this window
            return self
        self._scores.append(float(x))
        self._seen += 1
        scores = list(self._scores)
        recent = scores[-self.short:]
        short_view = len(recent) >= self.confirm and sum(s >= self.high for s in recent) >= self.confirm
        long_view = False
        window = scores[-self.long:]
        if len(window) >= self.min_trend:
            t_stat, fitted_end = trend([min(s, self.high) for s in window])
            long_view = t_stat >= self.trend_t and fitted_end >= self.trend_level * self.high
        if not (short_view or long_view):
            self._detected, self._pattern, self._onset, self._view = False, None, None, None
            return self
        if not self._detected:
            self._start_episode(scores, "short" if short_view else "long")
        return self

    def _start_episode(self, scores: list[float], view: str) -> None:
        first = self._seen - len(scores)  # absolute index of scores[0]
        self._detected, self._view = True, view
        j = None
        if view == "short":
            j = next(i for i in range(max(0, len(scores) - self.short), len(scores)) if scores[i] >= self.high)
        at = changepoint(scores if j is None else scores[:j + 1], self.high)
        sudden = j is not None and (j == 0 or at >= j - 1)
        self._pattern, self._onset = ("sudden" if sudden else "gradual"), first + at
