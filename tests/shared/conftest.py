"""Real speech for the audio, gate and level tests: espeak-ng, resampled by sox to 16 kHz."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from shared.audio import read_wav


@pytest.fixture(scope="session")
def say(tmp_path_factory):
    """``say(text) -> float32 16 kHz mono`` spoken by espeak-ng (en-us, 150 wpm), cached."""
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[str, np.ndarray] = {}

    def speak(text: str) -> np.ndarray:
        if text not in cache:
            stem = folder / f"s{len(cache)}"
            raw, wav = stem.with_suffix(".raw.wav"), stem.with_suffix(".wav")
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text],
                           check=True, capture_output=True)
            subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)],
                           check=True, capture_output=True)
            cache[text] = read_wav(wav)
        return cache[text].copy()

    return speak


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory):
    """A WAV straight from espeak-ng (22050 Hz), and the same speech converted by sox."""
    folder = tmp_path_factory.mktemp("espeak")
    raw, wav = folder / "raw.wav", folder / "sox16k.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw),
                    "turn the lights on"], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)],
                   check=True, capture_output=True)
    return raw, wav


@pytest.fixture(scope="session")
def named_keys(tmp_path_factory):
    """``named_keys(name) -> (private key, public key)``: Ed25519 pairs by name (signing, release, ...), cached."""
    from shared import keys

    folder = tmp_path_factory.mktemp("named-keys")
    made: dict[str, tuple] = {}

    def pair(name: str) -> tuple:
        if name not in made:
            priv, pub = keys.generate_keypair(folder, name=name)
            made[name] = (keys.load_private_key(priv), keys.load_public_key(pub))
        return made[name]

    return pair
