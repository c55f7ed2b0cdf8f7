"""Linear scores: ridits, shares and accuracies with random-effects variance."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cloud.drift.reference import ridits
from cloud.drift.scores import Score, against_baseline, against_reference, combined_z, mean_and_within


def test_the_reference_mean_ridit_is_one_half_and_a_shift_reads_as_superiority():
    ref = np.array([10, 30, 40, 20])
    r = ridits(ref)
    q = (ref + 0.5) / (ref + 0.5).sum()
    assert float(q @ r) == pytest.approx(0.5)
    # every new utterance above every reference one: mean ridit of the top bin
    _, mean, _ = mean_and_within(np.array([0, 0, 0, 50]), r)
    assert mean == pytest.approx(1 - q[-1] / 2)


def _score(ref_counts, tau2):
    w = ridits(ref_counts)
    q = (np.asarray(ref_counts) + 0.5) / (np.sum(ref_counts) + 0.5 * len(ref_counts))
    mu = float(q @ w)
    return Score("x", "x", "ridit", w, "two", mu, float(q @ (w - mu) ** 2), tau2, 0.0, 0.05, ref_dof=1e9), q


def test_healthy_devices_with_random_effects_give_standard_normal_z_only_when_tau_is_counted():
    rng = np.random.default_rng(3)
    edges = stats.norm.ppf(np.linspace(0.1, 0.9, 9))  # deciles of the reference population
    ref = np.full(10, 1000)
    offsets = rng.normal(0.0, 0.4, 3000)  # each device's own voice, in utterance sds
    # the true between-device variance of the mean ridit, from the devices' expected histograms
    w = ridits(ref)
    cdf = stats.norm.cdf(np.append(edges, np.inf)[None, :] - offsets[:, None])
    expected = np.diff(np.concatenate([np.zeros((len(offsets), 1)), cdf], axis=1), axis=1) @ w
    tau2 = float(np.var(expected))
    zs = {0.0: [], tau2: []}
    for off in offsets:
        x = rng.normal(off, 1.0, 80)
        counts = np.bincount(np.searchsorted(edges, x), minlength=10)[None, None, :]
        for t2 in zs:
            score, _ = _score(ref, t2)
            zs[t2].append(float(against_reference(score, counts, 30).z[0]))
    honest, naive = np.array(zs[tau2]), np.array(zs[0.0])
    assert 0.9 < honest.std() < 1.1 and np.mean(np.abs(honest) > 2.58) < 0.02
    assert naive.std() > 1.4  # leaving the device out of the variance overstates every device


def test_a_cohort_weighs_devices_by_their_traffic_and_the_device_is_the_unit():
    score, _ = _score(np.full(10, 100), 0.01)
    one = np.zeros((1, 1, 10))
    one[0, 0, 9] = 1000  # one loud device
    many = np.zeros((10, 1, 10))
    many[:, 0, 9] = 100  # ten devices, the same counts between them
    se_one = against_reference(score, one, 30).se[0]
    se_many = against_reference(score, many, 30).se[0]
    assert se_one > 2.5 * se_many  # 1000 utterances of one household say less than 10 x 100


def test_against_a_baseline_the_expectation_follows_who_talked():
    w = np.array([0.0, 1.0])
    score = Score("s", "s", "share", w, floor=0.2)
    counts = np.array([[[70, 30]], [[5, 5]]])  # device 0 sends 100, device 1 sends 10
    ev = against_baseline(score, counts, base_mean=np.array([0.3, 0.9]), base_within=np.array([0.21, 0.09]),
                          base_tau2=np.zeros(2), base_var=np.zeros(2), min_n=30)
    assert ev.expected[0] == pytest.approx((100 * 0.3 + 10 * 0.9) / 110)
    assert abs(ev.z[0]) < 1


def test_drop_scores_only_report_falls_and_rare_shares_wait():
    acc = Score("a", "f", "accuracy", np.array([1.0, 0.0]), "drop", 0.9, 0.09, 0.0, 0.0, 0.05, ref_dof=1e9)
    up = against_reference(acc, np.array([[[99, 1]]]), 30)
    down = against_reference(acc, np.array([[[70, 30]]]), 30)
    assert up.effect[0] == 0.0 and up.p[0] > 0.5
    assert down.effect[0] == pytest.approx(-0.2) and down.p[0] < 1e-6
    rare = Score("r", "f", "share", np.array([0.0, 1.0]), "two", 0.02, 0.0196, 0.0, 0.0, 0.2, ref_dof=1e9)
    assert np.isnan(against_reference(rare, np.array([[[98, 2]]]), 30).z[0])  # 2 expected events: too few


def test_combined_z_is_at_most_standard_normal_whatever_the_dependence():
    rng = np.random.default_rng(5)
    base = rng.standard_normal(200_000)
    z = np.vstack([base, base, rng.standard_normal(200_000)])  # two identical scores, one independent
    p = 2 * stats.norm.sf(np.abs(z))
    combined = combined_z(p)
    assert np.mean(combined > 2.326) <= 0.0105  # P(z > 2.33) ≤ 1 % holds
    assert np.isnan(combined_z(np.full((3, 1), np.nan))[0])


def test_a_spread_measured_on_few_chunks_reads_as_a_t():
    w = np.array([0.0, 1.0])
    few = Score("s", "s", "ridit", w, "two", 0.5, 0.25, 0.01, 0.0, 0.05, ref_dof=5.0)
    many = Score("s", "s", "ridit", w, "two", 0.5, 0.25, 0.01, 0.0, 0.05, ref_dof=1e9)
    counts = np.array([[[600, 1400]]])  # mean 0.7: z about 2 against a spread of 0.1
    p_few, p_many = against_reference(few, counts, 30).p[0], against_reference(many, counts, 30).p[0]
    var = 0.25 / 2000 + 0.01
    dof = 5.0 * var ** 2 / 0.01 ** 2  # Welch-Satterthwaite: the spread is most of the variance
    assert p_few == pytest.approx(2 * stats.t.sf(0.2 / np.sqrt(var), dof), rel=0.01)
    assert p_few > 2 * p_many
