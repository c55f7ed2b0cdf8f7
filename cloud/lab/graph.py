"""The ONNX feature graph (raw audio → classifier input + feature summary) and the merge with
the skl2onnx classifier into one model: ``audio`` [N, 16000] → ``label``, ``probabilities``,
``features``. Every constant comes from ``features.py``, so the graph and training agree.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from cloud.lab import features as F

log = logging.getLogger(__name__)

OPSET = 17
ML_OPSET = 3
IR_VERSION = 8  # readable by every onnxruntime >= 1.14
INPUT = "audio"
POOLED = "pooled"
FEATURES = "features"
LABEL = "label"
PROBABILITIES = "probabilities"


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(value), name)


def _initializers() -> list[onnx.TensorProto]:
    re_m, im_m = F.dft_matrices()
    t = np.arange(F.N_FRAMES, dtype=np.float32) * np.float32(F.FRAME_S)
    return [
        _const("fe_frame_idx", F.frame_indices()),
        _const("fe_dft_re", re_m), _const("fe_dft_im", im_m),
        _const("fe_mel", F.mel_matrix()),
        _const("fe_eps", np.array(F.EPS, dtype=np.float32)),
        _const("fe_floor", np.array(-F.FLOOR, dtype=np.float32)),
        _const("fe_band_floor", np.array(-F.BAND_FLOOR, dtype=np.float32)),
        _const("fe_mask_delta", np.array(F.MASK_DELTA, dtype=np.float32)),
        _const("fe_mask_slope", np.array(F.MASK_SLOPE, dtype=np.float32)),
        _const("fe_centres", F.segment_centres()),
        _const("fe_segments", np.array(F.SEGMENTS, dtype=np.float32)),
        _const("fe_one", np.array(1.0, dtype=np.float32)),
        _const("fe_ctx_edge", np.array(F.CONTEXT_EDGE, dtype=np.float32)),
        _const("fe_ctx_sharp", np.array(F.CONTEXT_SHARPNESS, dtype=np.float32)),
        _const("fe_ctx_centres", F.context_centres()),
        _const("fe_ctx_half_width", np.array(F.CONTEXT_HALF_WIDTH, dtype=np.float32)),
        _const("fe_ctx_shape", np.array([0, 2 * len(F.CONTEXT_CENTRES) * F.N_MELS], dtype=np.int64)),
        _const("fe_axis1", np.array(1, dtype=np.int64)),
        _const("fe_pooled_shape", np.array([0, F.SEGMENTS * F.N_MELS], dtype=np.int64)),
        _const("fe_bands", F.band_matrix()),
        _const("fe_band_pos", (np.arange(F.N_MELS, dtype=np.float32) / np.float32(F.N_MELS - 1))[:, None]),
        _const("fe_t", t[:, None]), _const("fe_t2", (t * t)[:, None]),
        _const("fe_ax1", np.array([1], dtype=np.int64)), _const("fe_ax2", np.array([2], dtype=np.int64)),
    ]


def _pooling_nodes() -> list[onnx.NodeProto]:
    """Classifier input: normalised log-mel averaged along the speech (see features.py)."""
    n = helper.make_node
    return [
        n("ReduceMax", ["fe_logmel"], ["fe_peak"], axes=[1, 2], keepdims=1),
        n("Sub", ["fe_logmel", "fe_peak"], ["fe_rel"]),
        n("Max", ["fe_rel", "fe_floor"], ["fe_norm"]),
        n("ReduceMean", ["fe_melpow"], ["fe_pow_mean"], axes=[2], keepdims=0),
        n("Add", ["fe_pow_mean", "fe_eps"], ["fe_pow_mean_eps"]),
        n("Log", ["fe_pow_mean_eps"], ["fe_energy"]),
        n("ReduceMax", ["fe_energy"], ["fe_energy_max"], axes=[1], keepdims=1),
        n("Sub", ["fe_energy", "fe_energy_max"], ["fe_energy_rel"]),
        n("Add", ["fe_energy_rel", "fe_mask_delta"], ["fe_mask_x0"]),
        n("Mul", ["fe_mask_slope", "fe_mask_x0"], ["fe_mask_x"]),
        n("Sigmoid", ["fe_mask_x"], ["fe_mask"]),
        n("CumSum", ["fe_mask", "fe_axis1"], ["fe_mask_cum"]),
        n("ReduceSum", ["fe_mask", "fe_ax1"], ["fe_mask_total"], keepdims=1),
        n("Div", ["fe_mask_cum", "fe_mask_total"], ["fe_position"]),
        n("Unsqueeze", ["fe_position", "fe_ax1"], ["fe_position3"]),
        n("Sub", ["fe_position3", "fe_centres"], ["fe_offset"]),
        n("Abs", ["fe_offset"], ["fe_abs_offset"]),
        n("Mul", ["fe_abs_offset", "fe_segments"], ["fe_dist"]),
        n("Sub", ["fe_one", "fe_dist"], ["fe_tri0"]),
        n("Relu", ["fe_tri0"], ["fe_tri"]),
        n("Unsqueeze", ["fe_mask", "fe_ax1"], ["fe_mask3"]),
        n("Mul", ["fe_mask3", "fe_tri"], ["fe_w0"]),
        n("ReduceSum", ["fe_w0", "fe_ax2"], ["fe_wsum"], keepdims=1),
        n("Add", ["fe_wsum", "fe_eps"], ["fe_wsum_eps"]),
        n("Div", ["fe_w0", "fe_wsum_eps"], ["fe_w"]),
        n("MatMul", ["fe_w", "fe_norm"], ["fe_pooled_g3"]),
        n("Reshape", ["fe_pooled_g3", "fe_pooled_shape"], ["fe_pooled_g"]),
        n("ReduceMax", ["fe_logmel"], ["fe_band_peak"], axes=[1], keepdims=1),
        n("Sub", ["fe_logmel", "fe_band_peak"], ["fe_band_rel"]),
        n("Max", ["fe_band_rel", "fe_band_floor"], ["fe_band_norm"]),
        n("MatMul", ["fe_w", "fe_band_norm"], ["fe_pooled_b3"]),
        n("Reshape", ["fe_pooled_b3", "fe_pooled_shape"], ["fe_pooled_b"]),
        *_context_nodes(),
        n("Concat", ["fe_pooled_g", "fe_pooled_b", "fe_pooled_c"], [POOLED], axis=1),
    ]


def _edge_window_nodes(position: str, reverse: int, p: str) -> list[onnx.NodeProto]:
    """features._edge_windows: soft step at the edge, frames counted from it, windows."""
    n = helper.make_node
    return [
        n("Sub", [position, "fe_ctx_edge"], [f"{p}_x0"]),
        n("Mul", ["fe_ctx_sharp", f"{p}_x0"], [f"{p}_x"]),
        n("Sigmoid", [f"{p}_x"], [f"{p}_step"]),
        n("CumSum", [f"{p}_step", "fe_axis1"], [f"{p}_frames"], reverse=reverse),
        n("Unsqueeze", [f"{p}_frames", "fe_ax1"], [f"{p}_frames3"]),
        n("Sub", [f"{p}_frames3", "fe_ctx_centres"], [f"{p}_off"]),
        n("Abs", [f"{p}_off"], [f"{p}_abs"]),
        n("Div", [f"{p}_abs", "fe_ctx_half_width"], [f"{p}_dist"]),
        n("Sub", ["fe_one", f"{p}_dist"], [f"{p}_tri0"]),
        n("Relu", [f"{p}_tri0"], [f"{p}_tri"]),
        n("Unsqueeze", [f"{p}_step", "fe_ax1"], [f"{p}_step3"]),
        n("Mul", [f"{p}_step3", f"{p}_tri"], [f"{p}_w"]),
    ]


def _context_nodes() -> list[onnx.NodeProto]:
    """features.context_weights applied to the band-normalised log-mel → ``fe_pooled_c``."""
    n = helper.make_node
    return [
        n("CumSum", ["fe_mask", "fe_axis1"], ["fe_mask_rcum"], reverse=1),
        n("Div", ["fe_mask_rcum", "fe_mask_total"], ["fe_position_rev"]),
        *_edge_window_nodes("fe_position_rev", 1, "fe_before"),
        *_edge_window_nodes("fe_position", 0, "fe_after"),
        n("Concat", ["fe_before_w", "fe_after_w"], ["fe_ctx_w0"], axis=1),
        n("ReduceSum", ["fe_ctx_w0", "fe_ax2"], ["fe_ctx_wsum"], keepdims=1),
        n("Add", ["fe_ctx_wsum", "fe_eps"], ["fe_ctx_wsum_eps"]),
        n("Div", ["fe_ctx_w0", "fe_ctx_wsum_eps"], ["fe_ctx_w"]),
        n("MatMul", ["fe_ctx_w", "fe_band_norm"], ["fe_pooled_c3"]),
        n("Reshape", ["fe_pooled_c3", "fe_ctx_shape"], ["fe_pooled_c"]),
    ]


def _nodes() -> list[onnx.NodeProto]:
    n = helper.make_node
    return [
        # framing, windowed DFT, power, mel, log
        n("Gather", [INPUT, "fe_frame_idx"], ["fe_frames"], axis=1),
        n("MatMul", ["fe_frames", "fe_dft_re"], ["fe_re"]),
        n("MatMul", ["fe_frames", "fe_dft_im"], ["fe_im"]),
        n("Mul", ["fe_re", "fe_re"], ["fe_re2"]),
        n("Mul", ["fe_im", "fe_im"], ["fe_im2"]),
        n("Add", ["fe_re2", "fe_im2"], ["fe_power"]),
        n("MatMul", ["fe_power", "fe_mel"], ["fe_melpow"]),
        n("Add", ["fe_melpow", "fe_eps"], ["fe_melpow_eps"]),
        n("Log", ["fe_melpow_eps"], ["fe_logmel"]),
        *_pooling_nodes(),
        # summary (ReduceMean takes axes as an attribute until opset 18): band-group means, overall mean, frame std
        n("ReduceMean", ["fe_logmel"], ["fe_time_mean"], axes=[1], keepdims=0),
        n("MatMul", ["fe_time_mean", "fe_bands"], ["fe_band_means"]),
        n("ReduceMean", ["fe_logmel"], ["fe_frame_mean"], axes=[2], keepdims=0),
        n("ReduceMean", ["fe_frame_mean"], ["fe_mean"], axes=[1], keepdims=1),
        n("Sub", ["fe_frame_mean", "fe_mean"], ["fe_dev"]),
        n("Mul", ["fe_dev", "fe_dev"], ["fe_dev2"]),
        n("ReduceMean", ["fe_dev2"], ["fe_var"], axes=[1], keepdims=1),
        n("Sqrt", ["fe_var"], ["fe_std"]),
        # spectral centroid over the whole window (energy weighted)
        n("ReduceSum", ["fe_melpow", "fe_ax1"], ["fe_band_energy"], keepdims=0),
        n("MatMul", ["fe_band_energy", "fe_band_pos"], ["fe_centroid_num"]),
        n("ReduceSum", ["fe_band_energy", "fe_ax1"], ["fe_energy_total"], keepdims=1),
        n("Add", ["fe_energy_total", "fe_eps"], ["fe_energy_total_eps"]),
        n("Div", ["fe_centroid_num", "fe_energy_total_eps"], ["fe_centroid"]),
        # temporal centre and spread of frame energy
        n("ReduceSum", ["fe_melpow", "fe_ax2"], ["fe_frame_energy0"], keepdims=0),
        n("Add", ["fe_frame_energy0", "fe_eps"], ["fe_frame_energy"]),
        n("ReduceSum", ["fe_frame_energy", "fe_ax1"], ["fe_frame_total"], keepdims=1),
        n("MatMul", ["fe_frame_energy", "fe_t"], ["fe_t_num"]),
        n("Div", ["fe_t_num", "fe_frame_total"], ["fe_centre"]),
        n("MatMul", ["fe_frame_energy", "fe_t2"], ["fe_t2_num"]),
        n("Div", ["fe_t2_num", "fe_frame_total"], ["fe_t2_mean"]),
        n("Mul", ["fe_centre", "fe_centre"], ["fe_centre2"]),
        n("Sub", ["fe_t2_mean", "fe_centre2"], ["fe_tvar0"]),
        n("Add", ["fe_tvar0", "fe_eps"], ["fe_tvar"]),
        n("Sqrt", ["fe_tvar"], ["fe_spread"]),
        n("Concat", ["fe_band_means", "fe_mean", "fe_std", "fe_centroid", "fe_centre", "fe_spread"],
          [FEATURES], axis=1),
    ]


def feature_model() -> onnx.ModelProto:
    """ONNX model: ``audio`` [N, 16000] → ``pooled`` [N, D] and ``features`` [N, F]."""
    graph = helper.make_graph(
        _nodes(), "harken_features",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", F.INPUT_SAMPLES])],
        [helper.make_tensor_value_info(POOLED, TensorProto.FLOAT, ["N", F.POOLED_SIZE]),
         helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", len(F.FEATURE_NAMES)])],
        initializer=_initializers(),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="harken-lab")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _pin_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` importing exactly the pinned opsets (the ops used are unchanged
    between the opset skl2onnx picked and the pinned one; the checker below verifies it)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.ir_version = IR_VERSION
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)])
    return model


def merge(feature: onnx.ModelProto, classifier: onnx.ModelProto) -> onnx.ModelProto:
    """One model from the feature graph and a classifier whose single input is ``pooled``:
    ``audio`` → ``label`` [N] int64, ``probabilities`` [N, C] float32, ``features`` [N, F]."""
    if {o.name for o in classifier.graph.output} != {LABEL, PROBABILITIES}:
        raise ValueError("the classifier must output exactly 'label' and 'probabilities'")
    clf_input = classifier.graph.input[0].name
    merged = compose.merge_models(_pin_opsets(feature), _pin_opsets(classifier),
                                  io_map=[(POOLED, clf_input)], outputs=[LABEL, PROBABILITIES, FEATURES],
                                  producer_name="harken-lab", producer_version="1")
    # skl2onnx names its graph with a random uuid, which merge_models copies: keep builds reproducible
    merged.graph.name = "harken_kws"
    merged.graph.doc_string = "log-mel features (harken_features) + scikit-learn classifier (skl2onnx)"
    outputs = {o.name: o for o in merged.graph.output}
    ordered = [onnx.ValueInfoProto.FromString(outputs[k].SerializeToString())
               for k in (LABEL, PROBABILITIES, FEATURES)]
    del merged.graph.output[:]
    merged.graph.output.extend(ordered)
    onnx.checker.check_model(merged, full_check=True)
    return merged


def opset_of(model: onnx.ModelProto) -> dict[str, int]:
    """The model's opset imports as the manifest records them (``ai.onnx`` spelled ``""``)."""
    return {("" if o.domain in ("", "ai.onnx") else o.domain): int(o.version) for o in model.opset_import}
