"""A seeded synthetic population of households for drift tests: speakers → profile → windows.

Speakers differ the way real ones do: each has its own offsets on the watched features (voice),
its own loudness, its own pace, and the model is a little better on some than on others. A
household (a device) has 1-3 speakers, its own noise floor and its own traffic. Each utterance
has features, length, level, SNR, a true word, the model's prediction and its confidence
(right answers are confident more often than wrong ones, so confidence predicts accuracy).

The reference profile is built the way the lab builds it: aggregate histograms and per-speaker
chunks from one set of speakers (the "dev" speakers), per-class accuracy and the calibration
table from another ("test"). Households in tests are drawn from a third set, which the
reference never saw. Drifts act on utterances as they act on audio: ``noise_db`` lowers the SNR,
lifts the log-mel bands, lowers confidence and accuracy; ``gain_db`` moves the level and the
band means; ``dead`` is a dead microphone (no utterance at all, noise floor at digital silence).
Windows are full ``shared.messages`` window dicts, validated by the real schema.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from shared.histogram import CONFIDENCE_EDGES, NOISE_DBFS_EDGES, counts_of
from shared.messages import validate
from shared.profile import build_profile

FEATURES = ["logmel_band0_mean", "logmel_band1_mean", "logmel_band2_mean", "logmel_mean", "frame_logmel_std",
            "spectral_centroid"]
LABELS = ["yes", "no", "up", "down", "stop", "go", "_unknown_"]
NO_ANSWER_CONFIDENCE = 0.5
NOISE_FX = np.array([0.10, 0.11, 0.12, 0.12, -0.10, 0.05])  # per dB of noise, in feature sds
GAIN_FX = np.array([0.08, 0.08, 0.08, 0.08, 0.0, 0.0])
VOICE_SD = np.array([0.4, 0.4, 0.4, 0.3, 0.3, 0.8])  # between-speaker sd of each feature


@dataclass(frozen=True)
class Speaker:
    voice: np.ndarray  # feature offsets
    loudness_db: float
    pace: float
    skill: float  # accuracy offset of the model on this speaker


def speakers(rng: np.random.Generator, n: int) -> list[Speaker]:
    return [Speaker(rng.normal(0, VOICE_SD), float(rng.normal(0, 4.0)), float(np.exp(rng.normal(0, 0.15))),
                    float(rng.normal(0, 0.02))) for _ in range(n)]


@dataclass(frozen=True)
class Drift:
    noise_db: float = 0.0
    gain_db: float = 0.0
    dead: bool = False
    accuracy_drop: float = 0.0

    def shifted(self, **kw) -> "Drift":
        return replace(self, **kw)


HEALTHY = Drift()


def utterances(rng: np.random.Generator, who: list[Speaker], n: int, drift: Drift = HEALTHY) -> dict:
    """``n`` utterances, each by a speaker of ``who`` chosen at random."""
    if drift.dead or n == 0:
        n = 0
    pick = rng.integers(len(who), size=n) if n else np.zeros(0, int)
    voice = np.array([who[i].voice for i in pick]).reshape(n, len(FEATURES))
    loud = np.array([who[i].loudness_db for i in pick])
    pace = np.array([who[i].pace for i in pick])
    skill = np.array([who[i].skill for i in pick])
    z = rng.standard_normal((n, len(FEATURES)))
    z[:, :4] = 0.6 * z[:, :4] + 0.8 * z[:, [3]]  # the log-mel summaries move together
    feats = voice + z + NOISE_FX * drift.noise_db + GAIN_FX * drift.gain_db
    truth = rng.integers(len(LABELS), size=n)
    acc = np.clip(0.93 + skill - 0.01 * drift.noise_db - drift.accuracy_drop, 0.0, 1.0)
    right = rng.random(n) < acc
    predicted = np.where(right, truth, (truth + rng.integers(1, len(LABELS), n)) % len(LABELS))
    conf = np.where(right, rng.beta(9.0, 1.2, n), rng.beta(2.5, 2.0, n))
    return {"features": feats, "level_dbfs": rng.normal(-30.0 + loud + drift.gain_db, 5.0, n),
            "snr_db": rng.normal(25.0 - drift.noise_db, 5.0, n), "utterance_ms": 600.0 * pace *
            np.exp(rng.normal(0, 0.3, n)), "truth": truth, "predicted": predicted, "confidence": conf}


def make_profile(rng: np.random.Generator, dev: int = 40, per_speaker: int = 50, test: int = 40,
                 chunks: bool = True, concept: bool = True) -> dict:
    """A reference profile: histograms and chunks of ``dev`` speakers, accuracy of ``test`` others."""
    parts = [utterances(rng, [s], per_speaker) for s in speakers(rng, dev)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    profile = build_profile(cat["features"], FEATURES, utterance_ms=cat["utterance_ms"],
                            level_dbfs=cat["level_dbfs"], snr_db=cat["snr_db"], confidence=cat["confidence"],
                            labels=cat["predicted"], label_names=LABELS)
    profile["no_answer_confidence"] = NO_ANSWER_CONFIDENCE
    if chunks:
        profile["chunks"] = _chunks(profile, parts)
    if concept:
        t = [utterances(rng, [s], per_speaker) for s in speakers(rng, test)]
        t = {k: np.concatenate([p[k] for p in t]) for k in t[0]}
        right = t["truth"] == t["predicted"]
        profile["accuracy"] = {"names": list(LABELS),
                               "correct": [int(np.sum(right & (t["truth"] == k))) for k in range(len(LABELS))],
                               "total": [int(np.sum(t["truth"] == k)) for k in range(len(LABELS))]}
        bins = np.searchsorted(CONFIDENCE_EDGES, t["confidence"], side="right")
        n = np.zeros((len(LABELS), len(CONFIDENCE_EDGES) + 1), dtype=int)
        c = np.zeros_like(n)
        np.add.at(n, (t["predicted"], bins), 1)
        np.add.at(c, (t["predicted"], bins), right.astype(int))
        profile["calibration"] = {"edges": list(CONFIDENCE_EDGES), "labels": list(LABELS), "n": n.tolist(),
                                  "correct": c.tolist()}
    return profile


def _chunks(profile: dict, parts: list[dict]) -> dict:
    counts: dict[str, list] = {}
    for j, name in enumerate(FEATURES):
        counts[f"feature:{name}"] = [counts_of(profile["features"]["edges"][j], p["features"][:, j]) for p in parts]
    for s in ("utterance_ms", "level_dbfs", "snr_db", "confidence"):
        counts[s] = [counts_of(profile[s]["edges"], p[s]) for p in parts]
    counts["labels"] = [np.bincount(p["predicted"], minlength=len(LABELS)).tolist() for p in parts]
    return {"by": "speaker", "names": [f"s{i}" for i in range(len(parts))], "n": [len(p["confidence"]) for p in parts],
            "counts": counts}


def window(profile: dict, sample: dict, *, device: str, seq: int, t_start: float, duration_s: float = 60.0,
           model: str = "m1", rng: np.random.Generator | None = None, feedback_share: float = 0.0,
           audit_share: float = 0.0, noise_floor_dbfs: float | None = -62.0, frames: int = 2000) -> dict:
    """One validated stats window holding the given utterances (schema 1.1 fields included)."""
    n = len(sample["confidence"])
    pred, truth = sample["predicted"], sample["truth"]
    labels = {LABELS[k]: int(c) for k, c in enumerate(np.bincount(pred, minlength=len(LABELS))) if c}
    pairs: dict[tuple[str, str], int] = {}
    audit: dict[tuple[str, str], int] = {}
    if rng is not None and n:
        audited = rng.random(n) < audit_share
        told = audited | (rng.random(n) < feedback_share)
        for i in np.flatnonzero(told):
            key = (LABELS[truth[i]], LABELS[pred[i]])
            pairs[key] = pairs.get(key, 0) + 1
            if audited[i]:
                audit[key] = audit.get(key, 0) + 1
    no_answer = int(np.sum(sample["confidence"] < NO_ANSWER_CONFIDENCE))
    conf_edges = profile["confidence"]["edges"]
    by_label = {LABELS[k]: counts_of(conf_edges, sample["confidence"][pred == k]) for k in range(len(LABELS))
                if np.any(pred == k)}
    noise = [0] * (len(NOISE_DBFS_EDGES) + 1)
    if noise_floor_dbfs is not None and rng is not None:
        noise = counts_of(NOISE_DBFS_EDGES, rng.normal(noise_floor_dbfs, 3.0, frames))
    w = {
        "kind": "window", "v": "1.1", "device": device, "boot": 1, "seq": seq, "t_start": float(t_start),
        "duration_s": duration_s, "audio_start_s": float(seq * duration_s), "agent_version": "0.1.0",
        "model": model, "automation": "full",
        "software": {"frames": 6000, "voiced_frames": 2000, "dropped_frames": 0, "invalid_frames": 0,
                     "utterances": n, "inferences": n, "errors": 0, "cpu_s": 1.0, "rss_mb": 80.0,
                     "latency_ms": {}},
        "input": {"utterance_ms": counts_of(profile["utterance_ms"]["edges"], sample["utterance_ms"]),
                  "level_dbfs": counts_of(profile["level_dbfs"]["edges"], sample["level_dbfs"]),
                  "snr_db": counts_of(profile["snr_db"]["edges"], sample["snr_db"]),
                  "clipped_utterances": 0, "noise_dbfs": noise,
                  "features": [counts_of(e, sample["features"][:, j])
                               for j, e in enumerate(profile["features"]["edges"])]},
        "output": {"labels": labels, "confidence": counts_of(conf_edges, sample["confidence"]),
                   "confidence_by_label": by_label, "no_answer": no_answer, "deferred": 0,
                   "acted": n - no_answer, "suggested": 0, "audit_requested": 0},
        "feedback": {"pairs": [[t, p, c] for (t, p), c in sorted(pairs.items())],
                     "audit": [[t, p, c] for (t, p), c in sorted(audit.items())]},
    }
    return validate(w)


@dataclass
class Household:
    device: str
    speakers: list[Speaker]
    per_step: float  # mean utterances per step
    noise_floor_dbfs: float


def households(rng: np.random.Generator, n: int, per_step=(20.0, 60.0)) -> list[Household]:
    out = []
    for i in range(n):
        who = speakers(rng, int(rng.integers(1, 4)))
        out.append(Household(f"d{i}", who, float(rng.uniform(*per_step)), float(rng.uniform(-68.0, -56.0))))
    return out


class FakeSource:
    """An in-memory ``DriftSource``: windows stand in for rollups (the engine reads both alike)."""

    def __init__(self, profiles: dict[str, dict], tags: dict[str, set[str]] | None = None):
        self.profiles = profiles
        self.tags = tags or {}
        self.stored: list[dict] = []

    def add(self, w: dict) -> None:
        self.stored.append(w)

    def bodies(self, devices, since_t, until_t):
        return [w for w in self.stored if since_t <= w["t_start"] < until_t
                and (devices is None or w["device"] in devices)]

    def device_tags(self):
        return {d: set(self.tags.get(d, ())) for d in {w["device"] for w in self.stored} | set(self.tags)}

    def profile(self, model_sha):
        return self.profiles.get(model_sha)

    def first_seen(self):
        out: dict[tuple[str, str], float] = {}
        for w in self.stored:
            key = (w["device"], w["model"])
            out[key] = min(out.get(key, float("inf")), w["t_start"])
        return out


def play(source: FakeSource, profile: dict, homes: list[Household], steps: range, step_s: float,
         rng: np.random.Generator, drift_of=lambda device, step: HEALTHY, model_of=lambda device: "m1",
         traffic=lambda step: 1.0, feedback_share: float = 0.0, audit_share: float = 0.0, t0: float = 0.0) -> None:
    """One window per household and step; ``drift_of(device, step)`` acts on its utterances."""
    for step in steps:
        for home in homes:
            d = drift_of(home.device, step)
            n = int(rng.poisson(home.per_step * traffic(step)))
            floor = -95.0 if d.dead else home.noise_floor_dbfs
            source.add(window(profile, utterances(rng, home.speakers, n, d), device=home.device, seq=step,
                              t_start=t0 + step * step_s + 1.0, duration_s=step_s, model=model_of(home.device),
                              rng=rng, feedback_share=feedback_share, audit_share=audit_share,
                              noise_floor_dbfs=floor))


def stored_world(store, profile: dict, model: str, *, steps: int, step_s: float, t0: float, seed: int,
                 noisy: tuple[str, ...], onset: int, tags: dict[str, list[str]]) -> list[Household]:
    """Households ``d0..`` of ``tags`` played into a real store (then rolled up): ``noisy``
    devices hear +10 dB noise from step ``onset``."""
    rng = np.random.default_rng(seed)
    homes = households(rng, len(tags))
    for device, device_tags in tags.items():
        store.tag(device, device_tags)
    src = FakeSource({model: profile})
    play(src, profile, homes, range(steps), step_s, rng, t0=t0, model_of=lambda d: model,
         drift_of=lambda d, s: Drift(noise_db=10.0) if d in noisy and s >= onset else HEALTHY)
    store.insert_windows(src.stored, received_t=t0 + steps * step_s)
    store.rollup(int(step_s), retention_full_s=10 * 86400.0, now=t0 + steps * step_s)
    return homes
