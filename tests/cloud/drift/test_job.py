"""The collector's drift job on a real SQLite store: alerts persist, hysteresis survives restarts."""
from __future__ import annotations

import numpy as np

from cloud.drift.engine import DriftConfig
from cloud.drift.job import DriftJob
from cloud.store import open_store
from tests.cloud.drift.population import Population, window

STEP = 60.0
T0 = 1_767_225_600.0


def test_the_job_opens_and_resolves_alerts_in_the_store(tmp_path, profile):
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    rng = np.random.default_rng(51)
    store.tag("a", ["x"])
    store.tag("b", ["x"])
    windows = [window(profile, (Population(noise_db=6.0) if 20 <= step < 28 else Population()).sample(rng, 150),
                      device=device, seq=step, t_start=T0 + step * STEP + 1.0, rng=rng)
               for step in range(40) for device in ("a", "b")]
    store.insert_windows(windows, received_t=T0)
    config = DriftConfig(step_s=STEP, concept_step_s=STEP, long_steps=12)

    def run(job, k):
        """The job at the end of step k; returns the fleet input alert row, if any."""
        job(store, T0 + (k + 1) * STEP)
        rows = store.alerts(cohort="fleet")
        return next((r for r in rows if r["signal"] == "input"), None)

    job = DriftJob(profile_of={"m1": profile}.get, config=config)
    assert run(job, 19) is None
    assert job(store, T0 + 20 * STEP + 30.0) == []  # not due yet: every_s = step_s
    opened = run(job, 21)
    assert opened["status"] == "open" and opened["pattern"] == "sudden"
    assert opened["evidence"]["top"][0]["signal"] == "snr_db" and opened["evidence"]["severity"] >= 1
    assert {s["signal"] for s in job.latest_scores() if s["cohort"] == "fleet"} == {"input", "output", "concept"}
    for k in range(22, 30):
        row = run(job, k)
        assert row["status"] == "open"
    # healthy from step 28: by step 29 the streak has begun, and it is kept in the store
    streak = row["evidence"]["healthy_streak"]
    assert 1 <= streak < 3
    job = DriftJob(profile_of={"m1": profile}.get, config=config)  # a restarted collector
    statuses = {k: run(job, k)["status"] for k in range(30, 34)}
    resolved_at = min(k for k, status in statuses.items() if status == "resolved")
    assert resolved_at == 29 + (3 - streak)  # the streak carried over the restart
    assert len([r for r in store.alerts(cohort="fleet") if r["signal"] == "input"]) == 1
    store.close()
