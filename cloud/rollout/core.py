"""The rollout decision core: ``decide(rollout, observations, now) -> Decision``. Pure.

No clock, no store, no broker: the controller shell gathers the observations (device
states and events, the treatment and control samples, operator commands), calls
``decide``, carries out the returned actions and saves the new rollout with its log. The
same inputs always give the same decision, which is what the unit tests pin down.

One tick, in order: operator commands; start a pending rollout; follow each device towards
its desired state (a state report converges it, a ``model_rolled_back`` or
``bundle_rejected`` event about the candidate fails it); re-send desired states past their
deadline with backoff, or give up on the device; stop if too many devices failed; read the
gates and promote, hold, wait for approval or roll back. A running stage that has not
passed its gates within ``Policy.stage_timeout_s`` fails closed, naming what it waited for.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cloud.delivery import DesiredTarget
from cloud.rollout.gates import Sample, evaluate, overall
from cloud.rollout.plan import is_guard_stage
from cloud.rollout.state import ACTIVE, TERMINAL, Rollout, Track

FAILURE_EVENTS = frozenset({"model_rolled_back", "bundle_rejected"})
EVENT_CLOCK_SLACK_S = 5.0  # device clocks may trail the cloud's a little
COMMANDS = ("pause", "resume", "approve", "abort", "rollback")


@dataclass(frozen=True)
class DeviceState:
    """The part of a device's reported ``state`` the controller reads."""

    online: bool = True
    active: str | None = None
    previous: str | None = None
    shadow: str | None = None
    automation: str | None = None
    t: float = 0.0

    @classmethod
    def from_message(cls, m: dict) -> "DeviceState":
        models = m.get("models") or {}
        return cls(online=bool(m.get("online", False)), active=models.get("active"),
                   previous=models.get("previous"), shadow=models.get("shadow"),
                   automation=m.get("automation"), t=float(m.get("t", 0.0)))

    def matches(self, target: DesiredTarget) -> bool:
        if not self.online:
            return False
        if target.active is not None and self.active != target.active:
            return False
        if self.shadow != target.shadow:
            return False
        return target.automation is None or self.automation in (None, target.automation)


@dataclass(frozen=True)
class DeviceEvent:
    device: str
    t: float
    event: str
    model: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Command:
    id: str
    action: str
    t: float = 0.0
    actor: str = ""
    note: str = ""


@dataclass
class Observations:
    """What the controller read for one tick. ``treatment_before`` / ``control_before``: the same
    devices on their baseline model before the rollout (``Rollout.sources``), when known."""

    states: dict[str, DeviceState] = field(default_factory=dict)
    events: list[DeviceEvent] = field(default_factory=list)
    treatment: Sample = field(default_factory=Sample)
    control: Sample = field(default_factory=Sample)
    commands: list[Command] = field(default_factory=list)
    treatment_before: Sample | None = None
    control_before: Sample | None = None


@dataclass(frozen=True)
class Action:
    kind: str  # publish_bundle | write_desired
    model: str | None = None
    targets: dict[str, DesiredTarget] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class LogEntry:
    t: float
    event: str
    from_status: str
    to_status: str
    stage: int
    reason: str
    figures: dict = field(default_factory=dict)


@dataclass
class Decision:
    rollout: Rollout
    actions: list[Action] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)  # command ids


class _Tick:
    """The mutable working set of one ``decide`` call."""

    def __init__(self, rollout: Rollout, now: float):
        self.r = rollout
        self.now = now
        self.decision = Decision(rollout)

    def log(self, event: str, reason: str, figures: dict | None = None, *, to: str | None = None,
            frm: str | None = None) -> None:
        self.decision.log.append(LogEntry(self.now, event, frm or self.r.status, to or self.r.status,
                                          self.r.stage, reason, figures or {}))

    def transition(self, status: str, event: str, reason: str, figures: dict | None = None) -> None:
        frm = self.r.status
        self.r.status = status
        self.r.reason = reason
        self.log(event, reason, figures, to=status, frm=frm)

    def send(self, targets: dict[str, DesiredTarget], stage: int, why: str) -> None:
        changed = {d: t for d, t in targets.items() if self.r.tracks[d].target != t}
        for d, t in changed.items():
            self.r.tracks[d] = Track(target=t, status="pending", stage=stage, sent_t=self.now,
                                     deadline_t=self.now + self.r.policy.deadline_after(1), attempts=1)
        if changed:
            self.decision.actions.append(Action("write_desired", targets=changed, reason=why))


def decide(rollout: Rollout, obs: Observations, now: float) -> Decision:
    """One step of the rollout state machine (the input rollout is not modified)."""
    tick = _Tick(rollout.copy(), now)
    r = tick.r
    for cmd in sorted(obs.commands, key=lambda c: (c.t, c.id)):
        _command(tick, cmd)
        tick.decision.handled.append(cmd.id)
    if r.status == "pending":
        _start(tick)
    _follow_devices(tick, obs)
    if r.status in ("running", "awaiting_approval"):
        _retry(tick)
        if not _too_many_failed(tick):
            _gate(tick, obs)
    elif r.status in TERMINAL and not r.settled:
        _retry(tick)
        _settle(tick)
    r.updated_t = now
    return tick.decision


