"""Assemble the bundle: manifest (labels, io, gate, lineage, metrics, profile, test vectors),
``test_vectors.npy`` and the merged ONNX model, signed with ``shared.bundle.write_bundle``."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import onnx

from cloud.lab import features as F
from cloud.lab import graph, infer
from shared import bundle as bundle_format
from shared.audio import to_float32, to_int16
from shared.gate import GateConfig
from shared.levels import level_dbfs
from shared.profile import validate_profile

log = logging.getLogger(__name__)

TEST_VECTORS = "test_vectors.npy"
TEST_VECTOR_ATOL = 1e-4
IO = {"input": graph.INPUT, "label": graph.LABEL, "probabilities": graph.PROBABILITIES,
      "features": graph.FEATURES}


def pick_test_vectors(windows: np.ndarray, labels: np.ndarray, k: int = 4) -> np.ndarray:
    """int16 [k, input_samples]: the first audible window of each of the first k classes seen."""
    chosen, seen = [], set()
    for i, lab in enumerate(labels):
        if int(lab) in seen or level_dbfs(windows[i]) < -60:
            continue
        chosen.append(i)
        seen.add(int(lab))
        if len(chosen) == k:
            break
    return to_int16(windows[chosen]) if chosen else np.zeros((0, windows.shape[1]), np.int16)


def test_vectors(model_bytes: bytes, vectors: np.ndarray) -> tuple[bytes, dict]:
    """(``test_vectors.npy`` bytes, manifest entry with the model's expected outputs).

    The device feeds ``int16 / 32768`` as float32, exactly as ``shared.audio.to_float32``."""
    out = infer.run(infer.session(model_bytes, threads=1), to_float32(vectors))
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    expected = [{"label": int(out.label[i]),
                 "probabilities": [round(float(p), 6) for p in out.probabilities[i]]}
                for i in range(len(vectors))]
    return buf.getvalue(), {"file": TEST_VECTORS, "expected": expected, "atol": TEST_VECTOR_ATOL,
                            "input_scale": "int16 / 32768"}


def manifest(*, name: str, version: str, created: str, labels: list[str], placement: str,
             gate: GateConfig, threshold: float, model: onnx.ModelProto, lineage: dict,
             metrics: dict, profile: dict, vectors_entry: dict) -> dict:
    validate_profile(profile)  # never sign a profile a device or the collector would refuse
    return {
        "name": name, "version": version, "created": created, "labels": list(labels),
        "sample_rate": F.SAMPLE_RATE, "input_samples": F.INPUT_SAMPLES, "placement": placement,
        "gate": gate.to_dict(), "confidence_threshold": threshold,
        "opset": graph.opset_of(model), "io": dict(IO),
        "feature_names": list(F.FEATURE_NAMES),
        "features_doc": "log-mel 25 ms Hann / 10 ms hop / 40 mel; summary: band-group means, "
                        "mean, frame std, spectral centroid, temporal centre and spread",
        "lineage": lineage, "metrics": metrics, "profile": profile, "test_vectors": vectors_entry,
    }


def write(path: str | Path, model: onnx.ModelProto, manifest_dict: dict, private_key,
          vectors_npy: bytes) -> str:
    """Sign and write the bundle atomically; returns the model sha256."""
    return bundle_format.write_bundle(path, model.SerializeToString(), manifest_dict, private_key,
                                      {TEST_VECTORS: vectors_npy})


def load_test_vectors(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
