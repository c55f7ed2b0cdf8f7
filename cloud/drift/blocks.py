"""Blocks: consecutive steps merged until they hold enough utterances to say anything.

A busy cohort's block is one step; at a quiet hour a block spans as many steps as it takes to
reach ``min_n`` observations of the kind's primary signals, so a quiet device is neither blind
nor judged on a handful of utterances. The steps after the last full block form a short block
of their own once they hold a third of ``min_n``. Blocks are laid out per cohort from its total counts and then
applied to every device and signal of it with ``reduce``.
"""
from __future__ import annotations

import numpy as np

# Per (kind, score group): the signal whose total measures how much a block holds.
PRIMARY = {("input", "speech"): "utterance_ms", ("input", "frames"): "noise_dbfs",
           ("output", "speech"): "confidence", ("concept", "estimate"): "conf_by_label",
           ("concept", "feedback"): "feedback"}


def primary_n(counts: dict[str, np.ndarray], kind: str, group: str) -> np.ndarray:
    """Per step observations of a score group: ``{signal: [..., T, k]}`` → ``[..., T]``."""
    return counts[PRIMARY[(kind, group)]].sum(axis=-1)


def groups(kind: str) -> list[str]:
    return [g for k, g in PRIMARY if k == kind]


def tail_n(min_n: int) -> int:
    """Observations a short block at the end of the look-back needs (a third of a full block)."""
    return max(1, min_n // 3)


def layout(n_per_step: np.ndarray, min_n: int, tail: int | None = None) -> np.ndarray:
    """Bounds of the blocks: B + 1 step indices, block i covering steps ``[bounds[i], bounds[i + 1])``;
    empty when not even one block fills up.

    The steps after the last full block make one more (short) block when they hold at least
    ``tail`` (default: ``tail_n(min_n)``), so a drift that is plain after a few utterances
    is not kept waiting for a quiet block to fill; a short block's larger sampling variance is in
    its z.
    """
    tail = tail_n(min_n) if tail is None else tail
    starts, acc, start = [], 0, 0
    steps = np.asarray(n_per_step)
    for t, n in enumerate(steps):
        acc += int(n)
        if acc >= min_n:
            starts.append(start)
            acc, start = 0, t + 1
    if acc >= tail and start < len(steps):
        starts.append(start)
        start = len(steps)
    return np.asarray(starts + [start], dtype=np.int64) if starts else np.zeros(0, dtype=np.int64)


def reduce(counts: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``[..., T, k]`` per-step counts → ``[..., B, k]`` per-block counts (``bounds`` from ``layout``)."""
    if len(bounds) < 2:
        return np.zeros(counts.shape[:-2] + (0, counts.shape[-1]), dtype=counts.dtype)
    summed = np.add.reduceat(counts[..., : bounds[-1], :], bounds[:-1], axis=-2)
    return summed


def block_steps(bounds: np.ndarray) -> list[tuple[int, int]]:
    """[(first step, last step + 1)] of each block."""
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
