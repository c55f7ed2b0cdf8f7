"""SVOX Pico (``pico2wave``): its US and British English voices, one process per word (~10 ms).

Pico reads its own markup in the text: ``<speed level>`` (percent of its normal rate) and
``<pitch level>`` (percent of the voice's pitch), so the engine sets both.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from cloud.lab.engines import Rendered, variation
from shared.errors import DatasetError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install it with `apt-get install libttspico-utils` "
                "(Debian's non-free component; scripts/setup.sh adds it)")
WORD_RE = re.compile(r"^[A-Za-z][A-Za-z' -]*$")  # nothing Pico could read as markup


@dataclass(frozen=True)
class PicoVoice:
    language: str  # pico2wave -l
    accent: str


VOICES = {
    "en-us": PicoVoice("en-US", "en-us"),
    "en-gb": PicoVoice("en-GB", "en-gb"),
}


def _executable() -> str:
    return variation.executable("pico2wave", INSTALL_HINT)


class Pico(variation.FewVoices):
    name = "pico"

    VOICES = VOICES

    def version(self) -> str:
        _executable()
        return variation.package_version("libttspico-utils")

    def check(self, voices) -> None:
        _executable()
        for voice in voices:
            self.spec(voice)

    def render(self, word: str, voice: str, variant: str, rng: np.random.Generator) -> Rendered:
        spec = self.spec(voice)
        if not WORD_RE.match(word):
            raise DatasetError(f"cannot ask pico to say {word!r}: use letters, spaces, - and '")
        s = variation.setting(variant, rng)
        speed = round(100.0 / s.engine_stretch)
        pitch = round(100.0 * 2.0 ** (s.engine_pitch_st / 12.0))
        out = self.work_file("word.wav")  # pico2wave wants a name ending in .wav
        text = f"<speed level='{speed}'><pitch level='{pitch}'>{word}</pitch></speed>"
        variation.run_engine([_executable(), "-l", spec.language, "-w", str(out), text], word, voice, INSTALL_HINT)
        samples, rate = variation.read_wav_file(out)
        return Rendered(samples, s.rate_after(rate), s.tags())
