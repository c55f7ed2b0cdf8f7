"""Sample-size-aware thresholds: healthy streams do not alarm beyond the stated rate at any n."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.drift.calibrate import Calibrator
from cloud.drift.engine import DEFAULT_FLOORS
from cloud.drift.signals import extract, reference_of
from tests.cloud.drift.population import Population, window

NS = [100, 1_000, 10_000, 100_000, 1_000_000]


def _healthy_rate(cal: Calibrator, ref_signals: dict, n: int, trials: int, floor: float, rng) -> float:
    """Share of checks (all signals of one kind, Bonferroni) that alarm on reference-drawn samples."""
    m = len(ref_signals)
    worst = np.zeros(trials)
    for name, ref in ref_signals.items():
        obs = rng.multinomial(n, ref / ref.sum(), size=trials)
        worst = np.maximum(worst, cal.severity_series(ref, obs, m, floor))
    return float(np.mean(worst >= 1.0))


def _bound(alpha: float, trials: int) -> float:
    """The stated rate plus 3 binomial standard deviations (the test's own sampling noise)."""
    return alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_significance_alone_holds_alpha_at_every_n(profile, kind):
    # No effect floor: only the simulated null decides. alpha = 0.05 so the test can see it.
    cal, rng = Calibrator(alpha=0.05, seed=7), np.random.default_rng(11)
    signals = reference_of(profile, "m1").signals[kind]
    trials = 600
    rates = {n: _healthy_rate(cal, signals, n, trials, 0.0, rng) for n in [30, 100, 300] + NS[1:]}
    assert all(rate <= _bound(0.05, trials) for rate in rates.values()), rates


def test_default_checks_do_not_alarm_on_healthy_streams_from_100_to_a_million(profile, calibrator):
    rng = np.random.default_rng(12)
    ref = reference_of(profile, "m1")
    trials = 400
    for kind, floor in DEFAULT_FLOORS["psi"].items():
        if kind == "concept":
            continue
        for n in NS:
            rate = _healthy_rate(calibrator, ref.signals[kind], n, trials, floor, rng)
            assert rate <= _bound(calibrator.alpha, trials), (kind, n, rate)


def test_a_healthy_million_from_the_population_does_not_alarm_even_without_the_floor(profile, calibrator):
    # Not drawn from the reference counts but from the population the 2,000-utterance reference
    # was itself sampled from: the two-sample null accounts for the reference's own noise.
    rng = np.random.default_rng(13)
    ref = reference_of(profile, "m1")
    obs = extract(window(profile, Population().sample(rng, 1_000_000), device="d0", seq=0, t_start=0.0), ref)
    m = len(ref.signals["input"])
    for floor in (0.0, DEFAULT_FLOORS["psi"]["input"]):
        checks = [calibrator.check(s, ref.signals["input"][s], obs["input"][s], m, floor) for s in obs["input"]]
        assert not any(c.alarm for c in checks), [(c.signal, c.severity) for c in checks if c.alarm]


def test_a_real_shift_alarms_and_a_tiny_one_on_a_huge_sample_does_not(profile, calibrator):
    rng = np.random.default_rng(14)
    ref = reference_of(profile, "m1")
    m = len(ref.signals["input"])

    def worst(pop, n):
        obs = extract(window(profile, pop.sample(rng, n), device="d0", seq=0, t_start=0.0), ref)["input"]
        checks = [calibrator.check(s, ref.signals["input"][s], obs[s], m, DEFAULT_FLOORS["psi"]["input"])
                  for s in obs]
        return max(checks, key=lambda c: c.severity)

    noisy = worst(Population(noise_db=6.0), 300)  # +6 dB noise, 300 utterances: plainly drifted
    assert noisy.alarm and noisy.signal == "snr_db"
    tiny = worst(Population(gain_db=1.0), 200_000)  # 1 dB louder: significant but negligible
    # a fixed p < 0.05 (and even our own null) calls it a difference; the effect floor does not
    assert tiny.p_value < 1e-3 and tiny.score > tiny.critical
    assert not tiny.alarm and tiny.score < tiny.floor


def test_thresholds_shrink_with_n_to_the_floor_and_are_cached_and_seeded(profile):
    ref = reference_of(profile, "m1").signals["input"]["snr_db"]
    a, b = Calibrator(seed=3), Calibrator(seed=3)
    crit = [a.critical(ref, n, 13) for n in (30, 100, 1000, 10_000, 1_000_000)]
    assert crit == sorted(crit, reverse=True)
    assert crit[-1] < 0.2 < crit[0]  # large samples: the effect floor decides, small: significance
    assert [b.critical(ref, n, 13) for n in (30, 100, 1000, 10_000, 1_000_000)] == crit
    assert a.null(ref, 1000) is a.null(ref, 1001)  # same bucket, cached


def test_n_buckets_are_lower_edges(calibrator):
    ns = (30, 99, 100, 101, 5_000, 999_999)
    for n in ns:
        b = calibrator.bucket_n(n)
        assert b <= n and b * 10 ** (1 / calibrator.per_decade) > n * 0.999
    assert calibrator.bucket_array(np.array(ns)).tolist() == [calibrator.bucket_n(n) for n in ns]


def test_small_samples_are_not_checked(profile, calibrator):
    ref = reference_of(profile, "m1").signals["input"]["snr_db"]
    assert calibrator.check("snr_db", ref, np.zeros_like(ref), 13, 0.2) is None
    assert calibrator.check_accuracy("accuracy", 90, 100, 5, 10, 3, 0.1) is None


def test_accuracy_check_needs_both_a_large_and_a_significant_drop(calibrator):
    big = calibrator.check_accuracy("class:yes", 950, 1000, 50, 100, 8, 0.1)
    assert big.alarm and big.score == pytest.approx(0.45)
    noisy = calibrator.check_accuracy("class:yes", 950, 1000, 26, 30, 8, 0.1)  # 0.87: a drop, not significant
    assert not noisy.alarm
    tiny = calibrator.check_accuracy("class:yes", 95_000, 100_000, 93_000, 100_000, 8, 0.1)  # significant, small
    assert tiny.p_value < 1e-9 and not tiny.alarm
