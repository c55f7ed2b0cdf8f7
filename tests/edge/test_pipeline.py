"""The pipeline end to end on espeak-ng speech, real webrtcvad and real onnxruntime."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from edge.capture import CaptureConfig
from edge.feedback import FeedbackFile
from edge.pipeline import StaticModels
from edge.replay import replay
from shared.audio import read_wav, write_wav
from shared.errors import ConfigError, ModelError, SignatureError
from tests.edge.conftest import WORDS, run_pipeline

VOLATILE = ("t_start", "cpu_s", "rss_mb", "latency_ms")


def _stable(window: dict) -> dict:
    w = {k: v for k, v in window.items() if k not in VOLATILE}
    w["software"] = {k: v for k, v in window["software"].items() if k not in VOLATILE}
    return w


def _stable_decisions(decisions) -> list[dict]:
    return [{k: v for k, v in d.to_dict().items() if k != "t"} for d in decisions]


@pytest.fixture(scope="module")
def reference(speech, models):
    return run_pipeline(speech[0], 4096, StaticModels(models[0], models[1]), clock=lambda: 5.0)


def test_every_spoken_word_becomes_one_decision(speech, reference, models):
    decisions, windows, pipeline = reference
    assert len(decisions) == len(speech[1]) == pipeline.stats["utterances"]
    assert [d.utterance for d in decisions] == [f"3-{n}" for n in range(1, len(decisions) + 1)]
    starts = [d.audio_start_s for d in decisions]
    assert starts == sorted(starts) and all(d.audio_end_s - d.audio_start_s > 0.3 for d in decisions)
    assert all(d.label in WORDS and d.model == models[0].sha256 for d in decisions)


@pytest.mark.parametrize("chunk", [160, 480, 4096])
def test_chunking_does_not_change_decisions_or_windows(speech, reference, models, chunk):
    decisions, windows, _ = run_pipeline(speech[0], chunk, StaticModels(models[0], models[1]))
    assert _stable_decisions(decisions) == _stable_decisions(reference[0])
    assert [_stable(w) for w in windows] == [_stable(w) for w in reference[1]]


def test_odd_chunks_straddling_window_boundaries_change_nothing(speech, reference, models):
    x, rng = speech[0], np.random.default_rng(5)
    cuts = np.cumsum(rng.integers(1, 9000, size=len(x) // 2000))
    decisions, windows, pipeline = run_pipeline(np.zeros(0, dtype=np.float32), 1, StaticModels(models[0], models[1]),
                                                flush=False)
    for piece in np.split(x, cuts[cuts < len(x)]):
        pipeline.feed(piece)
    pipeline.flush()
    assert _stable_decisions(decisions) == _stable_decisions(reference[0])
    assert [_stable(w) for w in windows] == [_stable(w) for w in reference[1]]


@pytest.mark.parametrize("chunk", [480, 4096, 160000])
def test_int16_audio_gives_the_decisions_and_windows_of_its_float_values(speech, models, chunk):
    """16-bit sources stay int16 to the VAD; the statistics come out as from the same values in float."""
    from shared.audio import to_int16

    pcm = to_int16(speech[0])
    floats = pcm.astype(np.float32) / np.float32(32768.0)
    pair = StaticModels(models[0], models[1])
    want_d, want_w, _ = run_pipeline(floats, 4096, pair)
    got_d, got_w, pipeline = run_pipeline(pcm, chunk, pair)
    assert len(got_d) == len(speech[1]) and pipeline.stats["utterances"] == len(got_d)
    assert _stable_decisions(got_d) == _stable_decisions(want_d)
    assert [_stable(w) for w in got_w] == [_stable(w) for w in want_w]


def test_the_noise_floor_counts_every_unvoiced_frame_across_new_streams(speech, models):
    """Windows that span ``new_stream`` (a fresh gate) count the noise floor of both recordings."""
    from shared.audio import to_int16

    pcm = to_int16(speech[0])
    _, windows, pipeline = run_pipeline(pcm[:150000], 4096, StaticModels(models[0]), flush=False, window_s=4.0)
    for _ in range(2):
        pipeline.new_stream()
        for i in range(0, 110001, 4096):
            pipeline.feed(pcm[i:min(i + 4096, 110001)])
    pipeline.flush()
    assert len(windows) == 6  # 370,001 samples in windows of 64,000
    for w in windows:
        assert min(w["input"]["noise_dbfs"]) >= 0
        assert sum(w["input"]["noise_dbfs"]) == w["software"]["frames"] - w["software"]["voiced_frames"]


def test_shadow_is_compared_on_every_inference(reference, models):
    decisions, windows, _ = reference
    for w in windows:
        assert w["shadow_model"] == models[1].sha256
        assert w["shadow"]["compared"] == w["software"]["inferences"]
        assert sum(w["shadow"]["labels"].values()) == w["shadow"]["compared"]
    agree = sum(w["shadow"]["agree"] for w in windows)
    assert agree == sum(d.shadow_label == d.label for d in decisions)
    assert 0 < agree < len(decisions)  # two random models agree sometimes, not always
    assert all(d.shadow_label in WORDS and 0 < d.shadow_confidence <= 1 for d in decisions)


def test_same_model_as_shadow_always_agrees(speech, models):
    _, windows, _ = run_pipeline(speech[0], 4096, StaticModels(models[0], models[0]))
    assert all(w["shadow"]["agree"] == w["shadow"]["compared"] for w in windows)


def test_without_a_model_the_agent_still_counts(speech, reference):
    decisions, windows, pipeline = run_pipeline(speech[0], 4096, StaticModels())
    assert decisions == [] and pipeline.stats["inferences"] == 0
    assert pipeline.stats["utterances"] == reference[2].stats["utterances"]
    for w, ref in zip(windows, reference[1]):
        assert w["model"] is None and w["input"]["features"] == [] and w["output"]["labels"] == {}
        assert w["software"]["frames"] == ref["software"]["frames"]
        assert w["input"]["utterance_ms"] == ref["input"]["utterance_ms"]


def test_a_model_swap_closes_the_window_early_at_the_swap(speech, models):
    x, at = speech[0], 5 * 16000 + 123
    provider = StaticModels(models[0])
    decisions, windows, pipeline = run_pipeline(x[:at], 1000, provider, flush=False)
    provider.active = models[1]
    for i in range(at, len(x), 1000):
        pipeline.feed(x[i:i + 1000])
    pipeline.flush()
    assert windows[0]["model"] == models[0].sha256 and windows[0]["duration_s"] == at / 16000
    assert windows[1]["model"] == models[1].sha256 and windows[1]["audio_start_s"] == at / 16000
    assert windows[1]["audio_start_s"] + windows[1]["duration_s"] == 10.0  # back on the audio-time grid
    assert [w["seq"] for w in windows] == list(range(len(windows)))
    swapped = [d.model for d in decisions if d.audio_start_s >= at / 16000]
    assert swapped and set(swapped) == {models[1].sha256}
    assert windows[0]["software"]["inferences"] == sum(d.model == models[0].sha256 for d in decisions)


def test_a_swap_during_a_chunk_never_mixes_models_in_a_window(speech, models):
    """The lifecycle swaps from inside the inference callback (as a rollback would)."""
    provider = StaticModels(models[0])
    seen = []

    def on_inference(sha, latency_ms, error):
        seen.append(sha)
        if len(seen) == 3:
            provider.active = models[1]

    decisions, windows, _ = run_pipeline(speech[0], 4096, provider, on_inference=on_inference)
    for sha in (models[0].sha256, models[1].sha256):
        in_windows = sum(w["software"]["inferences"] for w in windows if w["model"] == sha)
        assert in_windows == sum(d.model == sha for d in decisions) > 0
    assert seen == [d.model for d in decisions]


class Flaky:
    """A real model that fails on every third utterance (as a corrupt kernel might)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, x):
        self.calls += 1
        if self.calls % 3 == 0:
            raise ModelError("kernel failed")
        return self.model.predict(x)


