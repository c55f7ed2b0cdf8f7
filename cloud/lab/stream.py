"""The honest test: accuracy on utterances the device's gate cuts from a continuous stream.

Clips are laid end to end with gaps of quiet background between them, the stream is fed to
``VadGate`` in 30 ms chunks like a microphone, and every utterance it emits is placed and
run through the bundle. Each utterance is credited to the clip it overlaps most. A clip is
right when:
- a word or ``_unknown_`` clip: its longest utterance is predicted as its label (no utterance
  at all — a gate miss — is wrong);
- a ``_silence_`` clip: every utterance credited to it (usually none) is predicted ``_silence_``.

``play`` makes one pass (gate, crediting, model outputs); ``score`` reads the clip-level
accuracy from it, and the model lab reads the per-utterance concept reference (accuracy per
true label, calibration) from the same pass, so the test stream is cut only once.
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


@dataclass(frozen=True)
class StreamPass:
    """One play of clips as a stream: what the gate cut, whom it is credited to, what the model said."""

    order: np.ndarray  # stream position → index into the clips given
    utterances: list  # shared.gate.Utterance, in stream order
    owner: np.ndarray  # per utterance: index of the clip it overlaps most, -1 for none (a gap)
    outputs: object  # what ``run`` returned for the utterances' windows

    @property
    def credited(self) -> np.ndarray:
        """Boolean mask of the utterances credited to a clip."""
        return self.owner >= 0


def play(clips: Sequence[np.ndarray], run: Callable[[np.ndarray], object], config: GateConfig,
         placement: str, input_samples: int, seed: int = 0) -> StreamPass:
    """Lay the clips (in a seeded order) as one stream, gate it, place and ``run`` every utterance."""
    order, signal, spans = layout(clips, seed)
    utts = cut(signal, config)
    windows = np.stack([place(u.samples, input_samples, placement) for u in utts]) if utts \
        else np.zeros((0, input_samples), np.float32)
    position = credit(utts, spans)
    owner = np.where(position >= 0, order[np.maximum(position, 0)], -1) if len(position) else position
    return StreamPass(order, utts, owner, run(windows))


def layout(clips: Sequence[np.ndarray], seed: int = 0):
    """(order, signal, spans): the clips in a seeded order, laid out as one stream."""
    order = np.random.default_rng(seed).permutation(len(clips))
    signal, spans = build_stream([clips[i] for i in order], seed)
    return order, signal, spans


def credit(utts, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per utterance, the stream position of the clip it overlaps most (-1: overlaps none)."""
    starts = np.array([s for s, _ in spans])
    owner = np.full(len(utts), -1, dtype=np.int64)
    for k, u in enumerate(utts):
        j = int(np.searchsorted(starts, u.start_sample, side="right")) - 1
        best_overlap = 0
        for c in (j, j + 1):
            if 0 <= c < len(spans):
                overlap = min(u.end_sample, spans[c][1]) - max(u.start_sample, spans[c][0])
                if overlap > best_overlap:
                    owner[k], best_overlap = c, overlap
    return owner


def credited_to(p: StreamPass) -> dict[int, list[int]]:
    """Per clip index credited with any utterance, its utterances (stream order)."""
    mine: dict[int, list[int]] = {}
    for k, clip_index in enumerate(p.owner.tolist()):
        if clip_index >= 0:
            mine.setdefault(clip_index, []).append(k)
    return mine


def longest_credited(p: StreamPass) -> dict[int, int]:
    """Per clip index credited with any utterance, its longest one (the first of equals): what
    the stream test judges a word clip by, and what ``windows.from_stream`` trains on."""
    return {i: max(ks, key=lambda k: len(p.utterances[k].samples)) for i, ks in credited_to(p).items()}


def clip_results(p: StreamPass, labels: np.ndarray, silence_label: int | None,
                 predicted: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(right per clip index, gate misses, extra utterances) by the rules in the module docstring."""
    mine, longest = credited_to(p), longest_credited(p)
    right = np.zeros(len(p.order), dtype=bool)
    missed = extra = 0
    for clip_index in p.order:
        clip_index = int(clip_index)
        truth, credited = int(labels[clip_index]), mine.get(clip_index, [])
        if silence_label is not None and truth == silence_label:
            right[clip_index] = all(predicted[k] == truth for k in credited)
            extra += len(credited)
            continue
        if not credited:
            missed += 1
            continue
        right[clip_index] = predicted[longest[clip_index]] == truth
        extra += len(credited) - 1
    return right, missed, extra


def score(p: StreamPass, labels: np.ndarray, silence_label: int | None, predicted: np.ndarray) -> StreamResult:
    """Clip-level stream accuracy (rules in the module docstring) of a pass's predictions."""
    right, missed, extra = clip_results(p, labels, silence_label, predicted)
    n = len(p.order)
    return StreamResult(int(right.sum()) / max(1, n), n, len(p.utterances), missed, extra, int(np.sum(p.owner < 0)))


def stream_accuracy(clips: Sequence[np.ndarray], labels: np.ndarray, silence_label: int | None,
                    predict: Callable[[np.ndarray], np.ndarray], config: GateConfig,
                    placement: str, input_samples: int, seed: int = 0) -> StreamResult:
    """Gate the clips as one stream; ``predict`` maps windows [K, input_samples] to labels."""
    p = play(clips, predict, config, placement, input_samples, seed)
    return score(p, labels, silence_label, p.outputs)
