"""Several scores judged together: a shrunk correlation between them and a quadratic statistic.

The scores of one group (a device's 13 speech scores) are not independent: a brighter voice moves
the spectral centroid, roll-off and flatness together. Judging them one by one and keeping the
most significant (Bonferroni) is valid whatever their dependence but adds no evidence across
them; judging their z-vector ``z`` by its Mahalanobis length ``z' R^-1 z`` against the scores'
correlation ``R`` does, and is ``chi2(m)`` on healthy data when ``R`` is right.

``R`` is estimated from a few dozen healthy rows (a device's warm-up blocks), fewer than make a
13 x 13 correlation trustworthy, so it is shrunk towards the identity with the Schäfer-Strimmer
intensity (``shrunk_correlation``): the share of the off-diagonal correlations that their own
sampling noise explains. A correlation that is noise goes to 0; one the rows show plainly stays.
"""
from __future__ import annotations

import numpy as np
from scipy import special, stats

Z_FLOOR = -5.0


def shrunk_correlation(rows: np.ndarray) -> tuple[np.ndarray, float]:
    """(R, lambda): the correlation of the columns of ``rows`` ``[n, m]`` shrunk towards the
    identity, ``(1 - lambda) R_sample + lambda I`` (Schäfer & Strimmer 2005, target D:
    ``lambda = sum Var(r_ij) / sum r_ij^2`` over i != j, clipped to [0, 1]). Rows with a NaN are
    left out; with fewer than 3 rows R is the identity."""
    x = np.asarray(rows, dtype=float)
    x = x[np.all(np.isfinite(x), axis=1)]
    n, m = x.shape if x.ndim == 2 else (0, 0)
    if n < 3 or m < 2:
        return np.eye(max(m, 1)), 1.0
    sd = x.std(axis=0, ddof=1)
    sd = np.where(sd > 0, sd, 1.0)
    u = (x - x.mean(axis=0)) / sd
    w = u[:, :, None] * u[:, None, :]  # [n, m, m]
    r = w.sum(axis=0) / (n - 1)
    var_r = n / (n - 1) ** 3 * ((w - w.mean(axis=0)) ** 2).sum(axis=0)
    off = ~np.eye(m, dtype=bool)
    denom = float(np.sum(r[off] ** 2))
    lam = 1.0 if denom <= 0 else float(np.clip(np.sum(var_r[off]) / denom, 0.0, 1.0))
    out = (1.0 - lam) * r
    np.fill_diagonal(out, 1.0)
    return out, lam


def quadratic_p(z: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """Per block, the p of ``Q = z' R^-1 z`` against ``chi2(m)`` (``z``: ``[m, B]``; scores without
    data in a block are left out of it, with their rows and columns of R). NaN where no score had
    data."""
    z = np.asarray(z, dtype=float)
    out = np.full(z.shape[1], np.nan)
    for b in range(z.shape[1]):
        ok = np.isfinite(z[:, b])
        if ok.any():
            zb = z[ok, b]
            out[b] = stats.chi2.sf(float(zb @ np.linalg.solve(corr[np.ix_(ok, ok)], zb)), int(ok.sum()))
    return out


def quadratic_z(z: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """``quadratic_p`` on the normal scale, ``Phi^-1(1 - p)`` (floored like ``scores.combined_z``)."""
    p = quadratic_p(z, corr)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(p), np.nan, np.maximum(-special.ndtri(np.clip(p, 1e-300, 1.0)), Z_FLOOR))


def either_z(z_a: np.ndarray, z_b: np.ndarray) -> np.ndarray:
    """The z of two valid tests of one block taken together, ``p = 2 min(p_a, p_b)`` (Bonferroni
    over the two: valid whatever their dependence). NaN where both are."""
    with np.errstate(invalid="ignore"):
        p = np.fmin(special.ndtr(-np.asarray(z_a, dtype=float)), special.ndtr(-np.asarray(z_b, dtype=float)))
        z = np.maximum(-special.ndtri(np.clip(2.0 * p, 1e-300, 1.0)), Z_FLOOR)
    return np.where(np.isnan(p), np.nan, z)
