"""One training run, end to end: dataset → split → device windows → features → models →
ONNX bundle → evaluation (clip-level, stream, baselines) → profile → signed bundle → run record.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cloud.lab import dataset as ds_mod
from cloud.lab import lineage as lineage_mod
from cloud.lab import export, features, graph, infer, loeo, metrics, runs, slices, splits, stream, train, windows
from cloud.lab.voices import SILENCE_LABEL
from shared.errors import ModelError
from shared.gate import GateConfig
from shared.profile import BACKGROUND_CHUNK, accuracy_table, build_profile, calibration_table

log = logging.getLogger(__name__)


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


def no_progress(stage: str, total: int):
    return _NoProgress()


@dataclass
class TrainRequest:
    data_dir: str
    out: str
    private_key: object
    seed: int = 0
    name: str = "harken-kws"
    version: str = "0.1.0"
    hyperparameters: train.Hyperparameters = field(default_factory=train.Hyperparameters)
    gate: GateConfig = field(default_factory=GateConfig)
    runs_dir: str | None = None
    record_run: bool = True
    leave_one_engine_out: bool = False  # also train one model per held-out engine (loeo.py)
    progress: Callable = no_progress


def _windows(req: TrainRequest, dataset, idx: list[int], split: str) -> windows.Windows:
    """The split's windows: the train split's as the recipe says, dev and test clip by clip."""
    clips = [dataset.clips[i] for i in idx]
    with req.progress(f"gating {split}", len(clips)) as bar:
        if split == "train":
            return windows.training(dataset, clips, req.gate, req.hyperparameters.train_windows,
                                    seed=req.seed, progress=bar.update)
        return windows.build(dataset, clips, req.gate, progress=bar.update)


def _slice_rows(dataset, idx, correct) -> list[dict]:
    tags = [dict(dataset.clips[i].tags, label=dataset.clips[i].label) for i in idx]
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in slices.slice_table(tags, correct, min_count=5)[:40]]


def _play(req, dataset, idx: list[int], sess) -> stream.StreamPass:
    """The clips ``idx`` played as one stream through the device's gate and the bundle."""
    from shared.audio import read_wav

    clips = [read_wav(dataset.path_of(dataset.clips[i])) for i in idx]
    return stream.play(clips, lambda w: infer.run(sess, w), req.gate, dataset.placement,
                       features.INPUT_SAMPLES, seed=req.seed)


def _concept_reference(test_pass: stream.StreamPass, labels: np.ndarray, label_names) -> dict:
    """Accuracy per true label and the calibration table of the test stream's credited utterances."""
    mask = test_pass.credited
    true = labels[test_pass.owner[mask]]
    predicted, confidence = test_pass.outputs.label[mask], test_pass.outputs.confidence[mask]
    return {"accuracy": accuracy_table(true, predicted, label_names),
            "calibration": calibration_table(predicted, confidence, predicted == true, label_names)}


@dataclass
class _Fitted:
    model: object
    baselines: dict
    merged: object
    model_bytes: bytes
    sess: object


def _fit(req: TrainRequest, dataset, x_train, y_train, timings: dict) -> _Fitted:
    t = time.perf_counter()
    with req.progress("training", 3) as bar:
        model = train.fit_main(x_train, y_train, len(dataset.labels), req.hyperparameters, req.seed)
        bar.update(1)
        baselines = train.fit_baselines(x_train, y_train, req.hyperparameters, req.seed)
        bar.update(2)
    timings["fit_s"] = time.perf_counter() - t
    merged = graph.merge(graph.feature_model(), train.to_onnx(model, x_train.shape[1]))
    model_bytes = merged.SerializeToString()
    return _Fitted(model, baselines, merged, model_bytes, infer.session(model_bytes))


def _evaluate(req, dataset, sp, wins, feats, fitted: _Fitted, timings: dict) -> tuple[dict, dict]:
    """Metrics of the bundle (through onnxruntime): clip-level, stream, baselines, slices; and
    the profile's concept reference (accuracy, calibration) from the same test-stream pass."""
    outs = {k: infer.run(fitted.sess, wins[k].audio) for k in ("dev", "test")}
    y_test, y_dev = wins["test"].labels, wins["dev"].labels
    x_test = feats["test"][0]
    evaluation = metrics.classification(y_test, outs["test"].label, dataset.labels)
    t = time.perf_counter()
    test_pass = _play(req, dataset, sp.indices["test"], fitted.sess)
    label_index = {n: i for i, n in enumerate(dataset.labels)}
    test_labels = np.array([label_index[dataset.clips[i].label] for i in sp.indices["test"]], dtype=np.int64)
    silence = label_index.get(SILENCE_LABEL)
    stream_result = stream.score(test_pass, test_labels, silence, test_pass.outputs.label).to_dict()
    concept = _concept_reference(test_pass, test_labels, dataset.labels)
    timings["stream_s"] = time.perf_counter() - t
    evaluation.update({
        "baselines": {name: round(float(np.mean(b.predict(x_test) == y_test)), 4)
                      for name, b in fitted.baselines.items()},
        "dev_accuracy": round(float(np.mean(outs["dev"].label == y_dev)), 4),
        "sklearn_agreement": round(float(np.mean(fitted.model.predict(x_test) == outs["test"].label)), 6),
        "stream_accuracy": stream_result["accuracy"], "stream": stream_result,
        "gate_missed_test": windows.gate_missed(wins["test"], dataset.labels),
        "threshold": metrics.choose_threshold(y_dev, outs["dev"].label, outs["dev"].confidence),
        "slices": _slice_rows(dataset, sp.indices["test"], outs["test"].label == y_test),
    })
    return evaluation, concept


