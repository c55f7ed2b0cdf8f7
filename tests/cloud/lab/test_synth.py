"""Synthesis: deterministic datasets and complete manifests, from real espeak-ng output."""
from __future__ import annotations

import hashlib
import json
import wave

import numpy as np

from cloud.lab import dataset, engines, synth, voices
from cloud.lab.engines import variation
from shared.audio import read_wav

SMALL = dict(per_word=1, accents=("en-us",), variants=("m3", "f2"), workers=2)


def test_same_seed_same_dataset_hash_and_other_seed_differs(tmp_path):
    a = synth.synthesize(tmp_path / "a", seed=7, **SMALL)
    b = synth.synthesize(tmp_path / "b", seed=7, **SMALL)
    c = synth.synthesize(tmp_path / "c", seed=8, **SMALL)
    assert a["dataset_hash"] == b["dataset_hash"]
    assert [r["sha256"] for r in a["clips"]] == [r["sha256"] for r in b["clips"]]
    assert c["dataset_hash"] != a["dataset_hash"]
    assert dataset.load(tmp_path / "a").dataset_hash == a["dataset_hash"]


def test_manifest_lists_every_clip_with_hash_speaker_and_tags(tiny_lab):
    raw = json.loads((tiny_lab.data_dir / "manifest.json").read_text())
    assert raw["seed"] == 0 and raw["params"]["generator_version"] == dataset.GENERATOR_VERSION
    assert raw["labels"] == list(voices.LABELS)
    assert raw["dataset_hash"] == dataset.dataset_hash(raw["clips"])
    assert len(raw["clips"]) == sum(synth.clips_per_label(6).values()) == 78
    assert {c["label"] for c in raw["clips"]} == set(voices.LABELS)
    for rec in raw["clips"]:
        data = (tiny_lab.data_dir / rec["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rec["sha256"]
        engine, accent, variant = engines.parse_speaker(rec["speaker"])
        assert engine == "espeak-ng"
        assert accent in ("en-us", "en-gb", "en-029") and variant in ("m3", "f2")
        tags = rec["tags"]
        for key in ("engine", "voice", "accent", "variant", "speed_wpm", "pitch", "noise", "snr_db", "gain_db",
                    "augmentation"):
            assert key in tags
        if rec["label"] == voices.SILENCE_LABEL:
            assert tags["voice"] is None and tags["engine"] is None and tags["noise"] != "none"
        else:
            assert engines.speaker_name(tags["engine"], tags["voice"], tags["variant"]) == rec["speaker"]
            assert tags["accent"] == accent and tags["speed_wpm"] in voices.SPEEDS_WPM
            assert (tags["snr_db"] is None) == (tags["noise"] == "none")
        if rec["label"] == voices.UNKNOWN_LABEL:
            assert tags["word"] in voices.UNKNOWN_WORDS


def test_clips_are_one_second_16k_mono_16bit_with_speech_in_word_clips(tiny_lab):
    ds = dataset.load(tiny_lab.data_dir)
    for clip in ds.clips[::5]:
        with wave.open(str(ds.path_of(clip))) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, 16000)
        x = read_wav(ds.path_of(clip))
        assert np.max(np.abs(x)) < 0.99  # never clipped
        if clip.label not in (voices.SILENCE_LABEL,):
            assert 20 * np.log10(np.max(np.abs(x))) > -36  # peak set between -30 and -3 dBFS, plus noise


def test_a_multi_engine_dataset_tags_engine_voice_and_variant_and_keeps_the_shares(engines_data):
    raw = json.loads((engines_data / "manifest.json").read_text())
    described = {p["engine"]: p for p in raw["params"]["engines"]}
    assert set(described) == set(engines.ENGINES) and all(p["version"] for p in described.values())
    speech = [c for c in raw["clips"] if c["label"] != voices.SILENCE_LABEL]
    per_engine = {e: [c for c in speech if c["tags"]["engine"] == e] for e in engines.ENGINES}
    assert all(len(v) >= len(speech) // len(engines.ENGINES) for v in per_engine.values())  # a sixth each, in turns
    for c in speech:
        t = c["tags"]
        assert engines.speaker_name(t["engine"], t["voice"], t["variant"]) == c["speaker"]
        if t["engine"] == "espeak-ng":
            assert t["speed_wpm"] in voices.SPEEDS_WPM and t["stretch"] is None
        else:  # the engines with few voices: rate stretch and pitch jitter per clip, the variant's pitch and size
            assert t["stretch"] in variation.STRETCHES and t["speed_wpm"] is None
            pitch, size = t["variant"].split("-")
            assert t["formant_scale"] == variation.FORMANT_SCALES[size]
            assert abs(t["pitch_st"] - variation.PITCH_STEPS[pitch]) <= 1.0


def test_same_seed_same_multi_engine_dataset_with_one_or_two_workers(tmp_path):
    from cloud.lab.fixtures import tiny_engines_dataset

    a = tiny_engines_dataset(tmp_path / "a", per_word=1, workers=1)
    b = tiny_engines_dataset(tmp_path / "b", per_word=1, workers=2)
    assert a["dataset_hash"] == b["dataset_hash"]
    assert {c["tags"]["engine"] for c in a["clips"]} == set(engines.ENGINES) | {None}
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".synth-")]  # scratch removed
