"""Fixtures for registry, delivery and rollout tests: signed bundles with lab-shaped manifests."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from shared import keys
from shared.bundle import build_bundle
from shared.profile import build_profile

LABELS = ["yes", "no", "up", "down"]


def tiny_onnx(scale: float) -> bytes:
    """A real (tiny) ONNX graph; ``scale`` makes different models have different bytes."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["audio", "w"], ["out"])], "tiny",
                              [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", 16000])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 16000])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def profile_for(seed: int, shift: float = 0.0, label_bias: float = 0.0) -> dict:
    rng = np.random.default_rng(seed)
    feats = rng.normal(shift, 1.0, (400, 3))
    labels = rng.choice(len(LABELS), 400, p=_mix(label_bias))
    return build_profile(feats, ["f0", "f1", "f2"], utterance_ms=rng.uniform(300, 900, 400),
                         level_dbfs=rng.uniform(-40, -10, 400), snr_db=rng.uniform(5, 30, 400),
                         confidence=rng.uniform(0.3, 1.0, 400), labels=labels, label_names=LABELS)


def _mix(bias: float) -> list[float]:
    p = np.array([0.25 + bias, 0.25, 0.25, 0.25 - bias])
    return list(p / p.sum())


def metrics(acc: float) -> dict:
    return {"accuracy": acc, "macro_f1": round(acc - 0.02, 4), "min_f1": round(acc - 0.1, 4),
            "per_class": {lab: {"precision": acc, "recall": acc, "f1": round(acc - 0.01 * i, 4), "support": 50}
                          for i, lab in enumerate(LABELS)}}


def make_bundle(private_key, *, version: str = "1", seed: int = 0, acc: float = 0.9, pad_bytes: int = 0,
                name: str = "kws", profile: dict | None = None, parent: str | None = None) -> bytes:
    """Signed bundle bytes with a lab-shaped manifest (lineage, metrics, profile)."""
    manifest = {
        "name": name, "version": version, "labels": LABELS, "sample_rate": 16000, "input_samples": 16000,
        "placement": "centre", "opset": {"": 17},
        "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"},
        "lineage": {"run_id": f"run-{seed}", "dataset_hash": f"ds-{seed % 2}", "parent": parent,
                    "created": "2026-01-01T00:00:00Z"},
        "metrics": metrics(acc), "profile": profile or profile_for(seed),
    }
    extra = {"padding.bin": np.random.default_rng(seed).bytes(pad_bytes)} if pad_bytes else {}
    return build_bundle(tiny_onnx(1.0 + seed), manifest, private_key, extra)


@pytest.fixture(scope="session")
def signing(tmp_path_factory):
    """(private key, public key, public key path)."""
    priv, pub = keys.generate_keypair(tmp_path_factory.mktemp("rollout-keys"))
    return keys.load_private_key(priv), keys.load_public_key(pub), pub


@pytest.fixture(scope="session")
def other_signing(tmp_path_factory):
    priv, pub = keys.generate_keypair(tmp_path_factory.mktemp("other-keys"))
    return keys.load_private_key(priv), keys.load_public_key(pub), pub


@pytest.fixture
def registry(store, tmp_path, signing):
    from cloud.registry import Registry

    return Registry(store, tmp_path / "registry", [signing[1]])


def files_in(directory) -> list[str]:
    return sorted(os.listdir(directory))
