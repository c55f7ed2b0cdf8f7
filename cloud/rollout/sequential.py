"""Anytime-valid comparisons with the device as the unit of variance.

Two pieces, both pure numpy:

**Device-clustered estimates.** Each device ``i`` of a group gives an estimate ``θ_i`` (its
error rate, its mean log latency, its share of a label, or — paired, in a shadow stage — the
difference between candidate and active on its own utterances) with a within-device sampling
variance ``v_i``. Devices also differ from each other (a noisy kitchen, a slow board): a
random effect of variance ``τ²``, estimated by DerSimonian–Laird from the spread of the device
estimates, pooled over the groups compared. The group estimate is the random-effects mean
``Σ w_i θ_i / Σ w_i`` with ``w_i = 1 / (v_i + τ²)`` and variance ``1 / Σ w_i``: when devices
agree it is the pooled ratio estimator (weights ∝ traffic); when they differ, no single
busy or odd device can carry the verdict, because its weight is capped by ``τ²``.

**Confidence sequences.** A normal-mixture (mSPRT) boundary turns an estimate with standard
error ``se`` into an interval that holds at every look at once (Robbins' mixture, as in
Johari et al. 2017 "Always valid inference", Lindon et al. 2022 for Netflix's canaries, and
the asymptotic confidence sequences of Waudby-Smith et al. 2021). With a mixing scale ``s``
(set to the gate's margin: the effect size at which decisions are expected) and
``r = s² / se²``, the interval ``estimate ± se · sqrt((1 + 1/r) · (ln(1 + r) + 2 ln(1/α)))``
contains the truth at every time with probability ≥ 1 − α (asymptotically, as the counts
grow). Looking every second costs nothing extra: that is what the ``ln(1 + r)`` term pays for.

The device effect does not shrink as a stage runs on (the devices are fixed), so ``se`` levels
off at the device floor and the interval stops narrowing there: a stage with too few devices
for its margin cannot decide, and fails closed at its timeout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Devices:
    """Per-device estimates of one group (devices with no data are left out)."""

    estimate: np.ndarray
    variance: np.ndarray  # within-device sampling variance of each estimate
    count: np.ndarray  # observations behind each estimate (for figures and minimums)
    ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))  # devices, to pair periods

    @property
    def n(self) -> int:
        return int(np.sum(self.count, axis=0).flat[0]) if len(self.count) else 0

    @property
    def devices(self) -> int:
        return int(np.shape(self.estimate)[0])

    @classmethod
    def empty(cls) -> "Devices":
        z = np.zeros(0)
        return cls(z, z, z)


def _kept(ids, keep) -> np.ndarray:
    return np.asarray(ids, dtype=str)[keep] if ids is not None and len(ids) else np.array([], dtype=str)


def rates(k, n, ids=None) -> Devices:
    """Devices' rates ``k_i / n_i`` (``k`` may hold several columns, e.g. one per label). The
    within variance uses the group's smoothed pooled rate, ``p̃ = (Σk + 1) / (Σn + 2)``: a device
    with no event in 40 tries is not certain of anything."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    keep = n > 0
    k, n = k[keep], n[keep]
    if k.ndim == 2:
        n = n[:, None]
    p = (k.sum(axis=0) + 1.0) / (n.sum(axis=0) + 2.0)
    return Devices(k / n, p * (1.0 - p) / n + 0 * k, np.broadcast_to(n, k.shape).copy(), _kept(ids, keep))


def means(n, total, total_sq, *, floor_var: float, ids=None) -> Devices:
    """Devices' means from per-device ``(count, Σx, Σx²)``; the within variance is pooled over
    the group's devices, at least ``floor_var`` (e.g. the resolution of a histogram)."""
    n, s, ss = (np.asarray(a, dtype=float) for a in (n, total, total_sq))
    keep = n > 0
    n, s, ss = n[keep], s[keep], ss[keep]
    if not len(n):
        return Devices.empty()
    within = ss - s * s / n
    dof = float((n - 1).sum())
    var = max(floor_var, float(within.sum()) / dof if dof > 0 else floor_var)
    return Devices(s / n, var / n, n, _kept(ids, keep))


