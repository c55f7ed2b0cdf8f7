"""Sudden vs gradual over time, on calibrated per-window severities of seeded synthetic speech."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.drift.detectors import SuddenGradualDetector, changepoint, trend
from cloud.drift.scoring import Part, Scorer
from cloud.drift.signals import extract, reference_of
from tests.cloud.drift.population import Population, window

FLOORS = {"input": 0.25, "output": 0.2, "concept": 0.1}


@pytest.fixture(scope="module")
def severity(profile, calibrator):
    """severity(population, n, rng): one window's input severity against the reference."""
    ref = reference_of(profile, "m1")
    scorer = Scorer(calibrator, FLOORS)

    def one(pop: Population, n: int, rng) -> float:
        obs = extract(window(profile, pop.sample(rng, n), device="d0", seq=0, t_start=0.0), ref)
        return scorer.score("input", [Part("m1", ref, obs["input"])]).severity

    return one


def _first_alarm(severities):
    det = SuddenGradualDetector()
    for i, s in enumerate(severities):
        if det.update(s).drift_detected:
            return i, det.pattern, det.onset_index, det.view
    return None


@pytest.mark.parametrize("n", [100, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_step_of_6_db_noise_at_window_20_is_flagged_by_window_22_as_sudden(severity, n, seed):
    # Windows 0-19 healthy, 20-29 with +6 dB noise (SNR -6 dB): every noisy window fails its own
    # check, so the 2-of-3 short view fires on window 21; the change point is window 20.
    rng = np.random.default_rng(seed)
    pops = [Population()] * 20 + [Population(noise_db=6.0)] * 10
    flagged, pattern, onset, view = _first_alarm([severity(p, n, rng) for p in pops])
    assert 20 <= flagged <= 22
    assert (pattern, onset, view) == ("sudden", 20, "short")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_10_db_level_drop_is_sudden_too(severity, seed):
    rng = np.random.default_rng(seed)
    pops = [Population()] * 20 + [Population(gain_db=-10.0)] * 6
    assert _first_alarm([severity(p, 300, rng) for p in pops])[:3] == (21, "sudden", 20)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_linear_noise_ramp_over_40_windows_is_flagged_as_gradual(severity, seed):
    # Windows 0-19 healthy, then noise grows by 0.3 dB per window (to +12 dB at window 59). The
    # first windows fail their checks around window 27-34, after the level has climbed for
    # several windows, so the change point lies well before the first crossing: gradual.
    rng = np.random.default_rng(seed)
    pops = [Population()] * 20 + [Population(noise_db=12.0 * (i + 1) / 40) for i in range(40)]
    flagged, pattern, onset, _ = _first_alarm([severity(p, 300, rng) for p in pops])
    assert 24 <= flagged <= 40 and pattern == "gradual"
    assert 20 <= onset <= flagged - 2


def test_a_slow_ramp_on_small_windows_is_caught_by_the_long_view_first(severity):
    # 0.15 dB per window on 100-utterance windows: single windows stay below their bar while the
    # 30-window slope becomes significant and its fitted line reaches 0.8.
    rng = np.random.default_rng(5)
    pops = [Population()] * 20 + [Population(noise_db=6.0 * (i + 1) / 40) for i in range(40)]
    flagged, pattern, onset, view = _first_alarm([severity(p, 100, rng) for p in pops])
    assert (pattern, view) == ("gradual", "long") and 30 <= flagged <= 59 and onset >= 20


def test_no_false_alarm_in_20000_healthy_windows(profile, calibrator):
    # Per-window severities of reference-drawn windows of 30 to 3,000 utterances, every input
    # signal checked (Bonferroni over 13): the detector must stay silent throughout.
    rng = np.random.default_rng(21)
    ref = reference_of(profile, "m1").signals["input"]
    n = np.exp(rng.uniform(np.log(30), np.log(3000), 20_000)).astype(int)
    sev = np.zeros(len(n))
    for counts in ref.values():
        obs = rng.multinomial(n, counts / counts.sum())
        sev = np.maximum(sev, calibrator.severity_series(counts, obs, len(ref), FLOORS["input"]))
    det = SuddenGradualDetector()
    alarms = sum(det.update(s).drift_detected for s in sev)
    assert alarms == 0
    assert float(np.mean(sev >= 1.0)) <= calibrator.alpha + 3 * np.sqrt(calibrator.alpha / len(sev))


def test_no_false_alarm_on_a_healthy_population_stream(severity):
    rng = np.random.default_rng(22)
    det = SuddenGradualDetector()
    assert not any(det.update(severity(Population(), n, rng)).drift_detected
                   for n in rng.integers(50, 400, 150))


def test_one_bad_window_is_not_drift_and_an_episode_ends():
    det = SuddenGradualDetector()
    for s in [0.3] * 20 + [8.0] + [0.3] * 5:
        assert not det.update(s).drift_detected
    for s in [5.0, 5.0]:
        det.update(s)
    assert det.drift_detected and det.pattern == "sudden" and det.onset_index == 26
    for s in [0.2, 0.2]:
        det.update(s)
    assert not det.drift_detected and det.pattern is None and det.onset_index is None


def test_one_wild_window_after_a_flat_history_is_not_a_trend():
    det = SuddenGradualDetector()
    for s in [0.0] * 20 + [50.0]:
        det.update(s)
    assert not det.drift_detected


def test_drifted_from_the_first_window_is_sudden_at_zero():
    det = SuddenGradualDetector()
    det.update(3.0).update(3.0)
    assert (det.drift_detected, det.pattern, det.onset_index) == (True, "sudden", 0)


def test_river_shape_update_returns_self_properties_are_read_only_and_none_is_skipped():
    det = SuddenGradualDetector(short=3, confirm=2, long=30)
    assert det.update(0.2) is det and det.update(None) is det and det.update(float("nan")) is det
    assert det.n_seen == 1 and (det.short, det.confirm, det.long) == (3, 2, 30)
    with pytest.raises(AttributeError):
        det.drift_detected = True

    class Score:
        severity = 4.0

    det.update(Score()).update(Score())
    assert det.drift_detected
    with pytest.raises(ValueError):
        SuddenGradualDetector(short=2, confirm=3)


def test_changepoint_and_trend_helpers():
    assert changepoint([0.1] * 10 + [3.0] * 5) == 10
    assert changepoint([]) == 0
    t_stat, end = trend([0.1 * i for i in range(10)])
    assert t_stat > 1e6 and end == pytest.approx(0.9)
    t_flat, _ = trend([0.3, 0.31, 0.29, 0.3, 0.32, 0.28])
    assert abs(t_flat) < 3
