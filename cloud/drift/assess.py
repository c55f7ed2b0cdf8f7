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
``short_steps`` steps, merged). A **device** whose CUSUM fires is believed only on scores that
also stand out of the reference population's range now (``population_gate``: p ≤
``POPULATION_P`` against the reference, whose spread between speakers is in the variance), or
that have no reference (the noise floor, the label mix) or no measured spread (a profile without
chunks cannot say what a population's range is): a household member the warm-up did not hear,
who sounds like people do, is not drift; a noisy room, a muffled or dead microphone,
voices unlike any in the reference are. A detector that fires is only believed when the most significant
score's recent effect is at least its floor (significant *and* large); that effect over its
floor is the **severity**, which does not move with traffic. The **level** of the cohort — how
close its detectors stand to firing now, ``S / h`` and ``log p / log alpha`` — is what the alert
state machine reads to decide that an episode is over (a detector back near zero), so a quiet
hour, which holds little evidence either way, neither opens nor closes an alert.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from cloud.drift import blocks
from cloud.drift.baselines import Baseline
from cloud.drift.cusum import CusumRun, cusum, pattern, run_start
from cloud.drift.scores import (Evidence, Score, against_baseline, against_reference, combined_z, mean_and_within,
                                severity)
from cloud.drift.tables import ModelTable, Snapshot

STEP_MIN_N = 5  # a single step is read for the onset only when it holds this many observations
ONSET_Z = 2.0  # the first block (and step within it) of an episode shows the drift at least this clearly
POPULATION_P = 0.001  # a device's changed score must sit this far out of the reference population's range


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
    population_gate: bool = False  # a device's change must also leave the population's range (see below)
    min_devices: int = 2  # a multi-device cohort's verdict needs this many devices moving with it
    min_device_fraction: float = 0.25
    level_min_devices: int = 3  # ... and this many for a verdict against the reference (see _broad)


@dataclass(frozen=True)
class Line:
    """One (model, score) of a group: per-block evidence, evidence on the recent span, per step."""

    model: str
    score: Score
    ev: Evidence  # per block
    recent: Evidence  # the recent span, merged (one entry)
    against: str  # baseline | reference
    step_p: np.ndarray | None = None  # p of every single step (onsets)
    device_effect: np.ndarray | None = None  # each device's own effect over the recent span (NaN: too little)
    device_blocks: np.ndarray | None = None  # the same per block, [devices, blocks]
    households: np.ndarray | None = None  # effective number of devices per block, then the recent span's

    @cached_property
    def _severities(self) -> tuple[np.ndarray, float]:
        return severity(self.score, self.ev), float(severity(self.score, self.recent)[0])

    def at(self, b: int | None) -> tuple[float, float, np.ndarray | None]:
        """(p, severity, each device's effect) in block ``b``, or over the recent span (``None``)."""
        blocks_sev, recent_sev = self._severities
        if b is None:
            return float(self.recent.p[0]), recent_sev, self.device_effect
        dev = self.device_blocks[:, b] if self.device_blocks is not None else None
        return float(self.ev.p[b]), float(blocks_sev[b]), dev

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
    typical: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, score) → p against the reference, recent
    typical_blocks: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # the same, per block
    z: np.ndarray | None = None
    run: CusumRun | None = None

    def block_severity(self, lines: list[Line], gated: bool = False) -> np.ndarray:
        """Per block: the effect over its floor of the most significant score (with ``gated``, of
        those out of the population's range in that block, where the device is gated)."""
        p = np.vstack([ln.ev.p for ln in lines])
        if gated and self.typical_blocks:
            out_of_range = np.vstack([self.typical_blocks.get((ln.model, ln.score.name), np.zeros(p.shape[1]))
                                      <= POPULATION_P for ln in lines])
            p = np.where(out_of_range, p, np.nan)
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
        households = _households_of(p.table.counts[kind][primary][p.mask], bounds, recent) if s.level_test else None
        for score in (sc for sc in p.table.ref.scores[kind] if sc.group == group):
            steps = p.table.counts[kind][score.signal][p.mask]
            line = _baseline_line(p.model, score, steps, bounds, recent, bases, kind, tail_n)
            if line is not None:
                g.change.append(line)
            has_ref = score.ref_mean is not None or score.expected_bins is not None
            if s.level_test and has_ref:
                merged, per_block = blocks.reduce(steps, recent), blocks.reduce(steps, bounds)
                g.level.append(Line(p.model, score, against_reference(score, per_block, tail_n),
                                    against_reference(score, merged, tail_n), "reference",
                                    device_effect=_own(score, merged[:, 0], score.ref_mean, tail_n),
                                    device_blocks=_own(score, per_block, score.ref_mean, tail_n),
                                    households=households))
            elif s.population_gate and has_ref and score.measured_spread:
                g.typical[(p.model, score.name)] = float(against_reference(score, blocks.reduce(steps, recent),
                                                                           tail_n).p[0])
                g.typical_blocks[(p.model, score.name)] = against_reference(score, blocks.reduce(steps, bounds),
                                                                            tail_n).p
    return g


