"""The honest test: accuracy on utterances the device's gate cuts from a continuous stream.

Clips are laid end to end with gaps of quiet background between them, the stream is fed to
``VadGate`` in 30 ms chunks like a microphone, and every utterance it emits is placed and
run through the bundle. Each utterance is credited to the clip it overlaps most. A clip is
right when:
- a word or ``_unknown_`` clip: its longest utterance is predicted as its label (no utterance
  at all — a gate miss — is wrong);
- a ``_silence_`` clip: every utterance credited to it (usually none) is predicted ``_silence_``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cloud.lab import augment
from shared.gate import GateConfig, VadGate, place

log = logging.getLogger(__name__)

GAP_MS = 600
GAP_LEVEL_DBFS = -70.0
CHUNK_SAMPLES = 480


@dataclass(frozen=True)
class StreamResult:
    accuracy: float
    n_clips: int
    n_utterances: int
    gate_missed: int  # speech clips the gate passed nothing for
    extra_utterances: int  # utterances beyond one per clip, or on silence clips
    unmatched_utterances: int  # utterances overlapping no clip (cut from a gap)

    def to_dict(self) -> dict:
        return {"accuracy": round(self.accuracy, 4), "n_clips": self.n_clips,
                "n_utterances": self.n_utterances, "gate_missed": self.gate_missed,
                "extra_utterances": self.extra_utterances,
                "unmatched_utterances": self.unmatched_utterances, "gap_ms": GAP_MS}


def build_stream(clips: Sequence[np.ndarray], seed: int, sample_rate: int = 16000):
    """(signal, [(start, end)] per clip): clips separated by GAP_MS of quiet pink noise."""
    rng = np.random.default_rng(seed)
    gap = int(GAP_MS * sample_rate / 1000)
    pieces, spans, pos = [], [], 0
    for clip in clips:
        pieces.append(_background(gap, rng))
        pos += gap
        pieces.append(np.asarray(clip, dtype=np.float32))
        spans.append((pos, pos + len(clip)))
        pos += len(clip)
    pieces.append(_background(gap, rng))
    return np.concatenate(pieces).astype(np.float32), spans


def _background(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink noise at GAP_LEVEL_DBFS: a quiet room between the clips."""
    return (augment.noise("pink", n, rng) * 10 ** (GAP_LEVEL_DBFS / 20.0)).astype(np.float32)


def cut(signal: np.ndarray, config: GateConfig):
    gate = VadGate(config)
    utts = []
    for i in range(0, len(signal), CHUNK_SAMPLES):
        utts += gate.feed(signal[i: i + CHUNK_SAMPLES])
    return utts + gate.flush()


def stream_accuracy(clips: Sequence[np.ndarray], labels: np.ndarray, silence_label: int | None,
                    predict: Callable[[np.ndarray], np.ndarray], config: GateConfig,
                    placement: str, input_samples: int, seed: int = 0) -> StreamResult:
    """Gate the clips as one stream; ``predict`` maps windows [K, input_samples] to labels."""
    order = np.random.default_rng(seed).permutation(len(clips))
    signal, spans = build_stream([clips[i] for i in order], seed)
    utts = cut(signal, config)
    windows = np.stack([place(u.samples, input_samples, placement) for u in utts]) if utts \
        else np.zeros((0, input_samples), np.float32)
    predicted = predict(windows) if len(windows) else np.zeros(0, np.int64)
    starts = np.array([s for s, _ in spans])
    owner: dict[int, list[int]] = {}
    unmatched = 0
    for k, u in enumerate(utts):
        j = int(np.searchsorted(starts, u.start_sample, side="right")) - 1
        best, best_overlap = None, 0
        for c in (j, j + 1):
            if 0 <= c < len(spans):
                overlap = min(u.end_sample, spans[c][1]) - max(u.start_sample, spans[c][0])
                if overlap > best_overlap:
                    best, best_overlap = c, overlap
        if best is None:
            unmatched += 1
        else:
            owner.setdefault(best, []).append(k)
    right = missed = extra = 0
    for pos, clip_index in enumerate(order):
        truth, mine = int(labels[clip_index]), owner.get(pos, [])
        if silence_label is not None and truth == silence_label:
            right += all(predicted[k] == truth for k in mine)
            extra += len(mine)
            continue
        if not mine:
            missed += 1
            continue
        longest = max(mine, key=lambda k: len(utts[k].samples))
        right += int(predicted[longest] == truth)
        extra += len(mine) - 1
    return StreamResult(right / max(1, len(clips)), len(clips), len(utts), missed, extra, unmatched)
