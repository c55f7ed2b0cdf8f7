"""The vectorised gate rules against the per-frame rules they replaced, on random flag streams."""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from shared.gate import GateConfig
from shared.segmenter import Segmenter


class PerFrameRules:
    """The rules as the gate applied them before the speed work: one Python step per frame
    (``VadGate._step``, ``_begin``, ``_finish`` and ``_emit`` of commit ade0890, without the audio)."""

    def __init__(self, config: GateConfig):
        self.config = config
        n = config.ring_frames
        self.start_count = max(1, math.ceil(config.start_ratio * n - 1e-9))
        self.end_count = max(1, math.ceil(config.end_ratio * n - 1e-9))
        self.ring: deque[bool] = deque(maxlen=n)
        self.history = n + config.pre_roll_frames
        self.frames: list[int] = []  # indices of the frames held
        self.start = self.first = self.last = None
        self.boundary = self.next = 0

    def step(self, voiced: bool, out: list) -> None:
        index = self.next
        self.next += 1
        self.frames.append(index)
        self.ring.append(voiced)
        n_voiced = sum(self.ring)
        if self.start is None:
            if n_voiced >= self.start_count:
                ring = list(self.ring)
                onset = index - len(ring) + 1 + ring.index(True)
                self.start = max(onset - self.config.pre_roll_frames, self.boundary, self.frames[0])
                self.first, self.last = onset, index
            else:
                del self.frames[:-self.history]
            return
        if voiced:
            self.last = index
            if self.first is None:
                self.first = index
        if len(self.ring) - n_voiced >= self.end_count:
            self.finish(index + 1, out)
        elif index + 1 - self.start >= self.config.max_frames:
            out.append((self.start, index + 1))
            self.boundary = index + 1
            self.start, self.first, self.last = index + 1, None, None
            del self.frames[:index + 1 - self.frames[0]]

    def finish(self, stop: int, out: list) -> None:
        start, first, last = self.start, self.first, self.last
        self.start = self.first = self.last = None
        if first is None or last is None:
            self.boundary = stop
        else:
            end = min(stop, last + 1 + self.config.pre_roll_frames)
            self.boundary = end
            if (last - first + 1) * self.config.frame_ms >= self.config.min_utterance_ms:
                out.append((start, end))
        del self.frames[:-self.history]

    def flush(self, out: list) -> None:
        if self.start is not None:
            self.finish(self.next, out)
        self.ring.clear()
        self.frames.clear()
        self.boundary = self.next


def random_config(rng) -> GateConfig:
    frame_ms = int(rng.choice([10, 20, 30]))
    pre_roll = int(rng.integers(0, 400))
    max_ms = int(rng.integers(pre_roll + frame_ms + 1, 3000))
    return GateConfig(frame_ms=frame_ms, padding_ms=int(rng.integers(frame_ms, 600)),
                      start_ratio=float(rng.uniform(0.05, 1.0)), end_ratio=float(rng.uniform(0.05, 1.0)),
                      pre_roll_ms=pre_roll, min_utterance_ms=int(rng.integers(0, min(max_ms, 500) + 1)),
                      max_utterance_ms=max_ms)


def random_flags(rng, n: int) -> np.ndarray:
    """Runs of speech and silence with flicker, like a VAD's output."""
    out, voiced = [], bool(rng.integers(2))
    while sum(map(len, out)) < n:
        run = np.full(int(rng.geometric(1 / rng.choice([3, 15, 60]))), voiced)
        flicker = rng.random(len(run)) < rng.choice([0.0, 0.1, 0.3])
        out.append(run ^ flicker)
        voiced = not voiced
    return np.concatenate(out)[:n]


@pytest.mark.parametrize("seed", range(300))
def test_pieces_match_the_per_frame_rules_for_any_config_and_blocking(seed):
    rng = np.random.default_rng(seed)
    config = GateConfig() if seed < 20 else random_config(rng)
    flags = random_flags(rng, int(rng.integers(1, 3000)))
    reference, expected = PerFrameRules(config), []
    fast, got = Segmenter(config), []
    flush_at = set(rng.integers(0, len(flags), size=int(rng.integers(0, 3))).tolist())
    pos = 0
    while pos < len(flags):
        size = int(rng.choice([1, 2, 8, 33, 500, 5000]))
        block = flags[pos:pos + size]
        for i, f in enumerate(block):
            reference.step(bool(f), expected)
            if pos + i in flush_at:
                reference.flush(expected)
        cut = sorted(c - pos for c in flush_at if pos <= c < pos + len(block))
        prev = 0
        for c in cut:  # the fast rules see the flush at the same frame
            got += fast.update(block[prev:c + 1])
            got += fast.flush()
            prev = c + 1
        got += fast.update(block[prev:])
        assert fast.in_utterance == (reference.start is not None)
        pos += len(block)
    reference.flush(expected)
    got += fast.flush()
    assert got == expected
    for start, stop in got:
        assert 0 <= start < stop <= len(flags)
        # a split is checked from the frame after the start, which may reach back a whole ring
        assert stop - start <= max(config.max_frames, config.ring_frames + config.pre_roll_frames + 1)


def test_keep_from_never_passes_a_start_that_is_still_to_come():
    """Every piece starts at or after the keep_from reported before the flags that completed it."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        config = random_config(rng)
        seg = Segmenter(config)
        flags = random_flags(rng, 2000)
        for i in range(0, len(flags), 7):
            keep = seg.keep_from
            for start, _ in seg.update(flags[i:i + 7]):
                assert start >= keep


def test_a_block_where_nothing_can_change_takes_the_fast_path(monkeypatch):
    seg = Segmenter(GateConfig())
    scan, never = seg._scan, lambda *a: pytest.fail("scanned a block where nothing could change")
    monkeypatch.setattr(seg, "_scan", never)
    assert seg.update(np.zeros(1000, bool)) == [] and not seg.in_utterance
    monkeypatch.setattr(seg, "_scan", scan)
    seg.update(np.ones(20, bool))
    assert seg.in_utterance
    monkeypatch.setattr(seg, "_scan", never)
    assert seg.update(np.ones(30, bool)) == []  # 50 voiced frames: not yet 2 s
    monkeypatch.setattr(seg, "_scan", scan)
    pieces = seg.update(np.ones(30, bool))
    assert pieces == [(seg.keep_from - 66, seg.keep_from)]  # split at 66 frames of 30 ms
