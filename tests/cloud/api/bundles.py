"""Small signed bundles for the registry behind the API: a real (tiny) ONNX graph, and an
evaluation computed by the model lab's own metric and slice functions on seeded predictions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from cloud.lab.metrics import classification
from cloud.lab.slices import slice_table
from shared.bundle import write_bundle

INPUT_SAMPLES = 16000


def tiny_model(seed: int, n_labels: int, n_features: int) -> bytes:
    """audio [1, N] → probabilities (softmax of a seeded affine map of the mean), features, label."""
    rng = np.random.default_rng(seed)
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, n_labels], rng.normal(size=n_labels).tolist())
    fw = helper.make_tensor("fw", TensorProto.FLOAT, [1, n_features], rng.normal(size=n_features).tolist())
    nodes = [
        helper.make_node("ReduceMean", ["audio"], ["m"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["m", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("MatMul", ["m", "fw"], ["features"]),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, f"tiny{seed}", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, INPUT_SAMPLES])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, n_labels]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, n_features])], [w, fw])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def evaluation(seed: int, labels: list[str], accuracy: float) -> dict:
    rng = np.random.default_rng(seed)
    n = 400
    y_true = rng.integers(0, len(labels), n)
    wrong = rng.random(n) > accuracy
    y_pred = np.where(wrong, (y_true + rng.integers(1, len(labels), n)) % len(labels), y_true)
    out = classification(y_true, y_pred, labels)
    tags = [{"noise": ["none", "babble", "fan"][i % 3], "speed": ["slow", "fast"][(i // 3) % 2],
             "label": labels[y_true[i]]} for i in range(n)]
    out["slices"] = slice_table(tags, y_true == y_pred, min_count=5)[:12]
    out["stream_accuracy"] = round(out["accuracy"] - 0.02, 4)
    return out


def make_bundle(path: Path, private_key, *, name: str, version: str, seed: int, labels: list[str],
                profile: dict, accuracy: float, parent: str | None = None) -> str:
    """Write a signed bundle; returns the model sha256."""
    n_features = len(profile["features"]["names"])
    manifest = {
        "name": name, "version": version, "created": "2026-01-0%dT12:00:00Z" % (seed + 1), "labels": labels,
        "sample_rate": 16000, "input_samples": INPUT_SAMPLES, "placement": "centre", "opset": {"": 13},
        "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"},
        "confidence_threshold": 0.5, "feature_names": profile["features"]["names"], "profile": profile,
        "lineage": {"run_id": f"run-{seed}", "dataset_hash": f"{seed:02d}" * 32, "parent": parent,
                    "split": {"train": 1200, "dev": 200, "test": 400},
                    "hyperparameters": {"C": 1.0 + seed, "kind": "logistic"}, "code_revision": "abc123"},
        "metrics": evaluation(seed, labels, accuracy),
    }
    return write_bundle(path, tiny_model(seed, len(labels), n_features), manifest, private_key)
