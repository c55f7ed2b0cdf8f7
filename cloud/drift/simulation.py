"""Households at scale: the drift engine's scores on many simulated device-days, in seconds.

The false-alarm budget is a claim about rates (alerts per 1,000 device-days) that a few real
device-days cannot check. This simulator plays households of **real utterances** — the
per-utterance records (features, length, level, SNR, prediction, confidence, truth) that the
device's own gate and the bundle produced from held-out speakers' speech
(``cloud.lab.records``) — at the window level: each device gets 1-3 speakers, a diurnal traffic
schedule of its own and a noise floor of its own, and every step its utterances are resampled
from its speakers and counted into exactly the histograms an agent sends. The counts go
straight into the engine's tables (``ModelTable``), so the engine's own code judges them:
households talk in sessions led by one speaker (so a step is not a fresh draw of the household),
baselines learned over the warm-up, then per-device and fleet CUSUMs and the fleet's level test.

The CUSUM is run over the whole simulated period at once rather than once per evaluation over
a sliding look-back; a CUSUM started at 0 at the start of a look-back is never above the
running one, so this counts at least as many alarms as the collector would raise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cloud.drift import blocks, peers
from cloud.drift.assess import Part, Settings, assess, change_verdict, level_verdict
from cloud.drift.baselines import learn
from cloud.drift.budget import Budget
from cloud.drift.engine import DriftConfig
from cloud.drift.reference import KINDS, ModelReference
from cloud.drift.scores import mean_and_within
from cloud.drift.tables import ModelTable, Snapshot
from shared.histogram import CONFIDENCE_EDGES, NOISE_DBFS_EDGES

DAY_S = 86400.0
# Relative utterance rate over the hours of a day: quiet night, busy morning and evening.
DIURNAL = np.array([0.05, 0.03, 0.02, 0.02, 0.03, 0.1, 0.5, 1.0, 0.9, 0.6, 0.5, 0.5,
                    0.6, 0.5, 0.4, 0.4, 0.5, 0.7, 1.0, 0.9, 0.7, 0.5, 0.3, 0.1])


@dataclass
class Speaker:
    """One held-out speaker's utterances as the device saw them (parallel arrays)."""

    features: np.ndarray  # [n, F]
    utterance_ms: np.ndarray
    level_dbfs: np.ndarray
    snr_db: np.ndarray
    confidence: np.ndarray
    predicted: np.ndarray  # label index
    truth: np.ndarray  # label index, -1 when the utterance overlaps no clip

    @classmethod
    def from_record(cls, r: dict) -> "Speaker":
        return cls(np.asarray(r["features"], float), np.asarray(r["utterance_ms"], float),
                   np.asarray(r["level_dbfs"], float), np.asarray(r["snr_db"], float),
                   np.asarray(r["confidence"], float), np.asarray(r["predicted"], int), np.asarray(r["truth"], int))


@dataclass(frozen=True)
class Households:
    devices: int = 20
    days: float = 2.0
    step_s: float = 300.0
    speakers_per_device: tuple[int, int] = (1, 3)
    utterances_per_day: tuple[float, float] = (1500.0, 4000.0)  # per device, drawn log-uniform
    audit_rate: float = 0.02
    feedback_rate: float = 0.05
    frames_per_step: int = 2000  # unvoiced frames counted into noise_dbfs per step
    noise_floor_dbfs: tuple[float, float] = (-68.0, -55.0)
    session_min: float = 20.0  # a household talks in sessions led by one of its speakers (mean length)
    lead_share: float = 0.8  # the session leader's share of its utterances
    seed: int = 0


@dataclass
class Result:
    device_days: float
    alarms: dict[str, int] = field(default_factory=dict)  # per kind
    episodes: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.alarms.values())


def simulate_table(speakers: list[Speaker], ref: ModelReference, h: Households, model: str = "m") -> ModelTable:
    """Per-step counts of every signal for ``h.devices`` households over ``h.days``."""
    rng = np.random.default_rng(h.seed)
    n_steps = int(round(h.days * DAY_S / h.step_s))
    names = [f"dev-{i:04d}" for i in range(h.devices)]
    counts = {kind: {s: np.zeros((h.devices, n_steps, ref.shapes[s]), dtype=np.int64) for s in ref.signals(kind)}
              for kind in KINDS}
    hours = (np.arange(n_steps) * h.step_s / 3600.0) % 24
    shape = DIURNAL[hours.astype(int)]
    for d in range(h.devices):
        house = rng.choice(len(speakers), size=rng.integers(h.speakers_per_device[0], h.speakers_per_device[1] + 1),
                           replace=False)
        n_utt = rng.poisson(_expected_utterances(shape, h, rng))
        floor = rng.uniform(*h.noise_floor_dbfs)
        leaders = _sessions(len(house), n_steps, h, rng)
        for t in range(n_steps):
            _step(counts, d, t, int(n_utt[t]), [speakers[i] for i in house], ref, h, floor, rng, leaders[t])
    return ModelTable(ref=ref, devices=names, counts=counts)


