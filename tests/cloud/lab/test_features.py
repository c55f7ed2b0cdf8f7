"""Feature parity: the ONNX feature graph computes what the numpy training code computes."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from cloud.lab import dataset, features as F, graph, windows

# Stated tolerance: both sides are float32 with the same constants; they differ only in
# summation order, which on real speech moves the pooled log-mel by < 1e-4 nats.
ATOL = 1e-3


@pytest.fixture(scope="module")
def feature_session():
    return ort.InferenceSession(graph.feature_model().SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def real_windows(tiny_lab):
    ds = dataset.load(tiny_lab.data_dir)
    return windows.build(ds, ds.clips).audio


def _edge_cases():
    rng = np.random.default_rng(0)
    click = np.zeros(16000, np.float32)
    click[8000] = 0.9
    return np.stack([np.zeros(16000, np.float32), np.ones(16000, np.float32) * 0.999,
                     np.clip(rng.standard_normal(16000) * 2, -1, 1).astype(np.float32), click,
                     (rng.standard_normal(16000) * 1e-4).astype(np.float32)])


def test_graph_matches_numpy_on_real_speech_and_edge_cases(feature_session, real_windows):
    audio = np.concatenate([real_windows, _edge_cases()])
    pooled, summary = feature_session.run([graph.POOLED, graph.FEATURES], {graph.INPUT: audio})
    np_pooled, np_summary = F.compute(audio)
    assert pooled.shape == np_pooled.shape == (len(audio), F.POOLED_SIZE)
    assert summary.shape == np_summary.shape == (len(audio), len(F.FEATURE_NAMES))
    assert np.isfinite(pooled).all() and np.isfinite(summary).all()
    assert np.max(np.abs(pooled - np_pooled)) < ATOL
    assert np.max(np.abs(summary - np_summary)) < ATOL


def test_features_respond_to_the_signal():
    t = np.arange(16000) / 16000
    window = np.exp(-((t - 0.5) / 0.1) ** 2)
    low = (0.3 * np.sin(2 * np.pi * 300 * t) * window).astype(np.float32)
    high = (0.3 * np.sin(2 * np.pi * 5000 * t) * window).astype(np.float32)
    _, s = F.compute(np.stack([low, high, low * 0.1]))
    name = {n: i for i, n in enumerate(F.FEATURE_NAMES)}
    c = name["spectral_centroid"]
    assert s[1, c] > s[0, c] + 0.3  # 5 kHz sits far above 300 Hz on the mel axis
    assert abs(s[0, name["temporal_centre_s"]] - 0.5) < 0.02  # the burst is centred
    noise = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    _, levels = F.compute(np.stack([0.1 * noise, 0.01 * noise]))
    # 20 dB less power is ln(100) = 4.6 nats lower in every log-mel bin
    assert levels[0, name["logmel_mean"]] - levels[1, name["logmel_mean"]] == pytest.approx(np.log(100), abs=0.05)
    burst = (0.3 * noise * window + low).astype(np.float32)
    pooled, _ = F.compute(np.stack([burst, burst * 0.1]))
    assert np.max(np.abs(pooled[0] - pooled[1])) < 1e-2  # the classifier input ignores gain


def test_classifier_input_follows_the_speech_not_the_clock():
    t = np.arange(16000) / 16000

    def chirp(width):  # a rising sweep lasting about 2 * width seconds, centred
        env = np.exp(-((t - 0.5) / width) ** 8)
        freq = 300 + 3000 * np.clip((t - 0.5) / (2 * width) + 0.5, 0, 1)
        return (0.3 * np.sin(2 * np.pi * np.cumsum(freq) / 16000) * env).astype(np.float32)

    slow, fast = chirp(0.25), chirp(0.15)
    pooled, _ = F.compute(np.stack([fast, slow, np.roll(fast, 3000), fast[::-1].copy()]))
    stretched = np.abs(pooled[0] - pooled[1]).mean()
    reversed_ = np.abs(pooled[0] - pooled[3]).mean()
    assert stretched < 0.3 * reversed_  # a slower sweep lands in the same segments
    assert np.abs(pooled[0] - pooled[2]).mean() < 0.1 * reversed_  # so does a shifted one


def test_band_shift_moves_every_pooled_log_mel_along_the_mel_axis():
    from cloud.lab import train

    x = np.arange(2 * F.POOLED_SIZE, dtype=np.float32).reshape(2, -1)
    up = F.shift_bands(x, 2).reshape(2, -1, F.N_MELS)
    m = x.reshape(2, -1, F.N_MELS)
    assert np.array_equal(up[:, :, 2:], m[:, :, :-2]) and np.array_equal(up[:, :, 0], m[:, :, 0])
    down = F.shift_bands(x, -1).reshape(2, -1, F.N_MELS)
    assert np.array_equal(down[:, :, :-1], m[:, :, 1:]) and np.array_equal(down[:, :, -1], m[:, :, -1])
    many = np.repeat(x[:1], 500, axis=0)
    aug = train.shift_augment(many, (-1, 0, 1), seed=0)
    kinds = {tuple(row[:3]) for row in aug.reshape(500, -1, F.N_MELS)[:, 0, :]}
    assert len(kinds) == 3  # each clip got one of the three shifts
    assert np.array_equal(aug, train.shift_augment(many, (-1, 0, 1), seed=0))  # seeded
    assert train.shift_augment(many, (0,), seed=0) is many
