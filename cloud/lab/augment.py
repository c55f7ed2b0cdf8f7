"""Numpy augmentation for synthesized speech: coloured noise, gain, speed change, placement.

Every function takes an explicit ``numpy.random.Generator`` so a clip is a pure function of
its seed. Noise generators return unit-RMS signals; callers scale them.
"""
from __future__ import annotations

import logging
from math import gcd

import numpy as np
from scipy.signal import resample as scipy_resample, resample_poly

log = logging.getLogger(__name__)

NOISE_TYPES = ("white", "pink", "brown", "babble", "hum")


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return (x / rms).astype(np.float32) if rms > 0 else x.astype(np.float32)


def _shaped(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.arange(n // 2 + 1, dtype=np.float64)
    freqs[0] = 1.0
    spectrum *= freqs ** (-exponent / 2.0)
    spectrum[0] = 0.0
    return _unit_rms(np.fft.irfft(spectrum, n))


def _babble(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Speech-shaped noise with syllable-rate (3–6 Hz) envelopes of a few 'talkers'."""
    t = np.arange(n) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    for _ in range(4):
        voice = _shaped(n, rng, 1.0).astype(np.float64)
        spectrum = np.fft.rfft(voice)
        freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
        spectrum[(freqs < 150) | (freqs > 4000)] = 0.0
        rate_hz = rng.uniform(3.0, 6.0)
        envelope = np.clip(np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 2 * np.pi)), 0, None)
        out += np.fft.irfft(spectrum, n) * envelope
    return _unit_rms(out)


def _hum(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Mains hum (50 or 60 Hz and harmonics) over a little white noise."""
    t = np.arange(n) / sample_rate
    base_hz = 50.0 if rng.random() < 0.5 else 60.0
    out = sum(np.sin(2 * np.pi * base_hz * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
    return _unit_rms(out + 0.05 * rng.standard_normal(n))


def noise(kind: str, n: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """``n`` samples of unit-RMS noise of the named kind (one of ``NOISE_TYPES``)."""
    if kind == "white":
        return _unit_rms(rng.standard_normal(n))
    if kind == "pink":
        return _shaped(n, rng, 1.0)
    if kind == "brown":
        return _shaped(n, rng, 2.0)
    if kind == "babble":
        return _babble(n, rng, sample_rate)
    if kind == "hum":
        return _hum(n, rng, sample_rate)
    raise ValueError(f"unknown noise type {kind!r}; use one of {', '.join(NOISE_TYPES)}")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def change_rate(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling from ``from_rate`` to ``to_rate`` (both integers, Hz)."""
    g = gcd(int(from_rate), int(to_rate))
    return resample_poly(x.astype(np.float64), int(to_rate) // g, int(from_rate) // g).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` resampled (FFT method) to exactly ``n`` samples: a speed-up when it is too long."""
    return scipy_resample(x.astype(np.float64), n).astype(np.float32)


def trim(x: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``threshold_db`` below the peak."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x
    loud = np.flatnonzero(np.abs(x) >= peak * 10 ** (threshold_db / 20.0))
    return x[loud[0]: loud[-1] + 1]


def set_peak(x: np.ndarray, peak_dbfs: float) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return x if peak == 0.0 else (x * (10 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)


def place_at(x: np.ndarray, length: int, offset: int) -> np.ndarray:
    """``x`` written into a zero window of ``length`` samples starting at ``offset``."""
    out = np.zeros(length, dtype=np.float32)
    x = x[: max(0, length - offset)]
    out[offset: offset + len(x)] = x
    return out
