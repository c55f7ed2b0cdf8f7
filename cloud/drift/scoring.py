"""One kind of drift (input, output, concept) for one cohort: per-signal checks, then a verdict.

For each model in the cohort its signals are checked against that model's own reference
(windows of different models never mix: their feature bins differ). A model's severity is the
largest severity of its signals (Bonferroni across them, see ``calibrate``); **a cohort's
severity is the n-weighted mean of its models' severities**, so it can only reach 1 when at
least one model's own check fails, and a small canary cannot raise the fleet on its own (its
``model:`` cohort does). The per-model figures are kept in ``KindScore.models``.

Peer-referenced signals (``signals.PEER_SIGNALS``: the voiced share of the frames) are checked
against the cohort's peers, the other devices of the same model over the same steps, with an
effect floor only (``PEER_FLOORS``: frames are not independent draws, so a simulated null would
understate their spread). A model part with no utterance at all (a dead microphone) still weighs
1 in the cohort's mean, so its peer check can raise it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from cloud.drift.calibrate import Calibrator, SignalCheck
from cloud.drift.signals import PEER_SIGNALS, Reference
from cloud.drift.stats import STATISTICS
from cloud.drift.tables import Snapshot

N_SIGNAL = {"input": "utterance_ms", "output": "confidence", "concept": "accuracy"}
# A device whose voiced share is ~10x off its peers' (dead: ~0 against 0.2 or more) fails.
PEER_FLOORS = {"psi": 1.0, "js": 0.1}


@dataclass(frozen=True)
class Part:
    """One model's share of a cohort: its reference and observed counts (totals or [T, k] series)."""

    model: str | None
    ref: Reference
    obs: dict[str, np.ndarray]
    concept_ref: dict[str, np.ndarray] | None = None  # concept reference when not in the profile
    peers: dict[str, np.ndarray] | None = None  # counts of the cohort's peers, per peer signal

    def map(self, f: Callable[[np.ndarray], np.ndarray]) -> "Part":
        """The part with ``f`` applied to every count array (a horizon's totals, one step, merged steps)."""
        return replace(self, obs={s: f(c) for s, c in self.obs.items()},
                       peers=None if self.peers is None else {s: f(c) for s, c in self.peers.items()})


@dataclass(frozen=True)
class KindScore:
    kind: str
    n: int
    severity: float | None  # None: no signal had enough data
    checks: tuple[tuple[str | None, SignalCheck], ...]  # (model, check), most severe first
    models: tuple[dict, ...]  # {model, n, severity}

    def top(self, k: int = 5) -> list[dict]:
        return [{"model": m, **c.to_dict()} for m, c in self.checks[:k]]


