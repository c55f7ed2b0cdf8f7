"""Session fixtures for the model lab: one tiny real dataset and one trained, signed bundle."""
from __future__ import annotations

import pytest

from cloud.lab.fixtures import TinyLab, tiny_dataset_and_bundle


@pytest.fixture(scope="session")
def tiny_lab(tmp_path_factory) -> TinyLab:
    """Real espeak-ng clips (6 speakers x 12 labels x 6), the real gate, a trained bundle."""
    return tiny_dataset_and_bundle(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_lab):
    from shared import keys
    from shared.bundle import load_bundle

    return load_bundle(tiny_lab.bundle_path, [keys.load_public_key(tiny_lab.public_key_path)])


@pytest.fixture(scope="session")
def voices_lab(tmp_path_factory) -> TinyLab:
    """Like ``tiny_lab`` with 18 voices (3 accents x 6 variants): dev and test hold 3 voices each."""
    return tiny_dataset_and_bundle(tmp_path_factory.mktemp("voices-lab"), per_word=8,
                                   variants=("m3", "f2", "m1", "f4", "m2", "f1"))


@pytest.fixture(scope="session")
def engines_data(tmp_path_factory):
    """A tiny dataset from all six engines (6 to 8 speakers each, 8 clips per word)."""
    from cloud.lab.fixtures import tiny_engines_dataset

    out = tmp_path_factory.mktemp("engines-data")
    tiny_engines_dataset(out, per_word=8)
    return out
