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

The settings are ``shared.gate_config.GateConfig``; the rules run vectorised in
``shared.segmenter``; the held frames live in ``shared.framestore``. Audio is int16 PCM or
float: a 16-bit source stays int16 all the way to webrtcvad.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import webrtcvad
from _webrtcvad import process as _vad_process  # what Vad.is_speech calls, without its wrapper

from shared.audio import SAMPLE_RATE
from shared.errors import ConfigError
from shared.framestore import PCM_SCALE, FrameStore, pcm_to_float
from shared.gate_config import GateConfig  # noqa: F401  (imported from here by the lab and the agent)
from shared.histogram import NOISE_DBFS_EDGES
from shared.levels import (CLIP_THRESHOLD, SNR_FRAME_SAMPLES, clipped_fraction, level_dbfs, level_from_power,
                           levels_from_powers, snr_db, snr_from_powers)
from shared.segmenter import Segmenter

PLACEMENT_RULES = ("centre", "start")
VAD_SAMPLE_RATES = (8000, 16000, 32000, 48000)


@dataclass(frozen=True, eq=False)
class Utterance:
    """A stretch of speech cut by the gate; positions count samples since the gate started.

    ``audio`` is what the gate held: int16 PCM, or float32 when it was fed float; ``samples`` is
    it as float32 in [-1, 1] (converted on first use: the model places the PCM itself).
    ``frame_energy`` (the sum of squared int16 values of each gate frame) and ``clipped_samples``
    are set when the gate held int16 audio fed in large blocks; ``levels`` then reads them instead
    of the samples. Fed live (small chunks), the gate leaves them out so the decision waits for
    none of it, and ``levels`` computes them from the int16 audio when asked (the same floats).
    """

    audio: np.ndarray
    start_sample: int
    end_sample: int
    voiced_frames: int
    sample_rate: int = SAMPLE_RATE
    frame_energy: np.ndarray | None = None
    clipped_samples: int | None = None

    @property
    def duration_ms(self) -> float:
        return 1000.0 * (self.end_sample - self.start_sample) / self.sample_rate

    @functools.cached_property
    def samples(self) -> np.ndarray:
        """float32 in [-1, 1): the PCM / 32768 (exact), or the float audio as it was fed."""
        return pcm_to_float(self.audio) if self.audio.dtype == np.int16 else self.audio

    def levels(self) -> tuple[float, float, float]:
        """(level dBFS, SNR dB, clipped fraction): ``shared.levels`` of the samples, bit for bit.

        From the frame energies when the gate kept them: their sum is the utterance's energy
        exactly (integers below 2^53) and, with 480-sample frames, they are the frames
        ``snr_db`` cuts. Otherwise (float audio) from the samples.
        """
        energy, clipped, n = self.frame_energy, self.clipped_samples, len(self.audio)
        if energy is None and self.audio.dtype == np.int16 and n and n % SNR_FRAME_SAMPLES == 0:
            energy, clipped = frame_energies(self.audio.reshape(-1, SNR_FRAME_SAMPLES)), clipped_count(self.audio)
        usable = energy is not None and len(energy) and n == len(energy) * SNR_FRAME_SAMPLES
        total = float(energy.sum()) if usable else None
        if total is None or total >= 2.0 ** 53:  # no energies, or not exact any more: read the samples
            x = self.samples
            return level_dbfs(x), snr_db(x), clipped_fraction(x)
        return (level_from_power(total / (n * _PCM_SCALE)), snr_from_powers(energy / (SNR_FRAME_SAMPLES * _PCM_SCALE)),
                clipped / n)