def _leave_one_engine_out(req, dataset, sp, wins, feats, fitted: _Fitted, timings: dict) -> dict:
    t = time.perf_counter()
    label_index = {n: i for i, n in enumerate(dataset.labels)}
    task = loeo.Task(
        dataset, sp.indices["train"], sp.indices["test"], feats["train"][0], wins["train"].labels,
        fit=lambda x, y: train.fit_main(x, y, len(dataset.labels), req.hyperparameters, req.seed),
        reference=lambda w: infer.run(fitted.sess, w).label, gate=req.gate, placement=dataset.placement,
        input_samples=features.INPUT_SAMPLES, label_index=label_index, silence=label_index.get(SILENCE_LABEL),
        seed=req.seed)
    n = len(loeo.held_out_engines(dataset, sp.indices["train"], sp.indices["test"]))
    with req.progress("leaving one engine out", n) as bar:
        result = loeo.run(task, progress=bar.update)
    timings["loeo_s"] = time.perf_counter() - t
    return result


def _lineage(req, dataset, sp, run_id: str) -> dict:
    return {"run_id": run_id, "dataset_hash": dataset.dataset_hash,
            "dataset_path": str(Path(req.data_dir).resolve()), "split": sp.summary(),
            "hyperparameters": req.hyperparameters.to_dict(), "code_revision": runs.code_revision(),
            "seed": req.seed, "parent": None, **lineage_mod.of_training(dataset, sp)}


def run(req: TrainRequest) -> dict:
    """Train, evaluate and write a bundle; return the run record (also saved to the store)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    dataset = ds_mod.load(req.data_dir)
    sp = splits.split(dataset.clips, dataset.labels, seed=req.seed)
    wins = {k: _windows(req, dataset, sp.indices[k], k) for k in splits.SPLITS}
    timings["windows_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    feats = {k: features.compute(w.audio) for k, w in wins.items()}
    timings["features_s"] = time.perf_counter() - t
    fitted = _fit(req, dataset, feats["train"][0], wins["train"].labels, timings)
    evaluation, concept = _evaluate(req, dataset, sp, wins, feats, fitted, timings)
    if req.leave_one_engine_out:
        evaluation["leave_one_engine_out"] = _leave_one_engine_out(req, dataset, sp, wins, feats, fitted, timings)
    vectors_npy, vectors_entry = export.test_vectors(
        fitted.model_bytes, export.pick_test_vectors(wins["test"].audio, wins["test"].labels))
    run_id, created = runs.new_run_id(), runs.now_iso()
    lineage = _lineage(req, dataset, sp, run_id)
    manifest = export.manifest(
        name=req.name, version=req.version, created=created, labels=dataset.labels,
        placement=dataset.placement, gate=req.gate, threshold=evaluation["threshold"]["value"],
        model=fitted.merged, lineage=lineage, metrics=evaluation,
        profile={**_profile(req, dataset, sp.indices["dev"], fitted.sess), **concept}, vectors_entry=vectors_entry)
    sha = export.write(req.out, fitted.merged, manifest, req.private_key, vectors_npy)
    timings["total_s"] = time.perf_counter() - t0
    record = {"id": run_id, "created": created, "code_revision": lineage["code_revision"],
              "dataset_hash": dataset.dataset_hash, "dataset_path": lineage["dataset_path"],
              "seed": req.seed, "split": sp.summary(), "hyperparameters": lineage["hyperparameters"],
              "dataset": lineage["dataset"], "sample_ids": lineage["sample_ids"],
              "metrics": evaluation, "timings": {k: round(v, 2) for k, v in timings.items()},
              "artifacts": {"bundle": str(Path(req.out).resolve()), "model_sha256": sha,
                            "bundle_bytes": Path(req.out).stat().st_size}}
    if req.record_run:
        record["artifacts"]["record"] = str(runs.RunStore(req.runs_dir).save(record))
    log.info("run %s: test accuracy %.4f, stream %.4f, bundle %s", run_id, evaluation["accuracy"],
             evaluation["stream_accuracy"], req.out)
    return record


def _profile(req, dataset, dev_idx, sess) -> dict:
    """Reference profile of the dev clips played as one stream through the device's gate,
    in chunks by speaker (the speaker of the clip each utterance overlaps most).

    A device's gate runs continuously and cuts utterances out of a stream, which come out
    longer (the hangover and pre-roll reach into the room around a word) than clips cut
    one at a time; a profile built from single clips made every healthy fleet alarm on
    utterance length at its first window.
    """
    from shared.levels import level_dbfs, snr_db

    dev = _play(req, dataset, dev_idx, sess)
    utts, out = dev.utterances, dev.outputs
    if not utts:
        raise ModelError("the gate cut no utterance from the dev split, so there is no reference "
                         "profile; check the dataset with `harken data check`")
    speakers = [BACKGROUND_CHUNK if k < 0 else dataset.clips[dev_idx[k]].speaker for k in dev.owner]
    return build_profile(out.features, features.FEATURE_NAMES,
                         utterance_ms=np.array([u.duration_ms for u in utts]),
                         level_dbfs=np.array([level_dbfs(u.samples) for u in utts]),
                         snr_db=np.array([snr_db(u.samples) for u in utts]),
                         confidence=out.confidence, labels=out.label, label_names=dataset.labels,
                         chunks=speakers, chunk_by="speaker")
