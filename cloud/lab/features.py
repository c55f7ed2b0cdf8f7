"""Log-mel features over the fixed 1 s window: the one numpy implementation used for training.

``graph.py`` builds the same computation as ONNX from the constants defined here (frame index
matrix, Hann-windowed DFT matrices, mel filterbank, pooling matrix), so training and serving
share every number. All arithmetic is float32 like the graph's.

    audio [N, 16000] → frames [N, 98, 400] (25 ms Hann, 10 ms hop) → |DFT|² [N, 98, 257]
    (512-point) → mel power [N, 98, 40] → log(power + 1e-6) = log-mel
    log-mel → pooled [N, POOLED_SIZE = 1520]   (classifier input, below)
    mel power, log-mel → summary [N, 10]  (drift monitor's feature vector, FEATURE_NAMES)

The classifier input is made gain-, channel- and tempo-invariant. Two normalised log-mels:
(a) relative to the window's loudest bin, floored FLOOR nats below it; (b) each band relative
to its own loudest frame, floored BAND_FLOOR below (this lifts weak high-band consonants and
flattens coloured noise). Each is averaged in SEGMENTS overlapping triangular windows spaced
evenly along the *speech* in the window, not along the clock: a soft speech mask (sigmoid of
frame energy against the loudest frame) is accumulated into a 0..1 position, so a slow and
a fast "left" land in the same segments. That nucleus leaves out weak consonants, so six
more windows (0-150 ms before the speech position reaches 3 % and after it passes 97 %) pool
the band-normalised log-mel of onsets and codas: without them "up" and "off" were the most
confused pair. Everything is smooth or piecewise linear (no hard thresholds), so the float32
graph tracks numpy closely.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
INPUT_SAMPLES = 16000
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
N_FFT = 512
N_BINS = N_FFT // 2 + 1
N_MELS = 40
F_MIN_HZ, F_MAX_HZ = 20.0, 8000.0
EPS = 1e-6
SEGMENTS = 16  # speech-relative segments the classifier input averages over
FLOOR = 10.0  # nats below the loudest bin where the normalised log-mel is floored (~43 dB)
BAND_FLOOR = 6.0  # nats below each band's loudest frame where the band-normalised one is floored
MASK_DELTA = 3.0  # frames within this many nats of the loudest frame count as speech ...
MASK_SLOPE = 3.0  # ... with a sigmoid of this slope around that point
CONTEXT_EDGE = 0.97  # speech position where the nucleus is taken to start / end
CONTEXT_SHARPNESS = 200.0  # slope of the soft step at that position
CONTEXT_CENTRES = (2.5, 7.5, 12.5)  # context windows, in frames from the edge (0-150 ms)
CONTEXT_HALF_WIDTH = 5.0  # frames
POOLED_SIZE = (2 * SEGMENTS + 2 * len(CONTEXT_CENTRES)) * N_MELS
BAND_GROUPS = 5
N_FRAMES = 1 + (INPUT_SAMPLES - WINDOW_SAMPLES) // HOP_SAMPLES  # 98
FRAME_S = HOP_SAMPLES / SAMPLE_RATE
FEATURE_NAMES = tuple(
    [f"logmel_band{g}_mean" for g in range(BAND_GROUPS)]
    + ["logmel_mean", "frame_logmel_std", "spectral_centroid", "temporal_centre_s", "temporal_spread_s"]
)


@lru_cache(maxsize=1)
def frame_indices() -> np.ndarray:
    """[N_FRAMES, WINDOW_SAMPLES] sample index of every frame position (int64)."""
    starts = HOP_SAMPLES * np.arange(N_FRAMES, dtype=np.int64)
    return starts[:, None] + np.arange(WINDOW_SAMPLES, dtype=np.int64)[None, :]


@lru_cache(maxsize=1)
def dft_matrices() -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary DFT matrices [WINDOW_SAMPLES, N_BINS] with the periodic Hann window
    folded in (zero-padding to N_FFT needs no rows: padded samples contribute nothing)."""
    n = np.arange(WINDOW_SAMPLES, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WINDOW_SAMPLES)
    angle = 2.0 * np.pi * np.outer(n, np.arange(N_BINS)) / N_FFT
    return ((window[:, None] * np.cos(angle)).astype(np.float32),
            (-window[:, None] * np.sin(angle)).astype(np.float32))


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """[N_BINS, N_MELS] triangular HTK-mel filterbank (unnormalised)."""
    mel_points = np.linspace(_hz_to_mel(F_MIN_HZ), _hz_to_mel(F_MAX_HZ), N_MELS + 2)
    hz_points = _mel_to_hz(mel_points)
    bin_hz = np.arange(N_BINS) * SAMPLE_RATE / N_FFT
    fb = np.zeros((N_BINS, N_MELS))
    for m in range(N_MELS):
        lo, mid, hi = hz_points[m], hz_points[m + 1], hz_points[m + 2]
        rising = (bin_hz - lo) / (mid - lo)
        falling = (hi - bin_hz) / (hi - mid)
        fb[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    return fb.astype(np.float32)


@lru_cache(maxsize=1)
def segment_centres() -> np.ndarray:
    """[SEGMENTS, 1] centre of each triangular segment on the 0..1 speech-position axis."""
    return ((np.arange(SEGMENTS, dtype=np.float32) + np.float32(0.5)) / np.float32(SEGMENTS))[:, None]


@lru_cache(maxsize=1)
def context_centres() -> np.ndarray:
    """[len(CONTEXT_CENTRES), 1] centres of the context windows, in frames from the edge."""
    return np.array(CONTEXT_CENTRES, dtype=np.float32)[:, None]


@lru_cache(maxsize=1)
def band_matrix() -> np.ndarray:
    """[N_MELS, BAND_GROUPS] averaging weights over contiguous groups of mel bands."""
    groups = np.array_split(np.arange(N_MELS), BAND_GROUPS)
    m = np.zeros((N_MELS, BAND_GROUPS))
    for g, idx in enumerate(groups):
        m[idx, g] = 1.0 / len(idx)
    return m.astype(np.float32)


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2 or audio.shape[1] != INPUT_SAMPLES:
        raise ValueError(f"audio must be [N, {INPUT_SAMPLES}] float32, got shape {audio.shape}")
    return audio


def mel_power(audio: np.ndarray) -> np.ndarray:
    """[N, N_FRAMES, N_MELS] mel-band power of each frame."""
    audio = _check_audio(audio)
    frames = audio[:, frame_indices()]
    re_m, im_m = dft_matrices()
    re, im = frames @ re_m, frames @ im_m
    return (re * re + im * im) @ mel_matrix()


def log_mel(audio: np.ndarray) -> np.ndarray:
    """[N, N_FRAMES, N_MELS] log(mel power + EPS)."""
    return np.log(mel_power(audio) + np.float32(EPS))


def normalised(logmel: np.ndarray) -> np.ndarray:
    """Log-mel relative to the window's loudest bin, floored at -FLOOR."""
    peak = logmel.max(axis=(1, 2), keepdims=True)
    return np.maximum(logmel - peak, np.float32(-FLOOR))


def band_normalised(logmel: np.ndarray) -> np.ndarray:
    """Each band relative to its loudest frame, floored at -BAND_FLOOR."""
    peak = logmel.max(axis=1, keepdims=True)
    return np.maximum(logmel - peak, np.float32(-BAND_FLOOR))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf for x << 0: the sigmoid is then 0
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def speech_mask(power: np.ndarray) -> np.ndarray:
    """[N, N_FRAMES] soft speech mask: ~1 within MASK_DELTA nats of the loudest frame."""
    energy = np.log(power.mean(axis=2) + np.float32(EPS))  # [N, T]
    return _sigmoid(np.float32(MASK_SLOPE) * (energy - energy.max(axis=1, keepdims=True) + np.float32(MASK_DELTA)))


def _normalise_rows(w: np.ndarray) -> np.ndarray:
    return w / (w.sum(axis=2, keepdims=True) + np.float32(EPS))


def speech_weights(mask: np.ndarray) -> np.ndarray:
    """[N, SEGMENTS, N_FRAMES] pooling weights spaced along the speech, each row summing to 1."""
    position = np.cumsum(mask, axis=1) / mask.sum(axis=1, keepdims=True)  # [N, T] in (0, 1]
    dist = np.abs(position[:, None, :] - segment_centres()[None, :, :]) * np.float32(SEGMENTS)
    return _normalise_rows(mask[:, None, :] * np.maximum(np.float32(1.0) - dist, np.float32(0.0)))


def _edge_windows(position: np.ndarray, reverse: bool) -> np.ndarray:
    """[N, len(CONTEXT_CENTRES), T] windows counted in frames from where ``position`` passes
    CONTEXT_EDGE (a soft step), forwards or, with ``reverse``, backwards."""
    step = _sigmoid(np.float32(CONTEXT_SHARPNESS) * (position - np.float32(CONTEXT_EDGE)))
    frames = np.cumsum(step[:, ::-1], axis=1)[:, ::-1] if reverse else np.cumsum(step, axis=1)
    dist = np.abs(frames[:, None, :] - context_centres()[None, :, :]) / np.float32(CONTEXT_HALF_WIDTH)
    return step[:, None, :] * np.maximum(np.float32(1.0) - dist, np.float32(0.0))


def context_weights(mask: np.ndarray) -> np.ndarray:
    """[N, 2 * len(CONTEXT_CENTRES), N_FRAMES]: windows just before the speech nucleus (onset
    consonants) then just after it (codas: the p of "up", the f of "off"), each row summing to 1."""
    total = mask.sum(axis=1, keepdims=True)
    after = np.cumsum(mask, axis=1) / total
    before = np.cumsum(mask[:, ::-1], axis=1)[:, ::-1] / total
    return _normalise_rows(np.concatenate([_edge_windows(before, True), _edge_windows(after, False)], axis=1))


def pooled(power: np.ndarray, logmel: np.ndarray) -> np.ndarray:
    """[N, POOLED_SIZE] classifier input: the log-mel normalised both ways and pooled along the
    speech, then the band-normalised log-mel around the nucleus."""
    mask = speech_mask(power)
    w = speech_weights(mask)
    band = band_normalised(logmel)
    n = len(logmel)
    return np.concatenate([np.matmul(w, normalised(logmel)).reshape(n, -1),
                           np.matmul(w, band).reshape(n, -1),
                           np.matmul(context_weights(mask), band).reshape(n, -1)], axis=1)


def summary(power: np.ndarray, logmel: np.ndarray) -> np.ndarray:
    """[N, len(FEATURE_NAMES)] feature summary for drift monitoring."""
    bands = logmel.mean(axis=1) @ band_matrix()  # [N, BAND_GROUPS]
    frame_mean = logmel.mean(axis=2)  # [N, T]
    mean = frame_mean.mean(axis=1, keepdims=True)
    std = np.sqrt(np.mean((frame_mean - mean) ** 2, axis=1, keepdims=True))
    band_energy = power.sum(axis=1)  # [N, N_MELS]
    band_pos = np.arange(N_MELS, dtype=np.float32) / np.float32(N_MELS - 1)
    centroid = (band_energy @ band_pos)[:, None] / (band_energy.sum(axis=1, keepdims=True) + np.float32(EPS))
    frame_energy = power.sum(axis=2) + np.float32(EPS)  # [N, T]
    t = (np.arange(N_FRAMES, dtype=np.float32) * np.float32(FRAME_S))
    total = frame_energy.sum(axis=1, keepdims=True)
    centre = (frame_energy @ t)[:, None] / total
    spread = np.sqrt((frame_energy @ (t * t))[:, None] / total - centre * centre + np.float32(EPS))
    return np.concatenate([bands, mean, std, centroid, centre, spread], axis=1).astype(np.float32)


def shift_bands(x: np.ndarray, bands: int) -> np.ndarray:
    """Classifier inputs [N, POOLED_SIZE] with every pooled log-mel moved ``bands`` mel bands
    up (> 0) or down, the edge band repeated: about what a vocal tract 4-5 % shorter (longer)
    per band does to a voice. Training uses it as augmentation (``train.Hyperparameters.band_shifts``)."""
    if bands == 0:
        return x
    m = x.reshape(len(x), -1, N_MELS)
    if bands > 0:
        m = np.concatenate([np.repeat(m[:, :, :1], bands, axis=2), m[:, :, :-bands]], axis=2)
    else:
        m = np.concatenate([m[:, :, -bands:], np.repeat(m[:, :, -1:], -bands, axis=2)], axis=2)
    return m.reshape(len(x), -1)


def _compute_batches(audio: np.ndarray, batch: int, xs: list, fs: list) -> None:
    for i in range(0, len(audio), batch):
        power = mel_power(audio[i: i + batch])
        lm = np.log(power + np.float32(EPS))
        xs.append(pooled(power, lm))
        fs.append(summary(power, lm))


def compute(audio: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Classifier input and feature summary for a batch of windows (processed in chunks)."""
    audio = _check_audio(audio)
    xs, fs = [], []
    with threadpool_limits(limits=1, user_api="blas"):  # one thread: no spinning on a busy machine
        _compute_batches(audio, batch, xs, fs)
    if not xs:
        return (np.zeros((0, POOLED_SIZE), np.float32), np.zeros((0, len(FEATURE_NAMES)), np.float32))
    return np.concatenate(xs), np.concatenate(fs)
