"""Speaker-disjoint, label-stratified train/dev/test splits, deterministic from a seed.

Whole speakers are assigned, one at a time in a seeded order (largest first), to the split
whose label counts fall furthest short of its target fraction of every label — a greedy
stratified group split. No speaker ever appears in two splits. The same shortfall is also
counted per voice (the part of the speaker name before ``+``: an espeak-ng accent, or
``engine:voice``), so a test split does not end up with twice its share of one accent by
chance, and, when the speakers come from two or more sources (speech engines, imports:
the part before ``:``), per source, so every engine is in every split in proportion.
A voice or source with fewer than three speakers cannot be spread and is no stratum.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cloud.lab.dataset import Clip
from cloud.lab.engines import source_of
from shared.errors import DatasetError

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
# Source columns count double: one source's few, large speakers otherwise fall mostly into train.
SOURCE_WEIGHT = 2.0


@dataclass(frozen=True)
class Split:
    seed: int
    fractions: tuple[float, float, float]
    indices: dict[str, list[int]]  # split name → clip indices, ascending
    speakers: dict[str, list[str]]  # split name → speakers, sorted

    def summary(self) -> dict:
        """Sizes, speakers (counts and sorted names) and seed: what a bundle's lineage records."""
        return {"seed": self.seed, "fractions": list(self.fractions),
                "sizes": {k: len(v) for k, v in self.indices.items()},
                "speakers": {k: len(v) for k, v in self.speakers.items()},
                "speaker_names": {k: list(v) for k, v in self.speakers.items()},
                "method": "greedy stratified speaker-disjoint"}


def split(clips: Sequence[Clip], labels: Sequence[str], seed: int = 0,
          fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Split:
    """Assign every clip to train/dev/test, keeping each speaker's clips together."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    by_speaker: dict[str, list[int]] = defaultdict(list)
    for i, clip in enumerate(clips):
        by_speaker[clip.speaker].append(i)
    if len(by_speaker) < 3:
        raise DatasetError(f"{len(by_speaker)} speaker(s) cannot make three speaker-disjoint splits; "
                           "synthesize with more accents or variants")
    col = {label: j for j, label in enumerate(labels)}
    names = sorted(by_speaker)
    strata = _strata(names)
    vectors = {s: _strata_vector([col[clips[i].label] for i in by_speaker[s]], len(labels), strata, s)
               for s in names}
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    order.sort(key=lambda s: -len(by_speaker[s]))  # stable: ties keep the seeded order
    total = sum(vectors.values()).astype(float)
    target = np.outer(fractions, total)  # [3, L]
    counts = np.zeros_like(target)
    assigned: dict[str, list[str]] = {k: [] for k in SPLITS}
    for pos, s in enumerate(order):
        v = vectors[s]
        empty = [k for k in range(3) if not assigned[SPLITS[k]]]
        if len(empty) >= len(order) - pos:  # as many speakers left as empty splits: fill them
            k = empty[-1]
        else:  # the split whose squared shortfall this speaker reduces most
            k = int(np.argmin([(v * (2 * (counts[k] - target[k]) + v)).sum() for k in range(3)]))
        counts[k] += v
        assigned[SPLITS[k]].append(s)
    indices = {k: sorted(i for s in assigned[k] for i in by_speaker[s]) for k in SPLITS}
    return Split(seed, fractions, indices, {k: sorted(v) for k, v in assigned.items()})


def _strata(names: list[str]) -> list[tuple[frozenset, float]]:
    """The speaker groups counted beside the labels, with their weights: voices, then sources
    when there are two or more; each with at least three speakers."""
    groups: dict[tuple[str, str], set] = defaultdict(set)
    for s in names:
        groups[("voice", s.split("+", 1)[0])].add(s)
    sources: dict[str | None, set] = defaultdict(set)
    for s in names:
        sources[source_of(s)].add(s)
    if len(sources) >= 2:
        for source, members in sources.items():
            groups[("source", str(source))] |= members
    return [(frozenset(groups[k]), SOURCE_WEIGHT if k[0] == "source" else 1.0)
            for k in sorted(groups) if len(groups[k]) >= 3]


def _strata_vector(label_cols: list[int], n_labels: int, strata: list[tuple[frozenset, float]],
                   speaker: str) -> np.ndarray:
    """Label counts, then the speaker's (weighted) clip count in each stratum it is in."""
    v = np.zeros(n_labels + len(strata))
    v[:n_labels] = np.bincount(label_cols, minlength=n_labels)
    for j, (members, weight) in enumerate(strata):
        if speaker in members:
            v[n_labels + j] = weight * len(label_cols)
    return v


def distribution(clips: Sequence[Clip], labels: Sequence[str], sp: Split) -> list[dict]:
    """One row per label: count in the whole set and in each split, with percentages."""
    whole = Counter(c.label for c in clips)
    per = {k: Counter(clips[i].label for i in sp.indices[k]) for k in SPLITS}
    sizes = {k: max(1, len(sp.indices[k])) for k in SPLITS}
    rows = []
    for label in labels:
        row = {"label": label, "all": whole[label], "all_pct": 100.0 * whole[label] / max(1, len(clips))}
        for k in SPLITS:
            row[k] = per[k][label]
            row[f"{k}_pct"] = 100.0 * per[k][label] / sizes[k]
        rows.append(row)
    return rows
