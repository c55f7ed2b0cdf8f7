"""The voice-activity gate: cut utterances out of a continuous stream, and place them.

The device runs it on live audio and the model lab cuts its training clips with it, so
both see the same utterances ("train on what the device sees"). Pure: numpy + webrtcvad.

How an utterance is cut (``n`` = ring of the last ``padding_ms`` of frames):
- it starts when at least ``start_ratio`` of the ring is voiced; its first sample is
  ``pre_roll_ms`` before the earliest voiced frame in the ring (never before the end of
  the previous utterance, never before the stream started);
- it ends when at least ``end_ratio`` of the ring is unvoiced (the hangover); the audio
  after the last voiced frame is trimmed to ``pre_roll_ms`` so the clip is padded the
  same on both sides;
- it is dropped when its speech span (first to last voiced frame, without the padding)
  is shorter than ``min_utterance_ms``;
- it is split when it reaches ``max_utterance_ms``: the piece is emitted as is and the
  next piece starts at the following sample.
A frame is voiced when webrtcvad says so and it is not quieter than
``energy_floor_dbfs``. Decisions depend only on the sequence of frames, so any chunking
of the same audio gives the same utterances. A trailing partial frame at ``flush`` is
not classified and never part of an utterance.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np
import webrtcvad

from shared.audio import SAMPLE_RATE, Framer
from shared.errors import ConfigError
from shared.histogram import NOISE_DBFS_EDGES
from shared.levels import level_dbfs

PLACEMENT_RULES = ("centre", "start")
VAD_SAMPLE_RATES = (8000, 16000, 32000, 48000)


def _describe(text: str) -> dict:
    return {"description": text}


@dataclass(frozen=True)
class GateConfig:
    """Settings of the VAD gate; written into the model bundle's manifest."""

    aggressiveness: int = field(default=2, metadata=_describe(
        "webrtcvad mode 0-3; higher rejects more non-speech"))
    frame_ms: int = field(default=30, metadata=_describe("VAD frame length: 10, 20 or 30 ms"))
    padding_ms: int = field(default=300, metadata=_describe(
        "length of the ring of recent frames the start/end decisions look at"))
    start_ratio: float = field(default=0.6, metadata=_describe(
        "voiced fraction of the ring that starts an utterance, (0, 1]"))
    end_ratio: float = field(default=0.9, metadata=_describe(
        "unvoiced fraction of the ring that ends an utterance, (0, 1]"))
    pre_roll_ms: int = field(default=150, metadata=_describe(
        "audio kept before the first (and after the last) voiced frame"))
    min_utterance_ms: int = field(default=150, metadata=_describe(
        "shorter speech spans are dropped"))
    max_utterance_ms: int = field(default=2000, metadata=_describe(
        "longer utterances are split into pieces of this length"))
    energy_floor_dbfs: float | None = field(default=None, metadata=_describe(
        "frames quieter than this count as unvoiced; None disables it"))

    def __post_init__(self) -> None:
        _int_field(self, "aggressiveness", 0, 3, "0 keeps the most audio, 3 the least")
        if type(self.frame_ms) is not int or self.frame_ms not in (10, 20, 30):
            raise ConfigError(f"gate frame_ms must be 10, 20 or 30 (webrtcvad frame sizes), "
                              f"got {self.frame_ms!r}")
        _int_field(self, "padding_ms", self.frame_ms, 5000, "300 is a good start")
        _ratio_field(self, "start_ratio")
        _ratio_field(self, "end_ratio")
        _int_field(self, "pre_roll_ms", 0, 2000, "150 keeps the onset of the first phoneme")
        _int_field(self, "min_utterance_ms", 0, 60000, "150 drops clicks")
        _int_field(self, "max_utterance_ms", self.frame_ms, 600000,
                   "set it to the model's input length")
        self._check_lengths()
        self._check_energy_floor()

    def _check_lengths(self) -> None:
        if self.max_utterance_ms < self.min_utterance_ms:
            raise ConfigError(
                f"gate max_utterance_ms ({self.max_utterance_ms}) is below min_utterance_ms "
                f"({self.min_utterance_ms}): no utterance could pass; raise max or lower min")
        if self.max_utterance_ms <= self.pre_roll_ms + self.frame_ms:
            raise ConfigError(
                f"gate max_utterance_ms ({self.max_utterance_ms}) leaves no room for speech "
                f"after the {self.pre_roll_ms} ms pre-roll; raise max_utterance_ms")

    def _check_energy_floor(self) -> None:
        floor = self.energy_floor_dbfs
        if floor is None:
            return
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) \
                or not -120.0 <= floor <= 0.0:
            raise ConfigError(f"gate energy_floor_dbfs must be null or a number in [-120, 0] "
                              f"dBFS (e.g. -50), got {floor!r}")

    @property
    def ring_frames(self) -> int:
        return max(1, round(self.padding_ms / self.frame_ms))

    @property
    def pre_roll_frames(self) -> int:
        return math.ceil(self.pre_roll_ms / self.frame_ms)

    @property
    def max_frames(self) -> int:
        return self.max_utterance_ms // self.frame_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GateConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"gate settings must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown gate setting(s) {', '.join(unknown)}; "
                              f"valid keys are {', '.join(sorted(known))}")
        return cls(**d)


