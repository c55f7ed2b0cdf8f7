"""A dead microphone as the real gate reports it: windows keep coming, with no utterance at all.

Found on real speech (tests/cloud/drift_e2e): a microphone giving silence or a DC offset makes
webrtcvad pass nothing, so every profile signal of the device is empty and the engine saw no
data ("no data is not health"): no alert. The voiced share of its frames (``speech_frames``),
checked against the other devices of its model, is what tells it apart.
"""
from __future__ import annotations

import numpy as np

from cloud.drift.engine import DriftConfig, DriftEngine
from tests.cloud.drift.population import FakeSource, Population, window

STEP = 60.0
DEVICES = {"d0": {"hall"}, "d1": {"hall"}, "d2": {"hall"}, "d3": {"kitchen"}, "d4": {"kitchen"}}
FRAMES = 2000  # 30 ms frames in a 60 s window


def fleet(profile, voiced, utterances, steps: int = 30, seed: int = 8) -> FakeSource:
    """One window per device and step: ``utterances(d, s)`` utterances, ``voiced(d, s)`` voiced frames."""
    rng = np.random.default_rng(seed)
    src = FakeSource({"m1": profile}, DEVICES)
    for step in range(steps):
        for d in sorted(DEVICES):
            w = window(profile, Population().sample(rng, utterances(d, step)), device=d, seq=step,
                       t_start=step * STEP + 1.0, rng=rng)
            w["software"].update(frames=FRAMES, voiced_frames=voiced(d, step))
            src.add(w)
    return src


def test_a_microphone_that_hears_nothing_raises_its_device_alert_only(profile, calibrator):
    dead = lambda d, s: d == "d3" and s >= 20  # noqa: E731
    src = fleet(profile, lambda d, s: 2 if dead(d, s) else 700, lambda d, s: 0 if dead(d, s) else 120)
    engine = DriftEngine(src, DriftConfig(step_s=STEP, long_steps=12), calibrator=calibrator)
    assert not [f for f in engine.findings(21 * STEP) if f.detected]  # one dead step is not drift yet
    findings = {(f.cohort, f.kind): f for f in engine.findings(22 * STEP)}
    alarms = sorted(key for key, f in findings.items() if f.detected)
    assert alarms == [("device:d3", "input")]
    f = findings[("device:d3", "input")]
    assert f.pattern == "sudden" and f.onset_t == 20 * STEP and f.n == 120  # the short horizon's one live step
    assert f.top[0]["signal"] == "speech_frames" and f.top[0]["n"] == 3 * FRAMES  # the short horizon's frames
    fleet_input = findings[("fleet", "input")]
    assert not fleet_input.detected and fleet_input.excluded == ("d3",)


def test_a_whole_fleet_going_quiet_together_is_no_device_alert(profile, calibrator):
    # night: everyone's voiced share drops tenfold at step 20; peers move together
    src = fleet(profile, lambda d, s: 60 if s >= 20 else 700, lambda d, s: 40 if s >= 20 else 120)
    engine = DriftEngine(src, DriftConfig(step_s=STEP, long_steps=12), calibrator=calibrator)
    findings = engine.findings(26 * STEP)
    assert not [f.cohort for f in findings if f.detected]
    assert all(f.level < 0.7 for f in findings if f.cohort.startswith("device:") and f.kind == "input")
