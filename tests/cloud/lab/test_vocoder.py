"""The training vocoder: a word re-synthesised keeps its spectral envelope, not its waveform."""
from __future__ import annotations

import numpy as np

from cloud.lab import dataset, features, vocoder, windows


def _speech_windows(tiny_lab, n=8):
    ds = dataset.load(tiny_lab.data_dir)
    clips = [c for c in ds.clips if c.label in ("yes", "left", "stop")][:n]
    return windows.build(ds, clips).audio


def test_a_vocoded_word_keeps_its_envelope_level_and_length_but_not_its_waveform(tiny_lab):
    """Its log-mel (the envelope over time) is closer to its own original's than any other
    word's is, while its samples are new (another excitation)."""
    audio = _speech_windows(tiny_lab)
    vocoded = np.stack([vocoder.vocode(x, np.random.default_rng(i)) for i, x in enumerate(audio)])
    assert vocoded.shape == audio.shape and vocoded.dtype == np.float32
    lx, ly = features.log_mel(audio).reshape(len(audio), -1), features.log_mel(vocoded).reshape(len(audio), -1)
    for i, (x, y) in enumerate(zip(audio, vocoded)):
        assert abs(np.sqrt(np.mean(y ** 2)) / np.sqrt(np.mean(x ** 2)) - 1) < 0.05
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.5
        own = np.corrcoef(lx[i], ly[i])[0, 1]
        others = max(np.corrcoef(lx[j], ly[i])[0, 1] for j in range(len(audio)) if j != i)
        assert own > 0.85 and own > others + 0.05, (i, own, others)


def test_augment_vocodes_a_seeded_share_of_the_speech_rows_only(tiny_lab):
    audio = np.concatenate([_speech_windows(tiny_lab)] * 4)
    speech = np.arange(len(audio)) % 4 != 0
    out = vocoder.augment(audio, speech, 0.5, seed=1)
    changed = np.any(out != audio, axis=1)
    assert not changed[~speech].any()
    assert 0.2 * speech.sum() < changed.sum() < 0.8 * speech.sum()
    assert np.array_equal(vocoder.augment(audio, speech, 0.5, seed=1), out)
    assert not np.array_equal(vocoder.augment(audio, speech, 0.5, seed=2), out)
    assert vocoder.augment(audio, speech, 0.0, seed=1) is audio