class Scorer:
    """Checks signals with a calibrator, using an effect-size floor per kind."""

    def __init__(self, calibrator: Calibrator, floors: dict[str, float], detail_k: int = 5):
        self.calibrator = calibrator
        self.floors = floors
        self.detail_k = detail_k  # the most severe checks get their chi-square p-value and JS

    def _concept_ref(self, part: Part) -> dict[str, np.ndarray]:
        return part.ref.signals["concept"] if part.ref.concept_from_profile else (part.concept_ref or {})

    def model_checks(self, kind: str, part: Part) -> list[SignalCheck]:
        cal, floor = self.calibrator, self.floors[kind]
        m = len(part.ref.signals[kind])
        checks = []
        if kind == "concept":
            refs = self._concept_ref(part)
            for s, obs in part.obs.items():
                rc, rw = (int(x) for x in refs.get(s, (0, 0)))
                c = cal.check_accuracy(s, rc, rc + rw, int(obs[0]), int(obs.sum()), m, floor)
                checks.append(c)
        else:
            for s, obs in part.obs.items():
                if s in PEER_SIGNALS[kind]:
                    checks.append(self.peer_check(s, part.peers[s], obs))
                else:
                    checks.append(cal.check(s, part.ref.signals[kind][s], obs, m, floor, detail=False))
        return [c for c in checks if c is not None]

    def peer_check(self, signal: str, peers, obs) -> SignalCheck | None:
        """One peer-referenced signal's totals against the peers' (effect floor only)."""
        peers, obs = np.asarray(peers, dtype=np.int64), np.asarray(obs, dtype=np.int64)
        if obs.sum() < self.calibrator.min_n or peers.sum() < self.calibrator.min_n:
            return None
        floor = PEER_FLOORS[self.calibrator.statistic]
        score = float(STATISTICS[self.calibrator.statistic](peers, obs))
        return SignalCheck(signal=signal, n=int(obs.sum()), score=score, threshold=floor, floor=floor,
                           severity=score / floor)

    def peer_series(self, peers, obs) -> np.ndarray:
        """Per-step severities of a peer-referenced signal ([T, k] both; NaN where either is too small)."""
        peers, obs = np.asarray(peers, dtype=np.int64), np.asarray(obs, dtype=np.int64)
        ok = (obs.sum(axis=-1) >= self.calibrator.min_n) & (peers.sum(axis=-1) >= self.calibrator.min_n)
        out = np.full(len(obs), np.nan)
        if ok.any():
            out[ok] = STATISTICS[self.calibrator.statistic](peers[ok], obs[ok]) / PEER_FLOORS[self.calibrator.statistic]
        return out

    def score(self, kind: str, parts: Sequence[Part]) -> KindScore:
        """The verdict on cohort totals (one ``Part`` per model, ``obs`` as [k] counts)."""
        all_checks, models = [], []
        for part in parts:
            checks = self.model_checks(kind, part)
            n = int(part.obs[N_SIGNAL[kind]].sum())
            sev = max((c.severity for c in checks), default=None)
            models.append({"model": part.model, "n": n, "severity": sev})
            all_checks += [(part.model, c) for c in checks]
        all_checks.sort(key=lambda mc: -mc[1].severity)
        by_model = {p.model: p for p in parts}
        all_checks[:self.detail_k] = [
            (m, c if c.critical is None else
             self.calibrator.detailed(c, by_model[m].ref.signals[kind][c.signal], by_model[m].obs[c.signal]))
            for m, c in all_checks[:self.detail_k]]
        return KindScore(kind, sum(m["n"] for m in models), _weighted(models), tuple(all_checks), tuple(models))

    def series(self, kind: str, parts: Sequence[Part]) -> np.ndarray:
        """Per-step severities (NaN where no model had enough data); ``obs`` as [T, k]."""
        cal, floor = self.calibrator, self.floors[kind]
        sev_sum = n_sum = None
        for part in parts:
            m = len(part.ref.signals[kind])
            if kind == "concept":
                refs = self._concept_ref(part)
                rows = [cal.accuracy_series(refs.get(s, (0, 0)), obs, m, floor) for s, obs in part.obs.items()]
            else:
                rows = [self.peer_series(part.peers[s], obs) if s in PEER_SIGNALS[kind]
                        else cal.severity_series(part.ref.signals[kind][s], obs, m, floor)
                        for s, obs in part.obs.items()]
            sev = _nanmax(np.vstack(rows))
            n = part.obs[N_SIGNAL[kind]].sum(axis=-1).astype(float)
            w = np.where(np.isnan(sev), 0.0, np.maximum(n, 1.0))
            sev_sum = w * np.nan_to_num(sev) if sev_sum is None else sev_sum + w * np.nan_to_num(sev)
            n_sum = w if n_sum is None else n_sum + w
        if sev_sum is None:
            return np.array([])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_sum > 0, sev_sum / np.where(n_sum > 0, n_sum, 1), np.nan)


def cohort_parts(snap: Snapshot, kind: str, members: frozenset[str] | None, model: str | None,
                 exclude: frozenset[str] = frozenset()) -> tuple[list[Part], dict]:
    """One ``Part`` per model of the cohort, with [T, k] series; ``model`` may be a sha prefix.

    Concept without a reference in the profile: the first half of the look-back becomes the
    reference (returned as ``{(model, signal): counts}``) and is blanked from the series.
    Peer-referenced signals get the other devices of the model table as ``peers``; a cohort
    without peers (the fleet, a model, a lone device) leaves them out.
    """
    parts, concept_refs = [], {}
    half = snap.n_steps // 2
    for m, table in sorted(snap.tables.items(), key=lambda kv: str(kv[0])):
        if model is not None and not str(m).startswith(model):
            continue
        mask = table.mask(members, exclude)
        if not mask.any():
            continue
        series = table.series(kind, mask)
        cref = None
        if kind == "concept" and not table.ref.concept_from_profile:
            cref = {s: c[:half].sum(axis=0) for s, c in series.items()}
            series = {s: np.concatenate([np.zeros_like(c[:half]), c[half:]]) for s, c in series.items()}
            concept_refs.update({(m, s): r for s, r in cref.items()})
        peer_mask = np.zeros(len(table.devices), dtype=bool) if members is None else ~table.mask(members)
        peers = {s: table.counts[kind][s][peer_mask].sum(axis=0) for s in PEER_SIGNALS[kind]} \
            if peer_mask.any() else None
        if peers is None:
            series = {s: c for s, c in series.items() if s not in PEER_SIGNALS[kind]}
        parts.append(Part(m, table.ref, series, cref, peers))
    return parts, concept_refs


def _nanmax(rows: np.ndarray) -> np.ndarray:
    out = np.full(rows.shape[1], np.nan)
    has = ~np.all(np.isnan(rows), axis=0)
    out[has] = np.nanmax(rows[:, has], axis=0)
    return out


def _weighted(models: list[dict]) -> float | None:
    scored = [m for m in models if m["severity"] is not None]
    if not scored:
        return None
    return sum(m["severity"] * max(m["n"], 1) for m in scored) / sum(max(m["n"], 1) for m in scored)
