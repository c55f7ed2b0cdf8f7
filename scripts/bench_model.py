#!/usr/bin/env python
"""Benchmark a model bundle: per-utterance latency of the full graph (audio → label) against
the classifier-only subgraph (pooled features → label) cut from the same model, both on one
thread in the same run, and the feature parity error of the graph against numpy.

    python scripts/bench_model.py --bundle kws.hkb --data DATA_DIR [--n 200]

Without --bundle/--data it builds the tiny test dataset and bundle in a temporary directory.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx.utils import Extractor  # noqa: E402

from cloud.lab import dataset, features, graph, infer, windows  # noqa: E402
from shared.bundle import load_bundle  # noqa: E402
from shared.gate import GateConfig  # noqa: E402


def _median_ms(sess, name: str, inputs: np.ndarray, outputs: list[str], repeat: int) -> float:
    for x in inputs[:5]:  # warm-up
        sess.run(outputs, {name: x[None, :]})
    times = []
    for i in range(repeat):
        x = inputs[i % len(inputs)][None, :]
        t = time.perf_counter()
        sess.run(outputs, {name: x})
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def _classifier_only(model_bytes: bytes) -> bytes:
    model = onnx.load_from_string(model_bytes)
    sub = Extractor(model).extract_model([graph.POOLED], [graph.LABEL, graph.PROBABILITIES])
    return sub.SerializeToString()


def bench(bundle_path: Path, data_dir: Path, n: int, repeat: int) -> dict:
    b = load_bundle(bundle_path, None, require_signature=False)
    ds = dataset.load(data_dir)
    clips = ds.clips[:: max(1, len(ds.clips) // n)][:n]
    wins = windows.build(ds, clips, GateConfig.from_dict(b.manifest["gate"]), b.placement, b.input_samples)
    pooled, summary = features.compute(wins.audio)
    full = infer.session(b.model_bytes, threads=1)
    clf = infer.session(_classifier_only(b.model_bytes), threads=1)
    full_ms = _median_ms(full, graph.INPUT, wins.audio, [graph.LABEL], repeat)
    clf_ms = _median_ms(clf, graph.POOLED, pooled, [graph.LABEL], repeat)
    feat_sess = infer.session(graph.feature_model().SerializeToString(), threads=1)
    g_pooled, g_summary = feat_sess.run([graph.POOLED, graph.FEATURES], {graph.INPUT: wins.audio})
    out = infer.run(full, wins.audio)
    numpy_ms = []
    for x in wins.audio[:50]:
        t = time.perf_counter()
        features.compute(x[None, :])
        numpy_ms.append((time.perf_counter() - t) * 1000.0)
    return {
        "bundle": {"path": str(bundle_path), "name": b.manifest["name"], "model_sha256": b.sha256,
                   "bundle_kb": round(len(b.raw) / 1024, 1), "model_kb": round(len(b.model_bytes) / 1024, 1)},
        "utterances": len(wins.audio), "repeat": repeat, "threads": 1,
        "latency_ms": {"full_bundle_median": round(full_ms, 3), "classifier_only_median": round(clf_ms, 3),
                       "ratio_full_over_classifier": round(full_ms / clf_ms, 2),
                       "numpy_features_median": round(statistics.median(numpy_ms), 3)},
        "feature_parity": {
            "pooled_max_abs": float(np.max(np.abs(g_pooled - pooled))),
            "pooled_mean_abs": float(np.mean(np.abs(g_pooled - pooled))),
            "summary_max_abs": float(np.max(np.abs(g_summary - summary))),
            "summary_mean_abs": float(np.mean(np.abs(g_summary - summary))),
            "bundle_features_max_abs": float(np.max(np.abs(out.features - summary))),
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": os.getloadavg()[0]},
        "versions": {p: metadata.version(p) for p in ("numpy", "onnx", "onnxruntime", "scikit-learn", "skl2onnx")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--n", type=int, default=200, help="utterances to use")
    ap.add_argument("--repeat", type=int, default=300, help="timed single-utterance runs per graph")
    args = ap.parse_args()
    if (args.bundle is None) != (args.data is None):
        ap.error("give both --bundle and --data, or neither")
    if args.bundle is None:
        from cloud.lab.fixtures import tiny_dataset_and_bundle

        with tempfile.TemporaryDirectory() as tmp:
            lab = tiny_dataset_and_bundle(tmp)
            print(json.dumps(bench(lab.bundle_path, lab.data_dir, args.n, args.repeat), indent=1))
        return
    print(json.dumps(bench(args.bundle, args.data, args.n, args.repeat), indent=1))


if __name__ == "__main__":
    main()
