"""The drift engine: cohorts × kinds, each judged against baselines, the reference and peers.

**DriftSource** — the engine reads everything through four calls the collector's store and
registry implement (``cloud.drift.source``) or a test fake: ``bodies(devices, since_t, until_t)``
yields rollup buckets (exact merges of windows per device, model and bucket, with ``device``,
``model`` and the bucket's start as ``t_start``) and windows not rolled up yet, each window
counted once; ``device_tags()``; ``profile(model_sha)`` (the bundle's reference profile or
None); ``first_seen()`` → ``{(device, model): t}``, when each device started on each model. The
engine never writes and takes the clock as an argument; steps are aligned to multiples of the
step size and only complete steps (older than ``settle_s``) are read, so replicas evaluating
the same data reach the same alerts. The cost of one evaluation is devices × steps, whatever
the window rate.

**Cohorts**: ``device:<id>``; ``fleet``; ``tag:<t>`` for tags with ≥ 2 active devices;
``model:<sha>`` when more than one model is active.

- A **device** is judged against its own baseline (``baselines``: learned over a warm-up after
  it started on the model) by a CUSUM per score group, and against its **peers** (the other
  devices on its model) on the noise floor, so a microphone that dies is seen even when it
  died before the warm-up ended. A household with one speaker is not drift.
- A **fleet, tag or model cohort** is judged by a CUSUM against its devices' baselines (the
  expectation weights each device's baseline by its traffic) and by a level test against the
  model's reference profile, whose healthy spread between devices comes from the profile's
  per-speaker chunks. It alarms only when (a) it still fails with the devices that alarm on
  their own left out ("robust"), or (b) at least ``max(min_devices, ceil(min_device_fraction ×
  its devices))`` of its devices alarm ("devices"): one dead microphone raises its own alert,
  not the fleet's.

Every threshold follows from one setting, ``alerts_per_1000_device_days`` (``budget``). A
finding's ``severity`` is an effect size over its floor (``scores``), not a test statistic, so
it does not move with traffic; its ``pattern`` and ``onset_t`` come from the CUSUM (``cusum``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np

from cloud.drift import blocks
from cloud.drift.alerts import Alert, AlertChange, AlertPolicy, Finding, reconcile
from cloud.drift.assess import Assessment, Part, Settings, assess
from cloud.drift.attribution import attribute, device_contributions
from cloud.drift.baselines import BaselineBook
from cloud.drift.budget import Budget
from cloud.drift.peers import peer_check
from cloud.drift.reference import KINDS, Floors, ModelReference, Priors, build_reference
from cloud.drift.tables import Snapshot, build_snapshot
from shared.errors import BundleError
from shared.profile import validate_profile


class DriftSource(Protocol):
    def bodies(self, devices: list[str] | None, since_t: float, until_t: float) -> Iterable[dict]: ...

    def device_tags(self) -> dict[str, set[str]]: ...

    def profile(self, model_sha: str) -> dict | None: ...

    def first_seen(self) -> dict[tuple[str, str], float]: ...


@dataclass(frozen=True)
class DriftConfig:
    """Everything the engine can be tuned by (``docs/drift.md`` explains each)."""

    step_s: float = 300.0
    short_steps: int = 3
    long_steps: int = 36
    concept_step_s: float = 3600.0
    settle_s: float = 30.0
    alerts_per_1000_device_days: float = 1.0
    cusum_k: float = 1.5
    cusum_cap: float = 2.0
    min_n: int = 30
    warmup_s: float = 24 * 3600.0
    min_baseline_blocks: int = 8
    min_devices: int = 2
    level_min_devices: int = 3
    min_device_fraction: float = 0.25
    min_peers: int = 5
    peer_floor: float = 0.2
    no_answer_confidence: float = 0.5
    top_k: int = 5
    floors: Floors = Floors()
    priors: Priors = Priors()
    policy: AlertPolicy = AlertPolicy()

    def step_of(self, kind: str) -> float:
        return self.concept_step_s if kind == "concept" else self.step_s

    def span(self, now: float, kind: str) -> tuple[float, float, float]:
        """(t0, end, step) of a kind's look-back: whole steps ending before ``now - settle_s``."""
        step = self.step_of(kind)
        end = math.floor((now - self.settle_s) / step) * step
        return end - self.long_steps * step, end, step


@dataclass
class Evaluation:
    """One evaluation's snapshots and findings (kept for the API and the report)."""

    now: float
    snaps: dict[str, Snapshot] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


