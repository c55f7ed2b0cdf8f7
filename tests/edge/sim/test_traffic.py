"""Traffic: the diurnal profile's busy/quiet factor and daily count, counted from real streams."""
from __future__ import annotations

import numpy as np
import pytest

from edge.sim.audio import DeviceStream, Timeline, device_stream
from edge.sim.households import cast
from edge.sim.scenarios import ScenarioParams
from edge.sim.traffic import (BUSY_HOURS, QUIET_HOURS, DiurnalTraffic, expected_utterances_per_day, make_traffic,
                              mean_gap_s, rate_factor)
from shared.audio import SAMPLE_RATE as SR
from shared.errors import ConfigError

DAYS = 60


def _starts_by_local_hour(pool, device: int, traffic: DiurnalTraffic, days: int) -> tuple[np.ndarray, float]:
    """Local hour at which each clip started over ``days`` audio days, and the mean clip length."""
    timeline = Timeline(keep_s=(days + 1) * 86400.0)
    stream = DeviceStream(pool, 3, device, traffic=traffic, timeline=timeline)
    for _ in range(days * 24):
        stream.skip(3600 * SR)
    spans = [sp for sp in timeline.spans() if sp.start < days * 86400 * SR]
    starts = np.array([sp.start for sp in spans]) / SR
    return traffic.local_hour(starts), float(np.mean([(sp.end - sp.start) / SR for sp in spans]))


def test_the_profile_is_busy_in_the_morning_and_evening_and_quiet_at_night():
    np.testing.assert_allclose(mean_gap_s(np.linspace(*BUSY_HOURS, 7)), 3.0)
    np.testing.assert_allclose(mean_gap_s(np.linspace(*QUIET_HOURS, 7)), 120.0)
    assert mean_gap_s(8.5) == pytest.approx(3.0) and mean_gap_s(12.5) < mean_gap_s(14.5) < mean_gap_s(22.5)
    assert mean_gap_s(23.99) == pytest.approx(mean_gap_s(-0.01))  # the day wraps smoothly
    assert rate_factor() == pytest.approx(30.25)
    # the default talk fraction makes a few thousand utterances a device-day, not 45,000
    assert 2000 < expected_utterances_per_day() < 3500
    assert expected_utterances_per_day(1.0) == pytest.approx(expected_utterances_per_day(0.3) / 0.3)


@pytest.mark.parametrize("device", [0, 1])
def test_busy_hours_start_the_documented_factor_more_utterances_than_quiet_ones(pool, device):
    traffic = DiurnalTraffic(3, device, start_tod_s=5 * 3600.0)
    hours, clip_s = _starts_by_local_hour(pool, device, traffic, DAYS)
    busy = np.count_nonzero((hours >= BUSY_HOURS[0]) & (hours < BUSY_HOURS[1])) / (BUSY_HOURS[1] - BUSY_HOURS[0])
    quiet = np.count_nonzero((hours >= QUIET_HOURS[0]) & (hours < QUIET_HOURS[1])) / (QUIET_HOURS[1] - QUIET_HOURS[0])
    expected = rate_factor(traffic.activity, clip_s)
    assert 15 < expected < 60
    # sessions make the counts lumpy (sd ~10 % of the ratio over 60 days): 30 % tells the factor from half
    # or twice it
    assert busy / quiet == pytest.approx(expected, rel=0.3)
    per_day = len(hours) / DAYS
    assert per_day == pytest.approx(expected_utterances_per_day(0.3, traffic.activity, clip_s), rel=0.15)


def test_devices_differ_in_phase_and_activity_and_the_seed_fixes_both():
    devices = [DiurnalTraffic(0, i) for i in range(200)]
    phases = np.array([d.phase_s for d in devices]) / 3600.0
    activity = np.array([d.activity for d in devices])
    assert 0.7 < phases.std() < 1.3 and np.abs(phases).max() <= 2.0
    assert 0.2 < np.log(activity).std() < 0.4 and activity.min() >= 0.5 and activity.max() <= 2.0
    again = DiurnalTraffic(0, 7)
    assert (again.phase_s, again.activity) == (devices[7].phase_s, devices[7].activity)


def test_household_streams_with_diurnal_traffic_are_the_same_in_any_chunking_and_when_skipped(pool):
    casting = cast(pool.speakers, speaker_split="all", split_names=None, speakers_per_device=(1, 3),
                   params=ScenarioParams(), seed=9)

    def stream():
        traffic = make_traffic("diurnal", 9, 2, start_tod_s=18 * 3600.0, talk_fraction=1.0)
        return device_stream(pool, ScenarioParams(), casting, seed=9, device_index=2, targeted=False,
                             traffic=traffic)

    total = 400 * SR
    a = np.concatenate([stream().take(total)])
    s = stream()
    b = np.concatenate([s.take(min(4096, total - i)) for i in range(0, total, 4096)])
    np.testing.assert_array_equal(a, b)
    c = stream()
    c.skip(123_457)
    np.testing.assert_array_equal(c.take(total - 123_457), a[123_457:])
    assert np.abs(a).max() > 0.05  # there is speech in it (evening, always talking)
    assert {sp.speaker for sp in s.timeline.spans() if sp.label != "_silence_"} <= set(casting.household(2))


def test_bad_traffic_settings_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="talk_fraction must be in"):
        DiurnalTraffic(0, 0, talk_fraction=0.0)
    with pytest.raises(ConfigError, match="constant, diurnal"):
        make_traffic("weekly", 0, 0)