# --- commands ----------------------------------------------------------------------------


def _command(tick: _Tick, cmd: Command) -> None:
    r, who = tick.r, f" by {cmd.actor}" if cmd.actor else ""
    note = f": {cmd.note}" if cmd.note else ""
    if cmd.action == "pause" and r.status in ("pending", "running", "awaiting_approval"):
        r.resume_status, r.paused_t = r.status, tick.now
        tick.transition("paused", "paused", f"paused{who}{note}")
    elif cmd.action == "resume" and r.status == "paused":
        shift = tick.now - (tick.now if r.paused_t is None else r.paused_t)
        if r.stage_started_t is not None:
            r.stage_started_t += shift  # bake time does not run while paused
        for tr in r.tracks.values():
            if tr.status == "pending" and tr.deadline_t is not None:
                tr.deadline_t += shift
        tick.transition(r.resume_status or "running", "resumed", f"resumed{who}{note} after {shift:.0f} s")
        r.paused_t = r.resume_status = None
    elif cmd.action == "approve" and r.status == "awaiting_approval":
        tick.log("approved", f"approved{who}{note}")
        _promote(tick)
    elif cmd.action == "abort" and r.status in ACTIVE:
        _revert(tick, "aborted", "aborted", f"aborted{who}{note}")
    elif cmd.action == "rollback" and (r.status in ACTIVE or r.status == "completed"):
        _revert(tick, "rolled_back", "rolled_back", f"rolled back{who}{note}")
    else:
        tick.log("command_ignored", f"cannot {cmd.action} a rollout that is {r.status}")


# --- stages ------------------------------------------------------------------------------


def _start(tick: _Tick) -> None:
    r = tick.r
    tick.decision.actions.append(Action("publish_bundle", model=r.model, reason="rollout start"))
    r.stage, r.started_t = 0, tick.now
    tick.transition("running", "started", f"started {r.model_label} on {len(r.devices)} devices ({r.cohort}); "
                                          f"plan {' → '.join(s.label for s in r.plan)}")
    _begin_stage(tick)


def _begin_stage(tick: _Tick) -> None:
    r = tick.r
    r.stage_started_t = tick.now
    stage = r.plan[r.stage]
    if stage.kind != "shadow" and r.baseline_until_t is None:
        r.baseline_until_t = tick.now  # devices ran their baseline model until now
    targets = r.targets_for(r.stage)
    tick.send(targets, r.stage, f"stage {r.stage + 1}: {stage.label}")
    tick.log("stage_started", f"stage {r.stage + 1}/{len(r.plan)} {stage.label} on "
                              f"{len(r.stage_devices())} of {len(r.devices)} devices, bake {stage.bake_s:.0f} s",
             {"devices": r.stage_devices()})


def _promote(tick: _Tick) -> None:
    r = tick.r
    if r.stage + 1 < len(r.plan):
        frm = r.plan[r.stage].label
        r.previous_stage_started_t = r.stage_started_t
        r.stage += 1
        tick.transition("running", "promoted", f"promoted from {frm} to {r.plan[r.stage].label}")
        _begin_stage(tick)
        return
    if r.plan[-1].kind == "shadow":  # a shadow-only ending: take the shadow off again
        tick.send(dict(r.baseline), -1, "shadow plan completed")
        r.settled = False
    tick.transition("completed", "completed", f"completed: {r.model_label} passed {len(r.plan)} stage(s)")


def _revert(tick: _Tick, status: str, event: str, reason: str, figures: dict | None = None) -> None:
    r = tick.r
    tick.send(dict(r.baseline), -1, reason)
    r.settled = all(tr.status == "converged" for tr in r.tracks.values())
    tick.transition(status, event, reason, figures)


# --- devices -----------------------------------------------------------------------------


def _follow_devices(tick: _Tick, obs: Observations) -> None:
    r = tick.r
    reverting = r.status in TERMINAL
    if not reverting:
        for ev in obs.events:
            tr = r.tracks.get(ev.device)
            if (ev.event not in FAILURE_EVENTS or tr is None or ev.model != r.model or tr.stage < 0
                    or tr.sent_t is None or ev.t < tr.sent_t - EVENT_CLOCK_SLACK_S or tr.hard):
                continue
            tr.status, tr.hard = "failed", True
            tr.reason = f"{ev.event}: {ev.reason or 'no reason given'}"
            tick.log("device_failed", f"{ev.device} {tr.reason}", {"device": ev.device, "event": ev.event})
    for device, tr in r.tracks.items():
        st = obs.states.get(device)
        if tr.status == "converged" or tr.hard or st is None or not st.matches(tr.target):
            continue
        if tr.status == "failed":
            tick.log("device_recovered", f"{device} reported the desired state late")
        tr.status, tr.reason, tr.converged_t = "converged", "", tick.now


