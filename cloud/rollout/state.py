"""The persisted rollout: everything the controller needs to pick up where it left off.

A rollout is a plain dataclass that round-trips through JSON (``to_dict`` / ``from_dict``),
so a collector restarted mid-stage reloads it and carries on: the stage, when it started,
which desired state each device was sent, when, how often, and whether it got there.

Statuses::

    pending ─► running ─► (awaiting_approval ─►) running … ─► completed
                  │  ▲                                           │
                  ▼  │ resume                                    ▼ rollback
                paused                                       rolled_back
    any active ─► rolled_back (a gate failed) · failed (devices failed) · aborted (operator)

After a terminal status that changed desired states (rollback, abort, failure, or the end of
a shadow-only plan) the controller keeps re-sending until every device reports or gives up;
``settled`` says that is done.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from cloud.delivery import DesiredTarget
from cloud.rollout.gates import Gates
from cloud.rollout.plan import Stage, step_count
from shared.config import setting

STATUSES = ("pending", "running", "paused", "awaiting_approval", "completed", "rolled_back", "aborted", "failed")
ACTIVE = frozenset({"pending", "running", "paused", "awaiting_approval"})
TERMINAL = frozenset({"completed", "rolled_back", "aborted", "failed"})
APPROVALS = ("auto", "manual")


@dataclass
class Policy:
    """Delivery deadlines, retries and failure thresholds of one rollout."""

    deadline_s: float = setting(120.0, "A device must report the desired model within this many seconds.",
                                ge=0.1, le=86400 * 7)
    max_attempts: int = setting(3, "Desired-state sends per device before it counts as failed.", ge=1, le=100)
    backoff: float = setting(2.0, "Each retry waits this many times longer than the one before.", ge=1.0, le=10.0)
    max_failed_fraction: float = setting(0.2, "More failed devices than this share of a stage fails the rollout.",
                                         ge=0.0, le=1.0)
    stage_timeout_s: float = setting(0.0, "A stage still short of samples after this long fails (0 = wait "
                                          "forever).", ge=0.0, le=86400 * 30)

    def deadline_after(self, attempt: int) -> float:
        """Seconds to wait after send number ``attempt`` (1-based)."""
        return self.deadline_s * self.backoff ** (attempt - 1)


@dataclass
class Track:
    """One device's progress towards the desired state it was last sent."""

    target: DesiredTarget
    status: str = "converged"  # converged | pending | failed
    stage: int = -1  # the stage that sent it (-1: the baseline or a revert)
    sent_t: float | None = None
    deadline_t: float | None = None
    attempts: int = 0
    reason: str = ""
    hard: bool = False  # failed by a device event (not retried), rather than by a deadline
    converged_t: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target"] = self.target.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Track":
        return cls(**{**d, "target": DesiredTarget(**d["target"])})


@dataclass
class Rollout:
    id: str
    model: str
    model_label: str
    cohort: str
    plan: list[Stage]
    devices: list[str]  # in assignment order
    baseline: dict[str, DesiredTarget]
    gates: Gates = field(default_factory=Gates)
    policy: Policy = field(default_factory=Policy)
    approval: str = "auto"
    status: str = "pending"
    stage: int = 0
    stage_started_t: float | None = None
    created_t: float = 0.0
    updated_t: float = 0.0
    tracks: dict[str, Track] = field(default_factory=dict)
    verdicts: list[dict] = field(default_factory=list)  # the latest verdict of each stage reached
    reason: str = ""
    paused_t: float | None = None
    resume_status: str | None = None
    settled: bool = True
    control_ref: dict | None = None

    def __post_init__(self):
        for d in self.devices:
            self.tracks.setdefault(d, Track(target=self.baseline[d]))

    @property
    def current_stage(self) -> Stage:
        return self.plan[min(self.stage, len(self.plan) - 1)]

    def stage_devices(self, index: int | None = None) -> list[str]:
        stage = self.plan[self.stage if index is None else index]
        return self.devices[:step_count(stage.percent, len(self.devices))]

    def control_devices(self) -> list[str]:
        return self.devices[len(self.stage_devices()):]

    def target_for(self, device: str, index: int) -> DesiredTarget:
        """What ``device`` should run during stage ``index``."""
        base = self.baseline[device]
        if device not in self.stage_devices(index):
            return base
        stage = self.plan[index]
        if stage.kind == "shadow":
            return DesiredTarget(active=base.active, shadow=self.model, automation=base.automation)
        return DesiredTarget(active=self.model, shadow=None, automation=stage.automation or base.automation)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["plan"] = [s.as_dict() for s in self.plan]
        d["baseline"] = {k: v.as_dict() for k, v in self.baseline.items()}
        d["gates"] = asdict(self.gates)
        d["policy"] = asdict(self.policy)
        d["tracks"] = {k: v.to_dict() for k, v in self.tracks.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "Rollout":
        d = dict(d)
        d["plan"] = [Stage(**s) for s in d["plan"]]
        d["baseline"] = {k: DesiredTarget(**v) for k, v in d["baseline"].items()}
        d["gates"] = Gates(**d["gates"])
        d["policy"] = Policy(**d["policy"])
        d["tracks"] = {k: Track.from_dict(v) for k, v in d["tracks"].items()}
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Rollout":
        return cls.from_dict(json.loads(text))

    def copy(self) -> "Rollout":
        return Rollout.from_dict(json.loads(self.to_json()))
