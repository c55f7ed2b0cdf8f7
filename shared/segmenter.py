"""The gate's start / end / split rules over a stream of voiced flags, vectorised.

``Segmenter.update(flags)`` takes the voiced flags of the next frames (any number) and returns
the pieces ``(start, stop)`` (frame indices, stop exclusive) that they complete. The rules are
those of ``shared.gate`` (see its docstring), and the result is the same, frame for frame, as
checking them after every frame: the ring counts come from a cumulative sum of the flags, and
Python runs once per state change (an utterance starts, ends or is split), not once per frame.
A block in which no state can change (too few voiced flags to start, too few unvoiced to end)
costs two counts. Pure numpy; no audio here.
"""
from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from shared.gate_config import GateConfig

_NONE = np.zeros(0, dtype=bool)


class Segmenter:
    """Streaming rules: ``update(flags)`` returns completed pieces; ``flush`` ends the stream."""

    def __init__(self, config: "GateConfig"):
        self.config = config
        n = config.ring_frames
        self._ring = n
        self._start_count = max(1, math.ceil(config.start_ratio * n - 1e-9))
        self._end_count = max(1, math.ceil(config.end_ratio * n - 1e-9))
        self._pre = config.pre_roll_frames
        self._max = config.max_frames
        self._history = n + config.pre_roll_frames  # frames a future start may reach back to
        self._next = 0  # index of the next frame
        self._tail = _NONE  # flags of the last ring - 1 frames since the ring was cleared
        self._tail_voiced = 0
        self._start: int | None = None  # first frame of the utterance in progress
        self._first: int | None = None  # its first and last voiced frames
        self._last: int | None = None
        self._boundary = 0  # an utterance may not start before this frame

    @property
    def in_utterance(self) -> bool:
        return self._start is not None

    @property
    def keep_from(self) -> int:
        """No piece returned later starts before this frame."""
        if self._start is not None:
            return self._start
        return max(self._boundary, self._next - self._history)

    def update(self, flags: np.ndarray, n_voiced: int | None = None) -> list[tuple[int, int]]:
        """Voiced flags (bool) of the next frames (``n_voiced`` of them True, if the caller
        counted); returns the pieces they complete."""
        v = flags if type(flags) is np.ndarray and flags.dtype == bool and flags.ndim == 1 \
            else np.asarray(flags, dtype=bool).reshape(-1)
        n, g0 = len(v), self._next
        if n == 0:
            return []
        out: list[tuple[int, int]] = []
        if n_voiced is None:
            n_voiced = int(np.count_nonzero(v))
        tail_voiced = self._tail_voiced
        if self._start is None and tail_voiced + n_voiced < self._start_count:
            pass  # nothing can start in this block
        elif self._start is not None and self._quiet_block(v, n_voiced, tail_voiced, g0):
            if n_voiced:
                self._see_voiced(v, g0)
        else:
            self._scan(v, g0, out)
        self._next = g0 + n
        keep = self._ring - 1
        if keep:
            self._tail = v[-keep:].copy() if n >= keep else np.concatenate([self._tail, v])[-keep:]
            if n_voiced == tail_voiced == 0:
                self._tail_voiced = 0
            elif n_voiced == n >= keep:
                self._tail_voiced = keep
            else:
                self._tail_voiced = int(np.count_nonzero(self._tail))
        return out

    def flush(self) -> list[tuple[int, int]]:
        """End of the stream: end the utterance in progress; the next stream starts afresh."""
        out: list[tuple[int, int]] = []
        if self._start is not None:
            self._finish(self._next, out)
        self._tail, self._tail_voiced = _NONE, 0
        self._boundary = self._next
        return out

    # -- the rules --------------------------------------------------------------------
    def _quiet_block(self, v: np.ndarray, n_voiced: int, tail_voiced: int, g0: int) -> bool:
        """In an utterance: True when no frame of the block can end or split it."""
        unvoiced = (len(self._tail) - tail_voiced) + (len(v) - n_voiced)
        split_frame = self._start + self._max - 1
        return unvoiced < self._end_count and split_frame >= g0 + len(v)

    def _scan(self, v: np.ndarray, g0: int, out: list) -> None:
        """Find every state change in the block, from the ring count at each frame."""
        tail = self._tail
        h, n = len(tail), len(v)
        flags = np.concatenate([tail, v]) if h else v
        csum = np.zeros(h + n + 1, dtype=np.int64)
        np.cumsum(flags, out=csum[1:])
        ends = np.arange(h + 1, h + n + 1)
        begins = np.maximum(ends - self._ring, 0)  # the ring of frame k is flags[begins[k]:ends[k]]
        voiced = csum[ends] - csum[begins]
        unvoiced = (ends - begins) - voiced
        can_start = np.flatnonzero(voiced >= self._start_count).tolist()
        can_end = np.flatnonzero(unvoiced >= self._end_count).tolist()
        voiced_at = np.flatnonzero(flags).tolist()  # positions in flags (tail + block)
        k = 0
        while k < n:  # once per state change; bisect on lists: cheaper than numpy on a handful of values
            if self._start is None:
                i = bisect.bisect_left(can_start, k)
                if i == len(can_start):
                    return
                j = can_start[i]
                onset = voiced_at[bisect.bisect_left(voiced_at, int(begins[j]))] - h + g0
                self._start = max(onset - self._pre, self._boundary)
                self._first, self._last = onset, g0 + j
                k = j + 1
                continue
            i = bisect.bisect_left(can_end, k)
            end = can_end[i] if i < len(can_end) else n
            split = max(k, self._start + self._max - 1 - g0)
            event = min(end, split)
            lo, hi = bisect.bisect_left(voiced_at, h + k), bisect.bisect_right(voiced_at, h + min(event, n - 1))
            if hi > lo:  # voiced frames among k..event: move the utterance's first / last
                self._last = voiced_at[hi - 1] - h + g0
                if self._first is None:
                    self._first = voiced_at[lo] - h + g0
            if event >= n:
                return
            if end <= split:
                self._finish(g0 + end + 1, out)
            else:
                out.append((self._start, g0 + split + 1))
                self._boundary = g0 + split + 1
                self._start, self._first, self._last = g0 + split + 1, None, None
            k = event + 1

    def _see_voiced(self, v: np.ndarray, g0: int) -> None:
        """Move the first / last voiced frame of the utterance over a whole block."""
        at = np.flatnonzero(v)
        if len(at):
            self._last = g0 + int(at[-1])
            if self._first is None:
                self._first = g0 + int(at[0])

    def _finish(self, stop: int, out: list) -> None:
        """End the utterance at frame ``stop`` (exclusive), trimming the tail to the pre-roll."""
        start, first, last = self._start, self._first, self._last
        self._start = self._first = self._last = None
        if first is None or last is None:  # the piece after a split held no speech
            self._boundary = stop
            return
        end = min(stop, last + 1 + self._pre)
        self._boundary = end
        if (last - first + 1) * self.config.frame_ms >= self.config.min_utterance_ms:
            out.append((start, end))
