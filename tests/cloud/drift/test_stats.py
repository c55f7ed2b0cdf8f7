"""Divergences against hand computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cloud.drift.stats import js_divergence, proportions, psi


def test_psi_without_smoothing_matches_the_formula_by_hand():
    # p = (0.2, 0.3, 0.5), q = (0.1, 0.3, 0.6): 0.1 ln 2 + 0 + (-0.1) ln(5/6)
    assert psi([10, 30, 60], [20, 30, 50], pseudo=0.0) == pytest.approx(0.1 * math.log(2) + 0.1 * math.log(6 / 5))


def test_psi_smooths_empty_bins_with_half_a_count_per_bin():
    ref, obs = [10, 0, 90], [0, 5, 95]
    p = np.array([0.5, 5.5, 95.5]) / 101.5
    q = np.array([10.5, 0.5, 90.5]) / 101.5
    assert psi(ref, obs) == pytest.approx(float(np.sum((p - q) * np.log(p / q))))
    assert math.isfinite(psi(ref, obs))
    assert proportions([0, 0]).tolist() == [0.5, 0.5]


def test_psi_is_zero_for_identical_proportions_and_symmetric():
    assert psi([1, 2, 3], [10, 20, 30], pseudo=0.0) == pytest.approx(0.0, abs=1e-12)
    assert psi([5, 1], [1, 5]) == pytest.approx(psi([1, 5], [5, 1]))


def test_divergences_score_many_samples_at_once():
    ref = np.array([10, 30, 60])
    obs = np.array([[20, 30, 50], [10, 30, 60], [60, 30, 10]])
    np.testing.assert_allclose(psi(ref[None, :], obs), [psi(ref, o) for o in obs])
    np.testing.assert_allclose(js_divergence(ref[None, :], obs), [js_divergence(ref, o) for o in obs])


def test_js_divergence_in_bits_by_hand():
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([7, 7], [3, 3]) == pytest.approx(0.0, abs=1e-12)
    # p = (.75, .25), q = (.25, .75), m = (.5, .5): .75 log2 1.5 + .25 log2 .5
    assert js_divergence([3, 1], [1, 3]) == pytest.approx(0.75 * math.log2(1.5) - 0.25)
    assert js_divergence([0, 0], [1, 3]) == 0.0


def test_mismatched_bins_are_refused():
    with pytest.raises(ValueError, match="different bins"):
        psi([1, 2], [1, 2, 3])
