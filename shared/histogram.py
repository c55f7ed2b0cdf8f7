"""Fixed-edge histograms: the unit of every distribution Harken streams.

Convention (agent, collector and model lab agree on it): edges ``e0 < ... < ek`` give
``k + 2`` counts — ``[x < e0, e0 <= x < e1, ..., x >= ek]`` — so the bin of ``x`` is
``searchsorted(edges, x, side="right")``. Because edges are agreed in advance (fixed grids
here, data-derived ones in the bundle's reference profile), histograms from any set of
windows merge exactly by adding their counts.
"""
from __future__ import annotations

import bisect
import math
import operator
from typing import Iterable, Sequence

import numpy as np


def log_edges(low: float, high: float, per_decade: int) -> list[float]:
    """Log-spaced edges from ``low`` to ``high`` inclusive, rounded to 4 significant digits."""
    decades = math.log10(high / low)
    n = int(round(decades * per_decade))
    return [float(f"{low * 10 ** (i / per_decade):.4g}") for i in range(n + 1)]


# Pre-agreed grids for what does not depend on the model.
LATENCY_MS_EDGES: list[float] = log_edges(0.1, 1000.0, 4)  # 17 edges → 18 bins
UTTERANCE_MS_EDGES: list[float] = [150, 250, 350, 450, 550, 700, 850, 1000, 1250, 1500, 2000]
LEVEL_DBFS_EDGES: list[float] = [-60, -50, -45, -40, -35, -30, -25, -20, -15, -10, -5]
SNR_DB_EDGES: list[float] = [0, 5, 10, 15, 20, 25, 30, 35, 40, 50]
CONFIDENCE_EDGES: list[float] = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
# Level of the frames the gate did not pass (the room and the microphone's own floor).
NOISE_DBFS_EDGES: list[float] = [-90, -80, -75, -70, -65, -60, -55, -50, -45, -40, -30, -20]


def bin_index(edges: Sequence[float], x: float) -> int:
    """Index of the bin that holds ``x`` (NaN goes to the last bin, like +inf)."""
    if x != x:  # NaN
        return len(edges)
    return bisect.bisect_right(edges, x)


def counts_of(edges: Sequence[float], values: Iterable[float]) -> list[int]:
    """Histogram counts of ``values`` over ``edges`` (``len(edges) + 1`` bins)."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    idx = np.searchsorted(np.asarray(edges, dtype=float), arr, side="right")
    idx[np.isnan(arr)] = len(edges)
    return np.bincount(idx, minlength=len(edges) + 1).astype(int).tolist()


def add_counts(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Exact merge of two histograms over the same edges."""
    if len(a) != len(b):
        raise ValueError(f"cannot merge histograms of {len(a)} and {len(b)} bins: edges differ")
    return list(map(operator.add, a, b))


def quantile(edges: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """Approximate quantile from a histogram: linear inside the bin, bin edges outside.

    Returns None for an empty histogram. Values in the open end bins are reported at the
    nearest edge, so a p99 in the overflow bin reads as ">= last edge".
    """
    total = sum(counts)
    if total == 0:
        return None
    target = q * total
    seen = 0.0
    for i, c in enumerate(counts):
        if c and seen + c >= target:
            if i == 0:
                return float(edges[0])
            if i == len(edges):
                return float(edges[-1])
            lo, hi = edges[i - 1], edges[i]
            return float(lo + (hi - lo) * (target - seen) / c)
        seen += c
    return float(edges[-1])


class Histogram:
    """A mutable histogram over fixed edges, for accumulating one window."""

    __slots__ = ("edges", "counts")

    def __init__(self, edges: Sequence[float], counts: Sequence[int] | None = None):
        self.edges = list(edges)
        self.counts = list(counts) if counts is not None else [0] * (len(self.edges) + 1)
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError("a histogram over k edges has k + 1 counts")

    def update(self, x: float) -> "Histogram":
        self.counts[bin_index(self.edges, x)] += 1
        return self

    @property
    def total(self) -> int:
        return sum(self.counts)

    def reset(self) -> None:
        self.counts = [0] * (len(self.edges) + 1)