def effective_devices(counts: np.ndarray) -> np.ndarray:
    """``[D, B, k]`` → ``[B]``: how many equally busy devices the blocks' counts are worth,
    ``(sum n_d)^2 / sum n_d^2`` (Kish): two households that say 90 % of a quiet hour's utterances
    are two, however many others said a word."""
    n = counts.sum(axis=-1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(n.sum(axis=0) ** 2 / (n ** 2).sum(axis=0))


def _households_of(steps: np.ndarray, bounds: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """``effective_devices`` of a part's blocks, then of its recent span, from the group's primary
    signal (what the blocks are laid out by): once per part, shared by the group's every score."""
    n = steps.sum(axis=-1, keepdims=True)
    return effective_devices(np.concatenate([blocks.reduce(n, bounds), blocks.reduce(n, recent)], axis=1))


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

    merged, per_block = blocks.reduce(mine, recent), blocks.reduce(mine, bounds)
    # how far a household strays from its baseline with no change at all: who of it is talking
    # (its step-to-step spread, on the long-run scale) and its baseline's own estimation noise
    spread = args[2] * (1.0 + args[4]) / (1.0 - args[4]) + args[3]
    return Line(model, score, judge(per_block, min_n), judge(merged, min_n), "baseline", judge(mine, STEP_MIN_N).p,
                device_effect=_own(score, merged[:, 0], args[0], min_n, spread),
                device_blocks=_own(score, per_block, args[0][:, None], min_n, spread[:, None]))


def _own(score: Score, counts: np.ndarray, expected, min_n: int, spread=0.0) -> np.ndarray:
    """Each device's own effect (its mean score less what was expected of it, in effect units),
    less twice its noise — sampling, plus ``spread``, the variance of its healthy mean around
    what was expected (against its baseline: its step-to-step spread): what it shows beyond
    doubt (0 where it shows nothing). A household whose other voice is talking has not moved."""
    n, mean, within = mean_and_within(counts, score.weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        if expected is None and score.expected_bins is not None:  # mix-adjusted: each device its own mix
            expected = (counts @ score.expected_bins) / n
        elif expected is None:
            return np.full(mean.shape, np.nan)
        expected = np.broadcast_to(np.asarray(expected, dtype=float), mean.shape)
        raw = mean - expected
        sure = np.sign(raw) * np.clip(np.abs(raw) - 2.0 * np.sqrt(within / n + spread), 0.0, None)
        return np.where(n >= min_n, sure / score.effect_scale(expected), np.nan)


def _decide_group(snap: Snapshot, a: Assessment, g: GroupResult, s: Settings) -> None:
    levels = []
    if g.change:
        g.z = combined_z(np.vstack([ln.ev.p for ln in g.change]))
        g.run = cusum(g.z, s.cusum_k, s.cusum_h, s.cusum_cap)
        a.n = max(a.n, int(np.nansum(g.change[0].ev.n)))
        if np.any(~np.isnan(g.z)):
            levels.append(float(g.run.statistic[-1]) / s.cusum_h)
        if g.run.alarm and change_verdict(g, s, None):
            _raise(a, "change", _ranked(g.change, snap, g.recent, g, s))
            onset = next((i for i in range(g.run.onset, len(g.z)) if g.z[i] >= ONSET_Z), g.run.onset)
            onset_t = _onset_time(snap, g, onset)
            if a.onset_t is None or onset_t < a.onset_t:
                a.onset_t = onset_t
                a.pattern = pattern(g.block_severity(g.change), onset)
    if g.level:
        pb = _bonferroni(g.level, None)
        if pb is not None:
            levels.append(min(math.log(pb) / math.log(s.level_alpha), 10.0) if pb < 1 else 0.0)
            if level_verdict(g, s, None):
                _raise(a, "level", _ranked(g.level, snap, g.recent))
                if a.onset_t is None:
                    _level_onset(snap, a, g)
    if levels:
        a.level = max(a.level or 0.0, max(levels))


# -- verdicts: one rule for the recent span (the engine) and for every block (the calibration) --
def _supported(lines: list[Line], b: int | None, g: GroupResult, s: Settings) -> list[tuple[float, float, Line]]:
    """(p, severity, line) of the lines with data in view ``b``, most significant first; a gated
    device keeps only the scores out of the population's range there (or without a reference)."""
    out = []
    for ln in lines:
        p, sev, _ = ln.at(b)
        if np.isnan(p):
            continue
        if s.population_gate:
            key = (ln.model, ln.score.name)
            typical = g.typical.get(key) if b is None else (g.typical_blocks[key][b] if key in g.typical_blocks
                                                          else None)
            if typical is not None and not typical <= POPULATION_P:
                continue
        out.append((p, sev, ln))
    out.sort(key=lambda t: (t[0], -t[1]))
    return out


def change_verdict(g: GroupResult, s: Settings, b: int | None) -> bool:
    """Significant and large: the most significant (gated) score's effect is over its floor, and
    for a multi-device cohort enough of its devices moved with it."""
    top = _supported(g.change, b, g, s)
    return bool(top) and top[0][1] >= 1.0 and _broad(top[0][2], b, s, g)


def level_verdict(g: GroupResult, s: Settings, b: int | None) -> bool:
    """Significant, large and broad against the reference, on at least ``level_min_devices``
    devices' worth of evidence (``effective_devices``): the reference's spread between speakers
    is a variance, and a mean of one or two households has the tails of the speaker population
    itself, which a profile's dozen chunks cannot vouch for at the budget's alpha. A cohort
    with fewer talking is left to its devices' own tests until more of them talk."""
    pb = _bonferroni(g.level, b)
    top = _supported(g.level, b, g, s)
    need = max(s.min_devices, s.level_min_devices)
    return (pb is not None and pb <= s.level_alpha and bool(top) and top[0][1] >= 1.0
            and _households(top[0][2], b) >= need and _broad(top[0][2], b, s, g, need))


def _households(line: Line, b: int | None) -> float:
    if line.households is None:
        return math.inf
    return float(line.households[-1 if b is None else b])


def _bonferroni(lines: list[Line], b: int | None) -> float | None:
    p = np.array([ln.at(b)[0] for ln in lines], dtype=float)
    m = int(np.sum(~np.isnan(p)))
    return max(float(np.nanmin(p)) * m, 1e-300) if m else None


def _broad(line: Line, b: int | None, s: Settings, g: GroupResult, min_devices: int | None = None) -> bool:
    """A multi-device cohort's verdict stands only if enough of its devices moved the same way:
    at least ``max(min_devices, min_device_fraction × devices with data)`` of them whose own effect,
    beyond their own noise (``_own``: against a baseline, who of the household is talking too), is
    over half the floor in the cohort's direction. One household
    (a voice the reference rarely heard, talking alone at night) can carry a cohort's mean; it
    cannot carry this. Devices are counted against their own baselines where they have one (a
    household's lasting offset from the reference is its normal, not a move). A verdict against
    the reference needs ``level_min_devices`` (3): in a quiet hour two households, each in a
    session led by one voice, stand off the reference and off their baselines together by chance
    (the calibration's false alerts were such blocks)."""
    if not s.level_test:
        return True
    own = next((ln for ln in g.change if ln.model == line.model and ln.score.name == line.score.name), None)
    _, _, dev = (own or line).at(b)
    if dev is None or np.all(np.isnan(dev)):
        return dev is None
    eff = dev[~np.isnan(dev)]
    ev, i = (line.recent, 0) if b is None else (line.ev, b)
    direction = np.sign(ev.effect[i]) if not np.isnan(ev.effect[i]) else 0.0
    moved = int(np.sum(direction * eff >= 0.5 * line.score.floor))
    need = s.min_devices if min_devices is None else min_devices
    return moved >= max(need, math.ceil(s.min_device_fraction * len(eff)))


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


def _ranked(lines: list[Line], snap: Snapshot, span: tuple[int, int], g: GroupResult | None = None,
            s: Settings | None = None) -> list[dict]:
    """The lines' recent rows, most significant first (those without data left out; with ``g``
    and ``s``, a gated device's rows within the population's range too)."""
    if g is not None and s is not None:
        return [ln.row(snap, span) for _, _, ln in _supported(lines, None, g, s)]
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