def _expected_utterances(shape: np.ndarray, h: Households, rng) -> np.ndarray:
    """Expected utterances per step of one household: its daily total spread over its own hours."""
    per_day = math.exp(rng.uniform(*np.log(h.utterances_per_day)))
    phase_steps = int(rng.integers(-2, 3) * 3600 / h.step_s)  # households keep slightly different hours
    mine = np.roll(shape, phase_steps)
    steps_per_day = int(round(DAY_S / h.step_s))
    return mine * per_day / mine[:steps_per_day].sum()


def _sessions(size: int, n_steps: int, h: Households, rng) -> np.ndarray:
    """The leading speaker of each step: sessions of exponential length (mean ``session_min``)."""
    stay = math.exp(-h.step_s / (60.0 * h.session_min))
    leaders = np.empty(n_steps, dtype=np.int64)
    current = int(rng.integers(size))
    for t in range(n_steps):
        if rng.random() > stay:
            current = int(rng.integers(size))
        leaders[t] = current
    return leaders


def _step(counts, d, t, n, house: list[Speaker], ref: ModelReference, h: Households, floor: float, rng,
          leader: int = 0) -> None:
    noise = rng.normal(floor, 3.0, h.frames_per_step)
    counts["input"]["noise_dbfs"][d, t] += np.bincount(np.searchsorted(NOISE_DBFS_EDGES, noise, side="right"),
                                                       minlength=len(NOISE_DBFS_EDGES) + 1)
    if n == 0:
        return
    who = np.where(rng.random(n) < h.lead_share, leader, rng.integers(len(house), size=n))
    rows = {k: [] for k in ("features", "utterance_ms", "level_dbfs", "snr_db", "confidence", "predicted", "truth")}
    for s_i in np.unique(who):
        sp = house[s_i]
        pick = rng.integers(len(sp.confidence), size=int(np.sum(who == s_i)))
        for k in rows:
            rows[k].append(getattr(sp, k)[pick])
    x = {k: np.concatenate(v) for k, v in rows.items()}
    edges = ref.edges
    for j, name in enumerate(ref.feature_names):
        counts["input"][f"feature:{name}"][d, t] += _hist(edges[f"feature:{name}"], x["features"][:, j])
    for s in ("utterance_ms", "level_dbfs", "snr_db"):
        counts["input"][s][d, t] += _hist(edges[s], x[s])
    conf_bin = np.searchsorted(edges["confidence"], x["confidence"], side="right")
    counts["output"]["confidence"][d, t] += np.bincount(conf_bin, minlength=len(edges["confidence"]) + 1)
    counts["output"]["labels"][d, t] += np.bincount(x["predicted"], minlength=len(ref.label_names) + 1)
    k_conf = len(CONFIDENCE_EDGES) + 1
    cell = x["predicted"] * k_conf + np.searchsorted(CONFIDENCE_EDGES, x["confidence"], side="right")
    counts["concept"]["conf_by_label"][d, t] += np.bincount(cell, minlength=ref.shapes["conf_by_label"])
    known = x["truth"] >= 0
    audited = known & (rng.random(n) < h.audit_rate)
    told = known & (audited | (rng.random(n) < h.feedback_rate))
    right = x["truth"] == x["predicted"]
    counts["concept"]["feedback"][d, t] += [int(np.sum(told & right)), int(np.sum(told & ~right))]
    slot = 2 * x["truth"][audited] + (~right[audited]).astype(int)
    counts["concept"]["audit"][d, t] += np.bincount(slot, minlength=ref.shapes["audit"])


