"""Evaluate a bundle on a dataset split with onnxruntime (never scikit-learn): accuracy,
per-class precision/recall/F1, confusion matrix (text and PNG) and the slice table.

The split is recomputed from the bundle's lineage (seed and fractions), so ``--split test``
means the very clips the run held out, provided the dataset hash matches the lineage.
"""
from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Callable

import numpy as np

from cloud.lab import dataset as ds_mod
from cloud.lab import features, infer, loeo, metrics, slices, splits, train, windows
from cloud.lab.voices import SILENCE_LABEL
from shared.bundle import Bundle, atomic_write
from shared.errors import DatasetError
from shared.gate import GateConfig

log = logging.getLogger(__name__)


def _clip_indices(bundle: Bundle, dataset, split: str) -> list[int]:
    if split == "all":
        return list(range(len(dataset.clips)))
    lineage = bundle.manifest.get("lineage", {}).get("split", {})
    sp = splits.split(dataset.clips, dataset.labels, seed=int(lineage.get("seed", 0)),
                      fractions=lineage.get("fractions", splits.DEFAULT_FRACTIONS))
    if split not in sp.indices:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(splits.SPLITS)} or all")
    return sp.indices[split]


def _label_map(bundle: Bundle, dataset) -> np.ndarray:
    """Bundle class index of each dataset label (by name)."""
    index = {name: i for i, name in enumerate(bundle.labels)}
    missing = [label for label in dataset.labels if label not in index]
    if missing:
        raise DatasetError(f"dataset labels {missing} are not among the bundle's labels {bundle.labels}; "
                           "evaluate on a dataset with the same label set")
    return np.array([index[label] for label in dataset.labels])


def evaluate(bundle: Bundle, data_dir: str | Path, split: str = "test",
             progress: Callable[[int], None] | None = None) -> dict:
    """The evaluation report of ``bundle`` on ``split`` of the dataset in ``data_dir``."""
    dataset = ds_mod.load(data_dir)
    idx = _clip_indices(bundle, dataset, split)
    clips = [dataset.clips[i] for i in idx]
    manifest = bundle.manifest
    gate = GateConfig.from_dict(manifest.get("gate", {}))
    wins = windows.build(dataset, clips, gate, manifest["placement"], bundle.input_samples, progress=progress)
    y_true = _label_map(bundle, dataset)[wins.labels]
    out = infer.run(infer.session(bundle.model_bytes), wins.audio, manifest.get("io"))
    report = metrics.classification(y_true, out.label, bundle.labels)
    threshold = bundle.confidence_threshold
    accepted = out.confidence >= threshold
    tags = [dict(c.tags, label=c.label) for c in clips]
    report.update({
        "bundle": {"name": manifest["name"], "version": manifest["version"], "model_sha256": bundle.sha256},
        "dataset": {"path": str(Path(data_dir).resolve()), "dataset_hash": dataset.dataset_hash,
                    "matches_lineage": dataset.dataset_hash == manifest.get("lineage", {}).get("dataset_hash")},
        "split": split, "labels": bundle.labels,
        "gate_missed": windows.gate_missed(windows.Windows(wins.audio, y_true, wins.gated, wins.utterance_ms,
                                                           wins.level_dbfs, wins.snr_db), bundle.labels),
        "confidence_threshold": threshold,
        "coverage": round(float(accepted.mean()) if len(accepted) else 0.0, 4),
        "accepted_accuracy": round(float(np.mean(out.label[accepted] == y_true[accepted])) if accepted.any() else 0.0, 4),
        "slices": slices.slice_table(tags, out.label == y_true, min_count=1),
    })
    return report


def hyperparameters_of(bundle: Bundle) -> train.Hyperparameters:
    """The recipe the bundle was trained with (its lineage), for retraining without an engine."""
    recorded = dict(bundle.manifest.get("lineage", {}).get("hyperparameters") or {})
    known = {f.name for f in fields(train.Hyperparameters)}
    values = {k: v for k, v in recorded.items() if k in known}
    for key in ("hidden_layers", "band_shifts"):
        if key in values:
            values[key] = tuple(values[key])
    if "band_shifts" not in values and recorded:  # trained before the augmentation existed
        values["band_shifts"] = (0,)
    if "train_windows" not in values and recorded:  # trained before stream-cut windows
        values["train_windows"] = "clip"
    return train.Hyperparameters(**values)


def leave_one_engine_out(bundle: Bundle, data_dir: str | Path, progress: Callable[[int], None] | None = None) -> dict:
    """Per held-out engine: a model trained on the bundle's train split of DATA without that
    engine (the bundle's recipe and seed), against the bundle itself, on the engine's test clips."""
    dataset = ds_mod.load(data_dir)
    manifest = bundle.manifest
    train_idx, test_idx = _clip_indices(bundle, dataset, "train"), _clip_indices(bundle, dataset, "test")
    gate = GateConfig.from_dict(manifest.get("gate", {}))
    label_map = _label_map(bundle, dataset)
    seed = int(manifest.get("lineage", {}).get("seed", 0))
    hp = hyperparameters_of(bundle)
    wins = windows.training(dataset, [dataset.clips[i] for i in train_idx], gate, hp.train_windows,
                            manifest["placement"], bundle.input_samples, seed)
    sess = infer.session(bundle.model_bytes)
    index = {name: i for i, name in enumerate(bundle.labels)}
    task = loeo.Task(
        dataset, train_idx, test_idx, features.compute(wins.audio)[0], label_map[wins.labels],
        fit=lambda x, y: train.fit_main(x, y, len(bundle.labels), hp, seed),
        reference=lambda w: infer.run(sess, w, manifest.get("io")).label, gate=gate,
        placement=manifest["placement"], input_samples=bundle.input_samples,
        label_index={label: int(label_map[i]) for i, label in enumerate(dataset.labels)},
        silence=index.get(SILENCE_LABEL), seed=seed)
    return loeo.run(task, progress=progress)


def confusion_png(path: str | Path, confusion, labels) -> None:
    """Write the confusion matrix as a PNG (row-normalised colours, counts written in)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 0.8 + 0.55 * len(labels)), dpi=100)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def write_report(report: dict, out_dir: str | Path, stem: str) -> dict[str, str]:
    """Write ``{stem}-report.json`` and ``{stem}-confusion.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{stem}-report.json", out / f"{stem}-confusion.png"
    atomic_write(json_path, json.dumps(report, indent=1).encode())
    confusion_png(png_path, report["confusion"], report["labels"])
    return {"report": str(json_path), "confusion_png": str(png_path)}
