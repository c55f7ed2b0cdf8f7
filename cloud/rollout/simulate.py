"""A simulated fleet on a simulated clock, for judging the gates through the real decision core.

``run_canary(fleet, effect, seed)`` draws a fleet of devices with their own traffic and their
own random effects (error rate, no-answer rate, latency, label mix, feedback), starts a
rollout with the default plan, gates and policy, and ticks ``core.decide`` every ``tick_s``
simulated seconds until the rollout ends. Devices obey desired states at the next tick. Each
tick every device produces one window's worth of counts from the model it runs; the
treatment and control samples are cut exactly as the controller cuts them
(``Rollout.sources``: which devices, since when, on which model).

The candidate's ``Effect`` acts on every device alike (a model property); device effects are
a property of the device and stay the same under either model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cloud.delivery import DesiredTarget
from cloud.rollout.core import DeviceState, Observations, decide
from cloud.rollout.plan import assignment_order, build_plan
from cloud.rollout.sample import COUNTERS, LATENCY_BINS, Sample
from cloud.rollout.state import TERMINAL, Policy, Rollout
from cloud.rollout.gates import Gates
from shared.histogram import LATENCY_MS_EDGES

OLD, NEW = "0" * 64, "1" * 64
_C = {name: i for i, name in enumerate(COUNTERS)}


@dataclass(frozen=True)
class FleetModel:
    """A fleet's traffic and its spread between devices (defaults: see ``docs/architecture.md``)."""

    devices: int = 1000
    inferences_per_h: float = 150.0  # the median device; traffic is log-normal across devices
    traffic_sigma: float = 1.0  # ln-sd of traffic: the busiest tenth sees ~13x the quietest tenth
    error_rate: float = 0.02
    error_logit_sd: float = 0.25
    no_answer_rate: float = 0.10
    no_answer_logit_sd: float = 0.4
    latency_ms: float = 30.0  # median device, geometric mean
    latency_device_sd: float = 0.3  # ln-sd between devices (hardware)
    latency_sd: float = 0.3  # ln-sd between inferences on one device
    labels: int = 12
    label_concentration: float = 30.0  # Dirichlet: a label's share varies by ~5 points between devices
    feedback_devices: float = 0.2  # share of devices whose users give feedback at all
    feedback_rate: float = 0.02  # share of their inferences that get a human label
    accuracy: float = 0.9
    accuracy_logit_sd: float = 0.3


@dataclass(frozen=True)
class Effect:
    """What the candidate does differently from the control model, on every device."""

    error_factor: float = 1.0
    no_answer_add: float = 0.0
    latency_factor: float = 1.0


def _logit(p):
    return np.log(p / (1 - p))


def _expit(x):
    return 1 / (1 + np.exp(-x))


def _normal_cdf(z):
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


