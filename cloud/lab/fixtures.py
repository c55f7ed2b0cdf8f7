"""A tiny real dataset and a trained, signed (and a released) bundle, for tests of any part of Harken.

Real espeak-ng speech, the real gate, real training and a real bundle — just small: 6
speakers, a few clips per label, a small MLP. Takes ~20 s on two cores. Accuracy is
meaningless at this size; everything else (shapes, manifest, signature, profile, test
vectors) is what a full run produces.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cloud.lab import cast, pipeline, synth, train
from shared import keys

log = logging.getLogger(__name__)

TINY_ACCENTS = ("en-us", "en-gb", "en-029")
TINY_VARIANTS = ("m3", "f2")
# no band-shift augmentation: other areas' tests rely on this tiny model as it was
TINY_HYPERPARAMETERS = train.Hyperparameters(hidden_layers=(32,), max_iter=60, early_stopping=False,
                                             batch_size=32, linear_C=1.0, band_shifts=(0,))


@dataclass(frozen=True)
class TinyLab:
    data_dir: Path
    bundle_path: Path
    private_key_path: Path
    public_key_path: Path
    runs_dir: Path
    record: dict
    release_private_key_path: Path  # a release key apart from the lab's signing key
    release_public_key_path: Path
    released_bundle_path: Path  # the same bundle released (version 1, 30 days, automation up to full)


def tiny_dataset(out_dir: str | Path, per_word: int = 6, seed: int = 0, workers: int = 2,
                 variants: tuple[str, ...] = TINY_VARIANTS) -> dict:
    """Synthesize a tiny espeak-ng dataset (``per_word`` clips per label, twice that for
    ``_unknown_``; 3 accents x ``variants`` speakers, 6 by default) into ``out_dir``."""
    return synth.synthesize(out_dir, per_word=per_word, seed=seed, accents=TINY_ACCENTS,
                            variants=variants, workers=workers, engine_names=("espeak-ng",))


TINY_ENGINE_VARIANTS = ("lo-l", "hi-s")


def tiny_engines_cast() -> list[cast.Cast]:
    """Every engine with six to eight speakers (enough for three in dev and in test), a sixth of
    the clips each: 3 espeak-ng accents x 2 variants; mbrola's us1, us2 and en1, festival's 3
    voices, flite's 4 and rhvoice's alan, clb and evgeniy-eng x 2 variants; pico's 2 x 3."""
    few = TINY_ENGINE_VARIANTS
    return [cast.Cast("espeak-ng", TINY_ACCENTS, TINY_VARIANTS, 1 / 6),
            cast.Cast("mbrola", ("us1", "us2", "en1"), few, 1 / 6),
            cast.Cast("festival", ("kal", "ked", "slt"), few, 1 / 6),
            cast.Cast("flite", ("kal16", "awb", "rms", "slt"), few, 1 / 6),
            cast.Cast("pico", ("en-us", "en-gb"), few + ("mid-m",), 1 / 6),
            cast.Cast("rhvoice", ("alan", "clb", "evgeniy-eng"), few, 1 / 6)]


def tiny_engines_dataset(out_dir: str | Path, per_word: int = 6, seed: int = 0, workers: int = 2) -> dict:
    """A tiny dataset from every engine (``tiny_engines_cast``, 38 speakers) into ``out_dir``."""
    return synth.synthesize(out_dir, per_word=per_word, seed=seed, workers=workers,
                            cast_parts=tiny_engines_cast())


def tiny_dataset_and_bundle(tmp_dir: str | Path, per_word: int = 6, seed: int = 0,
                            variants: tuple[str, ...] = TINY_VARIANTS) -> TinyLab:
    """Dataset, key pair, trained bundle and run record under ``tmp_dir``."""
    import time

    from shared.release import release_file

    tmp = Path(tmp_dir)
    data_dir, key_dir, runs_dir = tmp / "data", tmp / "keys", tmp / "runs"
    tiny_dataset(data_dir, per_word=per_word, seed=seed, variants=variants)
    private_path, public_path = keys.generate_keypair(key_dir)
    release_private, release_public = keys.generate_keypair(key_dir, name=keys.RELEASE_NAME)
    bundle_path = tmp / "tiny.hkb"
    record = pipeline.run(pipeline.TrainRequest(
        data_dir=str(data_dir), out=str(bundle_path), private_key=keys.load_private_key(private_path),
        seed=seed, name="tiny-kws", version="0.0.1", hyperparameters=TINY_HYPERPARAMETERS,
        runs_dir=str(runs_dir)))
    released = tmp / "tiny-released.hkb"
    release_file(bundle_path, keys.load_private_key(release_private), out=released, version=1,
                 expires_t=time.time() + 30 * 86400, max_automation="full")
    return TinyLab(data_dir, bundle_path, Path(private_path), Path(public_path), runs_dir, record,
                   Path(release_private), Path(release_public), released)
