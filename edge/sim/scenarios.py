"""Fleet scenarios: what happens to the audio of the devices a scenario targets, from an onset.

    healthy         nothing
    sudden-noise    white or babble noise at ``snr_db`` (default 5 dB) from the onset
    gradual-noise   the same noise, its SNR ramping from ``start_snr_db`` down to ``snr_db`` over ``ramp_s``
    level-drop      the whole signal scaled by ``gain_db`` (default -20 dB)
    band-limit      a telephone channel: FIR band-pass ``low_hz``..``high_hz`` (300-3400 Hz)
    new-speakers    the stream switches to held-out speakers, pitch/tempo shifted by ``shift`` (audio.py)
    broken-device   one device's microphone dies: near-silence, DC offset or clipping noise

SNR is relative to the device's speech reference level (the median active level of the
dataset's speech clips), so the noise is stationary, as a fan or a crowd would be; each
utterance's own SNR then varies with how loud it was spoken. Times are audio time (samples),
so a scenario does the same thing at any ``--speed``. Every transform is a stream processor:
``process(chunk)`` returns the transformed chunk, and the same audio in any chunking gives
the same output (seeded noise is drawn sample by sample from the onset).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from shared.audio import SAMPLE_RATE
from shared.errors import ConfigError

NOISE_KINDS = ("white", "babble")
FAULTS = ("silence", "dc", "clipping")
SCENARIOS: dict[str, str] = {
    "healthy": "No change: every device hears the dataset's speech as recorded.",
    "sudden-noise": "From the onset, white or babble noise at --snr-db on the targeted devices.",
    "gradual-noise": "From the onset, noise whose SNR ramps from --start-snr-db down to --snr-db over --ramp.",
    "level-drop": "From the onset, the signal is attenuated by --gain-db (a microphone gain change).",
    "band-limit": "From the onset, a telephone-like 300-3400 Hz channel.",
    "new-speakers": "From the onset, held-out speakers, pitch/tempo shifted by --shift (concept shift).",
    "broken-device": "From the onset, one device's microphone dies (--fault silence, dc or clipping).",
}
SILENCE_DBFS = -90.0
DC_OFFSET = 0.25
BAND_TAPS = 255


@dataclass(frozen=True)
class ScenarioParams:
    """A scenario and its settings; fields carry units."""

    name: str = "healthy"
    onset_s: float = 60.0
    snr_db: float = 5.0
    start_snr_db: float = 30.0
    ramp_s: float = 300.0
    noise: str = "white"
    gain_db: float = -20.0
    low_hz: float = 300.0
    high_hz: float = 3400.0
    shift: float = 1.2
    held_out_fraction: float = 0.34
    fault: str = "silence"
    affected: float | None = None  # fraction of devices targeted; None: all (one for broken-device)

    def check(self) -> "ScenarioParams":
        if self.name not in SCENARIOS:
            raise ConfigError(f"unknown scenario {self.name!r}; choose one of {', '.join(SCENARIOS)}")
        if self.onset_s < 0 or self.ramp_s <= 0:
            raise ConfigError("onset must be >= 0 and ramp > 0 audio seconds")
        if self.noise not in NOISE_KINDS:
            raise ConfigError(f"noise {self.noise!r} is not one of {', '.join(NOISE_KINDS)}")
        if self.fault not in FAULTS:
            raise ConfigError(f"fault {self.fault!r} is not one of {', '.join(FAULTS)}")
        if not 0 < self.low_hz < self.high_hz < SAMPLE_RATE / 2:
            raise ConfigError(f"band {self.low_hz}-{self.high_hz} Hz must satisfy 0 < low < high < 8000")
        if not 0.5 <= self.shift <= 2.0:
            raise ConfigError(f"shift {self.shift} must be in [0.5, 2] (1.0: held-out speakers, no shift)")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ConfigError("held_out_fraction must be in (0, 1)")
        if self.affected is not None and not 0.0 < self.affected <= 1.0:
            raise ConfigError(f"affected {self.affected} must be a fraction in (0, 1]")
        return self

    @property
    def onset_sample(self) -> int:
        return int(round(self.onset_s * SAMPLE_RATE))

    def targets(self, n_devices: int, seed: int) -> list[int]:
        """Indices of the devices the scenario acts on (a seeded choice; sorted)."""
        if self.name == "healthy" or n_devices <= 0:
            return []
        default = 1.0 / n_devices if self.name == "broken-device" else 1.0
        n = max(1, min(n_devices, round((self.affected or default) * n_devices)))
        if n == n_devices:
            return list(range(n_devices))
        order = np.random.default_rng([seed, 7919]).permutation(n_devices)
        return sorted(int(i) for i in order[:n])


class Transform(Protocol):
    def process(self, x: np.ndarray) -> np.ndarray:
        """Transform the next chunk of the stream (float32 16 kHz); returns a new array."""


class NoiseSource(Protocol):
    def take(self, n: int) -> np.ndarray:
        """The next ``n`` samples of unit-RMS noise."""


class Identity:
    """The healthy channel."""

    def __init__(self):
        self.position = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        self.position += len(x)
        return np.array(x, dtype=np.float32)


class _FromOnset:
    """Base for transforms that act on samples at or after ``onset_sample``."""

    def __init__(self, onset_sample: int):
        self.onset_sample = int(onset_sample)
        self.position = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        start, self.position = self.position, self.position + len(x)
        out = x.copy()
        k = max(0, self.onset_sample - start)  # first index at or after the onset
        self._observe(x)
        if k < len(x):
            out[k:] = self._after(x[k:], start + k)
        return out

    def _observe(self, x: np.ndarray) -> None:
        """See every sample (filters keep their history warm before the onset)."""

    def _after(self, x: np.ndarray, start: int) -> np.ndarray:
        raise NotImplementedError


class WhiteNoise:
    """Unit-RMS Gaussian white noise from a seeded generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def take(self, n: int) -> np.ndarray:
        return self.rng.standard_normal(n).astype(np.float32)


