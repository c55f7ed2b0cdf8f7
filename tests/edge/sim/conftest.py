"""The simulator's tests: the tiny lab (``tiny_lab``, tests/conftest.py) as a clip pool and a split bundle
(tests may import cloud; edge code may not)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pool(tiny_lab):
    from edge.sim.audio import ClipPool

    return ClipPool.from_dataset(tiny_lab.data_dir)


@dataclass(frozen=True)
class SplitLab:
    lab: object  # the TinyLab
    bundle_path: Path  # the lab's bundle, carrying lineage.split.speaker_names
    names: dict  # {"train": [...], "dev": [...], "test": [...]}


@pytest.fixture(scope="session")
def split_lab(tiny_lab, tmp_path_factory) -> SplitLab:
    """The tiny lab's bundle with its split's speaker names in the manifest: the bundle itself once
    the lab records them, until then the same bundle re-signed with the lab's own split."""
    from cloud.lab import dataset, splits
    from edge.sim.households import split_speaker_names
    from shared import keys
    from shared.bundle import load_bundle
    from shared.release import release_file
    from tests.edge.bundles import resigned

    data = tiny_lab.bundle_path.read_bytes()
    manifest = load_bundle(data, None, require_signature=False).manifest
    names = split_speaker_names(manifest)
    if names is None:
        ds = dataset.load(tiny_lab.data_dir)
        names = splits.split(ds.clips, ds.labels, seed=manifest["lineage"]["split"]["seed"]).speakers

        def edit(m):
            m["lineage"]["split"]["speaker_names"] = names

        data = resigned(data, keys.load_private_key(tiny_lab.private_key_path), edit)
    path = tmp_path_factory.mktemp("split") / "tiny-split.hkb"
    path.write_bytes(data)
    release_file(path, keys.load_private_key(tiny_lab.release_private_key_path), version=1,
                 expires_t=time.time() + 86400, max_automation="full")  # devices run released bundles only
    return SplitLab(tiny_lab, path, {k: list(v) for k, v in names.items()})
