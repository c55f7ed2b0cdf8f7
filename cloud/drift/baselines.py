"""A device's own baseline: what it looked like over a warm-up after it started running a model.

A household with one speaker is not drift; a household whose voices, room or microphone change
is. So each (device, model) learns its own baseline from its first ``warmup_s`` on that model
(or longer, until the warm-up holds ``min_blocks`` blocks), and from then on is judged against
it. Per score the baseline keeps:

- ``mean`` and ``within``: the score's mean and per-utterance variance over the warm-up;
- ``tau2``: its step-to-step spread beyond sampling noise (who in the household was talking),
  the warm-up blocks' estimate shrunk towards a prior (``prior_tau2``, worth ``PRIOR_BLOCKS``
  blocks), so a short warm-up that happened to be steady does not make the device's threshold
  tight and a long one speaks for itself;
- ``var``: the baseline mean's own estimation variance (``within / n + tau2 / blocks``), which
  every later comparison carries;
- ``rho``: the lag-1 autocorrelation of its block means (a household talks in sessions, so one
  voice may lead several blocks in a row), shrunk towards ``PRIOR_RHO``; the change detector
  reads z on the long-run scale ``sqrt((1 + rho) / (1 - rho))`` so a session is not a drift.

A baseline is immutable once learned: the book caches it per (device, model).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from cloud.drift import blocks
from cloud.drift.reference import KINDS, ModelReference
from cloud.drift.scores import Score, mean_and_within
from cloud.drift.tables import build_snapshot

PRIOR_BLOCKS = 8.0
PRIOR_RHO = 0.3
MAX_RHO = 0.9


@dataclass(frozen=True)
class ScoreBaseline:
    mean: float
    within: float
    tau2: float
    var: float
    n: int
    rho: float = 0.0  # lag-1 autocorrelation of its block means (a household talks in sessions)
    dof: float = 1e6  # degrees of freedom of the spread estimate (blocks and the prior's worth)


@dataclass
class Baseline:
    device: str
    model: str
    since_t: float
    until_t: float
    scores: dict[str, dict[str, ScoreBaseline]] = field(default_factory=dict)  # kind → score → figures

    def get(self, kind: str, score: str) -> ScoreBaseline | None:
        return self.scores.get(kind, {}).get(score)


def learn(device: str, model: str, ref: ModelReference, counts: dict[str, dict[str, np.ndarray]],
          since_t: float, until_t: float, min_n: int, min_blocks: int, priors) -> Baseline:
    """A baseline from one device's per-step counts ``{kind: {signal: [T, k]}}`` of the warm-up."""
    base = Baseline(device, model, since_t, until_t)
    for kind in KINDS:
        sig = counts.get(kind) or {}
        per_kind: dict[str, ScoreBaseline] = {}
        for group in blocks.groups(kind) if sig else ():
            bounds = blocks.layout(blocks.primary_n(sig, kind, group), min_n, tail=min_n)
            if len(bounds) < min_blocks + 1:
                continue
            for score in (s for s in ref.scores[kind] if s.group == group):
                figures = _score_baseline(score, blocks.reduce(sig[score.signal], bounds), min_n, min_blocks,
                                          priors.within_tau2(score.family), priors.tau2_min)
                if figures is not None:
                    per_kind[score.name] = figures
        if per_kind:
            base.scores[kind] = per_kind
    return base


def _score_baseline(score: Score, block_counts: np.ndarray, min_n: int, min_blocks: int, prior_tau2: float,
                    tau2_min: float) -> ScoreBaseline | None:
    n_b, mean_b, within_b = mean_and_within(block_counts, score.weights)
    ok = n_b >= min_n
    total = block_counts.sum(axis=0)
    n, mean, within = mean_and_within(total, score.weights)
    if ok.sum() < min_blocks or not n > 0:
        return None
    b = int(ok.sum())
    excess = float(np.var(mean_b[ok], ddof=1)) - float(np.mean(within_b[ok] / n_b[ok]))
    tau2 = max((PRIOR_BLOCKS * prior_tau2 + (b - 1) * excess) / (PRIOR_BLOCKS + b - 1), tau2_min)
    dev = (mean_b[ok] - mean) / np.sqrt(within_b[ok] / n_b[ok] + tau2)
    r1 = float(np.sum(dev[1:] * dev[:-1]) / max(np.sum(dev * dev), 1e-12))
    rho = float(np.clip((PRIOR_BLOCKS * PRIOR_RHO + (b - 1) * r1) / (PRIOR_BLOCKS + b - 1), 0.0, MAX_RHO))
    return ScoreBaseline(mean=float(mean), within=float(within), tau2=tau2,
                         var=float(within) / float(n) + tau2 / b, n=int(n), rho=rho, dof=PRIOR_BLOCKS + b - 1)


