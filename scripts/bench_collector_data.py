"""What ``bench_collector.py`` sends: windows of a real lab bundle, at a fleet's real rate.

The bundle is the model lab's (``harken model train``'s defaults on a tiny espeak-ng set, as
``bench_agent`` trains it), or one given. Each window counts a few utterances drawn from the
bundle's own reference profile (features, levels, confidence by label, labels), on its bins,
so the collector's drift job finds the model's profile and evaluates it instead of skipping it.
Each device sends one window per ``WINDOW_S`` (the agent's default window), ``t_start``
stepping by it.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from shared.codec import encode
from shared.histogram import LATENCY_MS_EDGES, NOISE_DBFS_EDGES
from shared.topics import Topics

WINDOW_S = 10.0  # edge.config's default window_s
TOPICS = Topics()


class BenchFailed(Exception):
    """The run did not do what it measures: no figures."""


def lab_bundle(folder: Path, bundle: Path | None, key: Path | None) -> tuple[Path, Path, str]:
    """(bundle, its signing public key, what it is): the given one, or a freshly trained lab bundle."""
    if bundle is not None:
        return bundle, key, f"given: {bundle}"
    from bench_agent_data import train_lab_bundle

    return train_lab_bundle(folder)


class ProfileWindows:
    """Schema 1.1 windows of one model whose counts are drawn from its reference profile."""

    def __init__(self, manifest: dict, model_sha: str, seed: int = 0):
        p = manifest["profile"]
        self.model = model_sha
        self.rng = np.random.default_rng(seed)
        self.labels = list(p["labels"]["names"])
        self._p = {name: _probabilities(p[name]["counts"]) for name in ("utterance_ms", "level_dbfs", "snr_db",
                                                                          "confidence")}
        self._features = [_probabilities(c) for c in p["features"]["counts"]]
        self._label_p = _probabilities(p["labels"]["counts"])

    def window(self, device: str, seq: int, t_start: float, *, boot: int = 1, sent_t: float | None = None) -> dict:
        rng = self.rng
        n = int(rng.poisson(1.5))  # utterances in a 10 s window of a typical household stream
        draw = {k: rng.multinomial(n, p).tolist() for k, p in self._p.items()}
        labels = rng.multinomial(n, self._label_p)
        conf_by_label, conf_total = {}, [0] * len(self._p["confidence"])
        for i, count in enumerate(labels):
            if count:
                c = rng.multinomial(int(count), self._p["confidence"]).tolist()
                conf_by_label[self.labels[i]] = c
                conf_total = [a + b for a, b in zip(conf_total, c)]
        deferred = int(rng.binomial(n, 0.1))
        w = {
            "kind": "window", "v": "1.1", "device": device, "boot": boot, "seq": seq, "t_start": t_start,
            "duration_s": WINDOW_S, "audio_start_s": seq * WINDOW_S, "agent_version": "0.1.0", "model": self.model,
            "automation": "partial",
            "software": {"frames": 333, "voiced_frames": int(rng.integers(0, 333)), "dropped_frames": 0,
                         "invalid_frames": 0, "utterances": n, "inferences": n, "errors": 0,
                         "cpu_s": round(float(rng.uniform(0.01, 0.05)), 4), "rss_mb": 61.5,
                         "latency_ms": {s: rng.multinomial(n, _LATENCY_P).tolist() for s in ("vad", "model")}},
            "input": {"utterance_ms": draw["utterance_ms"], "level_dbfs": draw["level_dbfs"], "snr_db": draw["snr_db"],
                      "clipped_utterances": 0,
                      "features": [rng.multinomial(n, p).tolist() for p in self._features],
                      "noise_dbfs": rng.multinomial(200, _NOISE_P).tolist()},
            "output": {"labels": {self.labels[i]: int(c) for i, c in enumerate(labels) if c},
                       "confidence": conf_total, "confidence_by_label": conf_by_label, "no_answer": 0,
                       "deferred": deferred, "acted": n - deferred, "suggested": 0, "audit_requested": 0},
            "feedback": {"pairs": []},
        }
        if sent_t is not None:
            w["sent_t"] = sent_t  # an unknown field: readers skip it; the bench reads its lag from it
        return w


_LATENCY_P = np.full(len(LATENCY_MS_EDGES) + 1, 1.0 / (len(LATENCY_MS_EDGES) + 1))
# frames the gate did not pass, around -60 dBFS (a quiet room); NOISE_DBFS_EDGES has its own grid
_NOISE_P = np.array([1, 2, 4, 8, 16, 32, 16, 8, 4, 2, 1, 1, 1], dtype=float)[:len(NOISE_DBFS_EDGES) + 1]
_NOISE_P /= _NOISE_P.sum()


def _probabilities(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=float) + 0.5  # no empty bin: a healthy window may fall anywhere
    return c / c.sum()


def device_name(i: int) -> str:
    return f"dev-{i:05d}"


def fleet_windows(gen: ProfileWindows, n: int, devices: int, t_end: float, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` encoded windows from ``devices`` devices, each one window per ``WINDOW_S`` up to
    ``t_end``, in the order a fleet sends them (every device's k-th window, then the (k+1)-th)."""
    rng = random.Random(seed)
    offsets = [rng.uniform(0, WINDOW_S) for _ in range(devices)]  # devices are not in step
    rounds = -(-n // devices)
    out = []
    for i in range(n):
        d, k = i % devices, i // devices
        t_start = t_end - (rounds - k) * WINDOW_S - offsets[d]
        out.append((TOPICS.stats(device_name(d)), encode(gen.window(device_name(d), k, t_start))))
    return out
