"""The drift engine: cohorts × kinds × horizons, scored against each model's reference profile.

**WindowSource** — the engine reads everything through three calls that the collector's store
implements (or a test fake). ``windows(devices, since_t, until_t)`` yields the stored stats
windows (``shared.messages`` window dicts: ``device``, ``model`` = the sha256 of the model that
produced them, ``t_start``, the ``input``/``output``/``feedback``/``software`` sections) of the
given devices (``None`` = every device) whose ``t_start`` lies in ``[since_t, until_t)``, each
window once. ``device_tags()`` maps every known device to its set of tags (a device may have
none). ``profile(model_sha)`` returns the reference profile dict carried in that model's
bundle manifest (``shared.profile`` layout), or None when the model is unknown; windows of a
model without a profile are skipped and counted. The engine never writes, keeps no state
between evaluations and takes the clock as an argument, so replicas evaluating the same data
reach the same alerts.

**Cohorts**: ``fleet``; ``tag:<t>`` for tags with ≥ 2 active devices; ``device:<id>``;
``model:<sha>`` when more than one model is active. **Horizons**: the look-back is
``long_steps`` steps of ``step_s`` (``concept_step_s`` for concept drift, feedback being
sparse and late) ending at ``now``; per-step severities feed the sudden/gradual detector (on a
quiet cohort, whose steps hold fewer observations than a check needs, merges of the fewest
consecutive steps that do: ``_steps_per_point``), the last ``short_steps`` merged are the short
horizon, all steps merged the long horizon. A
finding's ``horizon`` says what raised it: ``short`` (the detector's 2-of-3 level view),
``trend`` (its slope view), ``long`` (the merged long-horizon check) or ``devices`` (the
robust rule's device count); its evidence comes from the long horizon for ``long``, else from
the short one.
A (cohort, kind) is **detected** when the detector flags it, or when the long horizon fails
its check while the short horizon is still ≥ ``policy.resolve_below`` (so an old episode that
has ended does not keep re-opening alerts); the long horizon's pattern and onset then come from
the detector's points (``detectors.classify``). Per (cohort, kind) and evaluation the false-alarm
rate is ≤ alpha (long horizon) + the detector's rate (see ``calibrate`` and ``detectors``).

**Robust multi-device rule**: a fleet, tag or model cohort alarms only when (a) it still fails
with the devices that alarm on their own left out ("robust"), or (b) at least
``max(min_devices, ceil(min_device_fraction × its devices))`` of its devices alarm on their own
("devices"). One dead microphone raises its device alert and not the fleet's; half the fleet
drifting raises both. Alerts name the driving devices and tags (``attribution``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np

from cloud.drift.alerts import Alert, AlertChange, AlertPolicy, Finding, reconcile
from cloud.drift.attribution import attribute, device_contributions
from cloud.drift.calibrate import DEFAULT_ALPHA, Calibrator
from cloud.drift.detectors import DetectorConfig, SuddenGradualDetector, classify
from cloud.drift.scoring import N_SIGNAL, KindScore, Part, Scorer, cohort_parts
from cloud.drift.signals import KINDS
from cloud.drift.tables import Snapshot, build_snapshot

# Effect floors. Measured on real espeak-ng speech through the lab's features (400 vs 400
# utterances): a healthy mix of the same voices scored PSI ≤ 0.06 (80 % one accent group) and
# ≤ 0.23 on one feature (70 % female voices); drift scored ≥ 1.3 (level −6 dB), ≥ 4 (pink noise
# at 20 dB SNR, band-limiting to 3.4 kHz). Input 0.25 sits between. Output has no such
# measurement yet: 0.2 is the conventional "major shift" PSI. Concept: accuracy drop.
DEFAULT_FLOORS = {"psi": {"input": 0.25, "output": 0.2, "concept": 0.1},
                  "js": {"input": 0.045, "output": 0.035, "concept": 0.1}}


class WindowSource(Protocol):
    def windows(self, devices: list[str] | None, since_t: float, until_t: float) -> Iterable[dict]: ...

    def device_tags(self) -> dict[str, set[str]]: ...

    def profile(self, model_sha: str) -> dict | None: ...


@dataclass(frozen=True)
class DriftConfig:
    """Everything the engine can be tuned by. ``floors`` overrides the effect floors per kind
    (concept: accuracy drop); defaults depend on the statistic (``DEFAULT_FLOORS``)."""

    step_s: float = 300.0
    short_steps: int = 3
    long_steps: int = 30
    concept_step_s: float = 3600.0
    alpha: float = DEFAULT_ALPHA
    statistic: str = "psi"
    floors: dict = field(default_factory=dict)
    min_devices: int = 2
    min_device_fraction: float = 0.25
    no_answer_confidence: float = 0.5
    top_k: int = 5
    n_sims: int = 4000
    seed: int = 0
    detector: DetectorConfig = DetectorConfig()
    policy: AlertPolicy = AlertPolicy()

    def floor(self, kind: str) -> float:
        return float(self.floors.get(kind, DEFAULT_FLOORS[self.statistic][kind]))

    def step_of(self, kind: str) -> float:
        return self.concept_step_s if kind == "concept" else self.step_s


@dataclass
class Assessment:
    severities: np.ndarray  # per step, NaN where too little data
    short: KindScore | None
    long: KindScore | None
    detected: bool = False
    level: float | None = None
    severity: float = 0.0
    horizon: str | None = None
    pattern: str | None = None
    onset_step: int | None = None
    concept_refs: dict = field(default_factory=dict)

    def alarming_score(self) -> KindScore | None:
        """The horizon whose checks explain the verdict (the evidence's top signals): the merged
        long horizon when its check raised it, else the recent steps (the short horizon)."""
        if self.horizon == "long" or self.short is None or self.short.severity is None:
            return self.long
        return self.short


class DriftEngine:
    """Scores drift for every cohort and turns it into alert changes; no I/O of its own."""

    def __init__(self, source: WindowSource, config: DriftConfig = DriftConfig(),
                 calibrator: Calibrator | None = None):
        self.source = source
        self.config = config
        self.calibrator = calibrator or Calibrator(alpha=config.alpha, statistic=config.statistic,
                                                   n_sims=config.n_sims, seed=config.seed)
        self.scorer = Scorer(self.calibrator, {k: config.floor(k) for k in KINDS}, detail_k=config.top_k)

    # -- public ---------------------------------------------------------------------------
    def evaluate(self, now: float, open_alerts: Iterable[Alert] = ()) -> list[AlertChange]:
        """Alert changes at ``now`` given the currently open alerts (persisting them is the caller's)."""
        return reconcile(list(open_alerts), self.findings(now), now, self.config.policy)

    def snapshot(self, now: float, kind: str, windows: list[dict] | None = None) -> Snapshot:
        cfg = self.config
        step = cfg.step_of(kind)
        t0 = now - step * cfg.long_steps
        if windows is None:
            windows = list(self.source.windows(None, t0, now))
        return build_snapshot(windows, self.source.profile, t0, step, cfg.long_steps, cfg.no_answer_confidence)

    def findings(self, now: float) -> list[Finding]:
        """Every (cohort, kind) the engine could score at ``now``."""
        cfg = self.config
        since = now - max(cfg.step_s, cfg.concept_step_s) * cfg.long_steps
        windows = list(self.source.windows(None, since, now))
        tags = {d: set(t) for d, t in self.source.device_tags().items()}
        by_step: dict[float, Snapshot] = {}
        for kind in KINDS:
            step = cfg.step_of(kind)
            if step not in by_step:
                by_step[step] = self.snapshot(now, kind, windows)
        snaps = {kind: by_step[cfg.step_of(kind)] for kind in KINDS}
        out: list[Finding] = []
        for kind in KINDS:
            snap = snaps[kind]
            own = {}
            for device in sorted(self._active(snap, kind, None, None)):
                f = self._finding(snap, kind, f"device:{device}", frozenset({device}), None)
                if f is not None:
                    own[device] = f
                    out.append(f)
            for cohort, members, model in self._groups(snap, kind, tags):
                f = self._group_finding(snap, kind, cohort, members, model, own, tags)
                if f is not None:
                    out.append(f)
        return out

    # -- cohorts --------------------------------------------------------------------------
    def _active(self, snap: Snapshot, kind: str, members: frozenset[str] | None, model) -> set[str]:
        """Devices of the cohort with any data for this kind in the look-back."""
        out = set()
        for m, table in snap.tables.items():
            if model is not None and m != model:
                continue
            n = table.counts[kind][N_SIGNAL[kind]].sum(axis=(1, 2))
            out |= {d for d, k in zip(table.devices, n) if k > 0 and (members is None or d in members)}
        return out

    def _groups(self, snap: Snapshot, kind: str, tags: dict[str, set[str]]):
        yield "fleet", None, None
        active = self._active(snap, kind, None, None)
        by_tag: dict[str, set[str]] = {}
        for device in active:
            for tag in tags.get(device, ()):
                by_tag.setdefault(tag, set()).add(device)
        for tag in sorted(by_tag):
            if len(by_tag[tag]) >= 2:
                yield f"tag:{tag}", frozenset(by_tag[tag]), None
        models = [m for m in snap.tables if self._active(snap, kind, None, m)]
        if len(models) > 1:
            for m in sorted(models):
                yield f"model:{m}", None, m

    def _group_finding(self, snap, kind, cohort, members, model, own: dict[str, Finding],
                       tags) -> Finding | None:
        """A multi-device cohort under the robust rule; evidence from the whole cohort.

        Raised by the devices rule, its pattern and onset are those of most of its alarming
        devices (the merged cohort dilutes their step with the healthy devices).
        """
        cfg = self.config
        active = self._active(snap, kind, members, model)
        if not active:
            return None
        alarming = frozenset(d for d, f in own.items() if f.detected)
        flagged = frozenset(alarming & active)
        robust = self._assess(snap, kind, members, model, exclude=flagged) if flagged else None
        full = self._assess(snap, kind, members, model)
        robust = robust or full
        need = max(cfg.min_devices, math.ceil(cfg.min_device_fraction * len(active)))
        rule = "robust" if robust.detected else "devices" if len(flagged) >= need else None
        if rule == "devices":
            a = full
            patterns = [own[d].pattern for d in sorted(flagged)]
            onsets = sorted(own[d].onset_t for d in flagged if own[d].onset_t is not None)
            a.detected, a.horizon = True, "devices"
            a.pattern = "gradual" if patterns.count("gradual") > len(patterns) / 2 else "sudden"
            a.onset_step = (round((onsets[len(onsets) // 2] - snap.t0) / snap.step_s) if onsets
                            else a.onset_step)
            a.severity = max(a.severity, float(np.median([own[d].severity for d in flagged])))
        elif rule is None:
            a = robust  # healthy once the devices without their own alerts are
        else:
            a = full
            if not a.detected:  # the rest fails although the whole cohort does not: show the rest's verdict
                a.detected, a.horizon, a.pattern = True, robust.horizon, robust.pattern
                a.onset_step, a.severity = robust.onset_step, max(a.severity, robust.severity)
        return self._to_finding(snap, kind, cohort, a, members, model, rule=rule, excluded=flagged,
                                alarming=alarming, tags=tags)

    def _finding(self, snap, kind, cohort, members, model) -> Finding | None:
        a = self._assess(snap, kind, members, model)
        return self._to_finding(snap, kind, cohort, a, members, model)

    # -- one cohort, one kind ----------------------------------------------------------------
    def _assess(self, snap: Snapshot, kind: str, members, model, exclude=frozenset()) -> Assessment:
        cfg = self.config
        parts, concept_refs = cohort_parts(snap, kind, members, model, exclude)
        if not parts:
            return Assessment(np.array([]), None, None)
        severities = self.scorer.series(kind, parts)
        short = self.scorer.score(kind, [p.map(lambda c: c[-cfg.short_steps:].sum(axis=0)) for p in parts])
        long = self.scorer.score(kind, [p.map(lambda c: c.sum(axis=0)) for p in parts])
        a = Assessment(severities, short, long, level=short.severity, concept_refs=concept_refs)
        # the detector's points: single steps, or merges of b steps on a quiet cohort (see _points)
        b = self._steps_per_point(kind, parts)
        points = severities if b == 1 else self.scorer.series(kind, [p.map(lambda c: _merge_steps(c, b))
                                                                     for p in parts])
        first = len(severities) - b * len(points)  # the step where point 0 begins
        det = SuddenGradualDetector.from_config(cfg.detector)
        index = [t for t, s in enumerate(points) if not np.isnan(s)]
        for t in index:
            det.update(float(points[t]))
        long_alarm = (long.severity or 0.0) >= 1.0 and (a.level or 0.0) >= cfg.policy.resolve_below
        if det.drift_detected:
            a.detected, a.pattern = True, det.pattern
            a.horizon = "short" if det.view == "short" else "trend"  # trend: the detector's long view
            a.onset_step = first + b * index[det.onset_index] if det.onset_index is not None else None
        elif long_alarm:
            valid = [float(points[t]) for t in index]
            at, a.pattern = classify(valid, cfg.detector.high) if valid else (0, "gradual")
            a.detected, a.horizon = True, "long"
            a.onset_step = first + b * index[at] if valid else 0
        if a.detected:
            a.severity = max(a.level or 0.0, (long.severity or 0.0) if long_alarm else 0.0,
                             float(points[index[-1]]) if index else 0.0)
        else:
            a.severity = a.level or 0.0
        return a

    def _steps_per_point(self, kind: str, parts: list[Part]) -> int:
        """1, or on a quiet cohort the fewest steps whose merge holds the ``min_n`` observations a
        check needs (the median step with data decides); at most a quarter of the look-back.

        Without it, steps too small to be checked leave the detector blind: a step change then
        waits for the merged long horizon, which cannot tell when or how it began.
        """
        n = sum(p.obs[N_SIGNAL[kind]].sum(axis=-1) for p in parts)
        busy = n[n > 0]
        if not len(busy) or np.median(busy) >= self.calibrator.min_n:
            return 1
        return int(min(math.ceil(self.calibrator.min_n / np.median(busy)), max(1, len(n) // 4)))

    def _to_finding(self, snap, kind, cohort, a: Assessment, members, model, rule=None,
                    excluded=frozenset(), alarming=frozenset(), tags=None) -> Finding | None:
        if a.short is None and a.long is None:
            return None
        score = a.alarming_score() if a.detected else a.short
        top = tuple(score.top(self.config.top_k)) if score is not None else ()
        devices, tag_rows = (), ()
        if a.detected and not cohort.startswith("device:"):
            steps = slice(-self.config.short_steps, None) if score is a.short else slice(None)
            pairs = [(t["model"], t["signal"]) for t in top[:3]]
            contrib = device_contributions(snap, kind, self.config.statistic, members, pairs, steps,
                                           a.concept_refs)
            skip = cohort.split(":", 1)[1] if cohort.startswith("tag:") else None
            d_rows, t_rows = attribute(contrib, tags or {}, alarming, skip_tag=skip)
            devices, tag_rows = tuple(d_rows), tuple(t_rows)
        onset_t = snap.step_t(a.onset_step) if a.onset_step is not None else None
        return Finding(cohort=cohort, kind=kind, detected=a.detected, level=a.level, severity=round(a.severity, 6),
                       n=score.n if score is not None else 0, horizon=a.horizon, pattern=a.pattern,
                       onset_t=onset_t, top=top, devices=devices, tags=tag_rows,
                       models=tuple(score.models) if score is not None else (), rule=rule,
                       excluded=tuple(sorted(excluded)))


def _merge_steps(counts: np.ndarray, b: int) -> np.ndarray:
    """[T, k] per-step counts → [T // b, k] sums of b consecutive steps, the last one ending at step T."""
    m = len(counts) // b
    return counts[len(counts) - m * b:].reshape(m, b, *counts.shape[1:]).sum(axis=1)
