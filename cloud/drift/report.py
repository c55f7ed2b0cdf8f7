"""The drift table over time for one cohort (``harken drift report``).

One row per step of ``step_s`` from ``since_t`` to ``until_t``. For each kind of drift the row
holds the step's n and, on the step that completes a block (``blocks``: steps merged until they
hold enough data), the block's severity (``|effect| / floor`` of its most significant score),
that score, the block's combined z, and the CUSUM statistic after the block with ``drift`` when it stands over its
threshold — so a reader sees when and how the drift began. Scores are judged as the engine
judges them: against the devices' baselines, and for multi-device cohorts against the reference.
"""
from __future__ import annotations

import math

import numpy as np

from cloud.drift import blocks
from cloud.drift.assess import Part, Settings, assess
from cloud.drift.budget import Budget
from cloud.drift.reference import KINDS
from cloud.drift.tables import Cohort, build_snapshot

MAX_STEPS = 10_000


def cohort_members(tags: dict[str, set[str]], cohort: Cohort) -> tuple[frozenset[str] | None, str | None]:
    """(devices or None for all, model sha prefix or None) of a parsed cohort."""
    if cohort.kind == "device":
        return frozenset({cohort.value}), None
    if cohort.kind == "tag":
        return frozenset(d for d, t in tags.items() if cohort.value in t), None
    if cohort.kind == "model":
        return None, cohort.value
    return None, None


def drift_report(engine, cohort: str, since_t: float, until_t: float, step_s: float) -> list[dict]:
    """Rows of per-step drift figures for ``cohort`` (``fleet``, ``tag:T``, ``device:D``, ``model:SHA``)."""
    if step_s <= 0 or until_t <= since_t:
        raise ValueError("the report needs step_s > 0 and until_t after since_t")
    n_steps = math.ceil((until_t - since_t) / step_s)
    if n_steps > MAX_STEPS:
        raise ValueError(f"{n_steps} steps is too many: use a larger step (at most {MAX_STEPS} steps)")
    cfg = engine.config
    parsed = Cohort.parse(cohort)
    members, model = cohort_members({d: set(t) for d, t in engine.source.device_tags().items()}, parsed)
    devices = sorted(members) if members is not None else None
    snap = build_snapshot(engine.source.bodies(devices, since_t, until_t), engine.reference_of, since_t, step_s,
                          n_steps)
    rows = [{"t_start": since_t + i * step_s, "t_end": min(since_t + (i + 1) * step_s, until_t)}
            for i in range(n_steps)]
    parts = [Part(m, t, t.mask(members)) for m, t in sorted(snap.tables.items())
             if (model is None or m.startswith(model)) and t.mask(members).any()]
    n_devices = len({d for p in parts for d, k in zip(p.table.devices, p.mask) if k})
    for kind in KINDS:
        budget = Budget(cfg.alerts_per_1000_device_days, n_devices, 86400.0 / step_s)
        settings = Settings(min_n=cfg.min_n, short_steps=cfg.short_steps, cusum_k=cfg.cusum_k,
                            cusum_h=budget.cusum_h(n_devices + 1, cfg.cusum_k), cusum_cap=cfg.cusum_cap,
                            level_alpha=budget.alpha(1),
                            level_test=parsed.kind != "device")
        _fill(rows, kind, snap, parts, settings, lambda d, m: engine.baselines.get(d, m, until_t))
    return rows


def _fill(rows, kind, snap, parts, settings, baseline_of) -> None:
    for i, row in enumerate(rows):
        n = sum(int(p.table.counts[kind][blocks.PRIMARY[(kind, g)]][p.mask, i].sum())
                for p in parts for g in blocks.groups(kind)[:1])
        row.update({f"{kind}_n": n, f"{kind}_severity": None, f"{kind}_top": None, f"{kind}_z": None,
                    f"{kind}_cusum": None, f"{kind}_flag": ""})
    if not parts:
        return
    a = assess(snap, kind, parts, baseline_of, settings)
    for g in a.groups:
        lines = g.change
        if not lines:
            continue
        sev_blocks = g.block_severity(lines)
        p = np.vstack([ln.ev.p for ln in lines])
        for b, end in enumerate(g.bounds[1:]):
            row = rows[int(end) - 1]
            if np.isnan(sev_blocks[b]):
                continue
            j = int(np.nanargmin(np.where(np.isnan(p[:, b]), np.inf, p[:, b])))
            if row[f"{kind}_severity"] is None or sev_blocks[b] > row[f"{kind}_severity"]:
                row.update({f"{kind}_severity": round(float(sev_blocks[b]), 4), f"{kind}_top": lines[j].score.name,
                            f"{kind}_z": None if np.isnan(g.z[b]) else round(float(g.z[b]), 3),
                            f"{kind}_cusum": round(float(g.run.statistic[b]), 3),
                            f"{kind}_flag": "drift" if g.run.statistic[b] >= g.run.h else ""})
