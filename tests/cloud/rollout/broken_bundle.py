"""A signed bundle that passes the device's install checks but fails on every real utterance.

``fails_in_the_field(bundle, out, private_key, version)`` rewrites a lab bundle's ONNX graph:
the label output gets ``+1000`` unless the input is one the device checks at install (the
bundle's test vectors, placed as the device places them, and the all-zero warm-up window).
Those are recognised by three random projections of the input that must all match a known
value; any other audio projects elsewhere, so the agent reads a class index outside the
manifest's labels and counts the inference as failed. The manifest (test vectors and their
expected outputs) is kept; the bundle is re-signed with the test key under a new version.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from shared.bundle import build_bundle, load_bundle
from shared.gate import place

PROJECTIONS = 3
TOLERANCE = 1e-3
OFFSET = 1000


def _projection_model(weights: np.ndarray, n_in: int) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["p"])], "projection",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", PROJECTIONS])],
        [numpy_helper.from_array(weights, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _known_inputs(bundle) -> np.ndarray:
    """What the device runs through the model at install: the warm-up zeros and the placed test vectors."""
    n = bundle.input_samples
    spec = bundle.manifest["test_vectors"]
    vectors = np.load(io.BytesIO(bundle.files[spec["file"]]), allow_pickle=False).reshape(-1, n)
    audio = [v.astype(np.float32) / np.float32(32768.0) if v.dtype == np.int16 else v.astype(np.float32)
             for v in vectors]
    return np.stack([np.zeros(n, np.float32)] + [place(a, n, bundle.placement) for a in audio])


def _rewire(model: onnx.ModelProto, label: str, input_name: str, weights: np.ndarray, known: np.ndarray) -> None:
    g = model.graph
    raw = f"{label}_raw"
    for node in g.node:
        node.output[:] = [raw if o == label else o for o in node.output]
    out = next(o for o in g.output if o.name == label)
    label_type = out.type.tensor_type.elem_type
    g.initializer.extend([numpy_helper.from_array(weights, "broken_w"),
                          numpy_helper.from_array(known[None, :, :].astype(np.float32), "broken_known"),
                          numpy_helper.from_array(np.array(TOLERANCE, np.float32), "broken_tol"),
                          numpy_helper.from_array(np.array(1.0, np.float32), "broken_one"),
                          numpy_helper.from_array(np.array(float(OFFSET), np.float32), "broken_offset"),
                          numpy_helper.from_array(np.array([-1, 1, PROJECTIONS], np.int64), "broken_shape")])
    g.node.extend([
        helper.make_node("MatMul", [input_name, "broken_w"], ["broken_p"]),
        helper.make_node("Reshape", ["broken_p", "broken_shape"], ["broken_p3"]),  # [N, 1, P]
        helper.make_node("Sub", ["broken_p3", "broken_known"], ["broken_d"]),  # [N, K, P]
        helper.make_node("Abs", ["broken_d"], ["broken_a"]),
        helper.make_node("Less", ["broken_a", "broken_tol"], ["broken_close"]),
        helper.make_node("Cast", ["broken_close"], ["broken_closef"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMin", ["broken_closef"], ["broken_all"], axes=[2], keepdims=0),  # every projection
        helper.make_node("ReduceMax", ["broken_all"], ["broken_known_input"], axes=[1], keepdims=0),  # any input
        helper.make_node("Sub", ["broken_one", "broken_known_input"], ["broken_unknown"]),
        helper.make_node("Mul", ["broken_unknown", "broken_offset"], ["broken_add_f"]),
        helper.make_node("Cast", ["broken_add_f"], ["broken_add"], to=label_type),
        helper.make_node("Add", [raw, "broken_add"], [label]),
    ])


def fails_in_the_field(bundle_path: Path, out: Path, private_key, public_key, version: str, seed: int = 0) -> Path:
    bundle = load_bundle(Path(bundle_path).read_bytes(), [public_key])
    io_names = bundle.manifest["io"]
    n = bundle.input_samples
    rng = np.random.default_rng(seed)
    weights = (rng.normal(0.0, 1.0, (n, PROJECTIONS)) * 30.0 / np.sqrt(n)).astype(np.float32)
    session = ort.InferenceSession(_projection_model(weights, n), providers=["CPUExecutionProvider"])
    known = session.run(None, {"x": _known_inputs(bundle)})[0]  # as the runtime computes them
    model = onnx.load_from_string(bundle.model_bytes)
    _rewire(model, io_names["label"], io_names["input"], weights, known)
    onnx.checker.check_model(model)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("format", "model_sha256", "files")}
    manifest["version"] = version
    extra = {name: data for name, data in bundle.files.items()}
    out.write_bytes(build_bundle(model.SerializeToString(), manifest, private_key, extra))
    return out
