"""Rollups laid out for cohort arithmetic: per model, per signal, a [devices, steps, bins] array.

Histograms add exactly, so the counts of any cohort (a set of devices), any horizon (a range
of steps) or a cohort without one device are sums of these arrays — the same numbers
``shared.window.merge_windows`` would give for the merged windows. A body (a rollup bucket or a
window not rolled up yet) goes to the step that holds its ``t_start``, so steps must be whole
multiples of the rollup bucket (the collector checks it). Bodies of a model without a profile,
or whose bins do not fit the profile, are counted in ``skipped`` and left out; feedback a body
carries for another model is credited to that model (``signals.credits``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from cloud.drift.reference import KINDS, ModelReference
from cloud.drift.signals import concept_counts, credits, extract

COHORT_PREFIXES = ("tag", "device", "model")


@dataclass(frozen=True)
class Cohort:
    """``fleet``, ``tag:<tag>``, ``device:<id>`` or ``model:<sha>`` (a sha prefix is enough)."""

    name: str
    kind: str  # fleet | tag | device | model
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Cohort":
        if text == "fleet":
            return cls("fleet", "fleet")
        prefix, _, value = text.partition(":")
        if prefix not in COHORT_PREFIXES or not value:
            raise ValueError(f"cohort {text!r} is not 'fleet', 'tag:T', 'device:D' or 'model:SHA'")
        return cls(text, prefix, value)


@dataclass
class ModelTable:
    ref: ModelReference
    devices: list[str]
    counts: dict[str, dict[str, np.ndarray]]  # kind → signal → [D, T, k]

    def index(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.devices)}

    def mask(self, members: frozenset[str] | None, exclude: frozenset[str] = frozenset()) -> np.ndarray:
        return np.array([(members is None or d in members) and d not in exclude for d in self.devices], dtype=bool)


@dataclass
class Snapshot:
    """Every table of one look-back of ``n_steps`` steps from ``t0``, plus what was left out."""

    t0: float
    step_s: float
    n_steps: int
    tables: dict[str, ModelTable]
    skipped: dict[str, int] = field(default_factory=dict)

    def step_t(self, index: int) -> float:
        return self.t0 + index * self.step_s

    def devices(self) -> set[str]:
        return {d for t in self.tables.values() for d in t.devices}


def build_snapshot(bodies: Iterable[dict], reference_of: Callable[[str], ModelReference | None], t0: float,
                   step_s: float, n_steps: int) -> Snapshot:
    """Lay bodies with ``t0 <= t_start < t0 + n_steps * step_s`` out into per-model tables."""
    rows: dict[str, dict[str, list]] = {}
    skipped: dict[str, int] = {}

    def skip(code: str) -> None:
        skipped[code] = skipped.get(code, 0) + 1

    for body in bodies:
        step = int((body["t_start"] - t0) // step_s)
        if not 0 <= step < n_steps:
            continue
        model, device = body.get("model"), body["device"]
        ref = reference_of(model) if model else None
        if ref is None:
            skip("no_profile")
        else:
            try:
                rows.setdefault(model, {}).setdefault(device, []).append((step, extract(body, ref)))
            except (ValueError, KeyError, TypeError):
                skip("bad_bins")
        for other, (pairs, audit) in credits(body).items():
            other_ref = reference_of(other)
            if other_ref is not None:
                rows.setdefault(other, {}).setdefault(device, []).append(
                    (step, {"concept": concept_counts(pairs, audit, other_ref)}))
    refs = {m: reference_of(m) for m in rows}
    tables = {m: _table(refs[m], per_device, n_steps) for m, per_device in rows.items()}
    return Snapshot(t0=t0, step_s=step_s, n_steps=n_steps, tables=tables, skipped=skipped)


def _table(ref: ModelReference, per_device: dict[str, list], n_steps: int) -> ModelTable:
    devices = sorted(per_device)
    counts = {kind: {s: np.zeros((len(devices), n_steps, ref.shapes[s]), dtype=np.int64) for s in ref.signals(kind)}
              for kind in KINDS}
    for i, device in enumerate(devices):
        for step, obs in per_device[device]:
            for kind, sigs in obs.items():
                for s, c in sigs.items():
                    counts[kind][s][i, step] += c
    return ModelTable(ref=ref, devices=devices, counts=counts)
