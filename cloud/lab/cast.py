"""Who speaks in a synthesized dataset: each engine's voices, variants and share of the clips.

A dataset mixes engines so that a model hears more than one synthesizer. espeak-ng brings
many speakers (8 accents x 31 variants) but one synthesis method (formant); the others bring
few voices each (made into 9 speakers per voice by ``engines.variation``) but other methods
(diphone concatenation: mbrola, festival's kal and ked; HTS: festival's slt, rhvoice;
clustergen: flite; pico's own). Their shares of the clips are set, not left to the
speaker counts, so the small engines are not drowned out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from cloud.lab import engines
from cloud.lab.engines import espeak
from shared.errors import DatasetError

log = logging.getLogger(__name__)

# Roughly by base voices (espeak-ng's 8 accents share one method; mbrola 4, festival 3, flite 4,
# pico 2, rhvoice 6 voices), so that no engine's few voices are drowned out.
DEFAULT_SHARES = {"espeak-ng": 0.25, "mbrola": 0.15, "festival": 0.15, "flite": 0.15, "pico": 0.1, "rhvoice": 0.2}


@dataclass(frozen=True)
class Cast:
    """One engine's part of a dataset."""

    engine: str
    voices: tuple[str, ...]
    variants: tuple[str, ...]
    share: float

    def speakers(self) -> list[str]:
        return [engines.speaker_name(self.engine, v, x) for v in self.voices for x in self.variants]


def default_cast(engine_names: Sequence[str] = engines.ENGINES, accents: Sequence[str] | None = None,
                 variants: Sequence[str] | None = None, shares: Mapping[str, float] | None = None) -> list[Cast]:
    """Every named engine with its default voices and variants; ``accents`` and ``variants``
    choose espeak-ng's. Shares default to ``DEFAULT_SHARES`` and are normalised to sum to 1."""
    names = list(dict.fromkeys(engine_names))
    if not names:
        raise DatasetError(f"no speech engine chosen; use --engines {','.join(engines.ENGINES)}")
    shares = dict(shares or DEFAULT_SHARES)
    weights = {n: float(shares.get(n, 1.0 / len(names))) for n in names}
    if min(weights.values()) <= 0:
        raise DatasetError(f"engine shares must be positive, got {weights}")
    total = sum(weights.values())
    out = []
    for name in names:
        engine = engines.create(name)
        if name == "espeak-ng":
            vs, xs = tuple(accents or espeak.ACCENTS), tuple(variants or espeak.VARIANTS)
        else:
            vs, xs = engine.voices(), engine.variants()
        out.append(Cast(name, vs, xs, weights[name] / total))
    return out


def check(cast: Sequence[Cast]) -> dict[str, str]:
    """Raise ``DatasetError`` (saying what to install) unless every engine and voice is here;
    return each engine's version."""
    versions = {}
    for part in cast:
        engine = engines.create(part.engine)
        try:
            engine.check(part.voices)
            versions[part.engine] = engine.version()
        finally:
            engine.close()
    return versions


def interleave(shares: Sequence[float], n: int) -> list[int]:
    """Which part each of ``n`` positions goes to: each next position to the part furthest
    below its share so far (ties to the first), so every prefix keeps the shares."""
    shares = np.asarray(shares, dtype=float)
    counts = np.zeros(len(shares))
    out = []
    for i in range(n):
        k = int(np.argmax(shares * (i + 1) - counts))
        counts[k] += 1
        out.append(k)
    return out


def describe(cast: Sequence[Cast], versions: Mapping[str, str]) -> list[dict]:
    """The cast as the dataset manifest records it."""
    return [{"engine": c.engine, "version": versions.get(c.engine), "voices": list(c.voices),
             "variants": list(c.variants), "share": round(c.share, 6), "speakers": len(c.voices) * len(c.variants)}
            for c in cast]
