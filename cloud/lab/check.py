"""Dataset quality and label-consistency report.

Errors (the dataset should not be trained on as is):
- ``missing`` / ``unreadable``: the file is absent or not a PCM WAV;
- ``wrong_sample_rate``: not 16 kHz;
- ``hash_mismatch``: the file's sha256 is not the manifest's (edited after synthesis);
- ``conflicting_labels``: identical audio under different labels;
- ``label_conflict``: a field sample whose labellers disagree, whose last label is not the one
  it is filed under, or whose sample id is filed under two labels (the label history comes
  from the ``samples.json`` of an export, kept in each clip's ``sample``; ``fieldsamples.py``);
- ``near_silent`` / ``clipped``: a word clip whose loudest 30 ms frame is below ``SILENT_DBFS``, or with more than
  ``CLIPPED_FRACTION`` of its samples at full scale.
Warnings: identical audio twice under one label, clips that are not 1 s or not mono, label
counts out of balance, and a stored dataset hash that does not match the clips.
"""
from __future__ import annotations

import hashlib
import io
import logging
import wave
from collections import Counter, defaultdict
from typing import Callable

import numpy as np

from cloud.lab import fieldsamples
from cloud.lab.dataset import Dataset, dataset_hash
from cloud.lab.voices import SILENCE_LABEL
from shared.audio import SAMPLE_RATE
from shared.levels import clipped_fraction, level_dbfs

log = logging.getLogger(__name__)

SILENT_DBFS = -55.0  # a word clip whose loudest 30 ms frame is quieter than this is near-silent
FRAME_SAMPLES = 480
CLIPPED_FRACTION = 0.001
IMBALANCE_RATIO = 0.5


def loudest_frame_dbfs(samples: np.ndarray, frame: int = FRAME_SAMPLES) -> float:
    """Level of the loudest 30 ms frame: a short word in a long clip is not 'quiet'."""
    n = max(1, len(samples) // frame)
    frames = samples[: n * frame].reshape(n, -1) if len(samples) >= frame else samples[None, :]
    return max(level_dbfs(f) for f in frames)


def _issue(code: str, path: str, detail: str) -> dict:
    return {"code": code, "path": path, "detail": detail}


def _read(data: bytes):
    """(samples float32, rate, channels) of a 16-bit PCM WAV; raises ValueError otherwise."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a PCM WAV file ({exc})") from exc
    if width != 2:
        raise ValueError(f"{8 * width}-bit samples; datasets are 16-bit PCM")
    pcm = np.frombuffer(frames[: len(frames) // 2 * 2], dtype="<i2")
    if channels > 1:
        pcm = pcm[: len(pcm) // channels * channels].reshape(-1, channels)[:, 0]
    if len(pcm) == 0:
        raise ValueError("no samples")
    return pcm.astype(np.float32) / 32768.0, rate, channels


def _check_clip(dataset: Dataset, clip, report: dict, audio_owner: dict) -> None:
    path = dataset.path_of(clip)
    try:
        data = path.read_bytes()
    except OSError as exc:
        report["errors"].append(_issue("missing", clip.path, f"cannot read: {exc.strerror or exc}"))
        return
    if hashlib.sha256(data).hexdigest() != clip.sha256:
        report["errors"].append(_issue("hash_mismatch", clip.path, "file changed since the manifest was written"))
    try:
        samples, rate, channels = _read(data)
    except ValueError as exc:
        report["errors"].append(_issue("unreadable", clip.path, str(exc)))
        return
    if rate != SAMPLE_RATE:
        report["errors"].append(_issue("wrong_sample_rate", clip.path, f"{rate} Hz, expected {SAMPLE_RATE}"))
    if channels != 1:
        report["warnings"].append(_issue("not_mono", clip.path, f"{channels} channels; the first is used"))
    if len(samples) != SAMPLE_RATE and rate == SAMPLE_RATE:
        report["warnings"].append(_issue("length", clip.path, f"{len(samples)} samples, expected {SAMPLE_RATE}"))
    audio_owner[hashlib.sha256(samples.tobytes()).hexdigest()].append(clip)
    if clip.label != SILENCE_LABEL:
        level = loudest_frame_dbfs(samples)
        if level < SILENT_DBFS:
            report["errors"].append(_issue("near_silent", clip.path,
                                           f"labelled {clip.label!r} but its loudest 30 ms is {level:.1f} dBFS"))
        clipped = clipped_fraction(samples)
        if clipped > CLIPPED_FRACTION:
            report["errors"].append(_issue("clipped", clip.path, f"{clipped:.2%} of samples at full scale"))


def _duplicates(audio_owner: dict, report: dict) -> None:
    for clips in audio_owner.values():
        if len(clips) < 2:
            continue
        labels = sorted({c.label for c in clips})
        paths = ", ".join(c.path for c in clips)
        if len(labels) > 1:
            report["errors"].append(_issue("conflicting_labels", clips[0].path,
                                           f"identical audio labelled {labels}: {paths}"))
        else:
            report["warnings"].append(_issue("duplicate", clips[0].path, f"identical audio: {paths}"))


def _label_history(dataset: Dataset, report: dict) -> None:
    """Conflicts in the field samples' label histories, and one sample id under two labels."""
    by_id: dict[str, list] = defaultdict(list)
    for clip in dataset.clips:
        if not clip.sample:
            continue
        for reason in fieldsamples.conflicts(clip.sample, clip.label):
            report["errors"].append(_issue("label_conflict", clip.path,
                                           f"sample {clip.sample.get('id') or '?'}: {reason}"))
        if clip.sample.get("id"):
            by_id[str(clip.sample["id"])].append(clip)
    for sample_id, clips in by_id.items():
        labels = sorted({c.label for c in clips})
        if len(labels) > 1:
            report["errors"].append(_issue("label_conflict", clips[0].path, f"sample {sample_id} is filed "
                                           f"under {labels}: {', '.join(c.path for c in clips)}"))
    report["field_samples"] = len(by_id)


def check(dataset: Dataset, progress: Callable[[int], None] | None = None) -> dict:
    """The quality report of a loaded dataset (``ok`` is False when there are errors)."""
    report: dict = {"root": str(dataset.root), "clips": len(dataset.clips), "errors": [], "warnings": []}
    audio_owner: dict[str, list] = defaultdict(list)
    for i, clip in enumerate(dataset.clips):
        _check_clip(dataset, clip, report, audio_owner)
        if progress:
            progress(1)
    _duplicates(audio_owner, report)
    _label_history(dataset, report)
    counts = Counter(c.label for c in dataset.clips)
    report["labels"] = {label: counts.get(label, 0) for label in dataset.labels}
    present = [n for n in report["labels"].values() if n]
    if present and min(present) < IMBALANCE_RATIO * max(present):
        report["warnings"].append(_issue("imbalance", "", f"label counts range {min(present)}..{max(present)}"))
    for label, n in report["labels"].items():
        if n == 0:
            report["warnings"].append(_issue("empty_label", "", f"no clips labelled {label!r}"))
    stored = dataset.raw.get("dataset_hash")
    if stored and stored != dataset_hash(dataset.raw["clips"]):
        report["warnings"].append(_issue("stale_hash", "manifest.json",
                                         "stored dataset_hash does not match the clip records"))
    report["dataset_hash"] = dataset.dataset_hash
    report["ok"] = not report["errors"]
    return report
