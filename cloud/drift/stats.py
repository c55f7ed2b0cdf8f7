"""Divergences between a reference histogram and an observed one, for display.

The drift engine judges with scores (``cloud.drift.scores``); the dashboard's per-feature drift
series shows the familiar PSI. Both functions take count arrays over the same bins
(``[..., k]``) and treat them as samples:

- ``psi``: population stability index, ``sum((p - q) * ln(p / q))`` — the symmetric
  Kullback-Leibler divergence. Empty bins are smoothed with an additive pseudo-count
  (default 0.5 per bin, Jeffreys) on both sides.
- ``js_divergence``: Jensen-Shannon divergence in bits (0 … 1). Finite without smoothing.
"""
from __future__ import annotations

import numpy as np

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