def test_a_model_error_is_counted_reported_and_the_stream_goes_on(speech, models):
    reports = []
    flaky = Flaky(models[0])
    decisions, windows, pipeline = run_pipeline(speech[0], 4096, StaticModels(flaky),
                                                on_inference=lambda *r: reports.append(r))
    n = pipeline.stats["utterances"]
    errors = sum(w["software"]["errors"] for w in windows)
    assert errors == n // 3 == pipeline.stats["errors"]
    assert len(decisions) == n - errors == sum(w["software"]["inferences"] for w in windows)
    failed = [r for r in reports if r[2] is not None]
    assert len(failed) == errors and all(isinstance(r[2], ModelError) and r[0] == models[0].sha256 for r in failed)
    assert all(r[1] > 0 for r in reports)


def test_a_failing_shadow_is_counted_apart_from_the_active_model(speech, models):
    _, windows, pipeline = run_pipeline(speech[0], 4096, StaticModels(models[0], Flaky(models[1])))
    assert pipeline.stats["errors"] == 0 and pipeline.stats["shadow_errors"] > 0
    assert sum(w["shadow"]["errors"] for w in windows) == pipeline.stats["shadow_errors"]
    compared = sum(w["shadow"]["compared"] for w in windows)
    assert compared == pipeline.stats["inferences"] - pipeline.stats["shadow_errors"]


