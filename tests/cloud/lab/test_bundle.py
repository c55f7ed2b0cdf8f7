"""The trained bundle: manifest contract, signature, test vectors, agreement with scikit-learn."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from cloud.lab import dataset, export, features as F, graph, infer, splits, train, windows
from shared import keys
from shared.audio import to_float32
from shared.bundle import load_bundle
from shared.errors import SignatureError
from shared.gate import GateConfig
from shared.profile import validate_profile


def test_manifest_has_the_contract_fields(tiny_bundle, tiny_lab):
    m = tiny_bundle.manifest
    assert m["labels"] == dataset.load(tiny_lab.data_dir).labels
    assert (m["sample_rate"], m["input_samples"], m["placement"]) == (16000, 16000, "centre")
    assert m["gate"] == GateConfig().to_dict()
    assert m["opset"] == {"": 17, "ai.onnx.ml": 3}
    assert m["io"] == {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}
    assert m["feature_names"] == list(F.FEATURE_NAMES)
    assert 0.3 <= m["confidence_threshold"] <= 0.95
    lin = m["lineage"]
    assert lin["dataset_hash"] == dataset.load(tiny_lab.data_dir).dataset_hash
    assert lin["run_id"] == tiny_lab.record["id"] and lin["parent"] is None and lin["seed"] == 0
    assert lin["split"]["sizes"] == {"train": 52, "dev": 13, "test": 13}
    assert lin["hyperparameters"]["hidden_layers"] == [32] and lin["code_revision"]
    for key in ("accuracy", "macro_f1", "per_class", "baselines", "stream_accuracy", "confusion", "slices"):
        assert key in m["metrics"]
    assert set(m["metrics"]["baselines"]) == {"majority", "logistic"}
    assert np.sum(m["metrics"]["confusion"]) == 13


def test_model_io_shapes_and_declared_opsets(tiny_bundle):
    model = onnx.load_from_string(tiny_bundle.model_bytes)
    assert graph.opset_of(model) == tiny_bundle.manifest["opset"]
    sess = infer.session(tiny_bundle.model_bytes)
    assert [i.name for i in sess.get_inputs()] == ["audio"]
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities", "features"]
    out = infer.run(sess, np.zeros((3, 16000), np.float32))
    assert out.label.dtype == np.int64 and out.label.shape == (3,)
    assert out.probabilities.shape == (3, 12) and np.allclose(out.probabilities.sum(axis=1), 1, atol=1e-5)
    assert out.features.shape == (3, len(F.FEATURE_NAMES))
    assert (out.label == out.probabilities.argmax(axis=1)).all()


def test_profile_is_valid_and_counts_dev_utterances(tiny_bundle):
    p = validate_profile(tiny_bundle.manifest["profile"])
    assert 0 < p["n"] <= 26  # utterances the gate cut from the 13 dev clips played as a stream
    assert p["features"]["names"] == list(F.FEATURE_NAMES)
    for edges, counts in zip(p["features"]["edges"], p["features"]["counts"]):
        assert sum(counts) == p["n"] and len(counts) == len(edges) + 1 and len(edges) <= 9
    for signal in ("utterance_ms", "level_dbfs", "snr_db", "confidence"):
        assert sum(p[signal]["counts"]) == p["n"]
    assert sum(p["labels"]["counts"]) == p["n"]


def test_outputs_match_the_manifest_test_vectors(tiny_bundle):
    entry = tiny_bundle.manifest["test_vectors"]
    vectors = export.load_test_vectors(tiny_bundle.files[entry["file"]])
    assert vectors.dtype == np.int16 and vectors.shape[1] == 16000 and 3 <= len(vectors) <= 4
    out = infer.run(infer.session(tiny_bundle.model_bytes, threads=1), to_float32(vectors))
    for i, exp in enumerate(entry["expected"]):
        assert out.label[i] == exp["label"]
        assert np.allclose(out.probabilities[i], exp["probabilities"], atol=entry["atol"])
    assert len({e["label"] for e in entry["expected"]}) > 1 or len(vectors) == 1


def test_signature_verifies_only_with_the_signing_key(tiny_lab, tmp_path):
    good = keys.load_public_key(tiny_lab.public_key_path)
    load_bundle(tiny_lab.bundle_path, [good])
    _, other_pub = keys.generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError):
        load_bundle(tiny_lab.bundle_path, [keys.load_public_key(other_pub)])


def test_bundle_agrees_with_the_sklearn_pipeline(tiny_lab):
    """Train a fresh classifier, export it, and compare labels and probabilities clip by clip."""
    ds = dataset.load(tiny_lab.data_dir)
    sp = splits.split(ds.clips, ds.labels, seed=0)
    wins = windows.build(ds, ds.clips)
    x, _ = F.compute(wins.audio)
    tr = np.array(sp.indices["train"])
    hp = train.Hyperparameters(hidden_layers=(24,), max_iter=40, early_stopping=False, batch_size=16)
    model = train.fit_main(x[tr], wins.labels[tr], len(ds.labels), hp, seed=1)
    merged = graph.merge(graph.feature_model(), train.to_onnx(model, x.shape[1]))
    again = graph.merge(graph.feature_model(), train.to_onnx(model, x.shape[1]))
    assert merged.SerializeToString() == again.SerializeToString()  # same model, same sha256
    out = infer.run(infer.session(merged.SerializeToString()), wins.audio)
    agree = np.mean(out.label == model.predict(x))
    assert agree >= 0.999
    assert np.max(np.abs(out.probabilities - model.predict_proba(x))) < 1e-3
