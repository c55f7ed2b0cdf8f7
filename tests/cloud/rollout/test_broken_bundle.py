"""The e2e test's broken shadow candidate is what it claims: the device installs it (signature,
smoke test on the test vectors, warm-up), and then it fails on every real utterance."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge.model import LoadedModel
from shared import keys
from shared.audio import read_wav
from shared.bundle import load_bundle
from shared.errors import ModelError

from tests.cloud.rollout.broken_bundle import fails_in_the_field


def test_the_broken_bundle_installs_but_fails_on_real_speech(tiny_lab, tmp_path):
    public = keys.load_public_key(tiny_lab.public_key_path)
    out = fails_in_the_field(tiny_lab.bundle_path, tmp_path / "broken.hkb",
                             keys.load_private_key(tiny_lab.private_key_path), public, version="9")
    bundle = load_bundle(out.read_bytes(), [public])  # signed by the trusted key
    original = load_bundle(tiny_lab.bundle_path.read_bytes(), [public])
    assert bundle.sha256 != original.sha256 and bundle.manifest["version"] == "9"
    model = LoadedModel.from_bundle(bundle)  # warm-up on zeros passes
    assert model.smoke_test() >= 1  # the device's install check passes
    clips = [c for c in json.loads((tiny_lab.data_dir / "manifest.json").read_text())["clips"]
             if not c["label"].startswith("_")][:25]  # words (digital silence is the warm-up input)
    good = LoadedModel.from_bundle(original)
    for clip in clips:
        audio = read_wav(tiny_lab.data_dir / clip["path"])
        good.predict(audio)  # the original answers
        with pytest.raises(ModelError, match="outside the manifest's"):
            model.predict(audio)
        with pytest.raises(ModelError, match="outside the manifest's"):
            model.predict(audio + np.float32(1e-4))  # near a clip is not a known input either
