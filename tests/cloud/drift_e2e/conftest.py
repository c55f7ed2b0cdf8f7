"""Session fixtures of the drift acceptance tests: one real dataset and bundle, a rig per test."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cloud.lab import dataset as dataset_mod
from cloud.lab import splits
from cloud.lab.fixtures import tiny_dataset_and_bundle
from edge.sim.audio import BabbleNoise, ClipPool, ClipRef
from edge.sim.scenarios import ScenarioParams, build_transform
from shared import keys
from shared.bundle import load_bundle
from shared.release import release_file
from tests.cloud.drift_e2e.rig import WINDOW_S, Rig
from tests.cloud.drift_e2e.rooms import device_profile, reprofiled_bundle

PER_WORD = 24  # 6 voices x 12 labels x 24: the dev voice has 48 clips (a reference of ~46 utterances)


@dataclass(frozen=True)
class World:
    pool: ClipPool
    reference_voices: list[ClipRef]  # the dev split: the voice the reference profile was made of
    other_voices: list[ClipRef]  # every other voice of the dataset
    ref_level_dbfs: float  # median active speech level: what SNRs are relative to
    bundle: Path  # the lab's real model, its profile as a device hears the dev clips, signed
    public_key: Path
    release_key: Path  # release.pub: the bundle is released, as every bundle that reaches devices
    model_sha256: str
    t0: float  # start of drift step 0 (a recent past, within the store's retention)

    def channel(self, name: str, onset_window: int, **params):
        """The fleet simulator's channel for scenario ``name``, changing from the start of window
        ``onset_window`` (``edge.sim.scenarios``: noise, level, band, dead microphone)."""
        p = ScenarioParams(name=name, onset_s=onset_window * WINDOW_S, **params).check()
        return build_transform(p, True, ref_level_dbfs=self.ref_level_dbfs, rng=np.random.default_rng(7),
                               babble=lambda rng: BabbleNoise(self.pool, rng))


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("drift-e2e")
    lab = tiny_dataset_and_bundle(root / "lab", per_word=PER_WORD)
    bundle = load_bundle(lab.bundle_path, [keys.load_public_key(lab.public_key_path)])
    data = dataset_mod.load(lab.data_dir)
    dev = set(splits.split(data.clips, data.labels, seed=0).speakers["dev"])
    pool = ClipPool.from_dataset(lab.data_dir)
    reference = [c for c in pool.clips if c.speaker in dev]
    others = [c for c in pool.clips if c.speaker not in dev]
    assert len(reference) == bundle.manifest["lineage"]["split"]["sizes"]["dev"]  # the lab's own split
    profile = device_profile([pool.audio(c) for c in reference], bundle)
    path = root / "tiny-kws-device-profile.hkb"
    sha = reprofiled_bundle(bundle, profile, lab.private_key_path, path)
    release_file(path, keys.load_private_key(lab.release_private_key_path), version=1,
                 expires_t=time.time() + 86400)
    t0 = (time.time() // WINDOW_S) * WINDOW_S - 6 * 3600.0
    return World(pool, reference, others, pool.reference_level_dbfs(), path, lab.public_key_path,
                 lab.release_public_key_path, sha, t0)


@pytest.fixture
def rig(world, mosquitto, tmp_path):
    r = Rig(broker_url=mosquitto.url, broker_port=mosquitto.port, root=tmp_path, bundle=world.bundle,
            public_key=world.public_key, release_key=world.release_key, t0=world.t0)
    yield r
    r.close()
