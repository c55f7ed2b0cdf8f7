"""Linear scores: how far a cohort's histograms sit from what is expected, with honest variance.

Every signal Harken watches is a histogram over fixed bins, and every question drift asks of
one is the mean of a per-bin score over the utterances counted in it:

- **ridit** (ordinal signals: features, utterance length, level, SNR, confidence, noise floor):
  bin b scores ``F_ref(b-1) + q_b / 2``, the reference's mid-cumulative share. The reference's
  own mean ridit is exactly 0.5; an observed mean of 0.6 means a new utterance sits above a
  reference one 60 % of the time (the Mann-Whitney probability of superiority). A location
  shift of any size shows as a mean ridit away from 0.5, bounded, whatever the bin widths.
- **share** (one label of the label mix, the no-answer share): an indicator per bin.
- **accuracy** (feedback marked correct/wrong, or the calibrated accuracy of a confidence bin
  for the label-free estimate): the share of correct answers.

The mean of a score over n utterances of one device has variance ``sigma2 / n + tau2``:
``sigma2`` is the spread of one utterance's score, ``tau2`` the spread between healthy devices
(households: speakers, rooms) beyond sampling noise — a device is one draw of that random
effect however many utterances it sends. A cohort's mean over devices weighted by their
counts ``w_d = n_d / n`` has variance ``sum w_d^2 (sigma2_d / n_d + tau2_d)``; the device, not
the utterance, is the unit of healthy variation. Against a device's own baseline ``tau2`` is
its step-to-step spread and the baseline's estimation noise adds in; against the reference
profile ``tau2`` is the between-speaker spread measured on the reference's chunks.

``z = (mean - expected) / sqrt(var)`` is approximately standard normal on healthy data (the
score is bounded, so the central limit holds at small n), and the **effect**
``mean - expected`` does not depend on how many utterances were counted: a constant shift
reads the same at a busy and a quiet hour. Shares report a standardized effect
(``effect / sqrt(mu (1 - mu))``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

SIDES = ("two", "drop")
Z_FLOOR = -5.0
PRIOR_DOF = 8.0  # a between-device spread that is a prior, not a measurement, is worth this much
MIN_EXPECTED = 5.0  # a share is judged only where at least this many events (and non-events) are expected  # a block that agrees perfectly still lowers a CUSUM by a bounded amount  # drop: only a fall of the mean is drift (accuracy)


@dataclass(frozen=True)
class Score:
    """One score over one signal's bins, with what the reference says about it.

    ``expected_bins`` (accuracy of audited feedback) makes the expectation depend on the mix of
    the observed bins: bin b's expected score, so a cohort asked about harder words is not
    blamed for them. ``ref_mean`` None: the score has no reference (only baselines judge it).
    """

    name: str
    signal: str
    family: str  # ridit | share | accuracy
    weights: np.ndarray  # score of each bin
    side: str = "two"
    ref_mean: float | None = None
    within: float = 0.0  # sigma2 of one utterance's score under the reference
    between: float = 0.0  # tau2 between healthy devices (reference chunks)
    ref_var: float = 0.0  # variance of the reference's own mean
    floor: float = 0.05  # effect size that matters (in effect units)
    expected_bins: np.ndarray | None = None
    ref_dof: float = PRIOR_DOF  # degrees of freedom of ``between`` (chunks - 1): against the reference z is a t
    measured_spread: bool = False  # ``between`` was measured on the profile's chunks (not a prior)
    group: str = "speech"  # scores of one group share blocks and one CUSUM (``blocks.PRIMARY``)

    @property
    def counts_events(self) -> bool:
        """A 0/1 score (a share, an accuracy from feedback): its mean counts discrete events."""
        return self.family != "ridit" and bool(np.all((self.weights == 0) | (self.weights == 1)))

    def effect_scale(self, mean: np.ndarray) -> np.ndarray:
        """Divisor that turns a raw difference into this score's effect units."""
        if self.family == "share":
            return np.sqrt(np.clip(mean * (1.0 - mean), 1e-4, None))
        return np.ones_like(mean)


