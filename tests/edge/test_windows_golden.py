"""The agent's windows and decisions, held byte for byte against a recording.

``tests/edge/data/windows_golden.json`` was recorded from the agent as it was before the speed
work of issue 11 (commit ade0890: float32 end to end, a per-frame gate). Every field but the
timing ones (``software.cpu_s``, ``software.rss_mb``, ``software.latency_ms``, a decision's ``t``)
must come out the same, as canonical JSON, on each scenario: a 16-bit WAV replayed from disk
(the file path), float audio that int16 cannot represent (a microphone's), with a shadow
model, at odd chunk sizes, and a hard stream (digital silence, NaN, clipping, speech quieter
than an energy floor, speech long enough to be split).

The inputs are real espeak-ng speech, resampled by sox without dither (sox dithers at random
by default) and two test bundles built from it without the gate, so they are the same in every
session; the recording holds their sha256, and if espeak-ng or sox change, the test says the
inputs moved rather than that the agent did. To record again (only
on a commit whose agent is the reference): ``HARKEN_RECORD_GOLDEN=1 pytest tests/edge/test_windows_golden.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge.model import LoadedModel
from edge.pipeline import StaticModels
from edge.replay import replay
from shared import keys
from shared.audio import read_wav, write_wav
from shared.bundle import load_bundle
from shared.gate import GateConfig
from tests.edge.conftest import WORDS, make_stream, make_test_bundle, run_pipeline

GOLDEN = Path(__file__).parent / "data" / "windows_golden.json"
RECORD = os.environ.get("HARKEN_RECORD_GOLDEN") == "1"
TIMING = ("cpu_s", "rss_mb", "latency_ms")


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def stable_window(window: dict) -> str:
    w = dict(window, software={k: v for k, v in window["software"].items() if k not in TIMING})
    return canonical(w)


def stable_decision(decision: dict) -> str:
    d = {k: v for k, v in decision.items() if k != "t"}
    if "file" in d:  # replay names the file; its folder is a temporary one
        d["file"] = Path(d["file"]).name
    return canonical(d)


def audio_sha(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def hard_stream(say) -> np.ndarray:
    """Digital silence, a NaN burst, clipped shouting, speech under the floor, a long sentence."""
    rng = np.random.default_rng(11)
    sentence = say("turn on the kitchen lights and then close the garage door and set the heating to twenty "
                   "one degrees please", 120)
    hiss = lambda s: rng.normal(0.0, 10 ** (-62 / 20), int(s * 16000)).astype(np.float32)  # noqa: E731
    nan_burst = hiss(0.5)
    nan_burst[3000:3100] = np.nan
    nan_burst[5000] = np.inf
    parts = [np.zeros(48000, np.float32), hiss(1.0), np.clip(4.0 * say("stop", 150), -1.0, 1.0), nan_burst,
             0.004 * say("left", 150), hiss(1.2), sentence, hiss(0.9), 0.8 * say("yes", 175), np.zeros(20000, np.float32),
             0.8 * say("go", 140), hiss(2.0)]
    return np.concatenate(parts).astype(np.float32)


@pytest.fixture(scope="module")
def say(tmp_path_factory):
    """Like the conftest's ``say``, but repeatable: sox resamples without dither."""
    folder, cache = tmp_path_factory.mktemp("golden-speech"), {}

    def speak(text: str, speed: int = 150, voice: str = "en-us") -> np.ndarray:
        if (text, speed, voice) not in cache:
            raw, wav = folder / f"{len(cache)}.raw.wav", folder / f"{len(cache)}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
                           check=True, capture_output=True)
            subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)],
                           check=True, capture_output=True)
            cache[(text, speed, voice)] = read_wav(wav)
        return cache[(text, speed, voice)].copy()

    return speak


@pytest.fixture(scope="module")
def golden_bundles(say, tmp_path_factory):
    """Two test bundles (seeds 0 and 1) calibrated on words trimmed by a level threshold, not by the gate."""
    folder = tmp_path_factory.mktemp("golden-bundles")
    private, public = keys.generate_keypair(folder / "keys")
    words = []
    for word in WORDS:
        for speed in (130, 175):
            x = 0.8 * say(word, speed)
            loud = np.flatnonzero(np.abs(x) > 0.01)
            words.append(x[max(0, loud[0] - 2400):loud[-1] + 2400])
    paths = [folder / f"golden-{seed}.hkb" for seed in (0, 1)]
    for seed, path in enumerate(paths):
        make_test_bundle(path, keys.load_private_key(private), words, seed=seed)
    models = [LoadedModel.from_bundle(load_bundle(p, [keys.load_public_key(public)])) for p in paths]
    return paths, public, models


