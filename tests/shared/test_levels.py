"""Levels behave: quieter reads lower, noise lowers the SNR, clipping is counted."""
from __future__ import annotations

import numpy as np
import pytest

from shared.levels import SILENCE_DBFS, clipped_fraction, level_dbfs, snr_db


@pytest.fixture(scope="module")
def utterance(say):
    """Speech with 300 ms of silence either side, as the gate would cut it."""
    pad = np.zeros(4800, dtype=np.float32)
    return np.concatenate([pad, say("open the window"), pad])


def test_level_of_a_full_scale_sine_and_of_silence():
    t = np.arange(16000) / 16000
    assert level_dbfs(np.sin(2 * np.pi * 440 * t)) == pytest.approx(-3.0103, abs=0.01)
    assert level_dbfs(np.zeros(1000)) == SILENCE_DBFS
    assert level_dbfs(np.zeros(0)) == SILENCE_DBFS
    assert level_dbfs(np.full(100, 1e-9)) == SILENCE_DBFS


def test_quieter_speech_reads_lower_by_the_gain(utterance):
    loud = level_dbfs(utterance)
    assert -40 < loud < -10
    assert level_dbfs(utterance * 0.1) == pytest.approx(loud - 20, abs=0.01)
    assert level_dbfs(utterance * 0.5) < loud


def test_snr_falls_as_noise_is_added_and_rises_when_removed(utterance):
    rng = np.random.default_rng(7)
    noise = rng.standard_normal(len(utterance)).astype(np.float32)
    clean = snr_db(utterance)
    light = snr_db(utterance + 0.003 * noise)
    heavy = snr_db(utterance + 0.03 * noise)
    assert clean > light > heavy
    assert clean > 60  # digital silence around the words
    assert 15 < light < 50 and heavy < light - 15


def test_snr_is_a_function_of_the_whole_utterance(utterance):
    noisy = utterance + 0.01 * np.random.default_rng(3).standard_normal(len(utterance))
    assert snr_db(noisy) == snr_db(noisy.copy())
    assert snr_db(noisy.astype(np.float32)) == pytest.approx(snr_db(noisy), abs=0.01)
    assert snr_db(np.zeros(5000)) == 0.0
    assert snr_db(np.zeros(0)) == 0.0
    assert 0.0 <= snr_db(utterance[:100]) <= 120.0  # shorter than a frame: still bounded


def test_steady_noise_alone_reads_near_zero_snr():
    noise = np.random.default_rng(5).standard_normal(16000) * 0.05
    assert snr_db(noise) < 3.0


def test_clipped_fraction_counts_samples_at_full_scale(utterance):
    assert clipped_fraction(utterance) == 0.0
    boosted = np.clip(utterance * 20, -1.0, 1.0)
    expected = np.count_nonzero(np.abs(utterance * 20) >= 0.999) / len(utterance)
    assert expected > 0.01
    assert clipped_fraction(boosted) == pytest.approx(expected)
    assert clipped_fraction(np.zeros(0)) == 0.0


def test_the_snr_percentiles_are_numpys_bit_for_bit():
    """snr_db interpolates its percentiles itself (numpy's cost it once per utterance); same values."""
    from shared.levels import _percentile, snr_from_powers

    rng = np.random.default_rng(4)
    for trial in range(3000):
        n = int(rng.integers(1, 150))
        power = np.exp(rng.normal(-12, 4, n)) if trial % 2 else rng.integers(0, 4, n) * 1e-4
        ordered = np.sort(power)
        assert (_percentile(ordered, 0.9), _percentile(ordered, 0.1)) == tuple(np.percentile(power, [90.0, 10.0]))
        loud, quiet = np.percentile(power, [90.0, 10.0])
        want = 0.0 if loud <= 1e-12 else float(np.clip(10 * np.log10(loud / max(quiet, 1e-12)), 0, 120))
        assert snr_from_powers(power) == want
