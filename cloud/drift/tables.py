"""Windows laid out for cohort arithmetic: per model, per signal, a [devices, steps, bins] array.

Histograms add exactly, so the counts of any cohort (a set of devices), any horizon (a range
of steps) or a cohort without one device are sums or differences of these arrays — the same
numbers ``shared.window.merge_windows`` would give for the merged windows. A window goes to
the step that holds its ``t_start``; windows of a model without a profile, or whose bins do
not fit the profile, are counted in ``skipped`` and left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from cloud.drift.signals import KINDS, Reference, extract, peer_counts, reference_of
from shared.errors import BundleError
from shared.profile import validate_profile

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
    ref: Reference
    devices: list[str]
    counts: dict[str, dict[str, np.ndarray]]  # kind → signal → [D, T, k]

    def mask(self, members: frozenset[str] | None, exclude: frozenset[str] = frozenset()) -> np.ndarray:
        return np.array([(members is None or d in members) and d not in exclude for d in self.devices], dtype=bool)

    def series(self, kind: str, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Per-step counts of the masked devices: signal → [T, k]."""
        return {s: c[mask].sum(axis=0) for s, c in self.counts[kind].items()}

    def total(self, kind: str, mask: np.ndarray, steps: slice) -> dict[str, np.ndarray]:
        """Counts of the masked devices over a range of steps: signal → [k]."""
        return {s: c[mask, steps].sum(axis=(0, 1)) for s, c in self.counts[kind].items()}

    def per_device(self, kind: str, steps: slice) -> dict[str, np.ndarray]:
        """Each device's counts over a range of steps: signal → [D, k]."""
        return {s: c[:, steps].sum(axis=1) for s, c in self.counts[kind].items()}


@dataclass
class Snapshot:
    """Every table of one look-back, plus what was left out and why."""

    t0: float
    step_s: float
    n_steps: int
    tables: dict[str | None, ModelTable]
    skipped: dict[str, int] = field(default_factory=dict)

    def step_t(self, index: int) -> float:
        return self.t0 + index * self.step_s

    def devices(self) -> set[str]:
        return {d for t in self.tables.values() for d in t.devices}


def build_snapshot(windows: Iterable[dict], profile_of: Callable[[str | None], dict | None], t0: float,
                   step_s: float, n_steps: int, no_answer_confidence: float = 0.5) -> Snapshot:
    """Lay windows with ``t0 <= t_start < t0 + n_steps * step_s`` out into per-model tables."""
    refs: dict[str | None, Reference | None] = {}
    rows: dict[str | None, dict[str, list]] = {}
    skipped: dict[str, int] = {}
    for w in windows:
        step = int((w["t_start"] - t0) // step_s)
        if not 0 <= step < n_steps:
            continue
        model = w.get("model")
        if model not in refs:
            refs[model] = _reference(profile_of, model, no_answer_confidence)
        ref = refs[model]
        if ref is None:
            skipped["no_profile"] = skipped.get("no_profile", 0) + 1
            continue
        try:
            obs = extract(w, ref)
            for kind, counts in peer_counts(w).items():
                obs[kind].update(counts)
        except (ValueError, KeyError, TypeError):
            skipped["bad_bins"] = skipped.get("bad_bins", 0) + 1
            continue
        rows.setdefault(model, {}).setdefault(w["device"], []).append((step, obs))
    tables = {model: _table(refs[model], per_device, n_steps) for model, per_device in rows.items()}
    return Snapshot(t0=t0, step_s=step_s, n_steps=n_steps, tables=tables, skipped=skipped)


def _reference(profile_of, model, no_answer_confidence: float) -> Reference | None:
    profile = profile_of(model) if model is not None else None
    if profile is None:
        return None
    try:
        return reference_of(validate_profile(profile), model, no_answer_confidence)
    except BundleError:
        return None


def _table(ref: Reference, per_device: dict[str, list], n_steps: int) -> ModelTable:
    devices = sorted(per_device)
    counts = {kind: {s: np.zeros((len(devices), n_steps, ref.shapes[s]), dtype=np.int64)
                     for s in ref.kind_signals(kind)} for kind in KINDS}
    for i, device in enumerate(devices):
        for step, obs in per_device[device]:
            for kind in KINDS:
                for s, c in obs[kind].items():
                    counts[kind][s][i, step] += c
    return ModelTable(ref=ref, devices=devices, counts=counts)