@pytest.fixture(scope="module")
def scenarios(say, golden_bundles, tmp_path_factory):
    """name -> (input sha256s, windows, decisions), each from the agent as it is now."""
    bundle_paths, public_key, models = golden_bundles
    folder = tmp_path_factory.mktemp("golden")
    typical, _ = make_stream(say, 24, seed=21, gap_s=(1.5, 4.0))  # about a third speech
    second, _ = make_stream(say, 6, seed=22)
    files = [folder / "typical.wav", folder / "second.wav"]
    write_wav(files[0], typical)
    write_wav(files[1], second)
    out = {}
    decisions, windows = replay(files, bundle_paths[0], public_keys=[public_key], clock=lambda: 7.0)
    out["replay_wav"] = ([audio_sha(f.read_bytes()) for f in files], windows, decisions)
    floaty, _ = make_stream(say, 14, seed=23)  # float samples that int16 cannot hold
    pair = StaticModels(models[0], models[1])
    for chunk in (4096, 333):
        decisions, windows, _ = run_pipeline(floaty, chunk, pair, clock=lambda: 9.0)
        out[f"float_shadow_{chunk}"] = ([audio_sha(floaty)], windows, [d.to_dict() for d in decisions])
    hard = hard_stream(say)
    decisions, windows, _ = run_pipeline(hard, 4096, StaticModels(models[0]), clock=lambda: 11.0,
                                         gate_config=GateConfig(energy_floor_dbfs=-50.0), window_s=5.0)
    out["hard_floor"] = ([audio_sha(hard)], windows, [d.to_dict() for d in decisions])
    return {name: {"inputs": inputs, "model": models[0].sha256,
                   "windows": [stable_window(w) for w in windows],
                   "decisions": [stable_decision(d) for d in decisions]}
            for name, (inputs, windows, decisions) in out.items()}


def test_windows_and_decisions_are_byte_identical_to_the_recording(scenarios):
    if RECORD:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(scenarios, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == sorted(scenarios)
    for name, want in golden.items():
        got = scenarios[name]
        assert (got["inputs"], got["model"]) == (want["inputs"], want["model"]), (
            f"{name}: the inputs differ from the recording's (espeak-ng or sox changed?); the agent "
            "was not compared. Re-record on the reference commit, not on a changed agent")
        assert len(got["windows"]) == len(want["windows"]) and len(got["decisions"]) == len(want["decisions"]), name
        for i, (g, w) in enumerate(zip(got["windows"], want["windows"])):
            assert g == w, f"{name}: window {i} differs"
        for i, (g, w) in enumerate(zip(got["decisions"], want["decisions"])):
            assert g == w, f"{name}: decision {i} differs"


def test_the_recording_covers_what_the_speed_work_touches(scenarios):
    """The scenarios exercise every statistic the gate and the levels feed, so a match means something."""
    windows = {name: [json.loads(w) for w in s["windows"]] for name, s in scenarios.items()}
    total = lambda name, f: sum(f(w) for w in windows[name])  # noqa: E731
    for name in windows:
        assert total(name, lambda w: w["software"]["utterances"]) >= 5, name
        assert total(name, lambda w: sum(w["input"]["noise_dbfs"])) > 0, name
        assert total(name, lambda w: w["software"]["frames"] - w["software"]["voiced_frames"]) == \
            total(name, lambda w: sum(w["input"]["noise_dbfs"])), name
    assert total("float_shadow_4096", lambda w: w["shadow"]["compared"]) >= 10
    assert total("hard_floor", lambda w: w["software"]["invalid_frames"]) >= 2
    assert total("hard_floor", lambda w: w["input"]["clipped_utterances"]) >= 1
    assert total("hard_floor", lambda w: w["input"]["noise_dbfs"][0]) >= 90  # 3 s of digital silence
    ms = [json.loads(d)["audio_end_s"] - json.loads(d)["audio_start_s"] for d in scenarios["hard_floor"]["decisions"]]
    assert sum(abs(m - 1.98) < 1e-9 for m in ms) >= 2  # pieces of the split sentence: 66 frames of 30 ms
    speech = total("replay_wav", lambda w: w["software"]["voiced_frames"]) / total("replay_wav", lambda w: w["software"]["frames"])
    assert 0.15 < speech < 0.5