def mean_and_within(counts: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, mean score, within variance) of histograms ``[..., k]`` (mean NaN where n = 0)."""
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (counts @ weights) / n
        second = (counts @ (weights ** 2)) / n
    within = np.clip(second - mean ** 2, 0.0, None)
    return n, mean, within


@dataclass(frozen=True)
class Evidence:
    """Per (block) figures of one score for one cohort: arrays over blocks."""

    n: np.ndarray
    mean: np.ndarray
    expected: np.ndarray
    se: np.ndarray
    z: np.ndarray  # signed; NaN where there is too little data
    effect: np.ndarray  # signed, in effect units
    p: np.ndarray  # two-sided (one-sided for ``drop`` scores); NaN where z is


def _p_values(z: np.ndarray, side: str, dof=None) -> np.ndarray:
    """p of z (a Student t with ``dof`` degrees of freedom when given, else standard normal)."""
    with np.errstate(invalid="ignore"):
        lower = special.ndtr if dof is None else (lambda x: special.stdtr(np.minimum(dof, 1e9), x))
        if side == "drop":
            return lower(z)  # a fall of the mean: negative z
        return 2.0 * lower(-np.abs(z))


def against_reference(score: Score, counts: np.ndarray, min_n: int) -> Evidence:
    """Blocks ``[D, B, k]`` of a cohort's devices against the score's reference."""
    n_d, _, _ = mean_and_within(counts, score.weights)
    n = n_d.sum(axis=0)
    total = counts.sum(axis=0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total @ score.weights) / n
        share2 = (n_d ** 2).sum(axis=0) / n ** 2
        if score.expected_bins is not None:
            expected = (total @ score.expected_bins) / n
            e = score.expected_bins
            within = (total @ (e * (1.0 - e))) / n
        else:
            expected = np.full_like(mean, score.ref_mean if score.ref_mean is not None else np.nan)
            within = np.full_like(mean, score.within)
        estimated = score.between * share2 + score.ref_var
        var = within / n + estimated
    # the between-device spread is estimated from the reference's chunks: a t, not a normal, where
    # it dominates (few devices) — Welch-Satterthwaite degrees of freedom
    return _evidence(score, n, mean, expected, var, min_n, dof=satterthwaite(var, estimated, score.ref_dof))


def against_baseline(score: Score, counts: np.ndarray, base_mean: np.ndarray, base_within: np.ndarray,
                     base_tau2: np.ndarray, base_var: np.ndarray, min_n: int,
                     base_rho: np.ndarray | None = None, base_dof: np.ndarray | None = None) -> Evidence:
    """Blocks ``[D, B, k]`` against each device's own baseline (arrays over D).

    The expectation is the devices' baseline means weighted by what each sent in the block; the
    variance adds each device's step-to-step spread ``base_tau2`` and its baseline's own
    estimation variance ``base_var`` (both persist over the block, so they weigh ``w_d^2``).
    ``base_rho``, the devices' block-to-block autocorrelation, puts the variance on the long-run
    scale ``(1 + rho) / (1 - rho)`` (weighted like ``tau2``): consecutive blocks of one
    household are not independent draws, and a CUSUM summing them must not take them for such.
    ``base_dof``, the degrees of freedom of the baselines' spread estimates: z is read as a t
    with the smallest of them.
    """
    n_d, _, _ = mean_and_within(counts, score.weights)  # [D, B]
    n = n_d.sum(axis=0)
    total = counts.sum(axis=0).astype(float)
    bm, bw, bt, bv = (np.asarray(x, dtype=float)[:, None] for x in (base_mean, base_within, base_tau2, base_var))
    rho = np.zeros_like(bm) if base_rho is None else np.asarray(base_rho, dtype=float)[:, None]
    long_run = (1.0 + rho) / (1.0 - rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total @ score.weights) / n
        expected = (n_d * bm).sum(axis=0) / n
        estimated = (n_d ** 2 * (bt * long_run + bv)).sum(axis=0) / n ** 2
        var = (n_d * bw * long_run).sum(axis=0) / n ** 2 + estimated
    dof = None if base_dof is None or not len(base_dof) else satterthwaite(var, estimated, float(np.min(base_dof)))
    return _evidence(score, n, mean, expected, var, min_n, dof=dof)


def satterthwaite(var, estimated, dof: float) -> np.ndarray:
    """Degrees of freedom of a variance whose ``estimated`` part is known to ``dof`` and the rest
    exactly (Welch-Satterthwaite): large where sampling noise dominates, ``dof`` where the
    estimated spread does."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(estimated > 0, np.asarray(var) ** 2 / (np.asarray(estimated) ** 2 / dof), 1e9)


def _evidence(score: Score, n, mean, expected, var, min_n: int, dof: float | None = None) -> Evidence:
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(var)
        diff = mean - expected
        if score.counts_events:  # counts of rare events: continuity correction, enough expected events
            diff = np.sign(diff) * np.clip(np.abs(diff) - 0.5 / n, 0.0, None)
            rare = n * np.minimum(expected, 1.0 - expected) < MIN_EXPECTED
        else:
            rare = np.zeros(np.shape(n), dtype=bool)
        z = diff / se
        effect = (mean - expected) / score.effect_scale(expected)
    bad = ~(n >= min_n) | rare | ~np.isfinite(z) | ~np.isfinite(expected)
    z = np.where(bad, np.nan, z)
    effect = np.where(bad, np.nan, effect)
    if score.side == "drop":
        effect = np.where(np.isnan(effect), np.nan, np.minimum(effect, 0.0))
    p = _p_values(z, score.side, dof)
    if dof is not None:  # z on the normal scale, with the t's tail
        with np.errstate(invalid="ignore"):
            normal = -special.ndtri(np.clip(p / (1.0 if score.side == "drop" else 2.0), 1e-300, 1.0))
        z = np.where(np.isnan(z), np.nan, np.sign(z) * np.abs(normal) if score.side != "drop" else -normal)
    return Evidence(n=n, mean=mean, expected=expected, se=se, z=z, effect=effect, p=p)


def severity(score: Score, ev: Evidence) -> np.ndarray:
    """|effect| / floor per block: 1 is an effect as large as the floor (NaN without data)."""
    return np.abs(ev.effect) / score.floor


def combined_z(p_values: np.ndarray) -> np.ndarray:
    """Per block, the z of the Bonferroni-combined smallest p over scores (``[S, B]`` → ``[B]``).

    ``P(m · min p <= x) <= x`` on healthy data whatever the dependence between the scores, so
    the returned z is stochastically no larger than a standard normal: the CUSUM's run-length
    bound holds. NaN where no score had data.
    """
    p = np.asarray(p_values, dtype=float)
    m = np.sum(~np.isnan(p), axis=0)
    with np.errstate(invalid="ignore"):
        pmin = np.nanmin(np.where(np.isnan(p), np.inf, p), axis=0)
        pb = np.clip(pmin * m, 1e-300, 1.0)
        z = np.maximum(-special.ndtri(pb), Z_FLOOR)
    return np.where(m > 0, z, np.nan)