class AddNoise(_FromOnset):
    """Add noise whose level follows ``snr_at(sample_positions) -> dB`` below ``ref_rms``."""

    def __init__(self, onset_sample: int, noise: NoiseSource, ref_rms: float,
                 snr_at: Callable[[np.ndarray], np.ndarray]):
        super().__init__(onset_sample)
        self.noise, self.ref_rms, self.snr_at = noise, float(ref_rms), snr_at

    def _after(self, x: np.ndarray, start: int) -> np.ndarray:
        t = np.arange(start, start + len(x))
        scale = self.ref_rms * np.power(10.0, -self.snr_at(t) / 20.0)
        return (x + scale * self.noise.take(len(x))).astype(np.float32)


class Gain(_FromOnset):
    def __init__(self, onset_sample: int, gain_db: float):
        super().__init__(onset_sample)
        self.factor = float(10.0 ** (gain_db / 20.0))

    def _after(self, x: np.ndarray, start: int) -> np.ndarray:
        return (x * self.factor).astype(np.float32)


def bandpass_taps(low_hz: float, high_hz: float, taps: int = BAND_TAPS) -> np.ndarray:
    """A linear-phase FIR band-pass (windowed sinc, Blackman window)."""
    n = np.arange(taps) - (taps - 1) / 2.0
    fl, fh = low_hz / SAMPLE_RATE, high_hz / SAMPLE_RATE
    h = 2 * fh * np.sinc(2 * fh * n) - 2 * fl * np.sinc(2 * fl * n)
    return (h * np.blackman(taps)).astype(np.float64)


