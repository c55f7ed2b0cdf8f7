"""The drift score table over time."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.drift.engine import DriftConfig
from cloud.drift.report import drift_report
from tests.cloud.drift.population import FakeSource, Population, window

STEP = 60.0
TAGS = {"d0": {"hall"}, "d1": {"hall"}, "d2": {"kitchen"}, "d3": {"kitchen"}}


@pytest.fixture(scope="module")
def source(profile):
    # hall devices get +6 dB noise from step 20; nothing at all is sent during step 25
    rng = np.random.default_rng(31)
    src = FakeSource({"m1": profile}, TAGS)
    for step in range(30):
        if step == 25:
            continue
        for device, tags in sorted(TAGS.items()):
            pop = Population(noise_db=6.0) if "hall" in tags and step >= 20 else Population()
            src.add(window(profile, pop.sample(rng, 150), device=device, seq=step, t_start=step * STEP + 1.0,
                           rng=rng))
    return src


def test_the_report_shows_when_and_how_the_hall_drifted(source, calibrator):
    rows = drift_report(source, "tag:hall", 0.0, 30 * STEP, STEP, calibrator=calibrator)
    assert len(rows) == 30 and rows[0]["t_start"] == 0.0 and rows[-1]["t_end"] == 30 * STEP
    sev = [r["input_severity"] for r in rows]
    assert all(s < 1 for s in sev[:20]) and all(s >= 1 for s in sev[20:25] + sev[26:])
    assert sev[25] is None and rows[25]["input_n"] == 0
    assert [r["input_flag"] for r in rows[:21]] == [""] * 21
    assert all(r["input_flag"] == "sudden" for r in rows[21:])
    assert rows[22]["input_top"] == "snr_db" and rows[22]["input_top_score"] > 0.2
    assert rows[5]["input_n"] == 300 and rows[5]["output_n"] == 300
    assert all(key in rows[0] for key in ("output_severity", "concept_severity", "concept_flag"))


def test_the_kitchen_stays_healthy_and_cohorts_select_their_devices(source, calibrator):
    kitchen = drift_report(source, "tag:kitchen", 0.0, 30 * STEP, STEP, calibrator=calibrator)
    assert all(r["input_severity"] is None or r["input_severity"] < 1 for r in kitchen)
    assert not any(r["input_flag"] for r in kitchen)
    one = drift_report(source, "device:d0", 20 * STEP, 24 * STEP, STEP, calibrator=calibrator)
    assert [r["input_n"] for r in one] == [150] * 4
    by_model = drift_report(source, "model:m", 0.0, 2 * STEP, STEP, calibrator=calibrator)
    assert [r["input_n"] for r in by_model] == [600, 600]
    coarse = drift_report(source, "fleet", 0.0, 30 * STEP, 600.0, config=DriftConfig(), calibrator=calibrator)
    assert len(coarse) == 3 and coarse[0]["input_n"] == 6000


def test_bad_reports_are_refused(source):
    with pytest.raises(ValueError, match="cohort"):
        drift_report(source, "region:eu", 0.0, 60.0, 60.0)
    with pytest.raises(ValueError, match="until_t"):
        drift_report(source, "fleet", 60.0, 0.0, 60.0)
    with pytest.raises(ValueError, match="too many"):
        drift_report(source, "fleet", 0.0, 1e9, 1.0)
