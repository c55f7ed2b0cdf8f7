"""LoadedModel on real onnxruntime with the signed test bundle and real espeak-ng utterances."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnxruntime as ort
import pytest

from edge.model import LoadedModel, session_options
from shared.errors import ModelError
from shared.gate import place
from tests.edge.conftest import WORDS, build_graph


def _variant(bundle, **manifest_changes):
    return dataclasses.replace(bundle, manifest={**bundle.manifest, **manifest_changes})


def test_load_reads_the_shape_from_the_session_and_the_facts_from_the_manifest(bundles, caplog):
    with caplog.at_level(logging.INFO, logger="edge.model"):
        model = LoadedModel.from_bundle(bundles[0])
    assert model.input_samples == 16000
    assert model.labels == WORDS
    assert model.sha256 == bundles[0].manifest["model_sha256"]
    assert 0.0 < model.threshold < 1.0
    assert model.feature_names == [f"band{j}_logpow" for j in range(10)]
    assert len(model.profile["features"]["edges"]) == 10
    loaded = [r.getMessage() for r in caplog.records if "model loaded" in r.getMessage()]
    assert len(loaded) == 1 and model.sha256[:12] in loaded[0] and "16000" in loaded[0] and "warm-up" in loaded[0]


def test_session_is_set_up_for_a_small_device(models):
    opts = models[0].session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert models[0].session.get_providers() == ["CPUExecutionProvider"]
    assert session_options(2).intra_op_num_threads == 2


def test_predict_places_the_utterance_and_matches_a_bare_session(models, bundles, calibration):
    model = models[0]
    bare = ort.InferenceSession(bundles[0].model_bytes, providers=["CPUExecutionProvider"])
    for u in calibration[::7]:
        p = model.predict(u)
        label, probs, feats = bare.run(None, {"audio": place(u, 16000, "centre")[None, :]})
        assert p.index == int(label[0]) and p.label == WORDS[p.index]
        np.testing.assert_allclose(p.probabilities, probs[0], atol=1e-6)
        np.testing.assert_allclose(p.features, feats[0], atol=1e-5)
        assert p.confidence == pytest.approx(float(probs[0].max()))
        assert abs(float(p.probabilities.sum()) - 1.0) < 1e-5
        assert p.no_answer == (p.confidence < model.threshold)
        assert p.latency_ms > 0.0


def test_threshold_splits_real_utterances_into_answers_and_no_answers(models, calibration):
    flags = [models[0].predict(u).no_answer for u in calibration]
    assert 0 < sum(flags) < len(flags)


def test_smoke_test_passes_on_its_own_vectors(models):
    assert models[0].smoke_test() == 4


def test_smoke_test_names_the_vector_whose_label_differs(bundles):
    spec = bundles[0].manifest["test_vectors"]
    expected = [dict(e) for e in spec["expected"]]
    expected[2]["label"] = next(w for w in WORDS if w != expected[2]["label"])
    model = LoadedModel.from_bundle(_variant(bundles[0], test_vectors={**spec, "expected": expected}))
    with pytest.raises(ModelError, match=r"test vector 2: label"):
        model.smoke_test()


def test_smoke_test_names_the_vector_whose_probabilities_drift(bundles):
    spec = bundles[0].manifest["test_vectors"]
    expected = [dict(e) for e in spec["expected"]]
    probs = list(expected[1]["probabilities"])
    low = int(np.argmin(probs))
    probs[low] += 0.01  # off by more than atol but the label unchanged
    expected[1]["probabilities"] = probs
    model = LoadedModel.from_bundle(_variant(bundles[0], test_vectors={**spec, "expected": expected}))
    with pytest.raises(ModelError, match=r"test vector 1: probabilities differ by 0.01"):
        model.smoke_test()


def test_smoke_test_without_vectors_is_refused(bundles):
    model = LoadedModel.from_bundle(_variant(bundles[0], test_vectors=None))
    with pytest.raises(ModelError, match="no test vectors"):
        model.smoke_test()


@pytest.mark.parametrize("changes, message", [
    ({"io": {"input": "audio", "label": "label", "probabilities": "probs", "features": "features"}},
     r"no output\(s\) \['probs'\]"),
    ({"io": {"input": "wave", "label": "label", "probabilities": "probabilities", "features": "features"}},
     "no input 'wave'"),
    ({"io": "audio"}, "must map"),
    ({"labels": list(WORDS[:5])}, "5 labels"),
    ({"placement": "end"}, "placement"),
    ({"input_samples": 16001}, "takes 16000 samples but the manifest says 16001"),
])
def test_inconsistent_bundles_are_refused_with_a_model_error(bundles, changes, message):
    with pytest.raises(ModelError, match=message):
        LoadedModel.from_bundle(_variant(bundles[0], **changes))


def test_profile_that_bins_other_features_is_refused(bundles):
    profile = dict(bundles[0].manifest["profile"])
    profile["features"] = {k: v[:9] for k, v in profile["features"].items()}
    with pytest.raises(ModelError, match="outputs 10 features but its reference profile bins 9"):
        LoadedModel.from_bundle(_variant(bundles[0], profile=profile))


def test_garbage_model_bytes_are_a_model_error(bundles):
    with pytest.raises(ModelError, match="cannot load model"):
        LoadedModel.from_bundle(dataclasses.replace(bundles[0], model_bytes=b"not an onnx model"))


def test_nested_io_spelling_is_read(bundles):
    io = {"input": "audio", "outputs": {"label": "label", "probabilities": "probabilities", "features": "features"}}
    model = LoadedModel.from_bundle(_variant(bundles[0], io=io))
    assert model.smoke_test() == 4


def test_a_run_time_failure_is_a_model_error(bundles):
    """A graph with a symbolic length takes the manifest's; 16001 samples cannot be reshaped into frames."""
    n_features, n_classes = 10, len(WORDS)
    graph = build_graph(n_features, np.zeros((n_features, n_classes)), np.zeros(n_classes), np.zeros(n_features),
                        np.ones(n_features), samples_dim="T")
    ok = LoadedModel.from_bundle(dataclasses.replace(bundles[0], model_bytes=graph))
    assert ok.input_samples == 16000
    broken = dataclasses.replace(bundles[0], model_bytes=graph,
                                 manifest={**bundles[0].manifest, "input_samples": 16001})
    with pytest.raises(ModelError, match="failed to run"):
        LoadedModel.from_bundle(broken)