def paired(a: Devices, b: Devices) -> Devices:
    """Per-device differences ``a_i − b_i`` of two estimates on the same devices (same order)."""
    return Devices(a.estimate - b.estimate, a.variance + b.variance, np.minimum(a.count, b.count), a.ids)


def change(after: Devices, before: Devices) -> Devices:
    """Each device's change from its own ``before`` (devices with data in both periods): what
    a device is like — its room, its board, what it hears — cancels."""
    if not len(after.ids) or not len(before.ids):
        return Devices.empty()
    _, a, b = np.intersect1d(after.ids, before.ids, assume_unique=True, return_indices=True)
    if not len(a):
        return Devices.empty()
    pick = lambda g, r: Devices(g.estimate[r], g.variance[r], g.count[r], g.ids[r])  # noqa: E731
    return paired(pick(after, a), pick(before, b))


def between_variance(*groups: Devices):
    """DerSimonian–Laird ``τ²`` pooled over groups, each centred on its own mean (per column).
    0 when there is no spread to see (fewer than two devices in every group)."""
    q = dof = denom = 0.0
    for g in groups:
        if g.devices < 2:
            continue
        w = 1.0 / np.maximum(g.variance, 1e-18)
        sw = w.sum(axis=0)
        mean = (w * g.estimate).sum(axis=0) / sw
        q = q + (w * (g.estimate - mean) ** 2).sum(axis=0)
        dof += g.devices - 1
        denom = denom + sw - (w * w).sum(axis=0) / sw
    if dof == 0:
        return 0.0
    return np.maximum(0.0, (q - dof) / np.maximum(denom, 1e-300)) * (np.asarray(denom) > 0)


def pooled_mean(g: Devices, tau2):
    """Random-effects mean of a group and its variance (per column)."""
    w = 1.0 / (g.variance + tau2 + 1e-18)
    sw = w.sum(axis=0)
    return (w * g.estimate).sum(axis=0) / sw, 1.0 / sw


def halfwidth(se, scale, alpha: float):
    """Half-width of the two-sided normal-mixture confidence sequence at level ``1 − alpha``."""
    se = np.maximum(np.asarray(se, dtype=float), 1e-300)
    r = (scale / se) ** 2
    return se * np.sqrt((1.0 + 1.0 / r) * (np.log1p(r) + 2.0 * math.log(1.0 / alpha)))


@dataclass(frozen=True)
class Interval:
    """An estimate and its confidence-sequence bounds (floats, or arrays with one per column)."""

    estimate: float
    low: float
    high: float
    se: float
    tau2: float

    def figures(self, digits: int = 4) -> dict:
        return {"estimate": round(float(self.estimate), digits), "low": round(float(self.low), digits),
                "high": round(float(self.high), digits)}

    def column(self, k: int) -> "Interval":
        return Interval(*(float(np.asarray(x).reshape(-1)[k] if np.ndim(x) else x) for x in
                          (self.estimate, self.low, self.high, self.se, self.tau2)))


def interval(estimate, variance, tau2, *, scale: float, alpha: float) -> Interval:
    se = np.sqrt(np.maximum(variance, 0.0))
    h = halfwidth(se, scale, alpha)
    if np.ndim(estimate) == 0:
        return Interval(float(estimate), float(estimate - h), float(estimate + h), float(se), float(tau2))
    return Interval(estimate, estimate - h, estimate + h, se, tau2)


def difference(t: Devices, c: Devices, *, scale: float, alpha: float) -> Interval:
    """Confidence sequence for (treatment mean − control mean), devices as the unit."""
    tau2 = between_variance(t, c)
    mt, vt = pooled_mean(t, tau2)
    mc, vc = pooled_mean(c, tau2)
    return interval(mt - mc, vt + vc, tau2, scale=scale, alpha=alpha)


def mean(g: Devices, *, scale: float, alpha: float) -> Interval:
    """Confidence sequence for one group's mean (a paired difference, or a rate against a bound)."""
    tau2 = between_variance(g)
    m, v = pooled_mean(g, tau2)
    return interval(m, v, tau2, scale=scale, alpha=alpha)