class BandLimit(_FromOnset):
    """A streaming FIR band-pass; it delays the signal by (taps - 1) / 2 samples (8 ms)."""

    def __init__(self, onset_sample: int, low_hz: float, high_hz: float, taps: int = BAND_TAPS):
        super().__init__(onset_sample)
        self.h = bandpass_taps(low_hz, high_hz, taps)
        self._history = np.zeros(taps - 1, dtype=np.float64)
        self._filtered = np.zeros(0, dtype=np.float32)

    def _observe(self, x: np.ndarray) -> None:
        full = np.concatenate([self._history, x.astype(np.float64)])
        if self.position > self.onset_sample:  # output needed for part of this chunk
            self._filtered = np.convolve(full, self.h, mode="valid").astype(np.float32)
        self._history = full[len(full) - (len(self.h) - 1):]

    def _after(self, x: np.ndarray, start: int) -> np.ndarray:
        return self._filtered[len(self._filtered) - len(x):]


class MicFault(_FromOnset):
    """A dead microphone: near-silence (-90 dBFS hiss), a DC offset, or clipping noise."""

    def __init__(self, onset_sample: int, fault: str, rng: np.random.Generator):
        super().__init__(onset_sample)
        if fault not in FAULTS:
            raise ConfigError(f"fault {fault!r} is not one of {', '.join(FAULTS)}")
        self.fault, self.rng = fault, rng

    def _after(self, x: np.ndarray, start: int) -> np.ndarray:
        z = self.rng.standard_normal(len(x))  # one draw per sample, so any chunking gives the same output
        if self.fault == "clipping":
            return np.clip(z * 0.7, -1.0, 1.0).astype(np.float32)
        hiss = z * 10.0 ** (SILENCE_DBFS / 20.0)
        return (hiss + (DC_OFFSET if self.fault == "dc" else 0.0)).astype(np.float32)


def snr_schedule(params: ScenarioParams) -> Callable[[np.ndarray], np.ndarray]:
    """SNR in dB at each sample position: constant (sudden) or a linear ramp in dB (gradual)."""
    if params.name == "gradual-noise":
        onset, ramp = params.onset_sample, params.ramp_s * SAMPLE_RATE
        a, b = params.start_snr_db, params.snr_db
        return lambda t: a + (b - a) * np.clip((t - onset) / ramp, 0.0, 1.0)
    return lambda t: np.full(len(t), params.snr_db, dtype=np.float64)


def build_transform(params: ScenarioParams, targeted: bool, *, ref_level_dbfs: float,
                    rng: np.random.Generator, babble: Callable[[np.random.Generator], NoiseSource] | None = None):
    """The channel of one device. ``babble(rng)`` makes babble noise (needs the clip pool)."""
    name, onset = params.name, params.onset_sample
    if not targeted or name in ("healthy", "new-speakers"):
        return Identity()  # new-speakers changes which clips play, not the channel
    if name in ("sudden-noise", "gradual-noise"):
        if params.noise == "babble":
            if babble is None:
                raise ConfigError("babble noise needs the dataset's clips; give the data directory")
            noise = babble(rng)
        else:
            noise = WhiteNoise(rng)
        return AddNoise(onset, noise, 10.0 ** (ref_level_dbfs / 20.0), snr_schedule(params))
    if name == "level-drop":
        return Gain(onset, params.gain_db)
    if name == "band-limit":
        return BandLimit(onset, params.low_hz, params.high_hz)
    if name == "broken-device":
        return MicFault(onset, params.fault, rng)
    raise ConfigError(f"unknown scenario {name!r}")


def active_level_dbfs(x: np.ndarray, frame: int = 160, range_db: float = 30.0) -> float:
    """Active speech level: mean power of the 10 ms frames within ``range_db`` of the loudest."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = len(x) // frame
    if n == 0:
        return -120.0
    power = np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1)
    top = float(power.max())
    if top <= 1e-12:
        return -120.0
    active = power[power >= top * 10.0 ** (-range_db / 10.0)]
    return 10.0 * math.log10(float(active.mean()))
