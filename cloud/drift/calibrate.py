"""Thresholds that respect sample size: a healthy stream must not alarm however much it sends.

A fixed p < 0.05 alarms on everything once n is large, because the reference itself is a
finite sample and real streams are never exactly it. So a signal alarms only when both hold:

1. **significance** — its score exceeds the ``1 - alpha / m`` quantile of the score's null
   distribution at this sample size (Bonferroni across the ``m`` signals of one check). The
   null is simulated, seeded, two-sample: a reference of the profile's size and a sample of
   ``n``, both drawn from the (smoothed) reference proportions, scored with the same
   statistic. It is cached per (reference counts, n-bucket); buckets are log-spaced and a
   sample is scored against the null of its bucket's *lower* edge, which is conservative
   (smaller samples have larger null scores). The far tail (``alpha / m`` is well beyond what
   a few thousand simulations resolve) is extrapolated conservatively (see ``NullFit``).
2. **effect size** — its score is at least ``floor`` (the engine's defaults: PSI ≥ 0.25 for
   input, 0.2 for output), so a tiny true difference on a huge sample does not alarm.

Accuracy (concept) signals use the one-sided Fisher exact test at ``alpha / m`` instead of a
simulated null, and an accuracy-drop floor.

``severity = score / max(critical, floor)``; a signal alarms when ``severity >= 1`` and a check
(one kind of drift for one cohort and horizon) alarms when any of its signals does.

**False-alarm rate: on a healthy stream each check alarms with probability ≤ ``alpha``**
(default 0.001; Bonferroni bounds the union over signals; the floor only lowers it further).
Measured with 20,000 reference-drawn checks per n (13 input signals): at alpha = 0.05 and no
floor, 0.007 at n = 100 (a bucket edge, the least conservative point) and ≤ 0.0034 elsewhere;
at the defaults, 0.0001 at n = 100 and 0 from n = 200 up. ``tests/cloud/drift/test_calibrate.py``
checks it on seeded healthy streams from n = 30 to 1,000,000.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import special as _sp

from cloud.drift.stats import PSEUDO_COUNT, STATISTICS, accuracy_drop, chi_square, js_divergence, proportions

DEFAULT_ALPHA = 0.001
MIN_N = 30  # below this many observations a signal is not checked at all


TAIL_LEVEL = 0.05  # the exponential tail is fitted to the simulated scores above this quantile
TAIL_MARGIN = 1.15  # both tail estimates are within ±15 % of the true alpha/m quantile (measured)


@dataclass(frozen=True)
class NullFit:
    """The simulated null of one statistic for one reference at one sample size.

    The far tail has two estimates: a scaled chi-square matched to the simulated mean and
    variance, and an exponential tail (mean excess over the simulated 95 % quantile). Against
    nulls of 300,000 simulations, from n = 20 to 2,000 and alpha / m down to 8e-5, each was
    within about ±15 % of the true quantile, the chi-square low for sparse or skewed bins and the
    exponential noisy; the larger of the two, 15 % up, was never below it.
    """

    n: int
    mean: float
    var: float
    tail_u: float  # simulated quantile at 1 − TAIL_LEVEL
    tail_scale: float  # mean excess of the simulated scores over tail_u
    top: float  # the largest quantile the simulation resolves (1 − 10 / n_sims)

    def quantile(self, level: float) -> float:
        """Score exceeded with probability at most ``level`` under the null."""
        q = self.top
        if self.var > 0 and self.mean > 0:
            scale, dof = self.var / (2 * self.mean), 2 * self.mean ** 2 / self.var
            q = max(q, TAIL_MARGIN * float(scale * _sp.chdtri(dof, level)))
        if level < TAIL_LEVEL:
            q = max(q, TAIL_MARGIN * (self.tail_u + self.tail_scale * math.log(TAIL_LEVEL / level)))
        return q


@dataclass(frozen=True)
class SignalCheck:
    """One signal of one check: its score, the bars it was held to, and the verdict."""

    signal: str
    n: int
    score: float  # PSI / JS of the distributions, or the accuracy drop for concept signals
    threshold: float  # what the score had to reach: max(critical, floor)
    floor: float
    severity: float  # ≥ 1 alarms
    critical: float | None = None  # null quantile at alpha / m (distribution signals)
    p_value: float | None = None  # chi-square (distributions) or Fisher (accuracy)
    js: float | None = None

    @property
    def alarm(self) -> bool:
        return self.severity >= 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def _digest(ref: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(ref, dtype=np.int64).tobytes(), digest_size=12).digest()


class Calibrator:
    """Sample-size-aware thresholds for one statistic, with a bounded cache of simulated nulls.

    ``alpha``: per-check false-alarm rate; ``statistic``: ``"psi"`` or ``"js"``; ``n_sims``:
    simulations per null; ``per_decade``: n-buckets per factor of ten; ``seed``: every null is
    seeded from (seed, reference, bucket), so results do not depend on evaluation order.
    """

    def __init__(self, alpha: float = DEFAULT_ALPHA, statistic: str = "psi", n_sims: int = 4000,
                 per_decade: int = 8, seed: int = 0, min_n: int = MIN_N, max_cached: int = 4096):
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.statistic = statistic
        self.n_sims = n_sims
        self.per_decade = per_decade
        self.seed = seed
        self.min_n = min_n
        self.max_cached = max_cached
        self._cache: OrderedDict[tuple, NullFit] = OrderedDict()
        self._critical: OrderedDict[tuple, float] = OrderedDict()

    def bucket_n(self, n: int) -> int:
        """The lower edge of ``n``'s log-spaced bucket (≤ n)."""
        b = math.floor(self.per_decade * math.log10(n) + 1e-9)
        return max(1, min(n, math.ceil(10 ** (b / self.per_decade))))

    def bucket_array(self, n: np.ndarray) -> np.ndarray:
        """``bucket_n`` of many sample sizes at once."""
        n = np.asarray(n, dtype=np.int64)
        b = np.floor(self.per_decade * np.log10(np.maximum(n, 1)) + 1e-9)
        return np.clip(np.ceil(10 ** (b / self.per_decade)), 1, n).astype(np.int64)

    def null(self, ref_counts, n: int) -> NullFit:
        """The simulated null of the statistic for a sample of ``n`` (its bucket) against ``ref``."""
        ref = np.asarray(ref_counts, dtype=np.int64)
        nb = self.bucket_n(n)
        key = (_digest(ref), nb)
        fit = self._cache.get(key)
        if fit is not None:
            self._cache.move_to_end(key)
            return fit
        fit = self._simulate(ref, nb, key)
        self._cache[key] = fit
        if len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return fit

    def critical(self, ref_counts, n: int, m: int) -> float:
        """The score a sample of ``n`` exceeds with probability ``alpha / m`` under the null."""
        ref = np.asarray(ref_counts, dtype=np.int64)
        key = (_digest(ref), self.bucket_n(n), m)
        value = self._critical.get(key)
        if value is None:
            value = self.null(ref, n).quantile(self.alpha / max(m, 1))
            self._critical[key] = value
            if len(self._critical) > self.max_cached:
                self._critical.popitem(last=False)
        return value

    def _simulate(self, ref: np.ndarray, n: int, key: tuple) -> NullFit:
        seed = int.from_bytes(hashlib.blake2b(repr((self.seed, self.statistic, key)).encode(),
                                              digest_size=8).digest(), "little")
        rng = np.random.default_rng(seed)
        p = proportions(ref, PSEUDO_COUNT)
        n_ref = int(ref.sum())
        sim_ref = rng.multinomial(n_ref, p, size=self.n_sims)
        sim_obs = rng.multinomial(n, p, size=self.n_sims)
        scores = np.asarray(STATISTICS[self.statistic](sim_ref, sim_obs), dtype=float)
        top = float(np.quantile(scores, 1.0 - 10.0 / self.n_sims))
        u = float(np.quantile(scores, 1.0 - TAIL_LEVEL))
        excess = scores[scores > u] - u
        return NullFit(n=n, mean=float(scores.mean()), var=float(scores.var()), tail_u=u,
                       tail_scale=float(excess.mean()) if len(excess) else 0.0, top=top)

    def check(self, signal: str, ref_counts, obs_counts, m: int, floor: float,
              detail: bool = True) -> SignalCheck | None:
        """Score one histogram against its reference; None when it holds fewer than ``min_n``.

        ``detail`` adds the chi-square p-value and the JS divergence (evidence only).
        """
        ref = np.asarray(ref_counts, dtype=np.int64)
        obs = np.asarray(obs_counts, dtype=np.int64)
        n = int(obs.sum())
        if n < self.min_n or ref.sum() <= 0:
            return None
        score = float(STATISTICS[self.statistic](ref, obs))
        critical = self.critical(ref, n, m)
        threshold = max(critical, floor)
        check = SignalCheck(signal=signal, n=n, score=score, threshold=threshold, floor=floor,
                            severity=score / threshold, critical=critical)
        return self.detailed(check, ref, obs) if detail else check

    @staticmethod
    def detailed(check: SignalCheck, ref_counts, obs_counts) -> SignalCheck:
        """The check with its chi-square p-value and JS divergence filled in."""
        if check.critical is None:  # accuracy checks carry their Fisher p-value already
            return check
        return replace(check, p_value=chi_square(ref_counts, obs_counts).p_value,
                       js=float(js_divergence(ref_counts, obs_counts)))

    def check_accuracy(self, signal: str, ref_correct: int, ref_total: int, cur_correct: int,
                       cur_total: int, m: int, floor: float) -> SignalCheck | None:
        """Accuracy now vs the reference: alarms on a drop ≥ ``floor`` with Fisher p ≤ alpha / m."""
        if cur_total < self.min_n or ref_total < self.min_n:
            return None
        drop, p = accuracy_drop(ref_correct, ref_total, cur_correct, cur_total)
        severity = float(self._accuracy_severity(np.asarray(drop), np.asarray(p), m, floor))
        return SignalCheck(signal=signal, n=int(cur_total), score=float(drop), threshold=floor, floor=floor,
                           severity=severity, p_value=float(p))

    def _accuracy_severity(self, drop: np.ndarray, p: np.ndarray, m: int, floor: float) -> np.ndarray:
        """min(drop / floor, log p / log(alpha / m)), at least 0: ≥ 1 iff both bars are met."""
        significance = np.log(np.maximum(p, 1e-300)) / math.log(self.alpha / max(m, 1))
        return np.maximum(0.0, np.minimum(drop / floor, significance))

    def severity_series(self, ref_counts, obs_series, m: int, floor: float) -> np.ndarray:
        """Severities of many histograms ``[T, k]`` against one reference (NaN below ``min_n``)."""
        ref = np.asarray(ref_counts, dtype=np.int64)
        obs = np.asarray(obs_series, dtype=np.int64)
        n = obs.sum(axis=-1)
        out = np.full(len(obs), np.nan)
        ok = n >= self.min_n
        if not ok.any() or ref.sum() <= 0:
            return out
        scores = np.asarray(STATISTICS[self.statistic](ref[None, :], obs[ok]), dtype=float)
        buckets = self.bucket_array(n[ok])
        critical = np.empty(len(buckets))
        for b in np.unique(buckets):
            critical[buckets == b] = self.critical(ref, int(b), m)
        out[ok] = scores / np.maximum(critical, floor)
        return out

    def accuracy_series(self, ref_pair, obs_series, m: int, floor: float) -> np.ndarray:
        """Accuracy-drop severities of ``[T, 2]`` (correct, wrong) counts against one reference pair."""
        rc, rw = (int(x) for x in ref_pair)
        obs = np.asarray(obs_series, dtype=np.int64).reshape(-1, 2)
        out = np.full(len(obs), np.nan)
        total = obs.sum(axis=1)
        ok = total >= self.min_n
        if rc + rw < self.min_n or not ok.any():
            return out
        drop, p = accuracy_drop(rc, rc + rw, obs[ok, 0], total[ok])
        out[ok] = self._accuracy_severity(drop, p, m, floor)
        return out
