"""Divergences between a reference histogram and an observed one, exact from the counts.

Every function takes two count arrays over the same bins (``[..., k]``, so the calibrator
can score thousands of simulated samples in one call) and treats them as samples, never as
known distributions:

- ``psi``: population stability index, ``sum((p - q) * ln(p / q))`` — the symmetric
  Kullback-Leibler divergence. Empty bins are smoothed with an additive pseudo-count
  (default 0.5 per bin, Jeffreys) on both sides, so a bin seen on one side only costs a
  finite amount that shrinks as the sample grows.
- ``js_divergence``: Jensen-Shannon divergence in bits (0 … 1). Finite without smoothing.
- ``chi_square``: the two-sample test of homogeneity on the 2 × k table. Expected counts come
  from the pooled margins, so they are positive in every bin either sample touched; bins
  empty on both sides carry no information and are dropped (``dof`` = used bins − 1).
- ``accuracy_drop``: one-sided Fisher exact test that the current accuracy is below the
  reference accuracy (for feedback: concept drift).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

PSEUDO_COUNT = 0.5


def _arrays(ref, obs) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=float)
    o = np.asarray(obs, dtype=float)
    if r.shape[-1] != o.shape[-1]:
        raise ValueError(f"histograms over different bins: {r.shape[-1]} vs {o.shape[-1]} counts")
    return r, o


def proportions(counts, pseudo: float = PSEUDO_COUNT) -> np.ndarray:
    """Smoothed proportions ``(c + pseudo) / (n + k * pseudo)`` along the last axis."""
    c = np.asarray(counts, dtype=float) + pseudo
    return c / c.sum(axis=-1, keepdims=True)


def psi(ref, obs, pseudo: float = PSEUDO_COUNT):
    """Population stability index of ``obs`` against ``ref`` (smoothed, ≥ 0)."""
    r, o = _arrays(ref, obs)
    p, q = proportions(o, pseudo), proportions(r, pseudo)
    return np.sum((p - q) * np.log(p / q), axis=-1)


def js_divergence(ref, obs):
    """Jensen-Shannon divergence in bits between the two histograms (0 when either is empty)."""
    r, o = _arrays(ref, obs)
    nr, no = r.sum(axis=-1, keepdims=True), o.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p, q = o / np.where(no > 0, no, 1), r / np.where(nr > 0, nr, 1)
        m = 0.5 * (p + q)
        kl_p = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1) / np.where(m > 0, m, 1)), 0.0)
        kl_q = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1) / np.where(m > 0, m, 1)), 0.0)
    js = 0.5 * kl_p.sum(axis=-1) + 0.5 * kl_q.sum(axis=-1)
    empty = (nr[..., 0] == 0) | (no[..., 0] == 0)
    return np.where(empty, 0.0, np.clip(js, 0.0, 1.0))


STATISTICS = {"psi": psi, "js": js_divergence}


class ChiSquare(NamedTuple):
    statistic: float
    dof: int
    p_value: float


def chi_square(ref: Sequence[float], obs: Sequence[float]) -> ChiSquare:
    """Two-sample chi-square test of homogeneity from the counts of one pair of histograms."""
    r, o = _arrays(ref, obs)
    if r.ndim != 1:
        raise ValueError("chi_square takes one pair of histograms")
    used = (r + o) > 0
    r, o = r[used], o[used]
    nr, no = r.sum(), o.sum()
    if nr == 0 or no == 0 or len(r) < 2:
        return ChiSquare(0.0, max(len(r) - 1, 0), 1.0)
    col = r + o
    er, eo = col * nr / (nr + no), col * no / (nr + no)
    stat = float(np.sum((r - er) ** 2 / er) + np.sum((o - eo) ** 2 / eo))
    dof = len(r) - 1
    return ChiSquare(stat, dof, float(_sp.chdtrc(dof, stat)))


class AccuracyDrop(NamedTuple):
    drop: float  # reference accuracy − current accuracy (positive = worse now)
    p_value: float  # one-sided Fisher exact: chance of a drop at least this large if nothing changed


def accuracy_drop(ref_correct, ref_total, cur_correct, cur_total) -> AccuracyDrop:
    """How much accuracy fell from the reference to now, and how surprising that is.

    Takes numbers or arrays (element-wise); an empty side gives (0, 1).
    """
    rc, rt, cc, ct = (np.asarray(x, dtype=np.int64) for x in (ref_correct, ref_total, cur_correct, cur_total))
    ok = (rt > 0) & (ct > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = np.where(ok, rc / np.where(ok, rt, 1) - cc / np.where(ok, ct, 1), 0.0)
    # Conditional on the margins, the current sample's correct count is hypergeometric.
    p = np.where(ok, _st.hypergeom.cdf(cc, rt + ct, rc + cc, ct), 1.0)
    p = np.clip(p, 0.0, 1.0)
    if drop.ndim == 0:
        return AccuracyDrop(float(drop), float(p))
    return AccuracyDrop(drop, p)
