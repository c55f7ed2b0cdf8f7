"""One cohort, one kind of drift: its blocks, its evidence, its CUSUM and its level test.

A cohort is a set of devices, possibly on several models (``Part``: one model table and the
mask of the cohort's devices in it). For each score group of the kind (``blocks.PRIMARY``):

1. **blocks** are laid out from the cohort's total counts;
2. **change**: every score of every part against the devices' own baselines (devices still
   warming up are left out), combined per block into one z (Bonferroni over the scores and
   parts), run through a CUSUM whose threshold comes from the false-alarm budget;
3. **level** (multi-device cohorts): every score with a reference against the model's profile,
   on the blocks that cover the last ``short_steps`` steps, at the budget's per-look alpha.

Each line (a score of a part) is also read on the **recent** span (the blocks covering the last
``short_steps`` steps, merged). A detector that fires is only believed when the most significant
score's recent effect is at least its floor (significant *and* large); that effect over its
floor is the **severity**, which does not move with traffic. The **level** of the cohort — how
close its detectors stand to firing now, ``S / h`` and ``log p / log alpha`` — is what the alert
state machine reads to decide that an episode is over (a detector back near zero), so a quiet
hour, which holds little evidence either way, neither opens nor closes an alert.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cloud.drift import blocks
from cloud.drift.baselines import Baseline
from cloud.drift.cusum import CusumRun, cusum, pattern, run_start
from cloud.drift.scores import Evidence, Score, against_baseline, against_reference, combined_z, severity
from cloud.drift.tables import ModelTable, Snapshot

STEP_MIN_N = 5  # a single step is read for the onset only when it holds this many observations
ONSET_Z = 2.0  # the first block (and step within it) of an episode shows the drift at least this clearly


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
    level_test: bool  # multi-device cohorts are also held against the reference


@dataclass(frozen=True)
class Line:
    """One (model, score) of a group: per-block evidence, evidence on the recent span, per step."""

    model: str
    score: Score
    ev: Evidence  # per block
    recent: Evidence  # the recent span, merged (one entry)
    against: str  # baseline | reference
    step_p: np.ndarray | None = None  # p of every single step (onsets)

    def row(self, snap: Snapshot, span: tuple[int, int]) -> dict:
        """The evidence row of the recent span (for alerts)."""
        ev = self.recent
        sev = severity(self.score, ev)[0]
        return {"model": self.model, "signal": self.score.name, "against": self.against,
                "n": int(ev.n[0]), "mean": _r(ev.mean[0]), "expected": _r(ev.expected[0]),
                "effect": _r(ev.effect[0]), "floor": self.score.floor, "severity": _r(sev),
                "z": _r(ev.z[0], 3), "p_value": _r(ev.p[0], 10),
                "t_start": snap.step_t(span[0]), "t_end": snap.step_t(span[1])}


@dataclass
class GroupResult:
    group: str
    bounds: np.ndarray
    recent: tuple[int, int]  # steps of the recent span
    change: list[Line] = field(default_factory=list)
    level: list[Line] = field(default_factory=list)
    z: np.ndarray | None = None
    run: CusumRun | None = None

    def block_severity(self, lines: list[Line]) -> np.ndarray:
        """Per block: the effect over its floor of the most significant score."""
        p = np.vstack([ln.ev.p for ln in lines])
        sev = np.vstack([severity(ln.score, ln.ev) for ln in lines])
        best = np.nanargmin(np.where(np.isnan(p), np.inf, p), axis=0)
        out = sev[best, np.arange(p.shape[1])]
        return np.where(np.all(np.isnan(p), axis=0), np.nan, out)


@dataclass
class Assessment:
    detected: bool = False
    horizon: str | None = None  # change | level
    level: float | None = None  # how close the detectors are to firing now (≥ 1 fires); None without data
    severity: float = 0.0
    pattern: str | None = None
    onset_t: float | None = None
    n: int = 0
    top: list[dict] = field(default_factory=list)
    groups: list[GroupResult] = field(default_factory=list)
    tests: dict = field(default_factory=dict)  # figures the detectors were held to


BaselineOf = Callable[[str, str], Baseline | None]


def assess(snap: Snapshot, kind: str, parts: list[Part], baseline_of: BaselineOf, s: Settings) -> Assessment:
    a = Assessment(tests={"cusum_h": s.cusum_h, "cusum_k": s.cusum_k})
    if s.level_test:
        a.tests["level_alpha"] = s.level_alpha
    for group in blocks.groups(kind):
        g = _group(snap, kind, group, parts, baseline_of, s)
        if g is not None:
            a.groups.append(g)
            _decide_group(snap, a, g, s)
    if not a.detected:  # what the scores say now, for the dashboard: the most significant first
        rows = sorted((r for g in a.groups for r in _ranked(g.change or g.level, snap, g.recent)),
                      key=lambda r: r["p_value"] if r["p_value"] is not None else 1.0)
        a.top = rows
        a.severity = (rows[0]["severity"] or 0.0) if rows else 0.0
    return a


def _group(snap, kind, group, parts, baseline_of, s: Settings) -> GroupResult | None:
    primary = blocks.PRIMARY[(kind, group)]
    n_step = sum(p.table.counts[kind][primary][p.mask].sum(axis=(0, 2)) for p in parts)
    tail_n = blocks.tail_n(s.min_n)
    bounds = blocks.layout(n_step, s.min_n, tail_n)
    if len(bounds) < 2:
        return None
    recent = _recent_bounds(bounds, snap.n_steps - s.short_steps)
    g = GroupResult(group, bounds, (int(recent[0]), int(recent[1])))
    for p in parts:
        bases = [baseline_of(d, p.model) for d, m in zip(p.table.devices, p.mask) if m]
        for score in (sc for sc in p.table.ref.scores[kind] if sc.group == group):
            steps = p.table.counts[kind][score.signal][p.mask]
            line = _baseline_line(p.model, score, steps, bounds, recent, bases, kind, tail_n)
            if line is not None:
                g.change.append(line)
            if s.level_test and (score.ref_mean is not None or score.expected_bins is not None):
                g.level.append(Line(p.model, score, against_reference(score, blocks.reduce(steps, bounds), tail_n),
                                    against_reference(score, blocks.reduce(steps, recent), tail_n), "reference"))
    return g


def _recent_bounds(bounds: np.ndarray, first_step: int) -> np.ndarray:
    """One merged span: the complete blocks that end after ``first_step`` (at least the last)."""
    starts = bounds[:-1]
    i = min(int(np.searchsorted(bounds[1:], first_step, side="right")), len(starts) - 1)
    return np.array([starts[i], bounds[-1]], dtype=np.int64)


def _baseline_line(model, score, steps, bounds, recent, bases, kind, min_n) -> Line | None:
    figs = [None if b is None else b.get(kind, score.name) for b in bases]
    keep = [i for i, f in enumerate(figs) if f is not None]
    if not keep:
        return None
    args = [np.array([getattr(figs[i], name) for i in keep]) for name in ("mean", "within", "tau2", "var", "rho", "dof")]
    mine = steps[keep]

    def judge(counts, n_min):
        return against_baseline(score, counts, *args[:4], n_min, base_rho=args[4], base_dof=args[5])

    return Line(model, score, judge(blocks.reduce(mine, bounds), min_n), judge(blocks.reduce(mine, recent), min_n),
                "baseline", judge(mine, STEP_MIN_N).p)


def _decide_group(snap: Snapshot, a: Assessment, g: GroupResult, s: Settings) -> None:
    levels = []
    if g.change:
        g.z = combined_z(np.vstack([ln.ev.p for ln in g.change]))
        g.run = cusum(g.z, s.cusum_k, s.cusum_h, s.cusum_cap)
        a.n = max(a.n, int(np.nansum(g.change[0].ev.n)))
        if np.any(~np.isnan(g.z)):
            levels.append(float(g.run.statistic[-1]) / s.cusum_h)
        top = _ranked(g.change, snap, g.recent)
        if g.run.alarm and top and (top[0]["severity"] or 0.0) >= 1.0:
            _raise(a, "change", top)
            onset = next((i for i in range(g.run.onset, len(g.z)) if g.z[i] >= ONSET_Z), g.run.onset)
            onset_t = _onset_time(snap, g, onset)
            if a.onset_t is None or onset_t < a.onset_t:
                a.onset_t = onset_t
                a.pattern = pattern(g.block_severity(g.change), onset)
    if g.level:
        p = np.array([ln.recent.p[0] for ln in g.level], dtype=float)
        m = int(np.sum(~np.isnan(p)))
        if m:
            pb = max(float(np.nanmin(p)) * m, 1e-300)
            levels.append(min(math.log(pb) / math.log(s.level_alpha), 10.0) if pb < 1 else 0.0)
            top = _ranked(g.level, snap, g.recent)
            if pb <= s.level_alpha and (top[0]["severity"] or 0.0) >= 1.0:
                _raise(a, "level", top)
                if a.onset_t is None:
                    _level_onset(snap, a, g)
    if levels:
        a.level = max(a.level or 0.0, max(levels))


def _level_onset(snap: Snapshot, a: Assessment, g: GroupResult) -> None:
    """Onset and pattern of a drift the level test found: where the change CUSUM's current run
    began, if the cohort has baselines and one is under way; else since when the blocks have
    stood beyond the floor against the reference — but not before the recent span the test read
    (a cohort long off its reference says nothing of when it left)."""
    if g.run is not None and g.run.onset is not None:
        onset = next((i for i in range(g.run.onset, len(g.z)) if g.z[i] >= ONSET_Z), g.run.onset)
        a.onset_t, a.pattern = _onset_time(snap, g, onset), pattern(g.block_severity(g.change), onset)
        return
    series = g.block_severity(g.level)
    first_recent = int(np.searchsorted(g.bounds[:-1], g.recent[0], side="left"))
    at = max(run_start(series), min(first_recent, len(series) - 1))
    a.onset_t, a.pattern = snap.step_t(int(g.bounds[at])), pattern(series, at)


def _ranked(lines: list[Line], snap: Snapshot, span: tuple[int, int]) -> list[dict]:
    """The lines' recent rows, most significant first (those without data left out)."""
    rows = [ln.row(snap, span) for ln in lines if not np.isnan(ln.recent.z[0])]
    rows.sort(key=lambda r: (r["p_value"] if r["p_value"] is not None else 1.0, -(r["severity"] or 0.0)))
    return rows


def _onset_time(snap: Snapshot, g: GroupResult, block: int) -> float:
    """When the onset block's drift began: its first step that shows it on its own (combined
    z ≥ ``ONSET_Z``); a block of a quiet hour spans several steps, only the last of which may be
    drifted."""
    first, end = int(g.bounds[block]), int(g.bounds[block + 1])
    steps = [ln.step_p for ln in g.change if ln.step_p is not None]
    if end - first > 1 and steps:
        z = combined_z(np.vstack([p[first:end] for p in steps]))
        hit = [i for i, v in enumerate(z) if not np.isnan(v) and v >= ONSET_Z]
        first += hit[0] if hit else end - 1 - first
    return snap.step_t(first)


def _raise(a: Assessment, horizon: str, top: list[dict]) -> None:
    a.detected = True
    a.horizon = a.horizon or horizon
    a.severity = max(a.severity, top[0]["severity"] or 0.0)
    a.top = (a.top + top) if horizon == "level" else (top + a.top)


def _r(x, digits: int = 6):
    x = float(x)
    return None if np.isnan(x) else round(x, digits)