class SimFleet:
    """The devices of one trial: their parameters under the old and the new model."""

    def __init__(self, model: FleetModel, effect: Effect, rng: np.random.Generator):
        m, n = model, model.devices
        self.rng = rng
        self.rate = m.inferences_per_h / 3600.0 * np.exp(rng.normal(0, m.traffic_sigma, n))
        err = _expit(_logit(m.error_rate) + rng.normal(0, m.error_logit_sd, n))
        self.error = np.stack([err, np.clip(err * effect.error_factor, 0, 1)])
        na = _expit(_logit(m.no_answer_rate) + rng.normal(0, m.no_answer_logit_sd, n))
        self.no_answer = np.stack([na, np.clip(na + effect.no_answer_add, 0, 1)])
        base_mix = rng.dirichlet(np.full(m.labels, 4.0))
        self.mix = rng.dirichlet(m.label_concentration * base_mix, n)
        log_ms = math.log(m.latency_ms) + rng.normal(0, m.latency_device_sd, n)
        self.latency = np.stack([self._bins(log_ms, m.latency_sd),
                                 self._bins(log_ms + math.log(effect.latency_factor), m.latency_sd)])
        self.feedback = np.where(rng.random(n) < m.feedback_devices, m.feedback_rate, 0.0)
        self.accuracy = _expit(_logit(m.accuracy) + rng.normal(0, m.accuracy_logit_sd, n))
        self.labels = [f"w{j:02d}" for j in range(m.labels)]

    @staticmethod
    def _bins(log_ms: np.ndarray, sd: float) -> np.ndarray:
        """Per device: the probability of each latency histogram bin."""
        edges = np.log(np.asarray(LATENCY_MS_EDGES))
        cdf = _normal_cdf((edges[None, :] - log_ms[:, None]) / sd)
        p = np.diff(np.concatenate([np.zeros((len(log_ms), 1)), cdf, np.ones((len(log_ms), 1))], axis=1), axis=1)
        return np.clip(p, 0, None) / p.sum(axis=1, keepdims=True)

    def window(self, running: np.ndarray, seconds: float) -> np.ndarray:
        """One window's counts per device (devices × columns: counters, latency bins, labels)."""
        rng, idx = self.rng, np.arange(len(running))
        attempts = rng.poisson(self.rate * seconds)
        errors = rng.binomial(attempts, self.error[running, idx])
        inferences = attempts - errors
        out = np.zeros((len(running), len(COUNTERS) + LATENCY_BINS + len(self.labels)))
        out[:, _C["windows"]] = attempts > 0
        out[:, _C["inferences"]] = inferences
        out[:, _C["errors"]] = errors
        out[:, _C["no_answer"]] = rng.binomial(inferences, self.no_answer[running, idx])
        fb = rng.binomial(inferences, self.feedback)
        out[:, _C["feedback_n"]] = fb
        out[:, _C["feedback_correct"]] = rng.binomial(fb, self.accuracy)
        k = len(COUNTERS)
        out[:, k:k + LATENCY_BINS] = _multinomial(rng, inferences, self.latency[running, idx])
        out[:, k + LATENCY_BINS:] = _multinomial(rng, inferences, self.mix)
        return out


