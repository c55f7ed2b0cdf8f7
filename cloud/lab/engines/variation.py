"""Speaker variants and per-clip variation for engines with few voices (festival, flite).

espeak-ng has dozens of voice variants; festival and flite have a handful of voices. Each of
their voices is made into several speakers by a *variant*: a pitch offset (semitones from
the voice's own) and a formant scale (a vocal-tract length: the rendered audio is read at
``size`` times its rate, which scales formants and pitch by ``size``; the engine is asked
for ``size`` times the duration and ``1/size`` of the pitch beforehand, so only the
formants move). Per clip, the rng adds a speaking-rate stretch and a small pitch jitter.
"""
from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import DatasetError

log = logging.getLogger(__name__)

PITCH_STEPS = {"lo": -3.0, "mid": 0.0, "hi": 3.0}  # semitones from the voice's own pitch
FORMANT_SCALES = {"l": 0.9, "m": 1.0, "s": 1.1}  # large (longer tract, lower formants) .. small
VARIANTS = tuple(f"{p}-{s}" for p in PITCH_STEPS for s in FORMANT_SCALES)
STRETCHES = (0.8, 0.9, 1.0, 1.12, 1.25)  # duration factor per clip (1.25: 25 % slower)
PITCH_JITTER_ST = (-1.0, -0.5, 0.0, 0.5, 1.0)
SOX_TIMEOUT_S = 30


@dataclass(frozen=True)
class Setting:
    """What to ask the engine for, and what the clip will sound like."""

    stretch: float  # duration factor the listener hears
    pitch_st: float  # semitones from the voice's own pitch the listener hears
    formant_scale: float
    engine_stretch: float  # duration factor to ask the engine for (before the formant scaling)
    engine_pitch_st: float  # semitone shift to ask for (before the formant scaling)

    def tags(self) -> dict:
        return {"stretch": self.stretch, "pitch_st": self.pitch_st, "formant_scale": self.formant_scale}

    def rate_after(self, rate: int) -> int:
        """The rate to read rendered audio at so its formants scale by ``formant_scale``."""
        return int(round(rate * self.formant_scale))


class FewVoices:
    """What the engines with few voices share: a ``VOICES`` table (voice → spec with
    ``accent``), the variants above, and a temporary folder under ``scratch``."""

    name = "engine"
    VOICES: dict = {}

    def __init__(self, scratch=None):
        self.scratch = scratch  # where its temporary files go (default: the system's temp dir)
        self._tmp: Path | None = None

    def voices(self) -> tuple[str, ...]:
        return tuple(self.VOICES)

    def variants(self) -> tuple[str, ...]:
        return VARIANTS

    def accent(self, voice: str) -> str:
        return self.VOICES[voice].accent

    def spec(self, voice: str):
        """The voice's entry in ``VOICES``; an unknown voice is a ``DatasetError``."""
        if voice not in self.VOICES:
            raise DatasetError(f"unknown {self.name} voice {voice!r}; use one of {', '.join(self.VOICES)}")
        return self.VOICES[voice]

    def work_file(self, name: str) -> Path:
        """A path in this engine's temporary folder (made on first use, removed by ``close``)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"harken-{self.name}-", dir=self.scratch))
        return self._tmp / name

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def executable(program: str, hint: str) -> str:
    """The path of ``program``; a ``DatasetError`` saying how to install it when it is missing."""
    exe = shutil.which(program)
    if exe is None:
        raise DatasetError(f"{program} is not installed; {hint}")
    return exe


def run_engine(cmd: list[str], word: str, voice: str, hint: str, stdin: bytes | None = None,
               timeout_s: float = 30.0) -> bytes:
    """Run one engine command and return its stdout; a failure or a timeout is a
    ``DatasetError`` that names the program, the voice and ``hint``."""
    program = Path(cmd[0]).name
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, check=True, timeout=timeout_s).stdout
    except subprocess.CalledProcessError as exc:
        raise DatasetError(f"{program} failed for voice {voice!r}: "
                           f"{exc.stderr.decode(errors='replace').strip()}; {hint}") from exc
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"{program} timed out saying {word!r} with {voice!r}") from exc


def setting(variant: str, rng: np.random.Generator) -> Setting:
    """The variant's pitch and formant scale plus this clip's stretch and pitch jitter."""
    try:
        pitch_name, size_name = variant.split("-", 1)
        base_st, scale = PITCH_STEPS[pitch_name], FORMANT_SCALES[size_name]
    except (ValueError, KeyError) as exc:
        raise DatasetError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}") from exc
    stretch = float(rng.choice(STRETCHES))
    pitch_st = base_st + float(rng.choice(PITCH_JITTER_ST))
    return Setting(stretch, pitch_st, scale, stretch * scale, pitch_st - 12.0 * math.log2(scale))


def pitch_shift(samples: np.ndarray, rate: int, semitones: float) -> np.ndarray:
    """``samples`` shifted by ``semitones`` at the same duration (sox ``pitch``, no dither)."""
    if abs(semitones) < 1e-9:
        return samples
    sox = shutil.which("sox")
    if sox is None:
        raise DatasetError("sox is not installed; install it with `apt-get install sox`")
    raw = ["-t", "raw", "-r", str(rate), "-e", "floating-point", "-b", "32", "-c", "1"]
    cmd = [sox, "-D", *raw, "-", *raw, "-", "pitch", f"{100.0 * semitones:.1f}"]
    try:
        out = subprocess.run(cmd, input=np.asarray(samples, "<f4").tobytes(), capture_output=True,
                             check=True, timeout=SOX_TIMEOUT_S).stdout
    except subprocess.CalledProcessError as exc:
        raise DatasetError(f"sox pitch failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise DatasetError("sox pitch timed out") from exc
    return np.frombuffer(out, "<f4").astype(np.float32)


def read_wav_file(path) -> tuple[np.ndarray, int]:
    """Float samples (first channel) and rate of a 16-bit PCM WAV an engine wrote."""
    import wave

    try:
        with wave.open(str(path)) as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise DatasetError(f"the engine wrote no readable WAV ({exc})") from exc
    if width != 2:
        raise DatasetError(f"the engine wrote {8 * width}-bit audio; expected 16-bit PCM")
    pcm = np.frombuffer(frames[: len(frames) // (2 * channels) * 2 * channels], "<i2").reshape(-1, channels)[:, 0]
    return pcm.astype(np.float32) / 32768.0, rate


def package_version(package: str) -> str:
    """The installed version of a Debian package, for engines without a ``--version``."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True,
                             check=False, timeout=SOX_TIMEOUT_S).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return f"{package} {out or 'unknown'}"
