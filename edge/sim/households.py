"""Who speaks on each simulated device: a household drawn from a pool of speakers.

``speaker_split`` says which speakers the pool holds:

    all    every speaker of the dataset (less the new-speakers scenario's held-out share)
    test   the test split of the bundle the devices run, as its manifest records it
           (``lineage.split.speaker_names``): voices that neither training nor the reference
           profile (built on the dev split) ever heard, so a healthy fleet plays unseen speech
    auto   test when the bundle records its split, else all

``speakers_per_device = (lo, hi)`` gives each device lo..hi speakers (uniform, seeded per
device, at most the pool's size); ``None`` lets every device hear the whole pool (the
simulator's first behaviour).

``_unknown_`` clips are speech (other words): the household says them in its own voices.
``_silence_`` clips are background sounds; the dataset names a speaker for them only to keep
the splits apart. Each utterance slot of a device is a ``_silence_`` clip with the pool's
share of silence clips, drawn from the whole pool's silence clips, so every device's label
mix is the pool's whatever the size of its household, and under ``test`` no clip of a
training or reference speaker ever plays. A clip without a speaker is background in any pool.

new-speakers: at the onset, a targeted device's household is replaced by a new one of the
same size, drawn from voices outside the pool: under ``test`` a seeded share
(``held_out_fraction``) of the train split's speakers, under ``all`` the held-out share of all
speakers, which then never plays before the onset. They play shifted (scenarios.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.sim.scenarios import ScenarioParams
from shared.bundle import load_bundle
from shared.errors import BundleError, ConfigError, DatasetError

SPEAKER_SPLITS = ("auto", "test", "all")
SPLIT_NAMES = ("train", "dev", "test")


def held_out_speakers(speakers: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded share of ``speakers``, at least one, never all."""
    if len(speakers) < 2:
        raise DatasetError(f"new-speakers needs at least two speakers to hold some out, it has {len(speakers)}")
    n = min(len(speakers) - 1, max(1, round(fraction * len(speakers))))
    order = np.random.default_rng([seed, 15485863]).permutation(len(speakers))
    return {speakers[i] for i in order[:n]}


def split_speaker_names(manifest: dict) -> dict[str, list[str]] | None:
    """``lineage.split.speaker_names`` of a bundle manifest, or None when it does not record them."""
    names = ((manifest.get("lineage") or {}).get("split") or {}).get("speaker_names")
    if not isinstance(names, dict) or not all(isinstance(names.get(k), list) for k in SPLIT_NAMES):
        return None
    return {k: [str(s) for s in names[k]] for k in SPLIT_NAMES}


def bundle_split(path: str) -> dict[str, list[str]] | None:
    """The speakers of each split a bundle was trained and evaluated on (inspection only: the
    devices verify the bundle's signature themselves)."""
    try:
        return split_speaker_names(load_bundle(path, None, require_signature=False).manifest)
    except BundleError as exc:
        raise ConfigError(f"cannot read the speaker split of {path}: {exc}") from exc


def check_speakers_per_device(value: tuple[int, int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"speakers_per_device must be (lo, hi) or None, got {value!r}") from None
    if not 1 <= lo <= hi:
        raise ConfigError(f"speakers_per_device ({lo}, {hi}) must satisfy 1 <= lo <= hi, e.g. (1, 3)")
    return lo, hi


@dataclass(frozen=True)
class Casting:
    """The speakers of a fleet: the pool, each device's household, the new voices."""

    split: str  # "test" or "all"
    pool: tuple[str, ...]
    new_voices: tuple[str, ...]  # what a new-speakers onset switches to; () in other scenarios
    speakers_per_device: tuple[int, int] | None
    seed: int

    def _size(self, index: int) -> int | None:
        if self.speakers_per_device is None:
            return None
        lo, hi = self.speakers_per_device
        return int(np.random.default_rng([self.seed, index, 5]).integers(lo, hi + 1))

    def household(self, index: int) -> tuple[str, ...]:
        """The speakers device ``index`` hears (sorted)."""
        return self._draw(self.pool, self._size(index), [self.seed, index, 6])

    def new_household(self, index: int) -> tuple[str, ...]:
        """The speakers device ``index`` hears after a new-speakers onset."""
        return self._draw(self.new_voices, self._size(index), [self.seed, index, 7])

    @staticmethod
    def _draw(speakers: tuple[str, ...], k: int | None, seed: list[int]) -> tuple[str, ...]:
        if k is None or k >= len(speakers):
            return speakers
        picks = np.random.default_rng(seed).choice(len(speakers), size=k, replace=False)
        return tuple(sorted(speakers[i] for i in picks))


def cast(speakers: list[str], *, speaker_split: str, split_names: dict[str, list[str]] | None,
         speakers_per_device: tuple[int, int] | None, params: ScenarioParams, seed: int,
         bundle: str = "") -> Casting:
    """The fleet's casting from the dataset's (speech) ``speakers`` and the bundle's split."""
    if speaker_split not in SPEAKER_SPLITS:
        raise ConfigError(f"speaker_split {speaker_split!r} is not one of {', '.join(SPEAKER_SPLITS)}")
    per_device = check_speakers_per_device(speakers_per_device)
    if speaker_split == "auto":
        speaker_split = "test" if split_names is not None else "all"
    new = params.name == "new-speakers"
    if speaker_split == "all":
        held = held_out_speakers(speakers, params.held_out_fraction, seed) if new else set()
        pool = tuple(s for s in speakers if s not in held)
        return Casting("all", pool, tuple(sorted(held)), per_device, seed)
    if split_names is None and not bundle:
        raise ConfigError("speaker_split 'test' plays the test split of the devices' bundle: give the bundle "
                          "(--model), or use speaker_split 'all'")
    if split_names is None:
        raise ConfigError(f"the bundle {bundle} does not record its split's speakers "
                          "(manifest lineage.split.speaker_names): retrain it with the current "
                          "`harken model train` to play test-split voices, or use speaker_split 'all'")
    known = set(speakers)
    pool = tuple(s for s in speakers if s in set(split_names["test"]))
    if not pool:
        raise DatasetError(f"none of the {len(split_names['test'])} test speakers of {bundle or 'the bundle'} "
                           "speak in this dataset; give the dataset the bundle was trained on")
    voices: tuple[str, ...] = ()
    if new:
        train = [s for s in split_names["train"] if s in known]
        if not train:
            raise DatasetError("new-speakers under speaker_split 'test' plays voices of the train split, and "
                               "none of them speak in this dataset; give the bundle's own dataset")
        voices = tuple(sorted(held_out_speakers(train, params.held_out_fraction, seed))) if len(train) > 1 \
            else tuple(train)
    return Casting("test", pool, voices, per_device, seed)


def resolve_split_names(speaker_split: str, bundle: str) -> dict[str, list[str]] | None:
    """The bundle's split when the casting may need it (``auto``/``test``), else None."""
    if speaker_split == "all" or not bundle:
        return None
    if not Path(bundle).is_file():
        raise ConfigError(f"bundle {bundle!r} is not a file; give a bundle made by `harken model train`")
    return bundle_split(bundle)