def _multinomial(rng: np.random.Generator, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Row-wise multinomial draws, one binomial per column over all rows at once (the
    conditional method: exact, and much faster than a multinomial per row)."""
    out = np.zeros(p.shape)
    used = np.flatnonzero(p.max(axis=0) > 1e-12)  # latency bins far from every device stay empty
    left = n.astype(np.int64)
    rest = np.ones(len(n))
    for j in used[:-1]:
        share = np.clip(np.divide(p[:, j], rest, out=np.zeros(len(n)), where=rest > 0), 0.0, 1.0)
        out[:, j] = rng.binomial(left, share)
        left = left - out[:, j].astype(np.int64)
        rest = rest - p[:, j]
    out[:, used[-1]] = left
    return out


@dataclass
class Outcome:
    status: str
    stage: int  # the stage it ended in (the index into the plan)
    reason: str
    elapsed_s: float
    decided: list[dict] = field(default_factory=list)  # per stage decided: time and samples behind it


class _Ledger:
    """Cumulative counts per model, one snapshot per tick: windows in [a, b) by difference."""

    def __init__(self, fleet: SimFleet, devices: int):
        self.times: list[float] = [0.0]
        self.cum = [np.zeros((2, devices, len(COUNTERS) + LATENCY_BINS + len(fleet.labels)))]
        self.fleet = fleet

    def record(self, running: np.ndarray, seconds: float, t_end: float) -> None:
        w = self.fleet.window(running, seconds)
        nxt = self.cum[-1].copy()
        idx = np.arange(len(running))
        nxt[running, idx] += w
        self.cum.append(nxt)
        self.times.append(t_end)

    def sample(self, model: int, rows: np.ndarray, ids: list[str], since: float, until: float | None) -> Sample:
        """The counts of ``rows`` on ``model`` in ``[since, until)``, one row per device that has any."""
        a = int(np.searchsorted(self.times, since, side="left"))
        b = len(self.cum) - 1 if until is None else int(np.searchsorted(self.times, until, side="left"))
        counts = (self.cum[b] - self.cum[a])[model, rows]
        k = len(COUNTERS)
        keep = counts[:, _C["inferences"]] + counts[:, _C["errors"]] > 0
        counts = counts[keep]
        ids = [d for d, on in zip(ids, keep) if on]
        labels = {lab: counts[:, k + LATENCY_BINS + j] for j, lab in enumerate(self.fleet.labels)}
        return Sample(ids, counts[:, :k], {"latency_ms": counts[:, k:k + LATENCY_BINS]}, {"labels": labels})


def _rollout(model: FleetModel, gates: Gates, policy: Policy, steps: str | None, rid: str) -> Rollout:
    ids = [f"d{i:05d}" for i in range(model.devices)]
    baseline = {d: DesiredTarget(active=OLD, shadow=None, automation="full") for d in ids}
    return Rollout(id=rid, model=NEW, model_label="sim:2", cohort="fleet", plan=build_plan("canary", steps=steps),
                   devices=assignment_order(rid, ids), baseline=baseline, gates=gates, policy=policy)


def run_canary(model: FleetModel, effect: Effect, seed: int, *, gates: Gates | None = None,
               policy: Policy | None = None, steps: str | None = None, tick_s: float = 300.0,
               max_s: float | None = None, warmup_s: float = 3600.0) -> Outcome:
    """One simulated canary rollout to its end (or to ``max_s``: status stays ``running``).
    The fleet runs the old model for ``warmup_s`` before the rollout starts (the devices'
    baselines)."""
    rng = np.random.default_rng(seed)
    fleet = SimFleet(model, effect, rng)
    r = _rollout(model, gates or Gates(), policy or Policy(), steps, f"sim-{seed}")
    index = {d: i for i, d in enumerate(f"d{i:05d}" for i in range(model.devices))}
    running = np.zeros(model.devices, dtype=int)
    inbox: dict[str, DesiredTarget] = {}
    ledger = _Ledger(fleet, model.devices)
    now, decided = warmup_s, []
    if warmup_s > 0:
        ledger.record(running, warmup_s, warmup_s)  # one window: counts over time just add up
    r.created_t = now
    max_s = now + (max_s or (len(r.plan) + 1) * r.policy.stage_timeout_s)
    states = [DeviceState(active=OLD, automation="full"), DeviceState(active=NEW, automation="full")]
    while now <= max_s:
        for d, target in inbox.items():
            running[index[d]] = 1 if target.active == NEW else 0
        inbox.clear()
        obs = Observations(states={d: states[running[i]] for d, i in index.items()})
        if r.status == "running" and r.stage_started_t is not None:
            obs.treatment, obs.control, obs.treatment_before, obs.control_before = _samples(r, ledger, index)
        stage_before, started = r.stage, r.stage_started_t
        result = decide(r, obs, now)
        r = result.rollout
        if started is not None and (r.stage != stage_before or r.status in TERMINAL):
            decided.append(_decision_figures(stage_before, now - started, obs))
        for action in result.actions:
            inbox.update(action.targets)
        if r.status in TERMINAL:
            return Outcome(r.status, r.stage, r.reason, now - r.created_t, decided)
        ledger.record(running, tick_s, now + tick_s)
        now += tick_s
    return Outcome(r.status, r.stage, r.reason, now - r.created_t, decided)


def _samples(r: Rollout, ledger: _Ledger, index: dict[str, int]) -> tuple:
    """(treatment, control, treatment before, control before), cut as ``Controller`` cuts them."""
    src = r.sources()

    def cut(model: int, devices: list[str], since: float, until: float | None) -> Sample:
        return ledger.sample(model, np.array([index[d] for d in devices], dtype=int), devices, since, until)

    treatment = cut(1, src.treatment, src.since, None)
    control = cut(0, src.control, src.control_since, src.control_until)
    if src.before_since is None:
        return treatment, control, None, None
    return (treatment, control, cut(0, src.treatment, src.before_since, src.before_until),
            cut(0, src.control, src.before_since, src.before_until))


def _decision_figures(stage: int, seconds: float, obs: Observations) -> dict:
    t = obs.treatment
    return {"stage": stage, "seconds": seconds, "inferences": int(t.column("attempts").sum()) if len(t) else 0,
            "devices": len(t), "control_inferences": int(obs.control.column("attempts").sum()) if len(obs.control)
            else 0, "control_devices": len(obs.control)}
