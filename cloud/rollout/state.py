"""The persisted rollout: everything the controller needs to pick up where it left off.

A rollout is a plain dataclass that round-trips through JSON (``to_dict`` / ``from_dict``),
so a collector restarted mid-stage reloads it and carries on: the stage, when it started,
which desired state each device was sent, when, how often, and whether it got there.

Statuses::

    pending ─► running ─► (awaiting_approval ─►) running … ─► completed
                  │  ▲                                           │
                  ▼  │ resume                                    ▼ rollback
                paused                                       rolled_back
    any active ─► rolled_back (a gate failed) · failed (devices failed, or a stage could not decide
                  by its timeout) · aborted (operator)

After a terminal status that changed desired states (rollback, abort, failure, or the end of
a shadow-only plan) the controller keeps re-sending until every device reports or gives up;
``settled`` says that is done.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from cloud.delivery import DesiredTarget
from cloud.rollout.gates import Gates
from cloud.rollout.plan import Stage, step_count
from shared.config import setting

STATUSES = ("pending", "running", "paused", "awaiting_approval", "completed", "rolled_back", "aborted", "failed")
ACTIVE = frozenset({"pending", "running", "paused", "awaiting_approval"})
TERMINAL = frozenset({"completed", "rolled_back", "aborted", "failed"})
APPROVALS = ("auto", "manual")
MIN_BASELINE_S = 300.0  # shortest look-back for a control taken from before the stage
BASELINE_LOOKBACK_S = 3600.0  # each device's own baseline: its windows on the old model from this long before the start
# A stage that has not decided after 4 h fails closed. Long enough for a 5 % step of a fleet of
# about a thousand devices to show non-inferiority at the default margins (scripts/bench_gates.py),
# 24 default bakes; a stage that cannot decide in that time will not decide in a day either.
DEFAULT_STAGE_TIMEOUT_S = 4 * 3600.0


@dataclass
class Policy:
    """Delivery deadlines, retries and failure thresholds of one rollout."""

    deadline_s: float = setting(120.0, "A device must report the desired model within this many seconds.",
                                ge=0.1, le=86400 * 7)
    max_attempts: int = setting(3, "Desired-state sends per device before it counts as failed.", ge=1, le=100)
    backoff: float = setting(2.0, "Each retry waits this many times longer than the one before.", ge=1.0, le=10.0)
    max_failed_fraction: float = setting(0.2, "More failed devices than this share of a stage fails the rollout.",
                                         ge=0.0, le=1.0)
    stage_timeout_s: float = setting(DEFAULT_STAGE_TIMEOUT_S, "A stage whose gates cannot decide within this "
                                                              "long fails closed (must exceed every bake).",
                                     ge=1.0, le=86400 * 30)

    @classmethod
    def from_dict(cls, d: dict) -> "Policy":
        """From a persisted rollout. Before timeouts were finite, 0 meant "wait forever": such a
        rollout gets the default timeout, so it cannot hang."""
        known = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        if not known.get("stage_timeout_s"):
            known.pop("stage_timeout_s", None)
        return cls(**known)

    def deadline_after(self, attempt: int) -> float:
        """Seconds to wait after send number ``attempt`` (1-based)."""
        return self.deadline_s * self.backoff ** (attempt - 1)


@dataclass(frozen=True)
class Sources:
    """The windows a stage compares. Treatment: windows of ``treatment`` devices from ``since``
    that ran the candidate (as the active model, or as the shadow when ``paired``: then those
    windows are their own control, the active model on the same utterances). Control: windows
    of ``control`` devices in ``[control_since, control_until)`` that ran their baseline model
    (``historical``: the cohort before this stage, as no device is left on the old model).
    Baselines: every device's windows on its baseline model in ``[before_since, before_until)``
    — from an hour before the rollout started until its first stage that switches models — so
    each device can be compared with itself; none for a ``historical`` stage, whose control already
    holds each device's own recent windows on the old model."""

    treatment: list[str]
    since: float
    paired: bool = False
    control: list[str] = field(default_factory=list)
    control_since: float | None = None
    control_until: float | None = None
    historical: bool = False
    before_since: float | None = None
    before_until: float | None = None


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

    def copy(self) -> "Track":
        """A copy (every field is an immutable value, so copying the attributes is enough)."""
        out = object.__new__(Track)
        out.__dict__.update(self.__dict__)
        return out

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
    previous_stage_started_t: float | None = None  # when the stage before this one began
    started_t: float | None = None  # when the controller started the rollout
    baseline_until_t: float | None = None  # when the first stage that switches models began

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

    def sources(self) -> "Sources":
        """Which windows the current stage's gates compare (see ``Sources``)."""
        stage, since = self.current_stage, self.stage_started_t or 0.0
        treatment = self.stage_devices()
        if stage.kind == "shadow":
            return Sources(treatment, since, paired=True)
        control = self.control_devices()
        if control:
            before = {}
            if self.started_t is not None and self.baseline_until_t is not None:
                before = {"before_since": self.started_t - BASELINE_LOOKBACK_S, "before_until": self.baseline_until_t}
            return Sources(treatment, since, control=control, control_since=since, **before)
        # nobody left on the old model: the cohort on the old model before this stage began, since
        # the previous stage began (its control devices, under the conditions of now: a longer
        # look-back would blame the candidate for a drift in between, and drift is when models
        # are retrained); with no previous stage (blue-green), at least a bake and MIN_BASELINE_S
        if self.previous_stage_started_t is not None and self.previous_stage_started_t < since:
            control_since = self.previous_stage_started_t
        else:
            control_since = since - max(stage.bake_s, MIN_BASELINE_S)
        # no baseline period: each device is paired with its own recent windows instead
        return Sources(treatment, since, control=list(self.devices), control_since=control_since,
                       control_until=since, historical=True)

    def targets_for(self, index: int) -> dict[str, DesiredTarget]:
        """What every device should run during stage ``index``."""
        in_stage = set(self.stage_devices(index))
        return {d: self.target_for(d, index, d in in_stage) for d in self.devices}

    def target_for(self, device: str, index: int, in_stage: bool | None = None) -> DesiredTarget:
        """What ``device`` should run during stage ``index``."""
        base = self.baseline[device]
        if not (device in self.stage_devices(index) if in_stage is None else in_stage):
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
        d["gates"] = Gates.from_dict(d["gates"])
        d["policy"] = Policy.from_dict(d["policy"])
        d.pop("control_ref", None)  # an unused field of older versions
        d["tracks"] = {k: Track.from_dict(v) for k, v in d["tracks"].items()}
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Rollout":
        return cls.from_dict(json.loads(text))

    def copy(self) -> "Rollout":
        """A copy that ``decide`` may change freely: tracks are copied one by one (their fields are
        immutable values), stages, targets, gates and policy are frozen or replaced whole, and a
        verdict entry is only ever replaced, never changed in place."""
        out = object.__new__(Rollout)
        out.__dict__.update(self.__dict__)
        out.plan, out.devices, out.baseline = list(self.plan), list(self.devices), dict(self.baseline)
        out.gates, out.policy = replace(self.gates), replace(self.policy)
        out.tracks = {d: t.copy() for d, t in self.tracks.items()}
        out.verdicts = list(self.verdicts)
        return out