def test_feedback_lands_in_the_window_being_accumulated(speech, models):
    x = speech[0]
    events = []
    decisions, windows, pipeline = run_pipeline(x[:12 * 16000], 4096, StaticModels(models[0]), flush=False,
                                                on_feedback=events.append, memory_size=5)
    first, last = decisions[0], decisions[-1]
    other = next(w for w in WORDS if w != last.label)
    assert pipeline.feedback(last.utterance, other)
    assert pipeline.feedback(last.utterance, confirm=True)
    assert not pipeline.feedback(first.utterance, "yes")  # forgotten: only the last 5 are remembered
    assert not pipeline.feedback("3-999", "yes")
    assert not pipeline.feedback(last.utterance, "maybe")
    pipeline.flush()
    pairs = windows[-1]["feedback"]["pairs"]
    assert sorted(pairs) == sorted([[other, last.label, 1], [last.label, last.label, 1]])
    stats = pipeline.stats
    counted = (stats["feedback_accepted"], stats["feedback_unknown_utterance"], stats["feedback_unknown_label"])
    assert counted == (2, 2, 1)
    assert events[0] == {"utterance": last.utterance, "label": other, "predicted": last.label,
                         "model": models[0].sha256, "confirm": False, "audit": False}


def test_feedback_file_and_fifo_are_tailed(speech, models, tmp_path):
    decisions, windows, pipeline = run_pipeline(speech[0][:8 * 16000], 4096, StaticModels(models[0]), flush=False)
    path = tmp_path / "feedback.jsonl"
    path.write_text(json.dumps({"utterance": decisions[0].utterance, "label": "yes"}) + "\n" + "not json\n"
                    + json.dumps({"utterance": "3-77", "confirm": True}) + "\n" + '{"utterance": "3-1"')
    reader = FeedbackFile(path)
    assert reader.pump(pipeline.feedback) == 1
    with open(path, "a") as f:  # the half-written line is completed later
        f.write(', "confirm": true}\n')
    assert reader.pump(pipeline.feedback) == 1
    assert (reader.lines, reader.bad_lines, reader.applied, reader.rejected) == (4, 1, 2, 1)
    reader.close()

    fifo = tmp_path / "feedback.fifo"
    os.mkfifo(fifo)
    reader = FeedbackFile(fifo)
    assert reader.read() == []  # no writer yet: nothing, no blocking
    stop = threading.Event()
    follower = threading.Thread(target=reader.follow, args=(pipeline.feedback, stop, 0.01))
    follower.start()
    with open(fifo, "w") as w:
        w.write(json.dumps({"utterance": decisions[1].utterance, "label": "no"}) + "\n")
    stop.set()
    follower.join(5)
    reader.close()
    assert reader.applied == 1
    pipeline.flush()
    pairs = sum((w["feedback"]["pairs"] for w in windows), [])
    assert sorted(pairs) == sorted([["yes", decisions[0].label, 1], [decisions[0].label, decisions[0].label, 1],
                                    ["no", decisions[1].label, 1]])


