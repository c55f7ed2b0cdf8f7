"""Signal levels of one utterance: RMS level, a blind SNR estimate, clipping.

Pure numpy. The agent's input statistics and the model lab's reference profile both use
these, so a device and its reference are measured the same way.
"""
from __future__ import annotations

import numpy as np

from shared.errors import ConfigError

SILENCE_DBFS = -120.0  # floor for digital silence
_POWER_FLOOR = 10.0 ** (SILENCE_DBFS / 10.0)  # -120 dB, as a power
SNR_MAX_DB = 120.0


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
    power = float(np.mean(x * x))
    return max(SILENCE_DBFS, 10.0 * float(np.log10(max(power, _POWER_FLOOR))))


def snr_db(x: np.ndarray, frame_samples: int = 480) -> float:
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
    power = np.mean(frames * frames, axis=1)
    loud, quiet = np.percentile(power, [90.0, 10.0])
    if loud <= _POWER_FLOOR:
        return 0.0  # nothing but silence: no signal to speak of
    snr = 10.0 * np.log10(loud / max(quiet, _POWER_FLOOR))
    return float(np.clip(snr, 0.0, SNR_MAX_DB))


def clipped_fraction(x: np.ndarray, threshold: float = 0.999) -> float:
    """Fraction of samples whose magnitude reaches ``threshold`` (0 for an empty array)."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")
    x = _finite(x)
    if len(x) == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(x) >= threshold)) / len(x)
