"""festival with the festvox English voices, driven through one long-lived process.

Starting festival costs ~0.3 s, a word ~2-40 ms, so each synthesis process keeps one
``festival --pipe`` child and feeds it Scheme: select the voice (only when it changes), set
the duration stretch and pitch, synthesize into a temporary WAV, then print a marker and
flush, which is how we know the file is complete. The same request gives the same bytes
whatever came before it (tested), so a clip stays a pure function of its seed.

Pitch: the diphone voices (kal, ked) take a target F0 mean and spread (``int_lr_params``);
the HTS voice (slt) takes a speaking rate (``-r``) but no pitch, so its pitch moves with
sox afterwards.
"""
from __future__ import annotations

import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.lab.engines import Rendered, variation
from shared.errors import DatasetError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install it with `apt-get install festival festvox-kallpc16k festvox-kdlpc16k "
                "festvox-us-slt-hts`")
MARKER = "HARKEN-FESTIVAL-DONE"
TIMEOUT_S = 30.0
WORD_RE = re.compile(r"^[A-Za-z][A-Za-z' -]*$")


@dataclass(frozen=True)
class FestivalVoice:
    select: str  # the Scheme function that selects it
    package: str  # the Debian package that ships it
    f0_mean_hz: float | None  # diphone voices: their own int_lr target (None: HTS, no pitch control)
    f0_std_hz: float | None
    directory: str  # its folder under /usr/share/festival/voices/<language>/
    accent: str = "en-us"


VOICES = {
    "kal": FestivalVoice("voice_kal_diphone", "festvox-kallpc16k", 105.0, 14.0, "kal_diphone"),
    "ked": FestivalVoice("voice_ked_diphone", "festvox-kdlpc16k", 105.0, 15.0, "ked_diphone"),
    "slt": FestivalVoice("voice_cmu_us_slt_arctic_hts", "festvox-us-slt-hts", None, None, "cmu_us_slt_arctic_hts"),
}


class Festival(variation.FewVoices):
    """One festival process, started on the first word and ended by ``close``."""

    name = "festival"

    VOICES = VOICES

    def __init__(self, scratch: str | os.PathLike | None = None):
        super().__init__(scratch)
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._voice: str | None = None
        self._errors = None

    def version(self) -> str:
        out = subprocess.run([_executable(), "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip() or "unknown"

    def check(self, voices) -> None:
        check_voices(voices)

    def render(self, word: str, voice: str, variant: str, rng: np.random.Generator) -> Rendered:
        spec = VOICES.get(voice)
        if spec is None:
            raise DatasetError(f"unknown festival voice {voice!r}; use one of {', '.join(VOICES)}")
        if not WORD_RE.match(word):
            raise DatasetError(f"cannot ask festival to say {word!r}: use letters, spaces, - and '")
        s = variation.setting(variant, rng)
        samples, rate = self._say(word, voice, spec, s)
        if spec.f0_mean_hz is None:  # HTS: no pitch control inside festival
            samples = variation.pitch_shift(samples, rate, s.engine_pitch_st)
        return Rendered(samples, s.rate_after(rate), s.tags())

    def _say(self, word: str, voice: str, spec: FestivalVoice, s: variation.Setting) -> tuple[np.ndarray, int]:
        proc = self._start()
        out = self._tmp / "word.wav"
        out.unlink(missing_ok=True)
        lines = []
        if voice != self._voice:
            lines.append(f"({spec.select})")
        lines += _settings(spec, s)
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{word}")) "{out}" \'riff)')
        lines.append(f'(format t "{MARKER}\\n") (fflush nil)')
        try:
            proc.stdin.write("\n".join(lines) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            self.close()
            raise DatasetError(f"festival stopped: {self._stderr_tail()}; {INSTALL_HINT}") from exc
        self._await_marker(proc, word)
        self._voice = voice
        if not out.is_file():
            raise DatasetError(f"festival wrote nothing for {word!r} with voice {voice!r}: "
                               f"{self._stderr_tail()}; is {spec.package} installed? {INSTALL_HINT}")
        return variation.read_wav_file(out)

    def _await_marker(self, proc: subprocess.Popen, word: str) -> None:
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT_S)
            if not ready:
                self.close()
                raise DatasetError(f"festival did not answer within {TIMEOUT_S:.0f} s saying {word!r}")
            line = proc.stdout.readline()
            if not line:
                self.close()
                raise DatasetError(f"festival exited saying {word!r}: {self._stderr_tail()}; {INSTALL_HINT}")
            if line.strip() == MARKER:
                return

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._tmp = Path(tempfile.mkdtemp(prefix="harken-festival-", dir=self.scratch))
            self._errors = open(self._tmp / "stderr.txt", "w+")
            self._proc = subprocess.Popen([_executable(), "--pipe"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._errors, text=True, bufsize=1)
            self._voice = None
        return self._proc

    def _stderr_tail(self) -> str:
        if self._errors is None or self._errors.closed:
            return "no error output"
        self._errors.flush()
        self._errors.seek(0)
        text = self._errors.read().strip()
        return text[-300:] or "no error output"

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._voice = None


def _settings(spec: FestivalVoice, s: variation.Setting) -> list[str]:
    """Scheme that sets every parameter a request depends on (nothing left from the last one)."""
    if spec.f0_mean_hz is None:
        return ["(Parameter.set 'Duration_Stretch 1.0)",
                "(set! hts_engine_params (append cmu_us_slt_arctic_hts::hts_engine_params "
                f"(list (list \"-r\" {1.0 / s.engine_stretch:.4f}))))"]
    factor = 2.0 ** (s.engine_pitch_st / 12.0)
    return [f"(Parameter.set 'Duration_Stretch {s.engine_stretch:.4f})",
            f"(set! int_lr_params '((target_f0_mean {spec.f0_mean_hz * factor:.2f}) "
            f"(target_f0_std {spec.f0_std_hz * factor:.2f}) (model_f0_mean 170) (model_f0_std 34)))"]


def _executable() -> str:
    return variation.executable("festival", INSTALL_HINT)


def check_voices(voices) -> None:
    """Raise ``DatasetError`` naming the Debian package of any voice that is not installed."""
    _executable()
    root = Path("/usr/share/festival/voices")
    present = {p.name for p in root.glob("*/*") if p.is_dir()} if root.is_dir() else set()
    for voice in voices:
        spec = VOICES.get(voice)
        if spec is None:
            raise DatasetError(f"unknown festival voice {voice!r}; use one of {', '.join(VOICES)}")
        if spec.directory not in present:
            raise DatasetError(f"festival voice {voice!r} is not installed; install it with "
                               f"`apt-get install {spec.package}`")
