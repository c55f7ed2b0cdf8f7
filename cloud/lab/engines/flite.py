"""flite: its built-in English voices, one process per word (~10-50 ms).

``--setf duration_stretch`` sets the speaking rate for every voice and
``--setf int_f0_target_mean`` the pitch of kal16, awb and slt; rms ignores it, so its pitch
moves with sox afterwards. (``kal``, the 8 kHz twin of kal16, and ``awb_time``, a
limited-domain voice that only tells the time, are left out.)
"""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass

import numpy as np

from cloud.lab.engines import Rendered, variation
from shared.errors import DatasetError

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `apt-get install flite`"
TIMEOUT_S = 30


@dataclass(frozen=True)
class FliteVoice:
    f0_mean_hz: float | None  # what int_f0_target_mean to start from (None: the voice ignores it)
    accent: str


VOICES = {
    "kal16": FliteVoice(98.0, "en-us"),
    "awb": FliteVoice(117.0, "en-gb-scotland"),
    "rms": FliteVoice(None, "en-us"),
    "slt": FliteVoice(167.0, "en-us"),
}


def _executable() -> str:
    return variation.executable("flite", INSTALL_HINT)


class Flite(variation.FewVoices):
    name = "flite"

    VOICES = VOICES

    def version(self) -> str:
        out = subprocess.run([_executable(), "--version"], capture_output=True, text=True, check=False)
        return " ".join(out.stdout.split()[-3:]) or "unknown"

    def check(self, voices) -> None:
        exe = _executable()
        listed = subprocess.run([exe, "-lv"], capture_output=True, text=True, check=False).stdout.split()
        for voice in voices:
            if voice not in VOICES or voice not in listed:
                raise DatasetError(f"flite has no voice {voice!r} here; use one of "
                                   f"{', '.join(v for v in VOICES if v in listed)}")

    def render(self, word: str, voice: str, variant: str, rng: np.random.Generator) -> Rendered:
        spec = self.spec(voice)
        s = variation.setting(variant, rng)
        out = self.work_file("word.wav")
        cmd = [_executable(), "-voice", voice, "--setf", f"duration_stretch={s.engine_stretch:.4f}"]
        if spec.f0_mean_hz is not None:
            target = spec.f0_mean_hz * 2.0 ** (s.engine_pitch_st / 12.0)
            cmd += ["--setf", f"int_f0_target_mean={target:.2f}"]
        variation.run_engine(cmd + ["-t", word, "-o", str(out)], word, voice, "list voices with `flite -lv`",
                             timeout_s=TIMEOUT_S)
        samples, rate = variation.read_wav_file(out)
        if spec.f0_mean_hz is None:
            samples = variation.pitch_shift(samples, rate, s.engine_pitch_st)
        return Rendered(samples, s.rate_after(rate), s.tags())
