"""The scenarios of the acceptance tests on the CI fleet, and when each one begins.

A scenario acts on its targeted devices (``ScenarioParams.targets``: a seeded choice) from an
onset at a step boundary: the end of the warm-up (``ONSET_STEP``), so every scenario is
simulated from the start of the session, beside the healthy run. "Flagged within 3 steps of
onset" is a claim about evidence, so ``check_onset`` holds each scenario to what it needs and
says so when the healthy run does not give it: at the onset every targeted device is judged
against a baseline that holds its speech, and — for a change the devices can only show in their
speech (every one but the broken microphone) — each of them says at least ``MIN_TALK``
utterances in the first three changed steps (traffic comes in talking sessions, so a device may
be silent for a quarter of an hour). A broken microphone shows in the noise floor, heard every
step.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from edge.sim.offline import OfflinePlan
from edge.sim.scenarios import ScenarioParams
from tests.cloud.drift_e2e import offline

MIN_TALK = 30  # utterances each target says in the first three changed steps (one block: DriftConfig.min_n)
WITHIN = 3  # steps
ONSET_STEP = offline.WARM_STEPS


@dataclass(frozen=True)
class Case:
    name: str  # the simulator's scenario
    params: dict = field(default_factory=dict)
    affected: float | None = None
    speech: bool = True  # whether onsets wait for the targets' speech baselines and talk
    post_steps: int = WITHIN + 1  # steps simulated after the onset

    def scenario(self, onset_step: int) -> ScenarioParams:
        return offline.scenario_params(self.name, onset_step, affected=self.affected, **self.params)


CASES = {
    "sudden-noise": Case("sudden-noise", {"snr_db": 5.0}, affected=0.34),
    "level-drop": Case("level-drop", {"gain_db": -20.0}, affected=0.34),
    "band-limit": Case("band-limit", affected=0.17),
    "new-speakers": Case("new-speakers", affected=0.34),
    "broken-silence": Case("broken-device", {"fault": "silence"}, speech=False),
    "broken-dc": Case("broken-device", {"fault": "dc"}, speech=False),
    # noise from 30 dB below the speech level down to 5 dB over two hours
    "gradual-noise": Case("gradual-noise", {"start_snr_db": 30.0, "snr_db": 5.0, "ramp_s": 7200.0},
                          affected=0.34, post_steps=24),
}


@dataclass
class Setup:
    """One scenario on the CI fleet: whom it targets, when it begins, what was simulated."""

    key: str
    case: Case
    targets: list[str]
    onset_step: int
    plan: OfflinePlan
    futures: list[Future]

    @property
    def end_step(self) -> int:
        return self.onset_step + self.case.post_steps

    @property
    def onset_t(self) -> float:
        return offline.EPOCH + self.onset_step * offline.STEP_S

    def windows(self) -> list[dict]:
        return [w for f in self.futures for w in f.result()]


def check_onset(setup: "Setup", ready: dict[str, int], windows: list[dict]) -> None:
    """The healthy run gives the scenario what its claim needs (module docstring), or say what is missing."""
    late = {d: ready.get(d) for d in setup.targets if ready.get(d, 10 ** 9) > setup.onset_step}
    assert not late, f"{setup.key}: targets {late} had no speech baseline by the onset step {setup.onset_step}"
    if setup.case.speech:
        talk = offline.utterances_by_step(windows)
        said = {d: sum(talk.get(d, {}).get(k, 0) for k in range(setup.onset_step, setup.onset_step + WITHIN))
                for d in setup.targets}
        assert min(said.values()) >= MIN_TALK, f"{setup.key}: targets say too little after the onset {said}"


class Scenarios:
    """Every case's targets simulated from the start, over a pool of spawned workers (a task per device)."""

    def __init__(self, lab, spec: offline.FleetSpec = offline.FLEET, processes: int = 2):
        self.pool = ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn"))
        ids = spec.plan(lab).ids
        self.setups: dict[str, Setup] = {}
        for key, case in CASES.items():
            indices = case.scenario(ONSET_STEP).targets(spec.devices, spec.seed)
            hours = (ONSET_STEP + case.post_steps) * offline.STEP_S / 3600.0
            plan = spec.plan(lab, case.scenario(ONSET_STEP), hours=hours)
            futures = [self.pool.submit(offline.simulate, plan, [i]) for i in indices]
            self.setups[key] = Setup(key, case, [ids[i] for i in indices], ONSET_STEP, plan, futures)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