def frame_energies(frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Sum of the squared values of each row of int16 ``frames``, as float64: exact integers (below
    2^53), so any order of summation gives the same value. One float64 dot product per row, over
    ``_ENERGY_ROWS`` rows at a time so their float64 copy stays in cache."""
    if out is None:
        out = np.empty(len(frames), dtype=np.float64)
    for i in range(0, len(frames), _ENERGY_ROWS):
        wide = frames[i:i + _ENERGY_ROWS].astype(np.float64)[:, None, :]
        np.matmul(wide, wide.transpose(0, 2, 1), out=out[i:i + _ENERGY_ROWS].reshape(-1, 1, 1))
    return out


_ENERGY_ROWS = 64  # 245 KB of float64 per step; a 10 s block at once (1.3 MB) cost 1-3 % more CPU on silence


def clipped_count(pcm: np.ndarray) -> int:
    """int16 samples at or beyond the clipping threshold."""
    if not len(pcm) or (-_CLIP_PCM < pcm.min() and pcm.max() < _CLIP_PCM):
        return 0
    return int(np.count_nonzero(pcm >= _CLIP_PCM)) + int(np.count_nonzero(pcm <= -_CLIP_PCM))


def as_audio(chunk) -> np.ndarray:
    """1-D int16 PCM as it is, anything else as float32 (no copy when it already is)."""
    if type(chunk) is np.ndarray and chunk.ndim == 1 and chunk.dtype in _AUDIO_DTYPES:
        return chunk
    chunk = np.asarray(chunk)
    if chunk.dtype == np.int16:
        return chunk.reshape(-1)
    return chunk.astype(np.float32, copy=False).reshape(-1)


_AUDIO_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))
_PCM_SCALE = 2.0 ** 30  # (x / 32768)^2 = x^2 / 2^30, exact
_CLIP_PCM = math.ceil(CLIP_THRESHOLD * 32768)  # |x| / 32768 >= CLIP_THRESHOLD  <=>  |x| >= _CLIP_PCM


class VadGate:
    """Streaming VAD gate: ``feed`` chunks of any length, ``flush`` at the end of the stream.

    Chunks are int16 PCM or float in [-1, 1]. Keep a 16-bit source int16: the gate then hands
    webrtcvad the samples as they are and converts to float once per utterance. Per chunk it
    does what cannot wait (webrtcvad on each new frame, the rules on their flags). The frames'
    energies, which the noise floor and the utterances' levels read, are kept in the frame store:
    a block of ``SETTLE_FRAMES`` frames or more (replay) gets them as it arrives, while its samples
    are in cache, and so does every chunk when an ``energy_floor_dbfs`` needs them to classify;
    frames fed live get them later, in one step for many frames (when the noise floor is read,
    ``SETTLE_FRAMES`` frames wait to be dropped, or the stream is flushed). Fed live (chunks under
    ``SETTLE_FRAMES`` frames), none of that runs in the chunk that completes an utterance: the
    utterance computes its own levels when they are read, after the decision, and the next chunk
    settles the frames.
    """

    SETTLE_FRAMES = 256

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
        self._store = FrameStore(self.frame_samples)
        self._rules = Segmenter(config)
        self._settled = 0  # frames before this one have their energy and noise level counted
        self._measured = 0  # frames before this one have their energy in the store (int16 only)
        self._frames_n = self._voiced_n = self._invalid_n = 0
        self._noise = np.zeros(len(NOISE_DBFS_EDGES) + 1, dtype=np.int64)
        self._quiet: list[np.ndarray] = []  # powers of unvoiced frames not yet in the noise floor
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
        self._settle(self._store.next_frame)
        self._count_noise()
        return self._noise.copy()

    @property
    def pass_ratio(self) -> float:
        """Fraction of the fed samples that left the gate inside an utterance."""
        return self._samples_passed / self._samples_in if self._samples_in else 0.0

    @property
    def in_utterance(self) -> bool:
        """True while an utterance is in progress."""
        return self._rules.in_utterance

    # -- streaming --------------------------------------------------------------------
    def feed(self, chunk: np.ndarray) -> list[Utterance]:
        """Take int16 PCM or float samples (any length); return the utterances completed by them."""
        t0 = time.perf_counter()
        chunk = as_audio(chunk)
        self._samples_in += len(chunk)
        store = self._store
        first = store.next_frame
        block = store.append(chunk)
        out: list[Utterance] = []
        if len(block):
            live = len(block) < self.SETTLE_FRAMES  # fed a few frames at a time: a decision waits on this
            voiced, n_voiced = self._classify(block, first, live)
            pieces = self._rules.update(voiced, n_voiced)
            if pieces:
                out = [self._utterance(a, b, live) for a, b in pieces]
            keep = self._rules.keep_from
            # fed live, the chunk that completes an utterance leaves settling to the next chunk
            if keep - store.first >= self.SETTLE_FRAMES and not (out and live):
                self._settle(store.next_frame)
                store.drop_before(keep)
        self._cost_s += time.perf_counter() - t0
        return out

    def flush(self) -> list[Utterance]:
        """End the stream: emit the utterance in progress if long enough, drop a partial frame."""
        t0 = time.perf_counter()
        out = [self._utterance(a, b, False) for a, b in self._rules.flush()]
        self._settle(self._store.next_frame)
        self._store.clear()  # a stream fed after flush starts afresh: no pre-roll across the gap
        self._settled = self._measured = self._store.first
        self._cost_s += time.perf_counter() - t0
        return out

    def _classify(self, block: np.ndarray, first: int, live: bool) -> tuple[np.ndarray, int]:
        """Voiced flags of a [n, frame] block of new frames, and how many are voiced.

        int16 frames get their energies here, kept in the store, when the floor needs them or the
        block is large (its samples are still in cache); fed live, they wait until they settle."""
        store, floor = self._store, self.config.energy_floor_dbfs
        pcm = self._float_pcm(block) if store.is_float else block
        energy = None
        if not store.is_float and (floor is not None or not live):
            self._measure(first + len(block))
            energy = store.energy(first, first + len(block))
        quiet = None
        if floor is not None:
            quiet = levels_from_powers(self._powers(block, energy)) < floor
        voiced = self._vad_flags(pcm, quiet)
        store.voiced(first, first + len(block))[:] = voiced
        n_voiced = int(np.count_nonzero(voiced))
        self._frames_n += len(voiced)
        self._voiced_n += n_voiced
        return voiced, n_voiced

    def _float_pcm(self, block: np.ndarray) -> np.ndarray:
        """Zero NaN and inf (in place, counted); PCM for webrtcvad in one vectorised step.

        x * 32768 is exact in float32 and rint rounds like ``to_int16``, so the PCM is what a
        per-frame conversion would give."""
        finite = np.isfinite(block)
        bad_rows = ~finite.all(axis=1)
        if bad_rows.any():
            self._invalid_n += int(bad_rows.sum())
            block[~finite] = 0.0
        return np.clip(np.rint(block * np.float32(32768.0)), -32768, 32767).astype(np.int16)

    def _vad_flags(self, pcm: np.ndarray, quiet: np.ndarray | None) -> np.ndarray:
        """webrtcvad on every frame (in order: it adapts), skipping those under the energy floor."""
        # frames as slices of one memoryview (no copy of the block), flags (bools) gathered as bytes
        data, step, n = memoryview(pcm).cast("B"), 2 * self.frame_samples, self.frame_samples
        handle, rate = self._vad._vad, self.sample_rate
        if quiet is None:
            flags = bytes([_vad_process(handle, rate, data[i:i + step], n) for i in range(0, len(data), step)])
        else:
            flags = bytes([not q and _vad_process(handle, rate, data[i:i + step], n)
                           for q, i in zip(quiet.tolist(), range(0, len(data), step))])
        return np.frombuffer(flags, dtype=bool)

    def _powers(self, frames: np.ndarray, energy: np.ndarray | None = None) -> np.ndarray:
        """Mean square of each frame, as ``level_dbfs`` computes it on the float samples.

        From int16, the sum of squares is an exact integer (below 2^53), so dividing it once by
        frame_samples * 2^30 rounds exactly as the mean of (x / 32768)^2 does. ``energy``: the
        frames' energies when they are known already."""
        if frames.dtype == np.float32:
            return np.mean(np.square(frames, dtype=np.float64), axis=1)
        return (frame_energies(frames) if energy is None else energy) / (self.frame_samples * _PCM_SCALE)

    def _settle(self, upto: int) -> None:
        """Energies of the frames up to ``upto``, and the levels of the unvoiced ones in the noise floor."""
        a = self._settled
        if upto <= a:
            return
        store = self._store
        if store.is_float:
            power = self._powers(store.frames(a, upto))
        else:
            self._measure(upto)
            power = store.energy(a, upto) / (self.frame_samples * _PCM_SCALE)
        self._quiet.append(power[~store.voiced(a, upto)])
        if len(self._quiet) >= 64:
            self._count_noise()
        self._settled = upto

    def _measure(self, upto: int) -> None:
        """Energies of the held int16 frames up to ``upto`` into the store, for those not there yet
        (frames fed live wait until they settle or a large block arrives)."""
        a = self._measured
        if a < upto:
            frame_energies(self._store.frames(a, upto), self._store.energy(a, upto))
            self._measured = upto

    def _count_noise(self) -> None:
        """Count the waiting unvoiced powers into the noise floor, all in one step."""
        if self._quiet:
            quiet = np.concatenate(self._quiet) if len(self._quiet) > 1 else self._quiet[0]
            self._quiet.clear()
            levels = 10.0 * np.log10(quiet + 1e-12)
            self._noise += np.bincount(np.searchsorted(NOISE_DBFS_EDGES, levels, side="right"),
                                       minlength=len(self._noise))

    def _utterance(self, start: int, stop: int, live: bool) -> Utterance:
        """The held frames ``[start, stop)``; with their energies and clipping unless fed ``live``
        (then the utterance computes them itself when its levels are read, after the decision)."""
        store = self._store
        held = store.samples(start, stop).copy()
        energy, clipped = None, None
        if not live and not store.is_float:  # the noise floor takes these frames later, when they settle
            self._measure(stop)
            energy, clipped = store.energy(start, stop).copy(), clipped_count(held)
        self._samples_passed += len(held)
        begin = store.sample_of(start)
        return Utterance(audio=held, start_sample=begin, end_sample=begin + len(held),
                         voiced_frames=int(np.count_nonzero(store.voiced(start, stop))),
                         sample_rate=self.sample_rate, frame_energy=energy, clipped_samples=clipped)


def place(samples: np.ndarray, input_samples: int, rule: str = "centre",
          out: np.ndarray | None = None) -> np.ndarray:
    """Fit an utterance into a model window of exactly ``input_samples`` (float32).

    "centre": zero padding split evenly (the extra sample goes after), or a centred crop;
    "start": the utterance starts the window, padded or cropped at the end. int16 samples are
    PCM (x / 32768, converted as they are copied). ``out``, if given, is a float32 array of
    ``input_samples`` to fill (and return) instead of a new one.
    """
    if rule not in PLACEMENT_RULES:
        raise ConfigError(f"unknown placement rule {rule!r}; use one of {PLACEMENT_RULES}")
    if isinstance(input_samples, bool) or not isinstance(input_samples, (int, np.integer)) \
            or input_samples <= 0:
        raise ConfigError(f"input_samples must be a positive integer, got {input_samples!r}")
    x = np.asarray(samples)
    x = x.reshape(-1) if x.dtype == np.int16 else x.astype(np.float32, copy=False).reshape(-1)
    n = int(input_samples)
    if out is None:
        out = np.zeros(n, dtype=np.float32)
    elif out.shape != (n,) or out.dtype != np.float32:
        raise ConfigError(f"out must be float32 of shape ({n},), got {out.dtype} {out.shape}")
    if len(x) >= n:
        skip = (len(x) - n) // 2 if rule == "centre" else 0
        _copy_audio(x[skip:skip + n], out)
    else:
        lead = (n - len(x)) // 2 if rule == "centre" else 0
        out[:lead] = 0.0
        _copy_audio(x, out[lead:lead + len(x)])
        out[lead + len(x):] = 0.0
    return out


def _copy_audio(x: np.ndarray, out: np.ndarray) -> None:
    if x.dtype == np.int16:
        np.multiply(x, PCM_SCALE, out=out, dtype=np.float32)  # what pcm_to_float gives, without the copy
    else:
        out[:] = x


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
    return max(found, key=lambda u: (len(u.audio), -u.start_sample))
