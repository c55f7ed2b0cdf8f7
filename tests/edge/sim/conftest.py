"""A tiny real dataset and bundle from the model lab (tests may import cloud; edge code may not)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_lab(tmp_path_factory):
    """Real espeak-ng clips (12 labels x 4, 6 speakers), a trained and signed bundle, its keys."""
    from cloud.lab.fixtures import tiny_dataset_and_bundle

    return tiny_dataset_and_bundle(tmp_path_factory.mktemp("lab"), per_word=4)


@pytest.fixture(scope="session")
def pool(tiny_lab):
    from edge.sim.audio import ClipPool

    return ClipPool.from_dataset(tiny_lab.data_dir)
