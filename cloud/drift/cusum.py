"""The sequential statistic: a CUSUM over per-block z-values, its onset, and the pattern.

``S_i = min(cap * h, max(0, S_{i-1} + z_i - k))``; the cohort is drifting while ``S >= h``
(``budget`` derives h from the false-alarm budget). Blocks without data (NaN) leave S as it is.
Capping S lets an episode end within about ``cap * h / k`` healthy blocks once the drift stops.

- **onset**: the standard CUSUM change-point estimate, the first block after S last stood at 0,
  moved past blocks whose effect is under a quarter of the episode's level (``refine_onset``);
  for a drift seen only against the reference, the start of the trailing run of blocks whose
  effect is over the floor (``run_start``).
- **pattern**, from the effect sizes (traffic-independent severities) of the blocks since the
  onset: **gradual** when they climb (a significant least-squares slope that rose by at least
  half the current level: a ramp), else **sudden** (a step, flat after it began).

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


def refine_onset(severity: np.ndarray, onset: int, frac: float = 0.25) -> int:
    """The CUSUM's onset moved forward past blocks whose effect is under ``frac`` of the episode's
    level: a healthy block that happened to lean the same way is not the start of the drift."""
    sev = np.asarray(severity, dtype=float)
    valid = [i for i in range(onset, len(sev)) if not np.isnan(sev[i])]
    if not valid:
        return onset
    level = float(np.median(sev[valid[-3:]]))
    return next((i for i in valid if sev[i] >= frac * level), onset)


def pattern(severity: np.ndarray, onset: int, *, t_min: float = 3.0, rise: float = 0.5) -> str:
    """"gradual" when the effect since ``onset`` climbs — the least-squares slope of the blocks'
    severities has a t-statistic of at least ``t_min`` and rose by at least ``rise`` of the current
    level — else "sudden" (a step: flat after it began, whatever its noise)."""
    sev = np.asarray(severity, dtype=float)
    x = np.array([i for i in range(onset, len(sev)) if not np.isnan(sev[i])], dtype=float)
    if len(x) < 4:
        return "sudden"
    y = sev[x.astype(int)]
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc))
    resid = y - y.mean() - slope * xc
    se = float(np.sqrt(resid @ resid / (len(x) - 2) / (xc @ xc)))
    level = float(np.median(y[-3:]))
    t = slope / se if se > 0 else (np.inf if slope > 0 else 0.0)
    return "gradual" if t >= t_min and slope * (x[-1] - x[0]) >= rise * level else "sudden"


def run_start(severity: np.ndarray, level: float = 1.0) -> int:
    """First block of the trailing run of blocks at or over ``level`` (blocks without data are
    skipped; the last block with data when even it is under ``level``)."""
    sev = np.asarray(severity, dtype=float)
    valid = [i for i in range(len(sev)) if not np.isnan(sev[i])]
    if not valid:
        return max(len(sev) - 1, 0)
    start = valid[-1]
    for i in reversed(valid):
        if sev[i] < level:
            break
        start = i
    return start
