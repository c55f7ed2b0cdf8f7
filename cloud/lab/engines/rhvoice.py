"""RHVoice: statistical parametric (HTS-style) English voices, one ``RHVoice-test`` per word.

``-r`` sets the speaking rate and ``-t`` the pitch, both in whole percents of the voice's own,
so the engine sets both. An unknown voice falls back silently to the default one, so ``check``
looks for each voice's folder. The English voices (Debian non-free, ``rhvoice-english``): alan
(Scottish), bdl, clb, slt and lyubov (American) and evgeniy-eng (Russian-accented). slt is
the speaker of festival's HTS slt and flite's slt, made by a third method here.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.lab.engines import Rendered, variation
from shared.errors import DatasetError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install it with `apt-get install rhvoice rhvoice-english` "
                "(Debian's non-free component; scripts/setup.sh adds it)")
VOICE_DIR = Path("/usr/share/RHVoice/voices")


@dataclass(frozen=True)
class RhvoiceVoice:
    accent: str


VOICES = {
    "alan": RhvoiceVoice("en-gb-scotland"),
    "bdl": RhvoiceVoice("en-us"),
    "clb": RhvoiceVoice("en-us"),
    "evgeniy-eng": RhvoiceVoice("en-ru"),
    "lyubov": RhvoiceVoice("en-us"),
    "slt": RhvoiceVoice("en-us"),
}


def _executable() -> str:
    exe = shutil.which("RHVoice-test")
    if exe is None:
        raise DatasetError(f"RHVoice is not installed; {INSTALL_HINT}")
    return exe


class Rhvoice(variation.FewVoices):
    name = "rhvoice"

    VOICES = VOICES

    def version(self) -> str:
        _executable()
        return variation.package_version("rhvoice")

    def check(self, voices) -> None:
        _executable()
        for voice in voices:
            self.spec(voice)
            if not (VOICE_DIR / voice).is_dir():
                raise DatasetError(f"RHVoice voice {voice!r} is not installed; {INSTALL_HINT}")

    def render(self, word: str, voice: str, variant: str, rng: np.random.Generator) -> Rendered:
        self.spec(voice)
        s = variation.setting(variant, rng)
        rate_pct = round(100.0 / s.engine_stretch)  # whole percents only (~0.2 semitone steps)
        pitch_pct = round(100.0 * 2.0 ** (s.engine_pitch_st / 12.0))
        out = self.work_file("word.wav")
        variation.run_engine([_executable(), "-p", voice, "-r", str(rate_pct), "-t", str(pitch_pct),
                              "-o", str(out)], word, voice, INSTALL_HINT, stdin=word.encode())
        samples, rate = variation.read_wav_file(out)
        return Rendered(samples, s.rate_after(rate), s.tags())