class DriftEngine:
    """Scores drift for every cohort and turns it into alert changes; no I/O of its own."""

    def __init__(self, source: DriftSource, config: DriftConfig = DriftConfig(),
                 baselines: BaselineBook | None = None):
        self.source = source
        self.config = config
        self._refs: dict[str, ModelReference | None] = {}
        self.baselines = baselines or BaselineBook(
            first_seen=source.first_seen, bodies=lambda d, a, b: source.bodies([d], a, b),
            reference_of=self.reference_of, warmup_s=config.warmup_s, step_s=config.step_s,
            concept_step_s=config.concept_step_s, min_n=config.min_n, min_blocks=config.min_baseline_blocks,
            priors=config.priors)

    # -- public ---------------------------------------------------------------------------
    def evaluate(self, now: float, open_alerts: Iterable[Alert] = ()) -> list[AlertChange]:
        """Alert changes at ``now`` given the currently open alerts (persisting them is the caller's)."""
        return reconcile(list(open_alerts), self.findings(now), now, self.config.policy)

    def reference_of(self, model: str | None) -> ModelReference | None:
        """The model's reference (cached), or None while its profile is unknown or malformed."""
        if not model:
            return None
        if self._refs.get(model) is None:
            profile = self.source.profile(model)
            try:
                self._refs[model] = None if profile is None else build_reference(
                    validate_profile(profile), model, self.config.no_answer_confidence, self.config.floors,
                    self.config.priors)
            except (BundleError, KeyError, TypeError, ValueError):
                self._refs[model] = None
        return self._refs[model]

    def snapshots(self, now: float) -> dict[str, Snapshot]:
        cfg = self.config
        spans = {kind: cfg.span(now, kind) for kind in KINDS}
        since, until = min(s[0] for s in spans.values()), max(s[1] for s in spans.values())
        bodies = list(self.source.bodies(None, since, until))
        by_span: dict[tuple, Snapshot] = {}
        for t0, end, step in spans.values():
            if (t0, step) not in by_span:
                by_span[(t0, step)] = build_snapshot(bodies, self.reference_of, t0, step, cfg.long_steps)
        return {kind: by_span[(spans[kind][0], spans[kind][2])] for kind in KINDS}

    def findings(self, now: float) -> list[Finding]:
        """Every (cohort, kind) the engine could score at ``now``."""
        return self.run(now).findings

    def run(self, now: float) -> Evaluation:
        ev = Evaluation(now, self.snapshots(now))
        tags = {d: set(t) for d, t in self.source.device_tags().items()}
        for kind in KINDS:
            ev.findings += _KindRun(self, ev.snaps[kind], kind, tags, now).findings()
        return ev


