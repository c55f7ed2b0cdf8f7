"""Fakes for the rollout core: a fleet that obeys (or ignores) desired states, and samples."""
from __future__ import annotations

from dataclasses import dataclass, field

from cloud.delivery import DesiredTarget
from cloud.rollout.core import Command, DeviceEvent, DeviceState, Observations, decide
from cloud.rollout.gates import Gates, Sample, Totals
from cloud.rollout.plan import Stage, assignment_order
from cloud.rollout.state import Policy, Rollout

OLD, NEW = "a" * 64, "b" * 64


def make_rollout(n: int = 20, plan: list[Stage] | None = None, *, approval: str = "auto",
                 gates: Gates | None = None, policy: Policy | None = None, rid: str = "r-test") -> Rollout:
    devices = assignment_order(rid, [f"dev-{i:02d}" for i in range(n)])
    baseline = {d: DesiredTarget(active=OLD, shadow=None, automation="full") for d in devices}
    return Rollout(id=rid, model=NEW, model_label="kws:2", cohort="fleet",
                   plan=plan or [Stage("canary", p, 60.0) for p in (5, 25, 100)], devices=devices,
                   baseline=baseline, gates=gates or Gates(), policy=policy or Policy(deadline_s=30.0),
                   approval=approval, created_t=0.0)


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def sample(n: int, *, errors: int = 0, no_answer: int = 0, labels: dict | None = None, latency_bin: int = 8,
           shadow_agree: int | None = None, shadow_errors: int = 0, feedback: tuple[int, int] = (0, 0),
           devices: int = 10, prefix: str = "dev") -> Sample:
    """``n`` inferences spread evenly over ``devices`` alike devices (no spread between them);
    ``labels`` default to an even yes/no mix; every inference lands in latency bin ``latency_bin``."""
    labels = labels if labels is not None else {"yes": n // 2, "no": n - n // 2}
    split = {k: _split(v, devices) for k, v in dict(n=n, errors=errors, no_answer=no_answer,
                                                     agree=shadow_agree or 0, shadow_errors=shadow_errors,
                                                     fb=feedback[0], fb_ok=feedback[1]).items()}
    label_split = {lab: _split(c, devices) for lab, c in labels.items()}
    per_device = {}
    for i in range(devices):
        t = Totals(windows=1, inferences=split["n"][i], errors=split["errors"][i], no_answer=split["no_answer"][i],
                   feedback_n=split["fb"][i], feedback_correct=split["fb_ok"][i],
                   labels={lab: c[i] for lab, c in label_split.items() if c[i]})
        t.latency_ms[latency_bin] = split["n"][i]
        if shadow_agree is not None:
            t.shadow_compared, t.shadow_agree = split["n"][i], split["agree"][i]
            t.shadow_errors = split["shadow_errors"][i]
            t.shadow_latency_ms = list(t.latency_ms)
            t.shadow_labels = dict(t.labels)
            t.shadow_active_labels = dict(t.labels)
        per_device[f"{prefix}-{i:02d}"] = t
    return Sample.from_totals(per_device)


@dataclass
class FakeFleet:
    """Devices that apply a desired state after ``delay_s`` (or never, if ``silent``)."""

    devices: list[str]
    delay_s: float = 1.0
    silent: set[str] = field(default_factory=set)
    offline: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)  # roll the candidate back after activation
    running: dict[str, DesiredTarget] = field(default_factory=dict)
    inbox: dict[str, tuple[float, DesiredTarget]] = field(default_factory=dict)
    events: list[DeviceEvent] = field(default_factory=list)
    sends: int = 0

    def __post_init__(self):
        for d in self.devices:
            self.running.setdefault(d, DesiredTarget(active=OLD, shadow=None, automation="full"))

    def deliver(self, decision, now: float) -> None:
        for action in decision.actions:
            if action.kind == "write_desired":
                for d, t in action.targets.items():
                    self.sends += 1
                    self.inbox[d] = (now, t)

    def advance(self, now: float) -> None:
        for d, (t0, target) in list(self.inbox.items()):
            if d in self.silent or d in self.offline or now - t0 < self.delay_s:
                continue
            del self.inbox[d]
            if d in self.refuse and target.active == NEW:
                self.events.append(DeviceEvent(d, now, "model_rolled_back", NEW, "probation: errors"))
                continue
            self.running[d] = target

    def states(self) -> dict[str, DeviceState]:
        return {d: DeviceState(online=d not in self.offline, active=t.active, shadow=t.shadow,
                               automation=t.automation, t=0.0)
                for d, t in self.running.items()}


def run(rollout: Rollout, fleet: FakeFleet, *, until: float, step_s: float = 5.0, start: float = 0.0,
        treatment=None, control=None, commands: dict[float, list[Command]] | None = None):
    """Tick ``decide`` every ``step_s`` seconds; returns (rollout, every log entry, every decision)."""
    log, decisions, now = [], [], start
    commands = dict(commands or {})
    while now <= until:
        fleet.advance(now)
        obs = Observations(states=fleet.states(), events=list(fleet.events),
                           treatment=treatment(rollout, now) if treatment else Sample(),
                           control=control(rollout, now) if control else Sample(),
                           commands=commands.pop(now, []))
        d = decide(rollout, obs, now)
        fleet.deliver(d, now)
        rollout = d.rollout
        log.extend(d.log)
        decisions.append(d)
        now += step_s
    return rollout, log, decisions
