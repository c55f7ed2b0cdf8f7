"""Turn dataset clips into what the device's model sees: gate-cut, then placed in the window.

Two ways to cut: ``build`` runs each clip through a fresh gate on its own; ``from_stream``
lays the clips end to end as one stream (``stream.play``, as the honest test does) and takes
for each clip the longest utterance credited to it. A gate running on a stream cuts longer
utterances than a fresh gate on one clip (hangover and pre-roll reach into the room around a
word), so training on stream-cut windows matches what a device sees
(``Hyperparameters.train_windows``).

Every clip goes through ``shared.gate.cut_clip`` (a fresh copy of the device's webrtcvad
gate, keeping the longest utterance) and ``shared.gate.place`` with the dataset's placement
rule. When the gate passes nothing (background clips, or a word too quiet or noisy for the
gate) the raw clip is placed instead: it is already one window long, so training and the
clip-level metrics keep it rather than silently dropping gate misses; how many clips missed
the gate is reported per label (``gate_missed``), and the stream test measures misses honestly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cloud.lab import stream
from cloud.lab.dataset import Clip, Dataset
from shared.audio import read_wav
from shared.errors import DatasetError, HarkenError
from shared.gate import GateConfig, cut_clip, place
from shared.levels import level_dbfs, snr_db

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Windows:
    """Model windows of a list of clips plus what the gate measured on each."""

    audio: np.ndarray  # [N, input_samples] float32
    labels: np.ndarray  # [N] int64 class index
    gated: np.ndarray  # [N] bool: the gate cut an utterance (False: raw clip used)
    utterance_ms: np.ndarray  # [N] float
    level_dbfs: np.ndarray  # [N] float, of the utterance (or raw clip)
    snr_db: np.ndarray  # [N] float

    def __len__(self) -> int:
        return len(self.labels)


def device_window(samples: np.ndarray, config: GateConfig, rule: str, input_samples: int):
    """(window, utterance samples, gated) for one clip, as the device would see it."""
    utt = cut_clip(samples, config)
    cut = samples if utt is None else utt.samples
    return place(cut, input_samples, rule), cut, utt is not None


def build(dataset: Dataset, clips: Sequence[Clip], config: GateConfig = GateConfig(),
          rule: str | None = None, input_samples: int = 16000,
          progress: Callable[[int], None] | None = None) -> Windows:
    """Windows for ``clips`` (in order); ``rule`` defaults to the dataset's placement."""
    rule = rule or dataset.placement
    cuts = (device_window(_read(dataset, clip), config, rule, input_samples) for clip in clips)
    return _assemble(dataset, clips, cuts, input_samples, progress)


def from_stream(dataset: Dataset, clips: Sequence[Clip], config: GateConfig = GateConfig(),
                rule: str | None = None, input_samples: int = 16000, seed: int = 0,
                progress: Callable[[int], None] | None = None) -> Windows:
    """Windows for ``clips`` (in order) cut from one stream of them (``stream.play`` with
    ``seed``): each clip's longest credited utterance (for a background clip, the noise the
    gate took for speech, which the honest test also asks to be called background); a clip
    credited with none keeps its ``build`` window, so no clip is dropped."""
    rule = rule or dataset.placement
    samples = [_read(dataset, clip) for clip in clips]
    p = stream.play(samples, lambda w: w, config, rule, input_samples, seed=seed)
    longest = stream.longest_credited(p)

    def cut(i: int):
        k = longest.get(i)
        if k is None:
            return device_window(samples[i], config, rule, input_samples)
        return p.outputs[k], p.utterances[k].samples, True

    return _assemble(dataset, clips, (cut(i) for i in range(len(clips))), input_samples, progress)


def _read(dataset: Dataset, clip: Clip) -> np.ndarray:
    try:
        return read_wav(dataset.path_of(clip))
    except HarkenError as exc:
        raise DatasetError(f"{clip.path}: {exc}; run `harken data check {dataset.root}`") from exc


def _assemble(dataset: Dataset, clips: Sequence[Clip], cuts, input_samples: int,
              progress: Callable[[int], None] | None) -> Windows:
    """``Windows`` from each clip's (window, utterance samples, gated), in order."""
    index = {label: i for i, label in enumerate(dataset.labels)}
    n = len(clips)
    audio = np.zeros((n, input_samples), dtype=np.float32)
    gated = np.zeros(n, dtype=bool)
    utt_ms, level, snr = np.zeros(n), np.zeros(n), np.zeros(n)
    for i, (window, cut, was_gated) in enumerate(cuts):
        audio[i], gated[i] = window, was_gated
        utt_ms[i] = 1000.0 * len(cut) / 16000
        level[i], snr[i] = level_dbfs(cut), snr_db(cut)
        if progress and (i + 1) % 64 == 0:
            progress(64)
    if progress and n % 64:
        progress(n % 64)
    labels = np.array([index[c.label] for c in clips], dtype=np.int64)
    return Windows(audio, labels, gated, utt_ms, level, snr)


def training(dataset: Dataset, clips: Sequence[Clip], config: GateConfig, source: str,
             rule: str | None = None, input_samples: int = 16000, seed: int = 0,
             progress: Callable[[int], None] | None = None) -> Windows:
    """Training windows as the recipe says (``Hyperparameters.train_windows``): "stream" or "clip"."""
    if source == "stream":
        return from_stream(dataset, clips, config, rule, input_samples, seed, progress)
    if source == "clip":
        return build(dataset, clips, config, rule, input_samples, progress)
    raise DatasetError(f"unknown training-window source {source!r}; use 'stream' or 'clip'")


def gate_missed(windows: Windows, label_names: Sequence[str]) -> dict[str, int]:
    """Clips per label the gate passed nothing for."""
    return {name: int(np.sum((windows.labels == i) & ~windows.gated)) for i, name in enumerate(label_names)}