def _int_field(cfg: GateConfig, name: str, low: int, high: int, hint: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"gate {name} must be an integer in [{low}, {high}], got {value!r}; "
                          f"{hint}")


def _ratio_field(cfg: GateConfig, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"gate {name} must be a fraction in (0, 1], got {value!r}; "
                          f"the defaults are start 0.6, end 0.9")


@dataclass(frozen=True, eq=False)
class Utterance:
    """A stretch of speech cut by the gate; positions count samples since the gate started."""

    samples: np.ndarray
    start_sample: int
    end_sample: int
    voiced_frames: int
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_ms(self) -> float:
        return 1000.0 * (self.end_sample - self.start_sample) / self.sample_rate


class _Frame(NamedTuple):
    index: int
    start_sample: int
    samples: np.ndarray
    voiced: bool


class VadGate:
    """Streaming VAD gate: ``feed`` chunks of any length, ``flush`` at the end of the stream."""

    def __init__(self, config: GateConfig = GateConfig(), sample_rate: int = SAMPLE_RATE):
        if not isinstance(config, GateConfig):
            raise ConfigError(f"config must be a GateConfig, got {type(config).__name__}")
        if sample_rate not in VAD_SAMPLE_RATES:
            raise ConfigError(f"the gate runs at {VAD_SAMPLE_RATES} Hz, got {sample_rate!r}; "
                              "resample the audio to 16000 Hz first")
        self.config = config
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * config.frame_ms // 1000
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._framer = Framer(self.frame_samples)
        n = config.ring_frames
        self._start_count = max(1, math.ceil(config.start_ratio * n - 1e-9))
        self._end_count = max(1, math.ceil(config.end_ratio * n - 1e-9))
        self._ring: deque[bool] = deque(maxlen=n)
        self._history = n + config.pre_roll_frames  # frames kept while idle
        self._frames: list[_Frame] = []  # recent frames, and all of an utterance in progress
        self._utt_start: int | None = None  # frame index where the current utterance starts
        self._first_voiced: int | None = None
        self._last_voiced: int | None = None
        self._boundary = 0  # frame index an utterance may not start before
        self._next_index = 0
        self._pos = 0  # samples consumed, including a dropped partial frame at flush
        self._frames_n = self._voiced_n = self._invalid_n = 0
        self._noise = np.zeros(len(NOISE_DBFS_EDGES) + 1, dtype=np.int64)
        self._samples_in = self._samples_passed = 0
        self._cost_s = 0.0

    # -- counters ---------------------------------------------------------------------
    frames = property(lambda self: self._frames_n, doc="Frames classified so far.")
    voiced_frames = property(lambda self: self._voiced_n, doc="Frames classified as voiced.")
    invalid_frames = property(lambda self: self._invalid_n,
                              doc="Frames that held NaN or inf (replaced by zeros).")
    samples_in = property(lambda self: self._samples_in, doc="Samples fed so far.")
    samples_passed = property(lambda self: self._samples_passed,
                              doc="Samples inside emitted utterances.")
    cost_s = property(lambda self: self._cost_s, doc="Seconds spent in webrtcvad and gating.")

    @property
    def noise_counts(self) -> np.ndarray:
        """Levels of the frames classified unvoiced so far, counted over ``NOISE_DBFS_EDGES``: the
        room and the microphone's own floor (digital silence lands in the first bin)."""
        return self._noise.copy()

    @property
    def pass_ratio(self) -> float:
        """Fraction of the fed samples that left the gate inside an utterance."""
        return self._samples_passed / self._samples_in if self._samples_in else 0.0

    @property
    def in_utterance(self) -> bool:
        """True while an utterance is in progress."""
        return self._utt_start is not None

    # -- streaming --------------------------------------------------------------------
    def feed(self, chunk: np.ndarray) -> list[Utterance]:
        """Take float32 samples (any length); return the utterances completed by them."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        t0 = time.perf_counter()
        self._samples_in += len(chunk)
        out: list[Utterance] = []
        block = self._framer.feed_block(chunk)
        if len(block):
            block, voiced = self._classify(block)
            self._count_noise(block, voiced)
            for samples, is_voiced in zip(block, voiced):
                self._step(samples, is_voiced, out)
        self._cost_s += time.perf_counter() - t0
        return out

    def flush(self) -> list[Utterance]:
        """End the stream: emit the utterance in progress if long enough, drop a partial frame."""
        t0 = time.perf_counter()
        self._pos += len(self._framer.clear())
        out: list[Utterance] = []
        if self._utt_start is not None:
            self._finish(self._next_index, out)
        # a stream fed after flush starts afresh: no pre-roll across the dropped samples
        self._ring.clear()
        self._frames.clear()
        self._boundary = self._next_index
        self._cost_s += time.perf_counter() - t0
        return out

    def _classify(self, block: np.ndarray) -> tuple[np.ndarray, list[bool]]:
        """Voiced flags for a [n, frame] block, converted to PCM in one vectorised step.

        Per-frame conversion dominated the gate's cost; x * 32768 is exact in float32 and
        rint rounds like ``to_int16``, so the PCM (and every decision) is bit-identical.
        """
        finite = np.isfinite(block)
        bad_rows = ~finite.all(axis=1)
        if bad_rows.any():
            self._invalid_n += int(bad_rows.sum())
            block = np.where(finite, block, np.float32(0.0))
        pcm = np.clip(np.rint(block * np.float32(32768.0)), -32768, 32767).astype(np.int16)
        floor = self.config.energy_floor_dbfs
        quiet = [level_dbfs(row) < floor for row in block] if floor is not None else [False] * len(block)
        is_speech, rate = self._vad.is_speech, self.sample_rate
        return block, [not q and is_speech(row.tobytes(), rate) for q, row in zip(quiet, pcm)]

    def _count_noise(self, block: np.ndarray, voiced: list[bool]) -> None:
        quiet = ~np.asarray(voiced, dtype=bool)
        if quiet.any():
            power = np.mean(np.square(block[quiet], dtype=np.float64), axis=1)
            levels = 10.0 * np.log10(power + 1e-12)
            self._noise += np.bincount(np.searchsorted(NOISE_DBFS_EDGES, levels, side="right"),
                                       minlength=len(self._noise))

    def _step(self, samples: np.ndarray, voiced: bool, out: list[Utterance]) -> None:
        index = self._next_index
        self._next_index += 1
        self._frames.append(_Frame(index, self._pos, samples, voiced))
        self._pos += len(samples)
        self._frames_n += 1
        self._voiced_n += voiced
        self._ring.append(voiced)
        n_voiced = sum(self._ring)
        if self._utt_start is None:
            if n_voiced >= self._start_count:
                self._begin(index)
            else:
                del self._frames[:-self._history]
            return
        if voiced:
            self._last_voiced = index
            if self._first_voiced is None:
                self._first_voiced = index
        if len(self._ring) - n_voiced >= self._end_count:
            self._finish(index + 1, out)
        elif index + 1 - self._utt_start >= self.config.max_frames:
            self._emit(self._utt_start, index + 1, out)
            self._utt_start, self._first_voiced, self._last_voiced = index + 1, None, None
            del self._frames[:index + 1 - self._frames[0].index]  # bounded memory

    def _begin(self, index: int) -> None:
        ring = list(self._ring)
        onset = index - len(ring) + 1 + ring.index(True)
        oldest = self._frames[0].index
        self._utt_start = max(onset - self.config.pre_roll_frames, self._boundary, oldest)
        self._first_voiced = onset
        self._last_voiced = index

    def _finish(self, stop: int, out: list[Utterance]) -> None:
        """End the utterance in progress at frame ``stop`` (exclusive), trimming the tail."""
        start, first, last = self._utt_start, self._first_voiced, self._last_voiced
        self._utt_start = self._first_voiced = self._last_voiced = None
        if first is None or last is None:  # the piece after a split held no speech
            self._boundary = stop
        else:
            end = min(stop, last + 1 + self.config.pre_roll_frames)
            self._boundary = end
            if (last - first + 1) * self.config.frame_ms >= self.config.min_utterance_ms:
                self._emit(start, end, out)
        del self._frames[:-self._history]

    def _emit(self, start: int, stop: int, out: list[Utterance]) -> None:
        offset = self._frames[0].index
        chosen = self._frames[start - offset:stop - offset]
        samples = np.concatenate([f.samples for f in chosen]).astype(np.float32)
        self._samples_passed += len(samples)
        self._boundary = stop
        out.append(Utterance(
            samples=samples, start_sample=chosen[0].start_sample,
            end_sample=chosen[-1].start_sample + len(chosen[-1].samples),
            voiced_frames=sum(f.voiced for f in chosen), sample_rate=self.sample_rate))


def place(samples: np.ndarray, input_samples: int, rule: str = "centre") -> np.ndarray:
    """Fit an utterance into a model window of exactly ``input_samples`` (float32).

    "centre": zero padding split evenly (the extra sample goes after), or a centred crop;
    "start": the utterance starts the window, padded or cropped at the end.
    """
    if rule not in PLACEMENT_RULES:
        raise ConfigError(f"unknown placement rule {rule!r}; use one of {PLACEMENT_RULES}")
    if isinstance(input_samples, bool) or not isinstance(input_samples, (int, np.integer)) \
            or input_samples <= 0:
        raise ConfigError(f"input_samples must be a positive integer, got {input_samples!r}")
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = int(input_samples)
    out = np.zeros(n, dtype=np.float32)
    if len(x) >= n:
        skip = (len(x) - n) // 2 if rule == "centre" else 0
        out[:] = x[skip:skip + n]
    else:
        lead = (n - len(x)) // 2 if rule == "centre" else 0
        out[lead:lead + len(x)] = x
    return out


def cut_clip(samples: np.ndarray, config: GateConfig = GateConfig(),
             sample_rate: int = SAMPLE_RATE) -> Utterance | None:
    """Run a whole clip through a fresh gate; return its longest utterance, or None.

    None means the gate passed nothing (no speech found), not bad input. Ties go to
    the earliest utterance.
    """
    gate = VadGate(config, sample_rate)
    found = gate.feed(samples) + gate.flush()
    if not found:
        return None
    return max(found, key=lambda u: (len(u.samples), -u.start_sample))
