"""espeak-ng voices, words and the one subprocess call that speaks a word.

A *speaker* is an accent (espeak-ng ``-v`` language) plus a voice variant (``+m3``): the unit
that speaker-disjoint splits keep together. espeak-ng output is deterministic for the same
arguments, which makes the dataset reproducible.
"""
from __future__ import annotations

import logging
import shutil
import struct
import subprocess

import numpy as np

from shared.errors import DatasetError

log = logging.getLogger(__name__)

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_LABEL = "_unknown_"
SILENCE_LABEL = "_silence_"
LABELS = WORDS + (UNKNOWN_LABEL, SILENCE_LABEL)
# Words the model must answer "_unknown_" to (those of Google's Speech Commands, plus one).
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "learn", "follow", "forward", "backward", "visual", "yellow",
)
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


def speakers(accents=ACCENTS, variants=VARIANTS) -> list[str]:
    """Every accent × variant pair as ``"accent+variant"``, in a fixed order."""
    return [f"{a}+{v}" for a in accents for v in variants]


def espeak_version() -> str:
    exe = _executable()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def _executable() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DatasetError("espeak-ng is not installed; install it with `apt-get install espeak-ng`")
    return exe


def _pcm_from_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples of espeak-ng's streamed WAV (its size fields are placeholders, so parse by hand)."""
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


def speak(word: str, speaker: str, speed_wpm: int, pitch: int) -> tuple[np.ndarray, int]:
    """Float samples and sample rate of ``word`` spoken by ``speaker`` (``accent+variant``)."""
    cmd = [_executable(), "-v", speaker, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", word]
    try:
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=30)
    except subprocess.CalledProcessError as exc:
        raise DatasetError(
            f"espeak-ng failed for voice {speaker!r}: {exc.stderr.decode(errors='replace').strip()}; "
            "list the installed voices with `espeak-ng --voices=en`") from exc
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"espeak-ng timed out speaking {word!r} with {speaker!r}") from exc
    return _pcm_from_wav(out.stdout)
