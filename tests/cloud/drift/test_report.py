"""The drift table over time."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.drift.engine import DriftConfig, DriftEngine
from cloud.drift.report import drift_report
from tests.cloud.drift.population import HEALTHY, Drift, FakeSource, households, play

STEP = 60.0
TAGS = {"d0": {"hall"}, "d1": {"hall"}, "d2": {"kitchen"}, "d3": {"kitchen"}}
CONFIG = DriftConfig(step_s=STEP, concept_step_s=STEP, warmup_s=15 * STEP, settle_s=0.0)


@pytest.fixture(scope="module")
def engine(profile):
    # hall households hear +10 dB noise from step 30; nothing at all is sent during step 35
    rng = np.random.default_rng(31)
    src = FakeSource({"m1": profile}, TAGS)
    homes = households(rng, 4, per_step=(40.0, 60.0))
    play(src, profile, homes, range(40), STEP, rng,
         drift_of=lambda d, s: Drift(noise_db=10.0) if d in ("d0", "d1") and s >= 30 else HEALTHY)
    src.stored = [w for w in src.stored if not 35 * STEP <= w["t_start"] < 36 * STEP]
    return DriftEngine(src, CONFIG)


def test_the_report_shows_when_the_hall_drifted(engine):
    rows = drift_report(engine, "tag:hall", 15 * STEP, 40 * STEP, STEP)
    assert len(rows) == 25 and rows[0]["t_start"] == 15 * STEP and rows[-1]["t_end"] == 40 * STEP
    flags = [r["input_flag"] for r in rows]
    assert not any(flags[:15]) and all(flags[i] == "drift" for i in range(17, 25) if rows[i]["input_cusum"] is not None)
    assert rows[20]["input_n"] == 0  # step 35 sent nothing
    assert max(r["input_severity"] or 0 for r in rows[15:]) > 3 > max(r["input_severity"] or 0 for r in rows[:14])
    assert all(key in rows[0] for key in ("output_severity", "concept_cusum", "concept_flag"))


def test_the_kitchen_stays_healthy_and_cohorts_select_their_devices(engine):
    kitchen = drift_report(engine, "tag:kitchen", 15 * STEP, 40 * STEP, STEP)
    assert not any(r["input_flag"] for r in kitchen)
    one = drift_report(engine, "device:d0", 20 * STEP, 24 * STEP, STEP)
    both = drift_report(engine, "tag:hall", 20 * STEP, 24 * STEP, STEP)
    assert 0 < one[0]["input_n"] < both[0]["input_n"]
    coarse = drift_report(engine, "fleet", 0.0, 40 * STEP, 600.0)
    assert len(coarse) == 4 and coarse[0]["input_n"] == sum(r["input_n"] for r in drift_report(engine, "fleet", 0.0, 600.0, STEP))


def test_bad_reports_are_refused(engine):
    with pytest.raises(ValueError, match="cohort"):
        drift_report(engine, "region:eu", 0.0, 60.0, 60.0)
    with pytest.raises(ValueError, match="until_t"):
        drift_report(engine, "fleet", 60.0, 0.0, 60.0)
    with pytest.raises(ValueError, match="too many"):
        drift_report(engine, "fleet", 0.0, 1e9, 1.0)
