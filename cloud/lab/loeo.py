"""Leave one engine out: how a model does on a speech engine it never heard.

For each engine with clips in both the train and the test split, a model is trained with the
same recipe on the train split without that engine's clips (the background ``_silence_``
clips, which no engine spoke, stay), and both it and the in-distribution model (trained on
every engine) are tested on that engine's test clips played as one stream through the
device's gate: the lab's honest test (``stream``). The gap between the two is what a new
voice engine costs; a model that only learned one synthesizer's quirks shows a large one.
Accuracy is also broken down by the held-out engine's voices, because two voices are shared
across engines (festival's kal diphones and flite's kal16; festival's HTS slt, flite's
clustergen slt and rhvoice's slt come from the same recordings), and a voice with no twin is
the harder test.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cloud.lab import features, stream
from cloud.lab.loeo_table import table_text  # noqa: F401  (re-exported: the lab's commands print it)
from shared.audio import read_wav
from shared.gate import GateConfig

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]  # model windows [N, input_samples] → class indices [N]
METHOD = ("train split without the engine's clips, same recipe; test: the engine's test-split clips "
          "as one gate-cut stream (stream accuracy)")


@dataclass(frozen=True)
class Task:
    """What leaving engines out needs from a training run or an evaluation."""

    dataset: object  # cloud.lab.dataset.Dataset
    train_idx: Sequence[int]
    test_idx: Sequence[int]
    x_train: np.ndarray  # classifier inputs of the train clips, in train_idx order
    y_train: np.ndarray
    fit: Callable[[np.ndarray, np.ndarray], object]  # (x, y) → fitted classifier with .predict
    reference: Predict  # the in-distribution model
    gate: GateConfig
    placement: str
    input_samples: int
    label_index: dict  # dataset label → model class index
    silence: int | None
    seed: int = 0


def engine_of(clip) -> str | None:
    """The engine that spoke a clip (None: background, imported or pre-engine clips)."""
    return clip.tags.get("engine") if isinstance(clip.tags, dict) else None


def held_out_engines(dataset, train_idx: Sequence[int], test_idx: Sequence[int]) -> list[str]:
    """Engines with clips in both splits, when there are two or more such engines."""
    train = {engine_of(dataset.clips[i]) for i in train_idx} - {None}
    test = {engine_of(dataset.clips[i]) for i in test_idx} - {None}
    both = sorted(train & test)
    return both if len(both) >= 2 else []


def sklearn_predict(model) -> Predict:
    return lambda windows: model.predict(features.compute(windows)[0])


def run(task: Task, progress: Callable[[int], None] | None = None) -> dict:
    """Per engine: clips, in-distribution and held-out stream accuracy, by voice too."""
    ds = task.dataset
    train_engines = np.array([engine_of(ds.clips[i]) or "" for i in task.train_idx])
    out: dict = {"method": METHOD, "engines": {}}
    for engine in held_out_engines(ds, task.train_idx, task.test_idx):
        keep = train_engines != engine
        model = task.fit(task.x_train[keep], task.y_train[keep])
        test = [i for i in task.test_idx if engine_of(ds.clips[i]) == engine]
        row = _score(task, test, sklearn_predict(model))
        row["train_clips"] = int(keep.sum())
        out["engines"][engine] = row
        log.info("leave out %s: held-out %.4f, in-distribution %.4f (%d test clips)", engine,
                 row["held_out"], row["in_distribution"], row["test_clips"])
        if progress:
            progress(1)
    rows = out["engines"].values()
    out["min_held_out"] = min((r["held_out"] for r in rows), default=None)
    out["min_in_distribution"] = min((r["in_distribution"] for r in rows), default=None)
    return out


def _score(task: Task, test: list[int], held_out: Predict) -> dict:
    """Both models on one gate-cut stream of the ``test`` clips."""
    ds = task.dataset
    clips = [read_wav(ds.path_of(ds.clips[i])) for i in test]
    labels = np.array([task.label_index[ds.clips[i].label] for i in test], dtype=np.int64)
    p = stream.play(clips, lambda w: w, task.gate, task.placement, task.input_samples, seed=task.seed)
    windows = p.outputs
    results = {}
    for name, predict in (("in_distribution", task.reference), ("held_out", held_out)):
        predicted = predict(windows) if len(windows) else np.zeros(0, np.int64)
        results[name] = stream.clip_results(p, labels, task.silence, predicted)
    by_voice: dict[str, list[int]] = defaultdict(list)
    for k, i in enumerate(test):
        by_voice[str(ds.clips[i].tags.get("voice"))].append(k)
    n = max(1, len(test))
    return {
        "test_clips": len(test), "gate_missed": results["held_out"][1],
        "in_distribution": round(float(results["in_distribution"][0].sum()) / n, 4),
        "held_out": round(float(results["held_out"][0].sum()) / n, 4),
        "by_voice": {v: {"test_clips": len(ks),
                         "in_distribution": round(float(results["in_distribution"][0][ks].mean()), 4),
                         "held_out": round(float(results["held_out"][0][ks].mean()), 4)}
                     for v, ks in sorted(by_voice.items())},
    }
