"""The false-alarm budget: the operator sets one number and every threshold follows from it.

``alerts_per_1000_device_days`` (B, default 1) is the expected number of alerts a healthy fleet
may raise per 1,000 device-days. A fleet of N devices may thus raise ``beta = B * N / 1000``
false alerts a day, spent evenly over the three kinds of drift (input, output, concept) and the
two families of test:

- **change** — a CUSUM per (cohort, kind) over the blocks of its look-back, each block's
  z being at most standard normal on healthy data (``scores.combined_z``). With C such detectors
  evaluated S times a day, each gets an in-control average run length
  ``ARL0 = 2 * 3 * C * S / beta`` evaluations, so together they raise at most ``beta / 6`` a day
  (an alarm that persists over evaluations is one alert, so this overcounts). The CUSUM's
  threshold h for its reference value k comes from Siegmund's approximation of ARL0 for
  standard normal increments, ``ARL0 = (exp(2 k b) - 2 k b - 1) / (2 k^2)``, ``b = h + 1.166``;
  increments stochastically smaller than standard normal only lengthen the run.
- **level** — a cohort against the reference profile, or a device against its peers, is a
  fixed test at every evaluation; by the union bound each of its L tests a day gets
  ``alpha = beta / (2 * 3 * L * S)``.

Assumptions: block z-values of a healthy cohort are independent over blocks given the
baseline (the baseline's own estimation error is in their variance, not their mean; ``docs/drift.md``
bounds the effect), and the random-effects variance model of ``scores`` holds in the tails. The
healthy-fleet simulation (``scripts/bench_drift.py``) measures the rate that results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

KINDS_N = 3
FAMILIES_N = 2
SIEGMUND_SHIFT = 1.166


def siegmund_arl(h: float, k: float) -> float:
    """In-control ARL of a one-sided CUSUM with reference k and threshold h (N(0,1) increments)."""
    b = 2.0 * k * (h + SIEGMUND_SHIFT)
    return (math.exp(b) - b - 1.0) / (2.0 * k * k)


def cusum_threshold(arl: float, k: float) -> float:
    """The h whose in-control ARL (Siegmund) is ``arl``."""
    if arl <= 1.0 or k <= 0:
        raise ValueError("the CUSUM needs arl > 1 and k > 0")
    lo, hi = 0.0, 1.0
    while siegmund_arl(hi, k) < arl:
        hi *= 2.0
    for _ in range(80):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if siegmund_arl(mid, k) < arl else (lo, mid)
    return hi


@dataclass(frozen=True)
class Budget:
    """Thresholds of one evaluation, derived from B and the size of the fleet.

    ``devices``: devices with data in the look-back (N); ``evaluations_per_day``: S of the kind.
    """

    alerts_per_1000_device_days: float
    devices: int
    evaluations_per_day: float

    @property
    def beta(self) -> float:
        """False alerts a day the whole fleet may raise."""
        return self.alerts_per_1000_device_days * max(self.devices, 1) / 1000.0

    def share(self) -> float:
        """What one (family, kind) may spend a day."""
        return self.beta / (KINDS_N * FAMILIES_N)

    def arl(self, detectors: int) -> float:
        """In-control ARL (evaluations) each of ``detectors`` CUSUMs of one kind needs."""
        return max(detectors, 1) * self.evaluations_per_day / self.share()

    def cusum_h(self, detectors: int, k: float) -> float:
        return cusum_threshold(self.arl(detectors), k)

    def alpha(self, tests: int) -> float:
        """Per-evaluation level of each of ``tests`` level tests of one kind."""
        return min(0.5, self.share() / (max(tests, 1) * self.evaluations_per_day))
