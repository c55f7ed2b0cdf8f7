"""A verified bundle loaded into onnxruntime, tuned for a small device.

``LoadedModel.from_bundle(bundle)`` builds one single-threaded, non-spinning CPU session,
reads the input length from the session (checked against the manifest), warms it up, and
checks that its outputs agree with the manifest (labels) and the reference profile
(features). ``predict`` places an utterance in the model window and runs it;
``smoke_test`` replays the manifest's test vectors. Every onnxruntime failure becomes a
``ModelError``.

The manifest's ``io`` names the graph's tensors. Two spellings are read:
``{"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}``
or the same output names nested under ``"outputs"``.
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from shared.bundle import Bundle
from shared.errors import ModelError
from shared.gate import PLACEMENT_RULES, place

log = logging.getLogger(__name__)

OUTPUTS = ("label", "probabilities", "features")
DEFAULT_ATOL = 1e-4


@dataclass(frozen=True, eq=False)
class Prediction:
    """One inference: the chosen label, its probability and the watched feature vector."""

    index: int
    label: str
    confidence: float
    probabilities: np.ndarray
    features: np.ndarray
    no_answer: bool  # confidence below the bundle's threshold
    latency_ms: float


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Settings for a small device: few threads, no spinning, full graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # onnxruntime's own warnings would flood a device log
    return so


def _io_names(manifest: dict) -> tuple[str, list[str]]:
    spec = manifest.get("io")
    if not isinstance(spec, dict):
        raise ModelError("manifest 'io' must map 'input', 'label', 'probabilities' and 'features' "
                         "to tensor names; rebuild the bundle with `harken model train`")
    outs = spec.get("outputs") if isinstance(spec.get("outputs"), dict) else spec
    names = [outs.get(k) for k in OUTPUTS]
    if not isinstance(spec.get("input"), str) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"manifest 'io' {spec!r} lacks a tensor name for one of input, "
                         f"{', '.join(OUTPUTS)}; rebuild the bundle")
    return spec["input"], names


def _input_length(session: ort.InferenceSession, input_name: str, manifest: dict) -> int:
    meta = {i.name: i for i in session.get_inputs()}
    if input_name not in meta:
        raise ModelError(f"the model has no input {input_name!r} (it has {sorted(meta)}); "
                         "the manifest's io does not match the graph")
    shape = meta[input_name].shape
    wanted = int(manifest["input_samples"])
    if len(shape) != 2:
        raise ModelError(f"model input {input_name!r} has shape {shape}; expected [N, samples]")
    if isinstance(shape[1], int) and shape[1] != wanted:
        raise ModelError(f"model input takes {shape[1]} samples but the manifest says {wanted}; "
                         "the bundle is inconsistent, rebuild it")
    return shape[1] if isinstance(shape[1], int) else wanted


class LoadedModel:
    """An onnxruntime session for one bundle; ``predict`` is the hot path."""

    def __init__(self, bundle: Bundle, session: ort.InferenceSession, input_name: str,
                 output_names: list[str], input_samples: int):
        self.bundle = bundle
        self.session = session
        self.input_name = input_name
        self.output_names = output_names
        self.input_samples = input_samples
        self._labels = tuple(bundle.labels)
        self._threshold = bundle.confidence_threshold
        self._placement = bundle.placement
        self._batch = np.zeros((1, input_samples), dtype=np.float32)
        self.warmup_ms = 0.0

    @classmethod
    def from_bundle(cls, bundle: Bundle, *, intra_op_threads: int = 1) -> "LoadedModel":
        """Build the session, warm it up and check its outputs against the manifest."""
        manifest = bundle.manifest
        if bundle.placement not in PLACEMENT_RULES:
            raise ModelError(f"manifest placement {bundle.placement!r} is not one of {PLACEMENT_RULES}")
        input_name, output_names = _io_names(manifest)
        try:
            session = ort.InferenceSession(bundle.model_bytes, sess_options=session_options(intra_op_threads),
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ModelError(f"onnxruntime cannot load model {bundle.sha256[:12]}: {exc}") from exc
        missing = sorted(set(output_names) - {o.name for o in session.get_outputs()})
        if missing:
            raise ModelError(f"the model has no output(s) {missing}; the manifest's io does not match the graph")
        model = cls(bundle, session, input_name, output_names, _input_length(session, input_name, manifest))
        t0 = time.perf_counter()
        warm = model.predict(np.zeros(model.input_samples, dtype=np.float32))
        model.warmup_ms = (time.perf_counter() - t0) * 1000.0
        model._check_shapes(warm)
        log.info("model loaded: sha %s, input [1, %d], warm-up %.1f ms", bundle.sha256[:12],
                 model.input_samples, model.warmup_ms)
        return model

    def _check_shapes(self, p: Prediction) -> None:
        if len(p.probabilities) != len(self._labels):
            raise ModelError(f"the model gives {len(p.probabilities)} probabilities but the manifest "
                             f"names {len(self._labels)} labels; rebuild the bundle")
        profile = self.profile
        if profile is not None and len(profile["features"]["edges"]) != len(p.features):
            raise ModelError(f"the model outputs {len(p.features)} features but its reference profile "
                             f"bins {len(profile['features']['edges'])}; rebuild the bundle")

    # -- manifest facts ------------------------------------------------------------------
    sha256 = property(lambda self: self.bundle.sha256, doc="sha256 of model.onnx (names the model).")
    labels = property(lambda self: self._labels, doc="Label names, by class index.")
    threshold = property(lambda self: self._threshold, doc="Confidence below which the answer is 'no answer'.")
    manifest = property(lambda self: self.bundle.manifest, doc="The bundle's manifest.")
    profile = property(lambda self: self.bundle.manifest.get("profile"), doc="Reference profile or None.")
    placement = property(lambda self: self._placement, doc="Where an utterance sits in the window.")

    @property
    def feature_names(self) -> list[str]:
        names = self.manifest.get("feature_names")
        if names is None and self.profile is not None:
            names = self.profile["features"]["names"]
        return list(names or [])

    # -- inference -----------------------------------------------------------------------
    def _run(self, batch: np.ndarray) -> list:
        try:
            return self.session.run(self.output_names, {self.input_name: batch})
        except Exception as exc:
            raise ModelError(f"model {self.sha256[:12]} failed to run: {exc}") from exc

    def predict(self, utterance: np.ndarray) -> Prediction:
        """Place the utterance (float samples, or int16 PCM) in the model window and run the model once."""
        t0 = time.perf_counter()
        place(utterance, self.input_samples, self._placement, out=self._batch[0])
        label, probs, feats = self._run(self._batch)
        probs = _probability_row(probs, self._labels)
        index = _label_index(label, self._labels)
        confidence = float(probs[index])
        if confidence != confidence:
            raise ModelError(f"model {self.sha256[:12]} produced NaN probabilities")
        return Prediction(index=index, label=self._labels[index], confidence=confidence,
                          probabilities=probs, features=np.asarray(feats[0], dtype=np.float32).reshape(-1),
                          no_answer=confidence < self._threshold,
                          latency_ms=(time.perf_counter() - t0) * 1000.0)

    def smoke_test(self) -> int:
        """Run the manifest's test vectors; raise ModelError on the first mismatch. Returns the count."""
        spec = self.manifest.get("test_vectors")
        if not spec:
            raise ModelError("the bundle has no test vectors; rebuild it with `harken model train`")
        try:
            vectors = np.load(io.BytesIO(self.bundle.files[spec["file"]]), allow_pickle=False)
        except (KeyError, ValueError, OSError) as exc:
            raise ModelError(f"test vectors {spec.get('file')!r} cannot be read from the bundle: {exc}") from exc
        expected, atol = spec["expected"], float(spec.get("atol", DEFAULT_ATOL))
        vectors = vectors.reshape(len(vectors), -1)
        if len(vectors) != len(expected):
            raise ModelError(f"{len(vectors)} test vectors but {len(expected)} expected outputs")
        for i, (vec, want) in enumerate(zip(vectors, expected)):
            audio = vec.astype(np.float32) / np.float32(32768.0) if vec.dtype == np.int16 else vec.astype(np.float32)
            got = self.predict(audio)
            want_label = want["label"]
            if (got.label if isinstance(want_label, str) else got.index) != want_label:
                raise ModelError(f"test vector {i}: label {got.label!r} but the bundle expects {want_label!r}; "
                                 "this runtime computes the model differently — refuse the bundle")
            diff = float(np.max(np.abs(got.probabilities - np.asarray(want["probabilities"], dtype=np.float32))))
            if diff > atol:
                raise ModelError(f"test vector {i}: probabilities differ by {diff:.3g} (> atol {atol:g}); "
                                 "this runtime computes the model differently — refuse the bundle")
        return len(vectors)

    def __repr__(self) -> str:
        return f"LoadedModel({self.manifest.get('name')!r}, sha={self.sha256[:12]})"


def _probability_row(probs, labels: tuple[str, ...]) -> np.ndarray:
    if isinstance(probs, list):  # a ZipMap output: [{label: p}, ...]
        row = probs[0]
        return np.array([row.get(name, row.get(i, 0.0)) for i, name in enumerate(labels)], dtype=np.float32)
    return np.asarray(probs, dtype=np.float32).reshape(-1)


def _label_index(label, labels: tuple[str, ...]) -> int:
    value = label[0] if len(label) else None
    if isinstance(value, (str, np.str_, bytes)):
        name = value.decode() if isinstance(value, bytes) else str(value)
        if name not in labels:
            raise ModelError(f"the model answered label {name!r}, which the manifest does not list")
        return labels.index(name)
    index = int(value)
    if not 0 <= index < len(labels):
        raise ModelError(f"the model answered class {index}, outside the manifest's {len(labels)} labels")
    return index