def test_capture_keeps_only_low_confidence_utterances_within_the_rate(speech, models, tmp_path):
    now = [0.0]
    config = CaptureConfig(directory=str(tmp_path / "cap"), max_per_hour=3600, burst=2)
    decisions, windows, pipeline = run_pipeline(speech[0], 4096, StaticModels(models[0]), clock=lambda: now[0],
                                                capture=config, flush=False)
    low = [d for d in decisions if d.confidence < models[0].threshold]
    assert len(low) > 3
    kept = sorted(p.stem for p in (tmp_path / "cap").glob("*.wav"))
    assert kept == sorted(d.utterance for d in low[:2])  # the clock stood still: the burst, then nothing
    now[0] = 3.0  # 3 s at 1 per second: three more tokens, but the bucket holds two
    pipeline.feed(speech[0])
    pipeline.flush()
    assert len(list((tmp_path / "cap").glob("*.wav"))) == 4
    assert sum(w["output"]["capture"] for w in windows) == 4 == pipeline.stats["captured"]
    for wav in (tmp_path / "cap").glob("*.wav"):
        side = json.loads(wav.with_suffix(".json").read_text())
        d = next(d for d in decisions if d.utterance == wav.stem)
        assert side["label"] == d.label and side["confidence"] < models[0].threshold
        assert len(read_wav(wav)) == round((d.audio_end_s - d.audio_start_s) * 16000)
    assert sorted(p.suffix for p in (tmp_path / "cap").iterdir()) == [".json"] * 4 + [".wav"] * 4


def test_capture_is_off_by_default_and_checked(speech, models, tmp_path):
    _, _, pipeline = run_pipeline(speech[0][:5 * 16000], 4096, StaticModels(models[0]))
    assert pipeline.stats["captured"] == 0
    with pytest.raises(ConfigError, match="max_per_hour"):
        CaptureConfig(directory=str(tmp_path), max_per_hour=0)


def test_replay_matches_the_live_pipeline_and_names_files(speech, reference, bundle_paths, signing, tmp_path):
    x = speech[0]
    half = 160000 + 8000  # cut in a pause, after the 10 s boundary
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    write_wav(a, x[:half])
    write_wav(b, x[half:])
    decisions, windows = replay([a, b], bundle_paths[0], public_keys=[signing[2]], chunk_samples=480, clock=lambda: 5.0)
    assert [d["label"] for d in decisions] == [d.label for d in reference[0]]
    assert {d["file"] for d in decisions} == {str(a), str(b)}
    for d in decisions:
        offset = 0.0 if d["file"] == str(a) else half / 16000
        assert d["file_start_s"] == pytest.approx(d["audio_start_s"] - offset, abs=1e-3)
    assert [w["duration_s"] for w in windows[:-1]] == [10.0] * (len(windows) - 1)
    assert sum(w["software"]["utterances"] for w in windows) == len(decisions)


def test_replay_verifies_the_bundle(bundle_paths, tmp_path, speech):
    wav = tmp_path / "one.wav"
    write_wav(wav, speech[0][:3 * 16000])
    with pytest.raises(SignatureError, match="no trusted public key"):
        replay([wav], bundle_paths[0])
    decisions, windows = replay([wav], bundle_paths[0], verify=False)
    assert len(windows) == 1 and windows[0]["duration_s"] == 3.0
    with pytest.raises(ConfigError, match="window_s"):
        replay([wav], bundle_paths[0], verify=False, window_s=0.1)
