"""The stream test: utterances the device's gate cuts from one continuous signal."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.lab import dataset, stream, windows
from shared.audio import read_wav
from shared.errors import DatasetError
from shared.gate import GateConfig


@pytest.fixture(scope="module")
def clips(tiny_lab):
    ds = dataset.load(tiny_lab.data_dir)
    chosen = ds.clips[::3]
    audio = [read_wav(ds.path_of(c)) for c in chosen]
    labels = np.array([ds.labels.index(c.label) for c in chosen])
    return audio, labels, ds.labels.index("_silence_"), ds.labels.index("yes")


def _score(clips, predicted_label):
    audio, labels, silence, _ = clips
    return stream.stream_accuracy(audio, labels, silence, lambda w: np.full(len(w), predicted_label),
                                  GateConfig(), "centre", 16000, seed=0)


def test_stream_lays_clips_between_quiet_gaps():
    parts = [np.full(16000, 0.5, np.float32), np.full(8000, -0.5, np.float32)]
    signal, spans = stream.build_stream(parts, seed=0)
    gap = stream.GAP_MS * 16
    assert spans == [(gap, gap + 16000), (2 * gap + 16000, 2 * gap + 24000)]
    assert len(signal) == 3 * gap + 24000
    assert np.all(signal[spans[1][0]:spans[1][1]] == -0.5)
    assert 20 * np.log10(np.sqrt(np.mean(signal[:gap] ** 2))) == pytest.approx(stream.GAP_LEVEL_DBFS, abs=0.5)


def test_scoring_rules_with_constant_predictors(clips):
    audio, labels, silence, yes = clips
    n_silence, n_yes = int(np.sum(labels == silence)), int(np.sum(labels == yes))
    all_silence = _score(clips, silence)
    # every silence clip is right whatever the gate did; every speech clip is wrong
    assert all_silence.accuracy == pytest.approx(n_silence / len(labels))
    assert all_silence.n_utterances >= len(labels) - n_silence - all_silence.gate_missed
    all_yes = _score(clips, yes)
    assert all_yes.accuracy <= (n_yes + n_silence) / len(labels)
    assert all_yes.accuracy >= (n_yes - all_yes.gate_missed) / len(labels) - 1e-9
    assert all_yes.n_utterances == all_silence.n_utterances  # same stream, same gate
    assert all_yes.gate_missed <= len(labels) - n_silence


def test_stream_accuracy_is_recorded_in_the_run(tiny_lab):
    s = tiny_lab.record["metrics"]["stream"]
    assert s["n_clips"] == 13 and 0.0 <= s["accuracy"] <= 1.0
    assert tiny_lab.record["metrics"]["stream_accuracy"] == s["accuracy"]


def test_training_windows_cut_from_a_stream_carry_the_room_around_the_word(tiny_lab):
    """``windows.from_stream``: the same clips and labels as ``build``, each speech clip's window
    the longest utterance credited to it in one stream, which runs longer than a fresh gate's cut
    of the clip alone (the hangover and pre-roll reach into the gaps); same seed, same windows."""
    ds = dataset.load(tiny_lab.data_dir)
    own = windows.build(ds, ds.clips)
    cut = windows.from_stream(ds, ds.clips, seed=3)
    assert cut.audio.shape == own.audio.shape and np.array_equal(cut.labels, own.labels)
    speech = own.gated & cut.gated
    assert speech.sum() >= 0.8 * np.sum(own.labels != ds.labels.index("_silence_"))
    assert np.mean(cut.utterance_ms[speech]) > np.mean(own.utterance_ms[speech]) + 50
    assert not np.array_equal(cut.audio[speech], own.audio[speech])
    assert np.array_equal(windows.from_stream(ds, ds.clips, seed=3).audio, cut.audio)
    with pytest.raises(DatasetError, match="stream"):
        windows.training(ds, ds.clips, GateConfig(), "clips")
