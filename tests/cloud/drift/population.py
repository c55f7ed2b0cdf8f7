"""A seeded synthetic speech population for drift tests: utterances → reference profile → windows.

Each utterance has a level, an SNR, a length, 10 watched features (correlated Gaussians standing
in for the log-mel summaries), a true word, the model's prediction and its confidence. Drifts
act on the population the way they act on audio: ``noise_db`` lowers the SNR, lifts the log-mel
bands and the level a little, flattens the frame contrast, lowers confidence and accuracy;
``gain_db`` moves the level and the log-mel means; ``dead`` is a dead microphone (level and SNR
in the lowest bins, every feature stuck at one value, the model answering "_unknown_").
Windows are full ``shared.messages`` window dicts, validated by the real schema.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from shared.messages import validate
from shared.profile import build_profile
from shared.histogram import counts_of

FEATURES = ["logmel_band0_mean", "logmel_band1_mean", "logmel_band2_mean", "logmel_band3_mean",
            "logmel_band4_mean", "logmel_mean", "frame_logmel_std", "spectral_centroid",
            "temporal_centre_s", "temporal_spread_s"]
LABELS = ["yes", "no", "up", "down", "stop", "go", "_unknown_"]
NO_ANSWER_CONFIDENCE = 0.5
# per-dB feature response to noise and gain (in feature standard deviations)
NOISE_FX = np.array([0.10, 0.11, 0.12, 0.12, 0.13, 0.12, -0.10, 0.05, 0.0, 0.02])
GAIN_FX = np.array([0.08, 0.08, 0.08, 0.08, 0.08, 0.08, 0.0, 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class Population:
    noise_db: float = 0.0
    gain_db: float = 0.0
    dead: bool = False
    label_p: tuple = (0.16, 0.16, 0.14, 0.14, 0.14, 0.14, 0.12)
    accuracy: tuple = (0.95,) * 7  # per true label
    feedback_share: float = 0.3

    def shifted(self, **kw) -> "Population":
        return replace(self, **kw)

    def sample(self, rng: np.random.Generator, n: int) -> dict:
        z = rng.standard_normal((n, len(FEATURES)))
        z[:, :6] = 0.6 * z[:, :6] + 0.8 * z[:, [5]]  # log-mel summaries move together
        feats = z + NOISE_FX * self.noise_db + GAIN_FX * self.gain_db
        level = rng.normal(-30.0 + self.gain_db + 0.1 * self.noise_db, 6.0, n)
        snr = rng.normal(25.0 - self.noise_db, 6.0, n)
        utt = np.exp(rng.normal(np.log(600.0), 0.35, n))
        truth = rng.choice(len(LABELS), size=n, p=np.asarray(self.label_p) / sum(self.label_p))
        acc = np.clip(np.asarray(self.accuracy)[truth] - 0.01 * self.noise_db, 0.0, 1.0)
        right = rng.random(n) < acc
        wrong = (truth + rng.integers(1, len(LABELS), n)) % len(LABELS)
        predicted = np.where(right, truth, wrong)
        conf = rng.beta(np.maximum(8.0 - 0.3 * self.noise_db, 1.5), 1.5, n)
        if self.dead:
            feats = np.full_like(feats, -5.0)
            level, snr = np.full(n, -90.0), np.full(n, -5.0)
            predicted = np.full(n, LABELS.index("_unknown_"))
            conf = rng.beta(1.5, 4.0, n)
        return {"features": feats, "level_dbfs": level, "snr_db": snr, "utterance_ms": utt,
                "truth": truth, "predicted": predicted, "confidence": conf}


def make_profile(rng: np.random.Generator, n: int = 2000, population: Population = Population(),
                 with_accuracy: bool = False) -> dict:
    s = population.sample(rng, n)
    profile = build_profile(s["features"], FEATURES, utterance_ms=s["utterance_ms"], level_dbfs=s["level_dbfs"],
                            snr_db=s["snr_db"], confidence=s["confidence"], labels=s["predicted"],
                            label_names=LABELS)
    if with_accuracy:
        correct = [int(np.sum((s["truth"] == k) & (s["predicted"] == k))) for k in range(len(LABELS))]
        total = [int(np.sum(s["truth"] == k)) for k in range(len(LABELS))]
        profile["accuracy"] = {"names": list(LABELS), "correct": correct, "total": total}
    return profile


def window(profile: dict, sample: dict, *, device: str, seq: int, t_start: float, duration_s: float = 60.0,
           model: str = "m1", rng: np.random.Generator | None = None, feedback_share: float = 0.3) -> dict:
    """One validated stats window holding the given utterances."""
    n = len(sample["confidence"])
    pred = sample["predicted"]
    labels = {LABELS[k]: int(c) for k, c in enumerate(np.bincount(pred, minlength=len(LABELS))) if c}
    pairs: dict[tuple[str, str], int] = {}
    if rng is not None and feedback_share > 0:
        for i in np.flatnonzero(rng.random(n) < feedback_share):
            key = (LABELS[sample["truth"][i]], LABELS[pred[i]])
            pairs[key] = pairs.get(key, 0) + 1
    no_answer = int(np.sum(sample["confidence"] < NO_ANSWER_CONFIDENCE))
    w = {
        "kind": "window", "v": "1.0", "device": device, "boot": 1, "seq": seq, "t_start": float(t_start),
        "duration_s": duration_s, "audio_start_s": float(seq * duration_s), "agent_version": "0.1.0",
        "model": model, "automation": "full",
        "software": {"frames": 6000, "voiced_frames": 2000, "dropped_frames": 0, "invalid_frames": 0,
                     "utterances": n, "inferences": n, "errors": 0, "cpu_s": 1.0, "rss_mb": 80.0,
                     "latency_ms": {}},
        "input": {"utterance_ms": counts_of(profile["utterance_ms"]["edges"], sample["utterance_ms"]),
                  "level_dbfs": counts_of(profile["level_dbfs"]["edges"], sample["level_dbfs"]),
                  "snr_db": counts_of(profile["snr_db"]["edges"], sample["snr_db"]),
                  "clipped_utterances": 0,
                  "features": [counts_of(e, sample["features"][:, j])
                               for j, e in enumerate(profile["features"]["edges"])]},
        "output": {"labels": labels, "confidence": counts_of(profile["confidence"]["edges"], sample["confidence"]),
                   "no_answer": no_answer, "deferred": 0, "acted": n - no_answer, "suggested": 0},
        "feedback": {"pairs": [[t, p, c] for (t, p), c in sorted(pairs.items())]},
    }
    return validate(w)


def reference_counts_window(profile: dict, rng: np.random.Generator, n: int, *, device: str = "d0",
                            seq: int = 0, t_start: float = 0.0, model: str = "m1") -> dict:
    """A window whose every histogram is drawn straight from the reference proportions (any n)."""
    def draw(counts):
        p = np.asarray(counts, dtype=float)
        return rng.multinomial(n, p / p.sum()).tolist()

    w = window(profile, Population().sample(rng, 0), device=device, seq=seq, t_start=t_start, model=model)
    w["input"].update(utterance_ms=draw(profile["utterance_ms"]["counts"]),
                      level_dbfs=draw(profile["level_dbfs"]["counts"]), snr_db=draw(profile["snr_db"]["counts"]),
                      features=[draw(c) for c in profile["features"]["counts"]])
    w["output"]["confidence"] = draw(profile["confidence"]["counts"])
    labels = draw(profile["labels"]["counts"])
    w["output"]["labels"] = {name: c for name, c in zip(profile["labels"]["names"], labels) if c}
    w["software"].update(utterances=n, inferences=n)
    conf = np.asarray(profile["confidence"]["counts"], dtype=float)
    below = profile["confidence"]["edges"].index(NO_ANSWER_CONFIDENCE) + 1
    w["output"]["no_answer"] = int(rng.binomial(n, conf[:below].sum() / conf.sum()))
    return w


class FakeSource:
    """An in-memory WindowSource."""

    def __init__(self, profiles: dict[str, dict], tags: dict[str, set[str]] | None = None):
        self.profiles = profiles
        self.tags = tags or {}
        self.stored: list[dict] = []

    def add(self, w: dict) -> None:
        self.stored.append(w)

    def windows(self, devices, since_t, until_t):
        return [w for w in self.stored if since_t <= w["t_start"] < until_t
                and (devices is None or w["device"] in devices)]

    def device_tags(self):
        return {d: set(self.tags.get(d, ())) for d in {w["device"] for w in self.stored} | set(self.tags)}

    def profile(self, model_sha):
        return self.profiles.get(model_sha)
