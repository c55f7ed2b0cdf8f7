"""espeak-ng: English accents x voice variants, speed and pitch drawn per clip.

espeak-ng output is deterministic for the same arguments, which makes the dataset
reproducible. It streams a WAV whose size fields are placeholders, so it is parsed by hand.
"""
from __future__ import annotations

import logging
import shutil
import struct
import subprocess

import numpy as np

from cloud.lab.engines import Rendered
from shared.errors import DatasetError

log = logging.getLogger(__name__)

ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)
# Voice variants that still sound like a person (whisper, robots and the like left out).
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "adam", "benjamin", "edward", "john", "max",
    "Michael", "Mike", "david", "paul", "robert", "travis", "victor", "Alicia", "aunty",
)
SPEEDS_WPM = (120, 140, 160, 180, 200)
PITCHES = (25, 40, 50, 60, 75)
ESPEAK_RATE = 22050
TIMEOUT_S = 30


def _executable() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DatasetError("espeak-ng is not installed; install it with `apt-get install espeak-ng`")
    return exe


def pcm_from_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate of espeak-ng's streamed WAV."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DatasetError("espeak-ng returned no WAV data; check that the voice is installed")
    pos, rate = 12, ESPEAK_RATE
    while pos + 8 <= len(data):
        chunk, size = data[pos: pos + 4], struct.unpack("<I", data[pos + 4: pos + 8])[0]
        if chunk == b"fmt ":
            rate = struct.unpack("<I", data[pos + 12: pos + 16])[0]
        if chunk == b"data":
            pcm = np.frombuffer(data[pos + 8: len(data) - (len(data) - pos - 8) % 2], dtype="<i2")
            return pcm.astype(np.float32) / 32768.0, rate
        pos += 8 + size
    raise DatasetError("espeak-ng WAV has no data chunk")


def speak(word: str, voice: str, speed_wpm: int, pitch: int) -> tuple[np.ndarray, int]:
    """Float samples and sample rate of ``word`` spoken with espeak-ng ``-v voice``."""
    cmd = [_executable(), "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", word]
    try:
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        raise DatasetError(
            f"espeak-ng failed for voice {voice!r}: {exc.stderr.decode(errors='replace').strip()}; "
            "list the installed voices with `espeak-ng --voices=en`") from exc
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"espeak-ng timed out speaking {word!r} with {voice!r}") from exc
    return pcm_from_wav(out.stdout)


class Espeak:
    """Voices are espeak-ng languages (accents), variants its ``+variant`` voice files."""

    name = "espeak-ng"

    def voices(self) -> tuple[str, ...]:
        return ACCENTS

    def variants(self) -> tuple[str, ...]:
        return VARIANTS

    def accent(self, voice: str) -> str:
        return voice

    def version(self) -> str:
        out = subprocess.run([_executable(), "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip() or "unknown"

    def check(self, voices) -> None:
        _executable()

    def render(self, word: str, voice: str, variant: str, rng: np.random.Generator) -> Rendered:
        speed, pitch = int(rng.choice(SPEEDS_WPM)), int(rng.choice(PITCHES))
        samples, rate = speak(word, f"{voice}+{variant}", speed, pitch)
        return Rendered(samples, rate, {"speed_wpm": speed, "pitch": pitch})

    def close(self) -> None:
        pass