def _retry(tick: _Tick) -> None:
    r, pol = tick.r, tick.r.policy
    resend: dict[str, DesiredTarget] = {}
    for device, tr in r.tracks.items():
        if tr.status != "pending" or tr.deadline_t is None or tick.now < tr.deadline_t:
            continue
        if tr.attempts < pol.max_attempts:
            tr.attempts += 1
            tr.deadline_t = tick.now + pol.deadline_after(tr.attempts)
            resend[device] = tr.target
        else:
            waited = tick.now - (tick.now if tr.sent_t is None else tr.sent_t)
            tr.status = "failed"
            tr.reason = (f"did not report active={_short(tr.target.active)} shadow={_short(tr.target.shadow)} "
                         f"within {waited:.0f} s after {tr.attempts} sends")
            tick.log("device_failed", f"{device} {tr.reason}", {"device": device, "attempts": tr.attempts})
    if resend:
        tick.decision.actions.append(Action("write_desired", targets=resend, reason="retry"))
        tick.log("retried", f"re-sent desired state to {len(resend)} device(s) past their deadline",
                 {"devices": sorted(resend)})


def _too_many_failed(tick: _Tick) -> bool:
    r = tick.r
    devices = r.stage_devices()
    failed = [d for d in devices if r.tracks[d].status == "failed"]
    limit = r.policy.max_failed_fraction * len(devices)
    if not failed or len(failed) <= limit:
        return False
    details = "; ".join(f"{d}: {r.tracks[d].reason}" for d in failed[:5])
    _revert(tick, "failed", "failed", f"{len(failed)}/{len(devices)} devices failed in {r.current_stage.label} "
                                      f"(limit {r.policy.max_failed_fraction:.0%}): {details}",
            {"failed": failed, "devices": len(devices), "max_failed_fraction": r.policy.max_failed_fraction})
    return True


def _settle(tick: _Tick) -> None:
    r = tick.r
    open_ = [d for d, tr in r.tracks.items() if tr.status == "pending"]
    if open_:
        return
    failed = sorted(d for d, tr in r.tracks.items() if tr.status == "failed")
    r.settled = True
    tick.log("settled", f"{len(r.devices) - len(failed)}/{len(r.devices)} devices report the final desired "
                        f"state" + (f"; unreachable: {', '.join(failed[:10])}" if failed else ""),
             {"failed": failed})


# --- gates -------------------------------------------------------------------------------


def _gate(tick: _Tick, obs: Observations) -> None:
    r = tick.r
    stage = r.plan[r.stage]
    results = evaluate(stage.kind, obs.treatment, obs.control, r.gates, stages=len(r.plan),
                       guard=is_guard_stage(r.plan, r.stage, r.gates.guard_below_percent),
                       before=(obs.treatment_before, obs.control_before), historical=r.sources().historical)
    verdict = overall(results)
    figures = {x.gate: x.as_dict() for x in results}
    _record_verdict(tick, verdict, results)
    if verdict == "fail":
        failing = [x for x in results if x.verdict == "fail"]
        reason = f"gate {failing[0].gate} failed in {stage.label}: " + "; ".join(x.reason for x in failing)
        _revert(tick, "rolled_back", "rolled_back", reason, figures)
        return
    elapsed = tick.now - (tick.now if r.stage_started_t is None else r.stage_started_t)
    pending = [d for d in r.stage_devices() if r.tracks[d].status == "pending"]
    if verdict == "pass" and elapsed >= stage.bake_s and not pending and r.status == "running":
        if r.approval == "manual":
            tick.transition("awaiting_approval", "awaiting_approval",
                            f"{stage.label} passed its gates after {elapsed:.0f} s; waiting for "
                            f"`harken rollout approve {r.id}`", figures)
        else:
            tick.log("stage_passed", f"{stage.label} passed its gates after {elapsed:.0f} s", figures)
            _promote(tick)
    elif r.status == "running" and elapsed > r.policy.stage_timeout_s:
        waiting = [f"gate {x.gate} ({x.reason})" for x in results if x.verdict == "wait"]
        if pending:
            waiting.append(f"{len(pending)} device(s) to report the desired state")
        _revert(tick, "failed", "timed_out", f"{stage.label} could not decide within the stage timeout of "
                                             f"{r.policy.stage_timeout_s:.0f} s and fails closed; it waited for "
                                             + ("; ".join(waiting) or "its bake"), figures)


def _record_verdict(tick: _Tick, verdict: str, results) -> None:
    r = tick.r
    while len(r.verdicts) <= r.stage:
        r.verdicts.append({"stage": len(r.verdicts), "verdict": None})
    prev = r.verdicts[r.stage].get("verdict")
    r.verdicts[r.stage] = {"stage": r.stage, "label": r.plan[r.stage].label, "verdict": verdict, "t": tick.now,
                           "gates": [x.as_dict() for x in results]}
    if prev != verdict and verdict != "fail":
        holding = "; ".join(x.reason for x in results if x.verdict == "wait")
        tick.log("verdict", f"{r.plan[r.stage].label}: {verdict}" + (f" ({holding})" if holding else ""),
                 {x.gate: x.verdict for x in results})


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "none"
