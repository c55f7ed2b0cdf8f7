"""Scenario transforms do what they say: measured SNR, level, bandwidth, faults; chunking-invariant."""
from __future__ import annotations

import numpy as np
import pytest

from edge.sim.scenarios import (AddNoise, BandLimit, Gain, Identity, MicFault, ScenarioParams, WhiteNoise,
                                active_level_dbfs, build_transform, snr_schedule)
from shared.audio import SAMPLE_RATE
from shared.errors import ConfigError
from shared.levels import clipped_fraction, level_dbfs

SR = SAMPLE_RATE


def bursts(seconds: float = 20.0, seed: int = 0) -> np.ndarray:
    """Speech-like test audio: 0.5 s tone bursts (random pitch and level) with 0.5 s pauses."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SR), dtype=np.float32)
    t = np.arange(SR // 2) / SR
    for start in range(0, len(x) - SR // 2, SR):
        amp = 10 ** (rng.uniform(-20, -10) / 20)
        x[start:start + SR // 2] = amp * np.sin(2 * np.pi * rng.uniform(150, 400) * t) * np.hanning(SR // 2)
    return x


def run(transform, x: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([transform.process(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def test_active_level_of_a_tone_burst_ignores_the_silence_around_it():
    x = np.zeros(SR, dtype=np.float32)
    x[4000:8000] = 0.1 * np.sin(2 * np.pi * 440 * np.arange(4000) / SR)
    assert active_level_dbfs(x) == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.2)
    assert level_dbfs(x) < active_level_dbfs(x) - 5  # the plain RMS level counts the silence


def test_sudden_noise_is_added_at_the_snr_from_the_onset_and_not_before():
    x = bursts()
    params = ScenarioParams(name="sudden-noise", onset_s=5.0, snr_db=5.0)
    ref = -18.0
    y = run(build_transform(params, True, ref_level_dbfs=ref, rng=np.random.default_rng(1)), x, 4096)
    onset = 5 * SR
    assert np.array_equal(y[:onset], x[:onset])
    noise = y[onset:] - x[onset:]
    assert ref - level_dbfs(noise) == pytest.approx(5.0, abs=0.1)
    # the speech in it: each burst's own SNR follows its level around the 5 dB target
    burst = slice(10 * SR, 10 * SR + SR // 2)
    measured = active_level_dbfs(x[burst]) - level_dbfs(noise[burst.start - onset:burst.stop - onset])
    assert measured == pytest.approx(5.0 + active_level_dbfs(x[burst]) - ref, abs=0.5)


def test_untargeted_devices_and_healthy_scenario_are_unchanged():
    x = bursts(3.0)
    for params, targeted in ((ScenarioParams(name="sudden-noise", onset_s=0), False),
                             (ScenarioParams(name="healthy", onset_s=0), True)):
        t = build_transform(params, targeted, ref_level_dbfs=-20, rng=np.random.default_rng(0))
        assert isinstance(t, Identity)
        assert np.array_equal(run(t, x, 1000), x)


def test_gradual_noise_ramps_the_snr_down_linearly_in_db():
    x = np.zeros(40 * SR, dtype=np.float32)
    params = ScenarioParams(name="gradual-noise", onset_s=10.0, start_snr_db=30.0, snr_db=5.0, ramp_s=20.0)
    ref = -20.0
    y = run(build_transform(params, True, ref_level_dbfs=ref, rng=np.random.default_rng(2)), x, 4096)
    assert not y[:10 * SR].any()

    def snr_around(second: float) -> float:
        seg = y[int((second - 0.25) * SR):int((second + 0.25) * SR)]
        return ref - level_dbfs(seg)

    assert snr_around(10.5) == pytest.approx(29.4, abs=0.3)
    assert snr_around(20.0) == pytest.approx(17.5, abs=0.3)
    assert snr_around(35.0) == pytest.approx(5.0, abs=0.3)  # after the ramp: held at the final SNR
    assert snr_around(12) > snr_around(16) > snr_around(24) > snr_around(28)


def test_level_drop_attenuates_everything_after_the_onset_by_the_gain():
    x = bursts(10.0)
    y = run(Gain(3 * SR, -20.0), x, 480)
    assert np.array_equal(y[:3 * SR], x[:3 * SR])
    assert level_dbfs(y[3 * SR:]) - level_dbfs(x[3 * SR:]) == pytest.approx(-20.0, abs=1e-3)


def test_band_limit_passes_300_to_3400_hz_and_removes_the_rest():
    x = np.random.default_rng(3).standard_normal(8 * SR).astype(np.float32) * 0.1
    y = run(BandLimit(0, 300.0, 3400.0), x, 4096)
    gain_db = lambda lo, hi: 10 * np.log10(band_power(y, lo, hi) / band_power(x, lo, hi))  # noqa: E731
    assert gain_db(500, 3000) == pytest.approx(0.0, abs=0.5)
    assert gain_db(4500, 8000) < -50
    assert gain_db(20, 150) < -30
    # the telephone channel in numbers: almost all of the output's energy is in band
    assert band_power(y, 300, 3400) / band_power(y, 0, 8000) > 0.99


def test_band_limit_before_the_onset_is_the_untouched_input():
    x = np.random.default_rng(4).standard_normal(4 * SR).astype(np.float32) * 0.1
    y = run(BandLimit(2 * SR, 300.0, 3400.0), x, 1000)
    assert np.array_equal(y[:2 * SR], x[:2 * SR])
    assert band_power(y[2 * SR + 512:], 4500, 8000) < 1e-4 * band_power(x[2 * SR + 512:], 4500, 8000)


@pytest.mark.parametrize("fault", ["silence", "dc", "clipping"])
def test_a_broken_microphone(fault):
    x = bursts(6.0)
    y = run(MicFault(2 * SR, fault, np.random.default_rng(5)), x, 4096)
    assert np.array_equal(y[:2 * SR], x[:2 * SR])
    after = y[2 * SR:]
    if fault == "silence":
        assert level_dbfs(after) == pytest.approx(-90.0, abs=0.5)
    elif fault == "dc":
        assert float(np.mean(after)) == pytest.approx(0.25, abs=1e-3)
        assert float(np.std(after)) < 1e-3
    else:
        assert clipped_fraction(after) > 0.1
        assert level_dbfs(after) > -6


@pytest.mark.parametrize("make", [
    lambda: AddNoise(SR, WhiteNoise(np.random.default_rng(9)), 0.1,
                     snr_schedule(ScenarioParams(name="gradual-noise", onset_s=1.0, ramp_s=2.0))),
    lambda: BandLimit(SR // 3, 300.0, 3400.0),
    lambda: MicFault(SR, "clipping", np.random.default_rng(9)),
    lambda: Gain(12345, -20.0),
])
def test_transforms_give_the_same_output_in_any_chunking(make):
    x = bursts(4.0, seed=1)
    whole = make().process(x)
    for chunk in (160, 480, 4096):
        np.testing.assert_array_equal(run(make(), x, chunk), whole)


def test_targets_are_seeded_and_sized():
    n = 50
    assert ScenarioParams(name="sudden-noise").targets(n, 0) == list(range(n))
    one = ScenarioParams(name="broken-device").targets(n, 0)
    assert len(one) == 1 and one == ScenarioParams(name="broken-device").targets(n, 0)
    assert ScenarioParams(name="broken-device").targets(n, 1) != one or ScenarioParams(
        name="broken-device").targets(n, 2) != one  # the seed picks the device
    fifth = ScenarioParams(name="level-drop", affected=0.2).targets(n, 3)
    assert len(fifth) == 10 and len(set(fifth)) == 10 and all(0 <= i < n for i in fifth)
    assert ScenarioParams(name="healthy").targets(n, 0) == []


@pytest.mark.parametrize("bad", [dict(name="nope"), dict(noise="pink"), dict(fault="fire"), dict(shift=3.0),
                                 dict(low_hz=3000, high_hz=300), dict(affected=0.0), dict(ramp_s=0)])
def test_bad_scenario_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        ScenarioParams(**bad).check()
