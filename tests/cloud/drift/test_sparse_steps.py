"""A quiet cohort (fewer utterances per step than a check needs) still gets a step called a step.

Found on real speech (tests/cloud/drift_e2e): 30 s windows of the lab's stream hold ~18
utterances, below the 30 a signal check needs, so every per-step severity was skipped and the
sudden/gradual detector saw nothing. A 12 dB level drop then went unflagged until the merged
long horizon failed, 20 steps later, and was called "gradual" with its onset at the first step
of the look-back. The engine now merges consecutive steps until a detector point holds enough
data, so the detector sees the step.
"""
from __future__ import annotations

import numpy as np

from cloud.drift.engine import DriftConfig, DriftEngine
from tests.cloud.drift.population import FakeSource, Population, window

STEP = 60.0
ONSET = 20


def quiet_device(profile, steps: int, n: int, seed: int = 3) -> FakeSource:
    """One device, one window of ``n`` utterances per step; the level drops 12 dB from ``ONSET``."""
    rng = np.random.default_rng(seed)
    src = FakeSource({"m1": profile})
    for step in range(steps):
        pop = Population(gain_db=-12.0) if step >= ONSET else Population()
        src.add(window(profile, pop.sample(rng, n), device="d", seq=step, t_start=step * STEP + 1.0, rng=rng))
    return src


def first_detection(engine: DriftEngine, steps: int):
    for k in range(ONSET, steps):
        f = {x.cohort: x for x in engine.findings((k + 1) * STEP) if x.kind == "input"}["device:d"]
        if f.detected:
            return k, f
    return None, None


def test_a_step_on_a_quiet_device_is_flagged_within_three_detector_points_as_sudden(profile, calibrator):
    # 18 utterances per step: points of 2 merged steps (36 >= 30), so 3 points are 6 steps
    engine = DriftEngine(quiet_device(profile, 40, n=18), DriftConfig(step_s=STEP, long_steps=30),
                         calibrator=calibrator)
    k, f = first_detection(engine, 40)
    assert k is not None and k <= ONSET + 5, f"flagged at step {k}"
    assert f.pattern == "sudden" and f.horizon == "short"
    assert ONSET - 1 <= f.onset_t / STEP <= ONSET  # the 2-step point holding the first changed step


def test_busy_steps_keep_one_detector_point_per_step(profile, calibrator):
    engine = DriftEngine(quiet_device(profile, 26, n=60), DriftConfig(step_s=STEP, long_steps=12),
                         calibrator=calibrator)
    k, f = first_detection(engine, 26)
    assert k in (ONSET + 1, ONSET + 2) and f.pattern == "sudden" and f.onset_t == ONSET * STEP
