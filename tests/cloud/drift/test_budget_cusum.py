"""The false-alarm budget and the CUSUM: thresholds, run lengths, onsets and patterns."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.drift.budget import Budget, cusum_threshold, siegmund_arl
from cloud.drift.cusum import cusum, pattern, run_start


def test_the_threshold_inverts_siegmunds_run_length():
    for arl, k in [(1e3, 0.5), (1e6, 1.0), (2e7, 1.0)]:
        h = cusum_threshold(arl, k)
        assert siegmund_arl(h, k) == pytest.approx(arl, rel=1e-6)


def test_the_budget_splits_over_kinds_families_and_detectors():
    b = Budget(alerts_per_1000_device_days=1.0, devices=20, evaluations_per_day=288)
    assert b.beta == pytest.approx(0.02)
    assert b.arl(21) == pytest.approx(21 * 288 / (0.02 / 6))
    assert b.alpha(2) == pytest.approx(0.02 / 6 / (2 * 288))
    assert b.cusum_h(42, 1.0) > b.cusum_h(21, 1.0) > Budget(10.0, 20, 288).cusum_h(21, 1.0)


def test_the_cusum_run_length_on_healthy_z_is_at_least_what_the_budget_asked():
    # 400 runs of N(0, 1) blocks against h for ARL 2,000: the mean run length must not fall short
    rng = np.random.default_rng(11)
    k, arl = 1.0, 2000.0
    h = cusum_threshold(arl, k)
    lengths = []
    for _ in range(400):
        s, t = 0.0, 0
        while s < h:
            s = max(0.0, s + rng.standard_normal() - k)
            t += 1
        lengths.append(t)
    assert np.mean(lengths) > 0.8 * arl  # Siegmund is accurate to a few % here; noise of 400 runs ±10 %


def test_a_step_is_caught_at_once_with_its_onset_and_called_sudden():
    z = np.concatenate([np.full(20, -1.0), np.full(10, 5.0)])
    run = cusum(z, k=1.0, h=6.0)
    assert run.alarm and run.onset == 20 and run.crossed == 21  # 4 + 4 ≥ 6 on the second drifted block
    sev = np.concatenate([np.full(20, 0.2), np.full(10, 3.0)])
    assert pattern(sev, 20) == "sudden"


def test_a_ramp_is_called_gradual_and_nan_blocks_leave_the_statistic_alone():
    sev = np.concatenate([np.full(10, 0.1), np.linspace(0.1, 4.0, 20)])
    assert pattern(sev, 10) == "gradual"
    noisy = sev[:20] + np.random.default_rng(2).normal(0, 0.3, 20)
    assert pattern(np.concatenate([noisy, 3.0 + np.random.default_rng(3).normal(0, 0.3, 10)]), 20) == "sudden"
    run = cusum(np.array([5.0, np.nan, 5.0]), k=1.0, h=100.0)
    assert run.statistic.tolist() == [4.0, 4.0, 8.0]


def test_the_statistic_is_capped_so_an_episode_can_end():
    z = np.concatenate([np.full(50, 8.0), np.full(30, -1.0)])
    run = cusum(z, k=1.0, h=5.0, cap=2.0)
    assert run.statistic.max() == 10.0 and not run.alarm and run.onset is None


def test_run_start_finds_since_when_a_level_held():
    assert run_start(np.array([2.0, 0.3, np.nan, 1.5, 2.0])) == 3
    assert run_start(np.array([0.2, 0.3])) == 1


def test_the_calibration_counts_alerts_as_they_open_and_resolve_not_flagged_blocks():
    from cloud.drift.simulation import _episodes

    flicker = [1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1]  # quiet runs of 1 and 2 keep the alert open; 3 resolve it
    assert _episodes(flicker, resolve_after=3) == 2
    assert _episodes(flicker, resolve_after=1) == 4 and _episodes([0, 0], resolve_after=3) == 0
    assert _episodes([1, 1, 1], resolve_after=3) == 1
    # a quiet block of a quiet hour spans several steps: each is an evaluation the alert can resolve on
    assert _episodes([1, 0, 1], resolve_after=3, steps=[1, 3, 1]) == 2
    assert _episodes([1, 0, 1], resolve_after=3, steps=[1, 2, 1]) == 1
