"""Session fixtures of the drift acceptance tests: a real lab bundle, the healthy CI fleet, a rig.

``households_lab`` is the model lab's own output, as ``harken model train`` builds it: real
espeak-ng speech of 42 voices (3 accents x 14 variants), speaker-disjoint splits (7 test
voices, 6 dev voices), a trained model, and the reference profile v2 of the dev stream (chunks by
speaker, accuracy and calibration from the test stream, the split's speaker names). Nothing in
these tests re-signs or re-profiles it.

``healthy_fleet`` runs the CI fleet (``offline.FLEET``: 6 devices of test-split households,
8 simulated hours from 17:00, diurnal traffic) once through the offline harness and replays its
windows into a store step by step through the drift job. The healthy-fleet test judges that
replay; the scenario tests reuse its windows (see ``offline``), their targeted devices simulated
(``scenarios``) in worker processes beside it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from cloud.lab.fixtures import TinyLab, tiny_dataset_and_bundle
from edge.sim.offline import run_offline
from tests.cloud.drift_e2e import offline
from tests.cloud.drift_e2e.cases import Scenarios
from tests.cloud.drift_e2e.rig import WINDOW_S, Rig

HOUSEHOLD_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "adam")
PER_WORD = 24  # 312 clips: ~7 per voice


@pytest.fixture(scope="session")
def households_lab(tmp_path_factory) -> TinyLab:
    """A lab bundle whose test split holds enough voices (7) that households of 1-3 differ."""
    return tiny_dataset_and_bundle(tmp_path_factory.mktemp("households-lab"), per_word=PER_WORD,
                                   variants=HOUSEHOLD_VARIANTS)


@dataclass
class HealthyFleet:
    lab: TinyLab
    spec: offline.FleetSpec
    ids: list[str]
    windows: list[dict]
    summary: dict
    replay: offline.Replay
    timings: dict

    @property
    def steps(self) -> int:
        return int(round(self.spec.hours * 3600.0 / offline.STEP_S))


@pytest.fixture(scope="session")
def scenarios(households_lab):
    """Every scenario's targeted devices, simulated in the background from the session's start."""
    s = Scenarios(households_lab)
    yield s
    s.close()


@pytest.fixture(scope="session")
def healthy_fleet(households_lab, scenarios, tmp_path_factory) -> HealthyFleet:
    """(Asks for ``scenarios`` so that their simulations run beside this one.)"""
    spec = offline.FLEET
    t = time.perf_counter()
    run = run_offline(spec.plan(households_lab))
    windows = list(run)
    sim_s = time.perf_counter() - t
    ids = run.plan.ids
    t = time.perf_counter()
    replay = offline.Replay(tmp_path_factory.mktemp("healthy-fleet"), households_lab, windows, spec.tag_map(ids))
    replay.run(range(1, int(round(spec.hours * 3600.0 / offline.STEP_S)) + 1))
    timings = {"simulate_s": round(sim_s, 1), "sim_cpu_s": run.summary["cpu_s"],
               "replay_s": round(time.perf_counter() - t, 1)}
    yield HealthyFleet(households_lab, spec, ids, windows, run.summary, replay, timings)
    replay.close()


@pytest.fixture
def rig(households_lab, mosquitto, tmp_path):
    t0 = (time.time() // 3600.0) * 3600.0 - 6 * 3600.0  # a recent past, within the store's retention
    r = Rig(broker_url=mosquitto.url, broker_port=mosquitto.port, root=tmp_path,
            bundle=households_lab.released_bundle_path, public_key=households_lab.public_key_path,
            release_key=households_lab.release_public_key_path, t0=t0, window_s=WINDOW_S)
    yield r
    r.close()
