"""The sequential statistic: a CUSUM over per-block z-values, its onset, and the pattern.

``S_i = min(cap * h, max(0, S_{i-1} + z_i - k))``; the cohort is drifting while ``S >= h``
(``budget`` derives h from the false-alarm budget). Blocks without data (NaN) leave S as it is.
Capping S lets an episode end within about ``cap * h / k`` healthy blocks once the drift stops.

- **onset**: the standard CUSUM change-point estimate, the first block after S last stood at 0.
- **pattern**, from the effect sizes (traffic-independent severities) of the blocks since the
  onset: **sudden** when a block within ``sudden_s`` of the onset already shows at least
  ``frac`` of the episode's current level (a step), **gradual** when the level built up over
  longer (a ramp). A run that began with the look-back is called sudden: its start is unseen.

Because the pattern reads effect sizes, not z (which grows with traffic), a constant shift read
through busy and quiet hours stays one sudden episode, and a slow ramp over hours is gradual.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATTERNS = ("sudden", "gradual")


@dataclass(frozen=True)
class CusumRun:
    statistic: np.ndarray  # S after each block (NaN blocks repeat the previous S)
    h: float
    onset: int | None  # block index where the current run began (None: S is 0 now)
    crossed: int | None  # block index where the current run first reached h

    @property
    def alarm(self) -> bool:
        return bool(len(self.statistic)) and float(self.statistic[-1]) >= self.h


def cusum(z: np.ndarray, k: float, h: float, cap: float = 2.0) -> CusumRun:
    z = np.asarray(z, dtype=float)
    stat = np.zeros(len(z))
    s, onset, crossed = 0.0, None, None
    for i, zi in enumerate(z):
        if not np.isnan(zi):
            s = min(cap * h, max(0.0, s + zi - k))
            if s == 0.0:
                onset = crossed = None
            else:
                onset = i if onset is None else onset
                crossed = i if crossed is None and s >= h else crossed
        stat[i] = s
    return CusumRun(stat, h, onset, crossed)


def pattern(severity: np.ndarray, times: np.ndarray, onset: int, *, sudden_s: float, frac: float = 0.5,
            first_valid: int | None = None) -> str:
    """"sudden" or "gradual" for the run that began at block ``onset`` (see the module doc)."""
    sev = np.asarray(severity, dtype=float)
    valid = [i for i in range(onset, len(sev)) if not np.isnan(sev[i])]
    if not valid:
        return "sudden"
    start = first_valid if first_valid is not None else next((i for i in range(len(sev)) if not np.isnan(sev[i])), 0)
    if onset <= start:
        return "sudden"
    level = float(np.median(sev[valid[-3:]]))
    j = next(i for i in valid if sev[i] >= frac * level)
    return "sudden" if times[j] - times[onset] <= sudden_s else "gradual"


def changepoint(severity: np.ndarray, high: float = 1.0, frac: float = 0.25) -> int:
    """Onset of a drift seen only as a level (no CUSUM run): the CUSUM change point of the
    severities, capped at ``high``, against an allowance ``frac`` of the way from their
    healthy baseline (the lowest median of blocks of 5) to ``high``. NaN severities are skipped."""
    sev = np.asarray(severity, dtype=float)
    idx = [i for i in range(len(sev)) if not np.isnan(sev[i])]
    if not idx:
        return 0
    vals = [min(float(sev[i]), high) for i in idx]
    blocks = [vals[i:i + 5] for i in range(0, len(vals), 5)]
    base = min(min(float(np.median(b)) for b in blocks), 0.5 * high)
    allowance = base + frac * (high - base)
    total, lowest, at = 0.0, 0.0, 0
    for j, v in enumerate(vals):
        total += v - allowance
        if total < lowest:
            lowest, at = total, j + 1
    return idx[min(at, len(idx) - 1)]
