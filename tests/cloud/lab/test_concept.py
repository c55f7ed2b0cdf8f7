"""Reference profile v2 from a real training run: chunks by speaker, the concept reference
(accuracy per true label, calibration) from the test stream, and the label-free estimate read
from the windows a real agent makes of that stream."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.lab import dataset as ds_mod
from cloud.lab import infer, splits, stream
from edge.model import LoadedModel
from edge.pipeline import Pipeline, StaticModels
from shared import keys
from shared.audio import read_wav
from shared.bundle import load_bundle
from shared.gate import GateConfig
from shared.profile import BACKGROUND_CHUNK, chunk_signals, expected_accuracy, validate_profile
from shared.window import merge_windows


@pytest.fixture(scope="module")
def lab(voices_lab):
    bundle = load_bundle(voices_lab.bundle_path, [keys.load_public_key(voices_lab.public_key_path)])
    data = ds_mod.load(voices_lab.data_dir)
    return bundle, data, splits.split(data.clips, data.labels, seed=0)


def _test_stream(bundle, data, sp):
    """The test split replayed as the lab plays it: (clips, true labels, stream pass)."""
    idx = sp.indices["test"]
    clips = [read_wav(data.path_of(data.clips[i])) for i in idx]
    labels = np.array([data.labels.index(data.clips[i].label) for i in idx])
    sess = infer.session(bundle.model_bytes)
    passed = stream.play(clips, lambda w: infer.run(sess, w), GateConfig.from_dict(bundle.manifest["gate"]),
                         bundle.placement, bundle.input_samples, seed=0)
    return clips, labels, passed


def test_lineage_names_the_speakers_of_each_split(lab):
    bundle, data, sp = lab
    names = bundle.manifest["lineage"]["split"]["speaker_names"]
    assert names == sp.speakers and all(v == sorted(v) for v in names.values())
    assert sorted(sum(names.values(), [])) == sorted({c.speaker for c in data.clips})
    assert {k: len(v) for k, v in names.items()} == bundle.manifest["lineage"]["split"]["speakers"]
    assert len(names["dev"]) >= 2 and len(names["test"]) >= 2


def test_profile_chunks_are_the_dev_speakers_and_add_up_to_the_aggregates(lab):
    bundle, _, sp = lab
    p = validate_profile(bundle.manifest["profile"])
    ch = p["chunks"]
    assert ch["by"] == "speaker"
    assert [n for n in ch["names"] if n != BACKGROUND_CHUNK] == sp.speakers["dev"]
    assert sum(ch["n"]) == p["n"] and min(ch["n"]) > 0
    for signal, total in chunk_signals(p).items():
        assert [sum(col) for col in zip(*ch["counts"][signal])] == total, signal


def test_accuracy_and_calibration_count_every_credited_test_stream_utterance(lab):
    bundle, data, sp = lab
    p = bundle.manifest["profile"]
    _, labels, passed = _test_stream(bundle, data, sp)
    credited = passed.credited
    true, predicted = labels[passed.owner[credited]], passed.outputs.label[credited]
    acc, cal = p["accuracy"], p["calibration"]
    assert acc["names"] == cal["labels"] == data.labels
    assert sum(acc["total"]) == sum(map(sum, cal["n"])) == int(credited.sum()) > 0
    assert acc["total"] == np.bincount(true, minlength=len(data.labels)).tolist()
    assert sum(acc["correct"]) == sum(map(sum, cal["correct"])) == int(np.sum(true == predicted))
    assert [sum(row) for row in cal["n"]] == np.bincount(predicted, minlength=len(data.labels)).tolist()
    s = bundle.manifest["metrics"]["stream"]  # the same pass gave the clip-level stream metric
    assert sum(acc["total"]) == s["n_utterances"] - s["unmatched_utterances"]


def test_expected_accuracy_of_the_agents_windows_matches_the_measured_accuracy(lab):
    """The test stream through a real agent pipeline: the estimate from its windows'
    confidence_by_label and the shipped calibration is within 3 points of the accuracy the lab
    measured on that stream (in sample: what differs is only the utterances credited to no clip)."""
    bundle, data, sp = lab
    p = bundle.manifest["profile"]
    clips, _, _ = _test_stream(bundle, data, sp)
    _, signal, _ = stream.layout(clips, seed=0)
    windows = []
    pipeline = Pipeline(device="lab-test", boot=1, agent_version="test", gate_config=GateConfig.from_dict(
        bundle.manifest["gate"]), automation="shadow", models=StaticModels(LoadedModel.from_bundle(bundle)),
        sink=None, on_window=windows.append)
    for i in range(0, len(signal), stream.CHUNK_SAMPLES):
        pipeline.feed(signal[i:i + stream.CHUNK_SAMPLES])
    pipeline.flush()
    merged = merge_windows(windows)
    estimate, n = expected_accuracy(p["calibration"], merged["output"]["confidence_by_label"])
    measured = sum(p["accuracy"]["correct"]) / sum(p["accuracy"]["total"])
    assert n == merged["software"]["inferences"] >= sum(p["accuracy"]["total"])
    assert estimate == pytest.approx(measured, abs=0.03)
