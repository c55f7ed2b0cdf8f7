"""MBROLA: diphone concatenation with recorded voices, fed phonemes by espeak-ng.

espeak-ng's ``mb-*`` voices turn a word into MBROLA phonemes with durations and pitch
points (``--pho``); ``mbrola`` then concatenates the voice's recorded diphones, scaling every
duration by ``-t`` and every pitch point by ``-f``, so the engine sets both exactly.
The voices (Debian contrib/non-free): us1 (female), us2 and us3 (male), en1 (British male).
"""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.lab.engines import Rendered, variation
from shared.errors import DatasetError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install it with `apt-get install mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1` "
                "(Debian's contrib and non-free components; scripts/setup.sh adds them)")
DATABASES = Path("/usr/share/mbrola")


@dataclass(frozen=True)
class MbrolaVoice:
    espeak_voice: str  # the espeak-ng voice that writes its phonemes
    package: str
    accent: str


VOICES = {v: MbrolaVoice(f"mb-{v}", f"mbrola-{v}", accent)
          for v, accent in (("us1", "en-us"), ("us2", "en-us"), ("us3", "en-us"), ("en1", "en-gb"))}


def _executable(name: str) -> str:
    return variation.executable(name, f"the mbrola engine needs espeak-ng and mbrola; {INSTALL_HINT}")


def _database(voice: str) -> Path:
    return DATABASES / voice / voice


class Mbrola(variation.FewVoices):
    name = "mbrola"

    VOICES = VOICES

    def version(self) -> str:
        out = subprocess.run([_executable("mbrola")], capture_output=True, text=True, check=False)
        banner = (out.stdout + out.stderr).strip().splitlines()
        return banner[0].split(" - ")[0].strip() if banner else "unknown"  # "MBROLA 3.02b"

    def check(self, voices) -> None:
        _executable("espeak-ng")
        _executable("mbrola")
        for voice in voices:
            spec = self.spec(voice)
            if not _database(voice).is_file():
                raise DatasetError(f"mbrola voice {voice!r} is not installed; install it with "
                                   f"`apt-get install {spec.package}` (Debian non-free)")

    def render(self, word: str, voice: str, variant: str, rng: np.random.Generator) -> Rendered:
        spec = self.spec(voice)
        s = variation.setting(variant, rng)
        phonemes = variation.run_engine([_executable("espeak-ng"), "-v", spec.espeak_voice, "-q", "--pho", word],
                                        word, voice, INSTALL_HINT)
        out = self.work_file("word.wav")
        pitch_ratio = 2.0 ** (s.engine_pitch_st / 12.0)
        # -e: a diphone the voice lacks is skipped rather than fatal
        variation.run_engine([_executable("mbrola"), "-e", "-f", f"{pitch_ratio:.4f}", "-t", f"{s.engine_stretch:.4f}",
                              str(_database(voice)), "-", str(out)], word, voice, INSTALL_HINT, stdin=phonemes)
        samples, rate = variation.read_wav_file(out)
        return Rendered(samples, s.rate_after(rate), s.tags())