class _KindRun:
    """One kind at one evaluation: budget, devices, then groups."""

    def __init__(self, engine: DriftEngine, snap: Snapshot, kind: str, tags: dict[str, set[str]], now: float):
        self.e, self.snap, self.kind, self.tags, self.now = engine, snap, kind, tags, now
        self.cfg = engine.config
        self.active = sorted(self._active())
        active = set(self.active)  # membership per device per call: a list here made evaluations O(devices^2)
        self._active_mask = {m: np.array([d in active for d in t.devices], dtype=bool)
                             for m, t in snap.tables.items()}
        self.group_cohorts = list(self._groups())
        n_groups = len(blocks.groups(kind))
        budget = Budget(self.cfg.alerts_per_1000_device_days, len(self.active), 86400.0 / snap.step_s)
        detectors = (len(self.active) + len(self.group_cohorts)) * n_groups
        level_tests = len(self.group_cohorts) * n_groups + (len(self.active) if kind == "input" else 0)
        self.h = budget.cusum_h(detectors, self.cfg.cusum_k)
        self.alpha = budget.alpha(level_tests)

    def settings(self, level_test: bool) -> Settings:
        c = self.cfg
        return Settings(min_n=c.min_n, short_steps=c.short_steps, cusum_k=c.cusum_k, cusum_h=self.h,
                        cusum_cap=c.cusum_cap, level_alpha=self.alpha, level_test=level_test,
                        population_gate=not level_test, min_devices=c.min_devices,
                        min_device_fraction=c.min_device_fraction, level_min_devices=c.level_min_devices)

    def baseline_of(self, device: str, model: str):
        return self.e.baselines.get(device, model, self.now)

    def _active(self) -> set[str]:
        out = set()
        for table in self.snap.tables.values():
            n = sum(table.counts[self.kind][blocks.PRIMARY[(self.kind, g)]].sum(axis=(1, 2))
                    for g in blocks.groups(self.kind))
            out |= {d for d, k in zip(table.devices, n) if k > 0}
        return out

    def _groups(self):
        yield "fleet", None, None
        by_tag: dict[str, set[str]] = {}
        for device in self.active:
            for tag in self.tags.get(device, ()):
                by_tag.setdefault(tag, set()).add(device)
        for tag in sorted(by_tag):
            if len(by_tag[tag]) >= 2:
                yield f"tag:{tag}", frozenset(by_tag[tag]), None
        models = sorted(m for m in self.snap.tables if self._active_mask[m].any())
        if len(models) > 1:
            for m in models:
                yield f"model:{m}", None, m

    def parts(self, members: frozenset[str] | None, model: str | None, exclude=frozenset()) -> list[Part]:
        out = []
        for m, table in sorted(self.snap.tables.items()):
            if model is not None and m != model:
                continue
            mask = table.mask(members, exclude) & self._active_mask[m]
            if mask.any():
                out.append(Part(m, table, mask))
        return out

    # -- findings ---------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        out, own = [], {}
        for device in self.active:
            f = self._device(device)
            if f is not None:
                own[device] = f
                out.append(f)
        for cohort, members, model in self.group_cohorts:
            f = self._group(cohort, members, model, own)
            if f is not None:
                out.append(f)
        return out

    def _device(self, device: str) -> Finding | None:
        members = frozenset({device})
        parts = self.parts(members, None)
        a = assess(self.snap, self.kind, parts, self.baseline_of, self.settings(level_test=False))
        if self.kind == "input":
            peer = peer_check(self.snap, device, self.cfg.short_steps, self.cfg.min_peers, self.alpha,
                              self.cfg.peer_floor)
            if peer is not None:
                a.tests["peers"] = peer
                if peer["alarm"] and not a.detected:
                    a.detected, a.horizon, a.severity = True, "peers", max(a.severity, peer["severity"])
                    a.pattern, a.onset_t = "sudden", peer["t_start"]
                    a.top = [peer["top"]] + a.top
        return self._finding(f"device:{device}", a, members, None)

    def _group(self, cohort, members, model, own: dict[str, Finding]) -> Finding | None:
        cfg = self.cfg
        active = {d for p in self.parts(members, model) for d, m in zip(p.table.devices, p.mask) if m}
        if not active:
            return None
        alarming = frozenset(d for d, f in own.items() if f.detected)
        flagged = frozenset(alarming & active)
        settings = self.settings(level_test=True)
        full = assess(self.snap, self.kind, self.parts(members, model), self.baseline_of, settings)
        robust = full
        if flagged and flagged != active:
            robust = assess(self.snap, self.kind, self.parts(members, model, flagged), self.baseline_of, settings)
        need = max(cfg.min_devices, math.ceil(cfg.min_device_fraction * len(active)))
        rule = "robust" if robust.detected else "devices" if len(flagged) >= need else None
        if rule == "devices":
            a = full
            patterns = [own[d].pattern for d in sorted(flagged)]
            onsets = sorted(own[d].onset_t for d in flagged if own[d].onset_t is not None)
            a.detected, a.horizon = True, "devices"
            a.pattern = "gradual" if patterns.count("gradual") > len(patterns) / 2 else "sudden"
            a.onset_t = onsets[len(onsets) // 2] if onsets else a.onset_t
            a.severity = max(a.severity, float(np.median([own[d].severity for d in flagged])))
            if not a.top:
                a.top = list(own[sorted(flagged)[0]].top)
        elif rule is None:
            a = robust  # healthy once the devices with their own alerts are left out
            a.detected = False
        else:
            a = robust
        return self._finding(cohort, a, members, model, rule=rule, excluded=flagged, alarming=alarming)

    def _finding(self, cohort, a: Assessment, members, model, rule=None, excluded=frozenset(),
                 alarming=frozenset()) -> Finding | None:
        if not a.groups and not a.tests.get("peers"):
            return None
        top = tuple(a.top[: self.cfg.top_k])
        devices, tag_rows = (), ()
        if a.detected and not cohort.startswith("device:") and top:
            contrib = device_contributions(self.snap, self.kind, members, top,
                                           slice(self.snap.n_steps - self.cfg.short_steps, None), self._expected)
            skip = cohort.split(":", 1)[1] if cohort.startswith("tag:") else None
            d_rows, t_rows = attribute(contrib, self.tags, alarming, skip_tag=skip)
            devices, tag_rows = tuple(d_rows), tuple(t_rows)
        models = tuple({"model": p.model, "devices": int(p.mask.sum())} for p in self.parts(members, model))
        return Finding(cohort=cohort, kind=self.kind, detected=a.detected, level=a.level,
                       severity=round(a.severity, 6), n=a.n, horizon=a.horizon, pattern=a.pattern,
                       onset_t=a.onset_t, top=top, devices=devices, tags=tag_rows, models=models, rule=rule,
                       excluded=tuple(sorted(excluded)), tests=dict(a.tests))

    def _expected(self, device: str, model: str, score: str, against: str) -> float | None:
        if against == "reference":
            ref = self.e.reference_of(model)
            sc = next((s for s in ref.scores[self.kind] if s.name == score), None) if ref else None
            return None if sc is None else sc.ref_mean
        base = self.baseline_of(device, model)
        figs = base.get(self.kind, score) if base is not None else None
        return None if figs is None else figs.mean
