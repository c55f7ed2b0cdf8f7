"""One cohort, one kind of drift: its blocks, its evidence, its CUSUM and its level test.

A cohort is a set of devices, possibly on several models (``Part``: one model table and the
mask of the cohort's devices in it). For each score group of the kind (``blocks.PRIMARY``):

1. **blocks** are laid out from the cohort's total counts;
2. **change**: every score of every part against the devices' own baselines (devices still
   warming up are left out), combined per block into one z (Bonferroni over the scores and
   parts), run through a CUSUM whose threshold comes from the false-alarm budget;
3. **level** (multi-device cohorts): every score with a reference against the model's profile,
   on the blocks that cover the last ``short_steps`` steps, at the budget's per-look alpha;
4. severities: ``|effect| / floor`` per score and block (traffic-independent).

The kind is detected when a group's CUSUM is over its threshold and the recent effect is at
least the floor (significant *and* large), or when the level test fails with an effect over
the floor. ``Assessment`` carries what the engine needs to write a finding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cloud.drift import blocks
from cloud.drift.baselines import Baseline
from cloud.drift.cusum import changepoint, cusum, pattern
from cloud.drift.scores import Evidence, Score, against_baseline, against_reference, combined_z, severity
from cloud.drift.tables import ModelTable, Snapshot


@dataclass(frozen=True)
class Part:
    model: str
    table: ModelTable
    mask: np.ndarray  # the cohort's devices in this table


@dataclass(frozen=True)
class Settings:
    """What one assessment needs from the configuration and the budget."""

    min_n: int
    short_steps: int
    cusum_k: float
    cusum_h: float
    cusum_cap: float
    level_alpha: float
    sudden_steps: float
    level_test: bool  # multi-device cohorts are also held against the reference


@dataclass(frozen=True)
class Line:
    """One (model, score) of a group with its per-block evidence."""

    model: str
    score: Score
    ev: Evidence
    against: str  # baseline | reference

    def severity(self) -> np.ndarray:
        return severity(self.score, self.ev)

    def at(self, i: int, snap: Snapshot, bounds: np.ndarray) -> dict:
        """The evidence row of block ``i`` (for alerts and the report)."""
        ev = self.ev
        return {"model": self.model, "signal": self.score.name, "against": self.against,
                "n": int(ev.n[i]), "mean": _r(ev.mean[i]), "expected": _r(ev.expected[i]),
                "effect": _r(ev.effect[i]), "floor": self.score.floor, "severity": _r(self.severity()[i]),
                "z": _r(ev.z[i], 3), "p_value": _r(ev.p[i], 8),
                "t_start": snap.step_t(int(bounds[i])), "t_end": snap.step_t(int(bounds[i + 1]))}


@dataclass
class GroupResult:
    group: str
    bounds: np.ndarray
    change: list[Line] = field(default_factory=list)
    level: list[Line] = field(default_factory=list)  # one merged recent block per line
    level_bounds: np.ndarray | None = None
    z: np.ndarray | None = None
    run: object = None
    severity: np.ndarray | None = None  # per block: max over change lines (or level lines without baselines)


@dataclass
class Assessment:
    detected: bool = False
    horizon: str | None = None  # change | level
    level: float | None = None  # the recent severity (max over groups); None without data
    severity: float = 0.0
    pattern: str | None = None
    onset_t: float | None = None
    n: int = 0
    top: list[dict] = field(default_factory=list)
    groups: list[GroupResult] = field(default_factory=list)
    tests: dict = field(default_factory=dict)  # figures the detectors were held to


BaselineOf = Callable[[str, str], Baseline | None]


def assess(snap: Snapshot, kind: str, parts: list[Part], baseline_of: BaselineOf, s: Settings) -> Assessment:
    a = Assessment()
    for group in blocks.groups(kind):
        g = _group(snap, kind, group, parts, baseline_of, s)
        if g is not None:
            a.groups.append(g)
    if not a.groups:
        return a
    for g in a.groups:
        _decide_group(snap, a, g, s)
    recent = [_recent(g) for g in a.groups]
    levels = [x for x in recent if x is not None]
    a.level = max(levels) if levels else None
    a.severity = max(a.severity, a.level or 0.0)
    return a


def _group(snap, kind, group, parts, baseline_of, s: Settings) -> GroupResult | None:
    primary = blocks.PRIMARY[(kind, group)]
    n_step = sum(p.table.counts[kind][primary][p.mask].sum(axis=(0, 2)) for p in parts)
    bounds = blocks.layout(n_step, s.min_n)
    if len(bounds) < 2:
        return None
    g = GroupResult(group, bounds)
    recent = _recent_bounds(bounds, snap.n_steps - s.short_steps)
    g.level_bounds = recent
    for p in parts:
        devices = [d for d, m in zip(p.table.devices, p.mask) if m]
        bases = [baseline_of(d, p.model) for d in devices]
        for score in (sc for sc in p.table.ref.scores[kind] if sc.group == group):
            counts = blocks.reduce(p.table.counts[kind][score.signal][p.mask], bounds)
            line = _baseline_line(p.model, score, counts, bases, kind, s.min_n)
            if line is not None:
                g.change.append(line)
            if s.level_test and (score.ref_mean is not None or score.expected_bins is not None):
                merged = blocks.reduce(p.table.counts[kind][score.signal][p.mask], recent)
                g.level.append(Line(p.model, score, against_reference(score, merged, s.min_n), "reference"))
    return g


def _recent_bounds(bounds: np.ndarray, first_step: int) -> np.ndarray:
    """One merged block: the complete blocks that end after ``first_step`` (at least the last)."""
    starts = bounds[:-1]
    i = int(np.searchsorted(bounds[1:], first_step, side="right"))
    i = min(i, len(starts) - 1)
    return np.array([starts[i], bounds[-1]], dtype=np.int64)


def _baseline_line(model, score, counts, bases, kind, min_n) -> Line | None:
    figs = [None if b is None else b.get(kind, score.name) for b in bases]
    keep = [i for i, f in enumerate(figs) if f is not None]
    if not keep:
        return None
    arr = lambda name: np.array([getattr(figs[i], name) for i in keep])  # noqa: E731
    ev = against_baseline(score, counts[keep], arr("mean"), arr("within"), arr("tau2"), arr("var"), min_n)
    return Line(model, score, ev, "baseline")


def _decide_group(snap: Snapshot, a: Assessment, g: GroupResult, s: Settings) -> None:
    times = np.array([snap.step_t(int(b)) for b in g.bounds[:-1]])
    if g.change:
        g.z = combined_z(np.vstack([ln.ev.p for ln in g.change]))
        g.run = cusum(g.z, s.cusum_k, s.cusum_h, s.cusum_cap)
        g.severity = _nanmax(np.vstack([ln.severity() for ln in g.change]))
        a.n = max(a.n, int(np.nansum(g.change[0].ev.n)))
        if g.run.alarm and _recent_severity(g.severity) >= 1.0:
            _raise(a, "change", _recent_severity(g.severity))
            if a.onset_t is None or times[g.run.onset] < a.onset_t:
                a.onset_t = float(times[g.run.onset])
                a.pattern = pattern(g.severity, times, g.run.onset, sudden_s=s.sudden_steps * snap.step_s)
            a.top = _top(g.change, len(times) - 1, snap, g.bounds) + a.top
    if g.level:
        p = np.array([ln.ev.p[0] for ln in g.level], dtype=float)
        sev = np.array([ln.severity()[0] for ln in g.level], dtype=float)
        m = int(np.sum(~np.isnan(p)))
        a.tests.setdefault("level_alpha", s.level_alpha)
        if m and np.nanmin(p) * m <= s.level_alpha and np.nanmax(np.where(p * m <= s.level_alpha, sev, np.nan)) >= 1:
            level_sev = float(np.nanmax(sev))
            _raise(a, "level", level_sev)
            if a.onset_t is None:
                series = g.severity if g.severity is not None else np.full(len(times), np.nan)
                at = changepoint(series) if np.any(~np.isnan(series)) else 0
                a.onset_t = float(times[at])
                a.pattern = "sudden" if at == 0 else pattern(series, times, at, sudden_s=s.sudden_steps * snap.step_s)
            lb = g.level_bounds
            a.top = a.top + _top(g.level, 0, snap, lb)
        if g.severity is None:
            g.severity = np.full(len(times), np.nan)
    a.tests.setdefault("cusum_h", s.cusum_h)
    a.tests.setdefault("cusum_k", s.cusum_k)


def _raise(a: Assessment, horizon: str, sev: float) -> None:
    a.detected = True
    a.horizon = a.horizon or horizon
    a.severity = max(a.severity, sev)


def _recent(g: GroupResult) -> float | None:
    """The group's severity now: its last block against baselines, else its recent level test."""
    if g.severity is not None and len(g.severity) and not np.isnan(g.severity[-1]):
        return float(g.severity[-1])
    sev = [float(ln.severity()[0]) for ln in g.level if not np.isnan(ln.severity()[0])]
    return max(sev) if sev else None


def _recent_severity(series: np.ndarray) -> float:
    valid = series[~np.isnan(series)]
    return float(np.median(valid[-3:])) if len(valid) else 0.0


def _top(lines: list[Line], i: int, snap, bounds, k: int = 5) -> list[dict]:
    rows = [ln.at(i, snap, bounds) for ln in lines if not np.isnan(ln.ev.z[i])]
    rows.sort(key=lambda r: (-(r["severity"] or 0.0), r["p_value"] if r["p_value"] is not None else 1.0))
    return rows[:k]


def _nanmax(rows: np.ndarray) -> np.ndarray:
    out = np.full(rows.shape[1], np.nan)
    has = ~np.all(np.isnan(rows), axis=0)
    out[has] = np.nanmax(rows[:, has], axis=0)
    return out


def _r(x, digits: int = 6):
    x = float(x)
    return None if np.isnan(x) else round(x, digits)
