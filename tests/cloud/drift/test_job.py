"""The collector's drift job on a real SQLite store: it reads rollups, alerts persist, and
hysteresis survives restarts."""
from __future__ import annotations

import numpy as np

from cloud.drift.engine import DriftConfig
from cloud.drift.job import DriftJob
from cloud.store import open_store
from tests.cloud.drift.population import HEALTHY, Drift, FakeSource, households, play

STEP = 60.0
T0 = 1_767_225_600.0
CONFIG = DriftConfig(step_s=STEP, concept_step_s=STEP, warmup_s=20 * STEP, settle_s=0.0)


def test_the_job_opens_and_resolves_alerts_in_the_store(tmp_path, profile):
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    rng = np.random.default_rng(51)
    src = FakeSource({"m1": profile})
    homes = households(rng, 4, per_step=(40.0, 60.0))
    play(src, profile, homes, range(70), STEP, rng, t0=T0,
         drift_of=lambda d, s: Drift(gain_db=-20.0) if 40 <= s < 48 else HEALTHY)
    store.insert_windows(src.stored, received_t=T0)
    assert store.rollup(int(STEP), retention_full_s=86400.0 * 10, now=T0 + 70 * STEP).rolled == len(src.stored)

    def run(job, k):
        """The job at the end of step k; returns the fleet input alert row, if any."""
        job(store, T0 + (k + 1) * STEP)
        rows = store.alerts(cohort="fleet")
        return next((r for r in rows if r["signal"] == "input"), None)

    job = DriftJob(profile_of={"m1": profile}.get, config=CONFIG, bucket_s=int(STEP))
    assert all(run(job, k) is None for k in range(20, 40))
    assert job(store, T0 + 40 * STEP + 30.0) == []  # not due yet: every_s = step_s
    opened = next(r for k in range(40, 43) if (r := run(job, k)) is not None)
    assert opened["status"] == "open" and opened["pattern"] == "sudden"
    assert opened["evidence"]["onset_t"] >= T0 + 40 * STEP and opened["evidence"]["severity"] >= 1
    assert {s["signal"] for s in job.latest_scores() if s["cohort"] == "fleet"} == {"input", "output", "concept"}
    statuses = []
    for k in range(43, 56):
        statuses.append(run(job, k)["status"])
        if statuses[-1] == "resolved":
            break
        if k == 50:
            job = DriftJob(profile_of={"m1": profile}.get, config=CONFIG, bucket_s=int(STEP))  # a restart
    assert statuses[-1] == "resolved" and statuses.count("resolved") == 1
    assert len([r for r in store.alerts(cohort="fleet") if r["signal"] == "input"]) == 1
    store.close()
