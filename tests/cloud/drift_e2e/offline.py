"""Drift on simulated time: the offline harness's windows replayed into a real store, step by step.

The CI fleet (``FLEET``) is ``edge.sim.offline``'s: real pipelines (the lab's bundle, the real
gate) on test-split households of 1-3 speakers, diurnal traffic, its clock starting at 17:00
local time so the warm-up and the onsets fall in the busy evening and the monitoring runs on
into the quiet night. ``Replay`` plays the windows into a real SQLite store as the collector
would receive them — the windows that ended by the end of step k, then ``Store.rollup`` and the
collector's ``DriftJob`` (a real ``Registry`` holds the bundle) at ``end + settle_s`` — and
records what the alert state machine did at each step.

Scenario runs reuse the healthy run: a device's audio, gate and model are seeded by
``(seed, device)``, so a device the scenario does not target sends exactly the healthy run's
windows, and a targeted one does until the onset (``same_until`` checks it). Only the targeted
devices are simulated again (``simulate``, in worker processes: ``cases.Scenarios``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

from cloud.drift.alerts import Alert, Finding
from cloud.drift.engine import DriftConfig
from cloud.drift.job import DriftJob
from cloud.registry import Registry
from cloud.store import open_store
from edge.sim.offline import OfflinePlan
from edge.sim.offline_device import OfflineWorker, window_order
from edge.sim.scenarios import ScenarioParams
from shared import keys

DAY_S = 86400.0
EPOCH = 1_767_225_600.0 + 17 * 3600.0  # 2026-01-01 17:00 UTC: local time of day = UTC in the simulator
STEP_S = 300.0  # drift step = rollup bucket
BUCKET_S = 300
WINDOW_S = 60.0
WARMUP_S = 3 * 3600.0  # shortened from the default 12 h for CI (a time setting; the budget is the default)
RETENTION_S = 2 * DAY_S
TIMING = ("cpu_s", "rss_mb", "latency_ms")  # wall-clock fields of a window: the only ones runs may differ in
CONFIG = DriftConfig(step_s=STEP_S, warmup_s=WARMUP_S)
WARM_STEPS = int(WARMUP_S // STEP_S)


@dataclass(frozen=True)
class FleetSpec:
    """The CI fleet. Six devices: a broken one still has the five peers its peer check needs.
    ``talk_fraction`` 0.5 (the simulator's default is 0.3): households talk in half of their
    10-minute slots, so every device fills its 3 h warm-up with the 8 blocks of 30 utterances a
    baseline needs (at 0.3, four of six took 3.75-5.25 h: they speak in too few slots)."""

    devices: int = 6
    hours: float = 8.0
    seed: int = 0
    talk_fraction: float = 0.5
    tags: tuple[tuple[str, tuple[int, ...]], ...] = (("hall", (0, 1, 2)), ("kitchen", (3, 4, 5)))

    def plan(self, lab, scenario: ScenarioParams = ScenarioParams(), hours: float | None = None,
             processes: int = 2) -> OfflinePlan:
        return OfflinePlan(devices=self.devices, data_dir=str(lab.data_dir), bundle=str(lab.bundle_path),
                           trust_keys=(str(lab.public_key_path),), hours=self.hours if hours is None else hours,
                           window_s=WINDOW_S, epoch=EPOCH, seed=self.seed, scenario=scenario,
                           speakers_per_device=(1, 3), speaker_split="test", traffic="diurnal",
                           talk_fraction=self.talk_fraction, processes=processes)

    def tag_map(self, ids: list[str]) -> dict[str, list[str]]:
        return {tag: [ids[i] for i in members if i < len(ids)] for tag, members in self.tags}


FLEET = FleetSpec()


def step_of(t: float) -> float:
    return (t - EPOCH) / STEP_S


def content(window: dict) -> dict:
    """A window without its wall-clock fields."""
    w = copy.deepcopy(window)
    for key in TIMING:
        w["software"].pop(key, None)
    return w


def simulate(plan: OfflinePlan, indices: list[int]) -> list[dict]:
    """Every window of devices ``indices`` of ``plan`` (the harness's own worker, in this process)."""
    return [w for batch in OfflineWorker(plan, indices).steps() for w in batch]


def utterances_by_step(windows: list[dict]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for w in windows:
        k = int(step_of(w["t_start"]))
        per = out.setdefault(w["device"], {})
        per[k] = per.get(k, 0) + w["software"]["utterances"]
    return out


@dataclass
class Replay:
    """A store, a registry and the collector's drift job, fed the windows one step at a time."""

    root: Path
    lab: object
    windows: list[dict]
    tags: dict[str, list[str]]
    config: DriftConfig = CONFIG
    opened: dict[tuple[str, str], tuple[int, Alert]] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)  # id → as it stands now
    findings: dict[int, list[Finding]] = field(default_factory=dict)  # step → that evaluation's findings
    ready: dict[str, int] = field(default_factory=dict)  # device → first step its baseline held speech

    def __post_init__(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = open_store(f"sqlite:///{self.root / 'harken.db'}")
        registry_dir = self.root / "registry"
        record, _ = Registry(self.store, registry_dir, [keys.load_public_key(self.lab.public_key_path)]).register(
            self.lab.bundle_path)
        self.model = record.sha256
        for tag, devices in self.tags.items():
            for device in devices:
                self.store.tag(device, [tag])
        self.job = DriftJob(registry_dir=str(registry_dir), config=self.config, bucket_s=BUCKET_S)
        self.windows = sorted(self.windows, key=window_order)
        self._next = 0

    def run(self, steps: range) -> "Replay":
        for k in steps:
            self.step(k)
        return self

    def step(self, k: int) -> None:
        """Step k ends at ``EPOCH + k * STEP_S``: its windows arrive, then maintenance runs."""
        end = EPOCH + k * STEP_S
        batch = []
        while self._next < len(self.windows) and self.windows[self._next]["t_start"] + WINDOW_S <= end:
            batch.append(self.windows[self._next])
            self._next += 1
        self.store.insert_windows(batch, received_t=end)
        now = end + self.config.settle_s
        self.store.rollup(BUCKET_S, RETENTION_S, now=now)
        for change in self.job(self.store, now):
            self.alerts[change.alert.id] = change.alert
            if change.change == "opened":
                self.opened.setdefault(change.alert.key, (k, change.alert))
        self.findings[k] = list(self.job.last_findings)
        self._note_baselines(k, now)

    def _note_baselines(self, k: int, now: float) -> None:
        book = self.job.engine.baselines
        for f in self.findings[k]:
            device = f.cohort.split(":", 1)[1] if f.cohort.startswith("device:") else None
            if device is None or device in self.ready:
                continue
            base = book.get(device, self.model, now)  # what the evaluation just used (cached: no new learning)
            if base is not None and base.get("input", "utterance_ms") is not None:
                self.ready[device] = k

    def finding(self, k: int, cohort: str, kind: str) -> Finding | None:
        return next((f for f in self.findings.get(k, []) if f.cohort == cohort and f.kind == kind), None)

    def max_level(self, steps=None, prefix: str = "") -> dict[str, float]:
        """Highest ``level`` per kind over the given steps, for cohorts starting with ``prefix``."""
        out: dict[str, float] = {}
        for k, found in self.findings.items():
            if steps is not None and k not in steps:
                continue
            for f in found:
                if f.level is not None and f.cohort.startswith(prefix):
                    out[f.kind] = max(out.get(f.kind, 0.0), f.level)
        return out

    def close(self) -> None:
        self.store.close()


def same_until(a: list[dict], b: list[dict], device: str, until_t: float) -> bool:
    """Whether ``device``'s windows starting before ``until_t`` are the same in both runs."""
    def mine(ws):
        return [content(w) for w in ws if w["device"] == device and w["t_start"] < until_t]

    return mine(a) == mine(b) and len(mine(a)) > 0


def with_scenario(healthy: list[dict], targeted: list[dict], targets: set[str], end_t: float) -> list[dict]:
    """The scenario's windows: the healthy run's for the devices it leaves alone, up to ``end_t``."""
    return [w for w in healthy if w["device"] not in targets and w["t_start"] < end_t] + targeted


def scenario_params(name: str, onset_step: int, **kw) -> ScenarioParams:
    return replace(ScenarioParams(name=name, onset_s=onset_step * STEP_S), **kw).check()
