"""The drift score table over time for one cohort (``harken drift report``).

One row per step of ``step_s`` from ``since_t`` to ``until_t``. For each kind of drift the row
holds the step's n, its severity (≥ 1: that step alone fails its calibrated check), its most
severe signal and that signal's score, and the detector's verdict after the step (``sudden``,
``gradual`` or empty), so a reader sees when and how the drift began. Concept drift uses the
profile's accuracy reference when present, else the first half of the reported range.
"""
from __future__ import annotations

import math

import numpy as np

from cloud.drift.calibrate import Calibrator
from cloud.drift.detectors import SuddenGradualDetector
from cloud.drift.engine import DriftConfig, WindowSource
from cloud.drift.scoring import N_SIGNAL, Part, Scorer, cohort_parts
from cloud.drift.signals import KINDS
from cloud.drift.tables import Cohort, build_snapshot

MAX_STEPS = 10_000


def cohort_members(source: WindowSource, cohort: Cohort) -> tuple[frozenset[str] | None, str | None]:
    """(devices or None for all, model sha prefix or None) of a parsed cohort."""
    if cohort.kind == "device":
        return frozenset({cohort.value}), None
    if cohort.kind == "tag":
        tags = source.device_tags()
        return frozenset(d for d, t in tags.items() if cohort.value in t), None
    if cohort.kind == "model":
        return None, cohort.value
    return None, None


def drift_report(source: WindowSource, cohort: str, since_t: float, until_t: float, step_s: float,
                 config: DriftConfig = DriftConfig(), calibrator: Calibrator | None = None) -> list[dict]:
    """Rows of per-step drift scores for ``cohort`` (``fleet``, ``tag:T``, ``device:D``, ``model:SHA``)."""
    if step_s <= 0 or until_t <= since_t:
        raise ValueError("the report needs step_s > 0 and until_t after since_t")
    n_steps = math.ceil((until_t - since_t) / step_s)
    if n_steps > MAX_STEPS:
        raise ValueError(f"{n_steps} steps is too many: use a larger step (at most {MAX_STEPS} steps)")
    parsed = Cohort.parse(cohort)
    members, model = cohort_members(source, parsed)
    devices = sorted(members) if members is not None else None
    windows = list(source.windows(devices, since_t, until_t))
    snap = build_snapshot(windows, source.profile, since_t, step_s, n_steps, config.no_answer_confidence)
    cal = calibrator or Calibrator(alpha=config.alpha, statistic=config.statistic, n_sims=config.n_sims,
                                   seed=config.seed)
    scorer = Scorer(cal, {k: config.floor(k) for k in KINDS})
    rows = [{"t_start": since_t + i * step_s, "t_end": min(since_t + (i + 1) * step_s, until_t)}
            for i in range(n_steps)]
    for kind in KINDS:
        parts, _ = cohort_parts(snap, kind, members, model)
        _fill(rows, kind, parts, scorer, config)
    return rows


def _fill(rows: list[dict], kind: str, parts: list[Part], scorer: Scorer, config: DriftConfig) -> None:
    severities = scorer.series(kind, parts) if parts else np.full(len(rows), np.nan)
    det = SuddenGradualDetector.from_config(config.detector)
    for t, row in enumerate(rows):
        step_parts = [p.map(lambda c: c[t]) for p in parts]
        n = sum(int(p.obs[N_SIGNAL[kind]].sum()) for p in step_parts)
        sev = float(severities[t]) if len(severities) and not np.isnan(severities[t]) else None
        top, top_score = None, None
        if sev is not None:
            score = scorer.score(kind, step_parts)
            if score.checks:
                top, top_score = score.checks[0][1].signal, round(score.checks[0][1].score, 6)
            det.update(sev)
        row.update({f"{kind}_n": n, f"{kind}_severity": None if sev is None else round(sev, 4),
                    f"{kind}_top": top, f"{kind}_top_score": top_score,
                    f"{kind}_flag": det.pattern or ""})
