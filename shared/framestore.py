"""The frames a VAD gate holds: their samples in one buffer, and what the gate learnt of each.

Samples stay in the dtype they came in: int16 PCM (a WAV file, stdin, a microphone opened as
int16) or float32 in [-1, 1]. A float chunk arriving while int16 samples are held turns the
held ones into float32 exactly (x / 32768) and the store stays float until it is cleared; an
int16 chunk arriving at a float store is converted the same way. Frames are rows of one
contiguous buffer, so the block of frames a chunk completes and the frames of an utterance
are views, not copies; the buffer is compacted (or grown) only when its end is reached.

Per frame the store keeps the voiced flag and the energy: the sum of the squared int16 values,
an integer held exactly in a float64 (at most 480 × 2^30 < 2^53). Energies are only kept while
the store is int16; they are what makes an utterance's level and SNR cheap and exact.
"""
from __future__ import annotations

import numpy as np

PCM_SCALE = np.float32(1.0 / 32768.0)  # int16 -> float: exact, a power of two
_MIN_ROWS = 64


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """float32 samples in [-1, 1) from int16 PCM (x / 32768, exact), in one pass."""
    return np.multiply(pcm, PCM_SCALE, dtype=np.float32)


class FrameStore:
    """Held frames ``[first, next_frame)`` plus the samples of the partial frame being filled."""

    def __init__(self, frame_samples: int):
        self.frame_samples = frame_samples
        self._buf = np.zeros(frame_samples * _MIN_ROWS, dtype=np.int16)
        self._voiced = np.zeros(_MIN_ROWS, dtype=bool)
        self._energy = np.zeros(_MIN_ROWS, dtype=np.float64)
        self._row = 0  # buffer row of frame ``first``
        self._len = 0  # samples held from there: complete frames, then the partial one
        self.first = 0  # index of the first held frame
        self.first_sample = 0  # stream position of its first sample

    @property
    def is_float(self) -> bool:
        return self._buf.dtype == np.float32

    @property
    def next_frame(self) -> int:
        """Index of the frame the next complete frame will get."""
        return self.first + self._len // self.frame_samples

    def sample_of(self, frame: int) -> int:
        """Stream position of a held frame's first sample."""
        return self.first_sample + (frame - self.first) * self.frame_samples

    # -- filling ----------------------------------------------------------------------
    def append(self, chunk: np.ndarray) -> np.ndarray:
        """Add int16 or float32 samples; return the frames they complete, as a [n, F] view."""
        F = self.frame_samples
        done = self._len // F
        if chunk.dtype != self._buf.dtype:
            chunk = self._match(chunk)
        at = self._row * F + self._len
        if at + len(chunk) > len(self._buf):
            self._make_room(len(chunk))
            at = self._len
        self._buf[at:at + len(chunk)] = chunk
        self._len += len(chunk)
        rows = self._len // F - done
        start = (self._row + done) * F
        return self._buf[start:start + rows * F].reshape(rows, F)

    def _match(self, chunk: np.ndarray) -> np.ndarray:
        if chunk.dtype == np.int16:  # PCM into a float store
            return pcm_to_float(chunk)
        if self._len:  # float into an int16 store: the held samples become float, exactly
            self._buf = pcm_to_float(self._buf)
        else:
            self._buf = np.zeros(len(self._buf), dtype=np.float32)
        return chunk

    def _make_room(self, extra: int) -> None:
        """Move the held samples to the start of the buffer, growing it if they would not fit."""
        F = self.frame_samples
        rows = -(-(self._len + extra) // F) + 1
        held = self._len // F  # complete frames: the partial one has no flag yet
        if 2 * rows > len(self._buf) // F:  # grow, else compact in place
            new_rows = max(2 * rows, _MIN_ROWS)
            buf = np.zeros(new_rows * F, dtype=self._buf.dtype)
            voiced, energy = np.zeros(new_rows, dtype=bool), np.zeros(new_rows, dtype=np.float64)
        else:
            buf, voiced, energy = self._buf, self._voiced, self._energy
        start = self._row * F
        buf[:self._len] = self._buf[start:start + self._len]
        voiced[:held] = self._voiced[self._row:self._row + held]
        energy[:held] = self._energy[self._row:self._row + held]
        self._buf, self._voiced, self._energy, self._row = buf, voiced, energy, 0

    # -- reading ----------------------------------------------------------------------
    def frames(self, a: int, b: int) -> np.ndarray:
        """Samples of held frames ``[a, b)`` as a [b - a, F] view."""
        F = self.frame_samples
        r = self._row + a - self.first
        return self._buf[r * F:(r + b - a) * F].reshape(b - a, F)

    def samples(self, a: int, b: int) -> np.ndarray:
        """Samples of held frames ``[a, b)``, one flat view."""
        return self.frames(a, b).reshape(-1)

    def voiced(self, a: int, b: int) -> np.ndarray:
        r = self._row + a - self.first
        return self._voiced[r:r + b - a]

    def energy(self, a: int, b: int) -> np.ndarray:
        r = self._row + a - self.first
        return self._energy[r:r + b - a]

    # -- dropping ---------------------------------------------------------------------
    def drop_before(self, frame: int) -> None:
        """Forget the frames before ``frame`` (never the partial one)."""
        k = min(frame, self.next_frame) - self.first
        if k > 0:
            self._row += k
            self._len -= k * self.frame_samples
            self.first += k
            self.first_sample += k * self.frame_samples

    def clear(self) -> int:
        """Forget everything, the partial frame too (returns how many samples it held)."""
        partial = self._len % self.frame_samples
        self.first = self.next_frame
        self.first_sample += self._len
        self._row = self._len = 0
        if self.is_float:
            self._buf = np.zeros(len(self._buf), dtype=np.int16)
        return partial