def _hist(edges, values) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def count_alarms(table: ModelTable, cfg: DriftConfig, step_s: float, model: str = "m") -> Result:
    """Alarm episodes the engine's detectors raise on a simulated table (after the warm-up).

    Every device learns its baseline from the first ``cfg.warmup_s``; then each device's CUSUMs,
    the fleet's CUSUMs, the fleet's level test (per block) and each device's peer test (per
    evaluation) run over the rest, with the thresholds the budget gives a fleet of this size.
    An episode is what one alert covers: flagged blocks until ``resolve_after`` quiet ones.
    """
    ref = table.ref
    warm = int(round(cfg.warmup_s / step_s))
    n_steps = table.counts["input"]["utterance_ms"].shape[1]
    days = (n_steps - warm) * step_s / DAY_S
    result = Result(device_days=days * len(table.devices), alarms={k: 0 for k in KINDS})
    bases = {d: learn(d, model, ref, {k: {s: c[i, :warm] for s, c in table.counts[k].items()} for k in KINDS},
                      0.0, warm * step_s, cfg.min_n, cfg.min_baseline_blocks, cfg.priors)
             for i, d in enumerate(table.devices)}
    for kind in KINDS:
        factor = int(round(cfg.step_of(kind) / step_s))
        counts = {s: _coarsen(c[:, warm:], factor) for s, c in table.counts[kind].items()}
        mon = ModelTable(ref, table.devices, {k: (counts if k == kind else {}) for k in KINDS})
        snap = Snapshot(t0=warm * step_s, step_s=step_s * factor, n_steps=counts["utterance_ms" if kind == "input"
                        else next(iter(counts))].shape[1], tables={model: mon})
        n_groups = len(blocks.groups(kind))
        budget = Budget(cfg.alerts_per_1000_device_days, len(table.devices), DAY_S / snap.step_s)
        h = budget.cusum_h((len(table.devices) + 1) * n_groups, cfg.cusum_k)
        alpha = budget.alpha(n_groups + (len(table.devices) if kind == "input" else 0))
        settings = Settings(cfg.min_n, cfg.short_steps, cfg.cusum_k, h, cfg.cusum_cap, alpha, True, False,
                            cfg.min_devices, cfg.min_device_fraction, cfg.level_min_devices)
        gated = Settings(cfg.min_n, cfg.short_steps, cfg.cusum_k, h, cfg.cusum_cap, alpha, False, True)
        cohorts = [(d, np.array([x == d for x in table.devices])) for d in table.devices]
        cohorts.append(("fleet", np.ones(len(table.devices), dtype=bool)))
        for name, mask in cohorts:
            st = settings if name == "fleet" else gated
            a = assess(snap, kind, [Part(model, mon, mask)], lambda dv, m: bases[dv], st)
            for g in a.groups:
                n = _episodes(_block_flags(g, st), cfg.policy.resolve_after, np.diff(g.bounds))
                if n:
                    result.episodes.append({"kind": kind, "cohort": name, "group": g.group, "episodes": n})
                result.alarms[kind] += n
        if kind == "input":
            flags = _peer_flags(table, warm, cfg, alpha)
            for d, device_flags in zip(table.devices, flags):
                n = _episodes(device_flags, cfg.policy.resolve_after)
                if n:
                    result.episodes.append({"kind": kind, "cohort": d, "group": "peers", "episodes": n})
                result.alarms[kind] += n
    return result


def _peer_flags(table: ModelTable, warm: int, cfg: DriftConfig, alpha: float) -> np.ndarray:
    """Per device and evaluation after the warm-up: would the engine's peer test
    (``peers.peer_check``, on the last ``short_steps`` steps) alarm? ``[devices, steps]``."""
    score = next(sc for sc in table.ref.scores["input"] if sc.signal == peers.SIGNAL)
    c = table.counts["input"][peers.SIGNAL]
    cum = np.concatenate([np.zeros_like(c[:, :1]), np.cumsum(c, axis=1)], axis=1)
    n_dev, n_steps = c.shape[:2]
    others = ~np.eye(n_dev, dtype=bool)
    flags = np.zeros((n_dev, n_steps - warm), dtype=bool)
    for t in range(warm, n_steps):
        n, mean, within = mean_and_within(cum[:, t + 1] - cum[:, max(0, t + 1 - cfg.short_steps)], score.weights)
        peer_means = np.where(others & (n > 0)[None, :], mean[None, :], np.nan)
        _, effect, _, p = peers.against_peers(mean, within, n, peer_means)
        enough = (n > 0) & (np.sum(~np.isnan(peer_means), axis=1) >= cfg.min_peers)
        flags[:, t - warm] = enough & (p <= alpha) & (np.abs(effect) >= cfg.peer_floor)
    return flags


def _coarsen(c: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return c
    t = c.shape[1] // factor * factor
    return c[:, :t].reshape(c.shape[0], t // factor, factor, c.shape[2]).sum(axis=2)


def _block_flags(g, s: Settings) -> np.ndarray:
    """Per block: would the engine, looking at that block as its recent span, alarm? The change
    CUSUM over its threshold or the level test failing, each with the engine's own verdict rule."""
    n = len(g.bounds) - 1
    change = np.zeros(n, dtype=bool)
    if g.run is not None:
        over = np.flatnonzero(g.run.statistic >= g.run.h)
        change[over] = [change_verdict(g, s, int(b)) for b in over]
    level = np.array([level_verdict(g, s, b) for b in range(n)], dtype=bool) if g.level else np.zeros(n, bool)
    return change | level


def _episodes(flags: np.ndarray, resolve_after: int, steps: np.ndarray | None = None) -> int:
    """Alerts a run of flags opens: an alert stays open until ``resolve_after`` evaluations (one
    per step) in a row are quiet, as the engine resolves one. ``steps``: how many steps each
    flag covers (a block of a quiet hour spans several; default one each). The engine also
    wants its detectors under ``resolve_below`` of their thresholds before it counts an
    evaluation quiet, so it resolves no sooner than this: the count is not an under-count."""
    widths = np.ones(len(flags), dtype=int) if steps is None else np.asarray(steps, dtype=int)
    alerts, quiet = 0, resolve_after  # quiet steps since the last flag (open: fewer than resolve_after)
    for flagged, width in zip(np.asarray(flags, dtype=bool), widths):
        if flagged:
            alerts += quiet >= resolve_after
            quiet = 0
        else:
            quiet += int(width)
    return alerts
