"""Run a bundle's ONNX model with onnxruntime, in batches, the way the device does."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from shared.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outputs:
    label: np.ndarray  # [N] int64
    probabilities: np.ndarray  # [N, C] float32
    features: np.ndarray  # [N, F] float32

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1) if len(self.probabilities) else np.zeros(0, np.float32)


def session(model_bytes: bytes, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session; ``threads`` = 0 lets onnxruntime choose."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"onnxruntime cannot load the model: {exc}") from exc


def run(sess: ort.InferenceSession, audio: np.ndarray, io: dict | None = None, batch: int = 256) -> Outputs:
    """Label, probabilities and features for ``audio`` [N, input_samples] float32."""
    io = io or {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}
    names = [io["label"], io["probabilities"], io["features"]]
    audio = np.asarray(audio, dtype=np.float32)
    parts = [sess.run(names, {io["input"]: audio[i: i + batch]}) for i in range(0, len(audio), batch)]
    if not parts:
        n_out = sess.get_outputs()
        shapes = {o.name: o.shape for o in n_out}
        c = shapes[io["probabilities"]][-1]
        f = shapes[io["features"]][-1]
        return Outputs(np.zeros(0, np.int64), np.zeros((0, c), np.float32), np.zeros((0, f), np.float32))
    return Outputs(*(np.concatenate([p[k] for p in parts]) for k in range(3)))