class BaselineBook:
    """Baselines per (device, model), learned once from the store's rollups and then cached.

    ``first_seen()`` gives when each (device, model) started; ``bodies(device, since, until)``
    the device's rollups of that span; ``reference_of(model)`` the model's reference. A device
    too quiet to fill its warm-up with speech keeps extending it (re-tried every quarter of a
    warm-up, up to ``MAX_EXTEND`` warm-ups); meanwhile what it did learn (e.g. its noise floor)
    is used, and kept: an extension only learns the scores the warm-up could not, so a change
    that begins while a quiet device is still extending (a noise, a dead microphone) is not
    learned into the noise floor it is judged against.
    """

    MAX_EXTEND = 7

    def __init__(self, *, first_seen: Callable[[], dict[tuple[str, str], float]],
                 bodies: Callable[[str, float, float], Iterable[dict]],
                 reference_of: Callable[[str], ModelReference | None], warmup_s: float, step_s: float,
                 concept_step_s: float, min_n: int, min_blocks: int, priors):
        self.first_seen, self.bodies, self.reference_of = first_seen, bodies, reference_of
        self.warmup_s, self.step_s, self.concept_step_s = warmup_s, step_s, concept_step_s
        self.min_n, self.min_blocks, self.priors = min_n, min_blocks, priors
        self._cache: dict[tuple[str, str], Baseline] = {}
        self._partial: dict[tuple[str, str], tuple[float, Baseline]] = {}  # (retry at, baseline)
        self._starts: dict[tuple[str, str], float] = {}

    def start_of(self, device: str, model: str) -> float | None:
        key = (device, model)
        if key not in self._starts:
            self._starts = self.first_seen()
        return self._starts.get(key)

    def get(self, device: str, model: str, now: float) -> Baseline | None:
        """The baseline, or None while the device is still warming up on this model."""
        key = (device, model)
        if key in self._cache:
            return self._cache[key]
        start = self.start_of(device, model)
        if start is None or now < start + self.warmup_s:
            return None
        retry_t, partial = self._partial.get(key, (0.0, None))
        if now < retry_t:
            return partial
        ref = self.reference_of(model)
        if ref is None:
            return None
        until = start + self.warmup_s if partial is None else now
        base = self._learn(device, model, ref, start, until)
        if partial is not None:  # what the warm-up learned stands; the extension only fills the gaps
            base.scores = {kind: {**base.scores.get(kind, {}), **partial.scores.get(kind, {})}
                           for kind in KINDS if kind in base.scores or kind in partial.scores}
        heard_speech = any(s.group == "speech" and s.name in base.scores.get("input", {})
                           for s in ref.scores["input"])
        if heard_speech or now >= start + self.MAX_EXTEND * self.warmup_s:
            self._cache[key] = base
            self._partial.pop(key, None)
        else:
            self._partial[key] = (now + self.warmup_s / 4, base)
        return base

    def _learn(self, device, model, ref, since, until) -> Baseline:
        bodies = list(self.bodies(device, since, until))
        counts: dict[str, dict[str, np.ndarray]] = {}
        for kind in KINDS:
            step = self.concept_step_s if kind == "concept" else self.step_s
            n_steps = max(1, int(np.ceil((until - since) / step)))
            snap = build_snapshot(bodies, lambda m: ref if m == model else None, since, step, n_steps)
            table = snap.tables.get(model)
            if table is not None and device in table.devices:
                i = table.devices.index(device)
                counts[kind] = {s: c[i] for s, c in table.counts[kind].items()}
        return learn(device, model, ref, counts, since, until, self.min_n, self.min_blocks, self.priors)
