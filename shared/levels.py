"""Signal levels of one utterance: RMS level, a blind SNR estimate, clipping.

Pure numpy. The agent's input statistics and the model lab's reference profile both use
these, so a device and its reference are measured the same way.
"""
from __future__ import annotations

import math

import numpy as np

from shared.errors import ConfigError

SILENCE_DBFS = -120.0  # floor for digital silence
_POWER_FLOOR = 10.0 ** (SILENCE_DBFS / 10.0)  # -120 dB, as a power
SNR_MAX_DB = 120.0
SNR_FRAME_SAMPLES = 480  # frames of 30 ms at 16 kHz, as the gate cuts them
CLIP_THRESHOLD = 0.999


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if np.isfinite(x).all():  # the common case: skip nan_to_num, which is slow
        return x
    return np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)


def level_dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to full scale (1.0), floored at -120 for digital silence.

    A full-scale sine reads -3.01 dBFS (no +3 dB sine correction). Non-finite samples
    count as zero; an empty array reads -120.
    """
    x = _finite(x)
    if len(x) == 0:
        return SILENCE_DBFS
    return level_from_power(float(np.mean(x * x)))


def level_from_power(power: float) -> float:
    """``level_dbfs`` of samples whose mean square is ``power``."""
    return max(SILENCE_DBFS, 10.0 * float(np.log10(max(power, _POWER_FLOOR))))


def levels_from_powers(power: np.ndarray) -> np.ndarray:
    """``level_from_power`` of each mean square, vectorised (the same values)."""
    return np.maximum(SILENCE_DBFS, 10.0 * np.log10(np.maximum(power, _POWER_FLOOR)))


def snr_db(x: np.ndarray, frame_samples: int = SNR_FRAME_SAMPLES) -> float:
    """Blind SNR estimate of one utterance from its own frame energies, in dB.

    Estimator: cut ``x`` into non-overlapping frames of ``frame_samples`` (a shorter tail
    is ignored; a clip shorter than one frame is one frame), take each frame's mean power,
    and return ``10*log10(P90 / P10)`` where P90 / P10 are the 90th / 10th percentiles
    (linear interpolation) of the frame powers: the loud frames stand for speech plus
    noise, the quiet ones for the noise floor between and around words. The noise power
    is floored at -120 dB and the result clamped to [0, 120] dB, so digital silence
    around clean speech gives a high but finite value. It works on the whole utterance,
    so it does not depend on how the stream was chunked; more noise lowers it, removing
    noise raises it. It needs some pause in the utterance (the gate's pre-roll provides
    it): a clip that is speech from end to end reads low.
    """
    if not isinstance(frame_samples, int) or frame_samples <= 0:
        raise ConfigError(f"frame_samples must be a positive integer, got {frame_samples!r}")
    x = _finite(x)
    if len(x) == 0:
        return 0.0
    n = max(1, len(x) // frame_samples)
    frames = x[:n * frame_samples].reshape(n, -1) if len(x) >= frame_samples else x[None, :]
    return snr_from_powers(np.mean(frames * frames, axis=1))


def snr_from_powers(power: np.ndarray) -> float:
    """``snr_db`` from the mean square of each frame."""
    ordered = np.sort(np.asarray(power, dtype=np.float64).reshape(-1))
    loud, quiet = _percentile(ordered, 0.9), _percentile(ordered, 0.1)
    if loud <= _POWER_FLOOR:
        return 0.0  # nothing but silence: no signal to speak of
    snr = float(10.0 * np.log10(loud / max(quiet, _POWER_FLOOR)))
    return min(max(snr, 0.0), SNR_MAX_DB)


def _percentile(ordered: np.ndarray, q: float) -> float:
    """The q-quantile of sorted values with linear interpolation (Hyndman & Fan's type 7).

    The same arithmetic as numpy's default ``percentile`` (``(n - 1) * q``, and a lerp that
    works from the nearer end), without its overhead: it runs once per utterance."""
    n = len(ordered)
    at = (n - 1) * q
    if at >= n - 1:
        return float(ordered[-1])
    below = math.floor(at)
    t = at - below
    a, b = float(ordered[below]), float(ordered[below + 1])
    diff = b - a
    return a + diff * t if t < 0.5 else b - diff * (1 - t)


def clipped_fraction(x: np.ndarray, threshold: float = CLIP_THRESHOLD) -> float:
    """Fraction of samples whose magnitude reaches ``threshold`` (0 for an empty array)."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")
    x = _finite(x)
    if len(x) == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(x) >= threshold)) / len(x)
