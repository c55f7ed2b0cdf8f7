"""RHVoice: statistical parametric (HTS-style) English voices, through its C library.

One ``RHVoice-test`` process per word costs ~90 ms CPU, almost all of it start-up (twelve words
in one call cost 160 ms), which made RHVoice the dearest engine by far; the library
(``libRHVoice.so.5``, called with ctypes) keeps one engine per synthesis process and costs
~17 ms per word. Each message sets the rate and pitch as multiples of the voice's own
(``relative_rate``, ``relative_pitch``), so the engine sets both. The English voices (Debian
non-free, ``rhvoice-english``): alan (Scottish), bdl, clb, slt and lyubov (American) and
evgeniy-eng (Russian-accented). slt is the speaker of festival's HTS slt and flite's slt, made
by a third method here. An unknown voice would fall back silently to the default one, so
``check`` looks for each voice's folder.
"""
from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.lab.engines import Rendered, variation
from shared.errors import DatasetError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install it with `apt-get install librhvoice5 rhvoice-english` "
                "(Debian's non-free component; scripts/setup.sh adds it)")
LIBRARY = "libRHVoice.so.5"
DATA_DIR = Path("/usr/share/RHVoice")
CONFIG_DIR = Path("/etc/RHVoice")
VOICE_DIR = DATA_DIR / "voices"
MESSAGE_TEXT = 0  # RHVoice_message_text


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

# The C API of RHVoice.h (1.8): callbacks, engine parameters, per-message parameters.
_SET_SAMPLE_RATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_PLAY_SPEECH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_uint, ctypes.c_void_p)


class _Callbacks(ctypes.Structure):
    _fields_ = [("set_sample_rate", _SET_SAMPLE_RATE), ("play_speech", _PLAY_SPEECH)] + \
               [(name, ctypes.c_void_p) for name in ("process_mark", "word_starts", "word_ends", "sentence_starts",
                                                     "sentence_ends", "play_audio", "done")]


class _InitParams(ctypes.Structure):
    _fields_ = [("data_path", ctypes.c_char_p), ("config_path", ctypes.c_char_p),
                ("resource_paths", ctypes.POINTER(ctypes.c_char_p)), ("callbacks", _Callbacks),
                ("options", ctypes.c_uint)]


class _SynthParams(ctypes.Structure):
    _fields_ = [("voice_profile", ctypes.c_char_p)] + \
               [(name, ctypes.c_double) for name in ("absolute_rate", "absolute_pitch", "absolute_volume",
                                                     "relative_rate", "relative_pitch", "relative_volume")] + \
               [("punctuation_mode", ctypes.c_int), ("punctuation_list", ctypes.c_char_p),
                ("capitals_mode", ctypes.c_int), ("flags", ctypes.c_int)]


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBRARY)
    except OSError as exc:
        raise DatasetError(f"the RHVoice library ({LIBRARY}) is not installed; {INSTALL_HINT}") from exc
    lib.RHVoice_get_version.restype = ctypes.c_char_p
    lib.RHVoice_new_tts_engine.restype = ctypes.c_void_p
    lib.RHVoice_new_tts_engine.argtypes = [ctypes.POINTER(_InitParams)]
    lib.RHVoice_delete_tts_engine.argtypes = [ctypes.c_void_p]
    lib.RHVoice_new_message.restype = ctypes.c_void_p
    lib.RHVoice_new_message.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int,
                                        ctypes.POINTER(_SynthParams), ctypes.c_void_p]
    lib.RHVoice_speak.argtypes = [ctypes.c_void_p]
    lib.RHVoice_delete_message.argtypes = [ctypes.c_void_p]
    return lib


class Rhvoice(variation.FewVoices):
    """One RHVoice engine, made on the first word (after any fork) and deleted by ``close``."""

    name = "rhvoice"

    VOICES = VOICES

    def __init__(self, scratch=None):
        super().__init__(scratch)
        self._lib: ctypes.CDLL | None = None
        self._engine: int | None = None
        self._rate = 0
        self._chunks: list[np.ndarray] = []
        # the C side keeps pointers to these: they live as long as the engine
        self._callbacks = _Callbacks(_SET_SAMPLE_RATE(self._set_rate), _PLAY_SPEECH(self._play))

    def version(self) -> str:
        return f"RHVoice {_library().RHVoice_get_version().decode()}"

    def check(self, voices) -> None:
        _library()
        for voice in voices:
            self.spec(voice)
            if not (VOICE_DIR / voice).is_dir():
                raise DatasetError(f"RHVoice voice {voice!r} is not installed; {INSTALL_HINT}")

    def render(self, word: str, voice: str, variant: str, rng: np.random.Generator) -> Rendered:
        self.spec(voice)
        s = variation.setting(variant, rng)
        params = _SynthParams(voice_profile=voice.encode(), relative_rate=1.0 / s.engine_stretch,
                              relative_pitch=2.0 ** (s.engine_pitch_st / 12.0), relative_volume=1.0)
        samples, rate = self._say(word, params)
        return Rendered(samples, s.rate_after(rate), s.tags())

    def _say(self, word: str, params: _SynthParams) -> tuple[np.ndarray, int]:
        lib, engine = self._start()
        text = word.encode()
        self._chunks, self._rate = [], 0
        message = lib.RHVoice_new_message(engine, text, len(text), MESSAGE_TEXT, ctypes.byref(params), None)
        if not message:
            raise DatasetError(f"RHVoice refused to say {word!r} with voice {params.voice_profile.decode()!r}")
        try:
            ok = lib.RHVoice_speak(message)
        finally:
            lib.RHVoice_delete_message(message)
        if not ok or not self._chunks or not self._rate:
            raise DatasetError(f"RHVoice said nothing for {word!r} with voice {params.voice_profile.decode()!r}")
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0, self._rate

    def _start(self) -> tuple[ctypes.CDLL, int]:
        if self._engine is None:
            self._lib = _library()
            init = _InitParams(str(DATA_DIR).encode(), str(CONFIG_DIR).encode(), None, self._callbacks, 0)
            engine = self._lib.RHVoice_new_tts_engine(ctypes.byref(init))
            if not engine:
                raise DatasetError(f"RHVoice could not start (no English voice in {VOICE_DIR}?); {INSTALL_HINT}")
            self._engine = engine
        return self._lib, self._engine

    def _set_rate(self, rate: int, _user_data) -> int:
        self._rate = rate
        return 1

    def _play(self, samples, count: int, _user_data) -> int:
        self._chunks.append(np.ctypeslib.as_array(samples, (count,)).copy())
        return 1  # 0 would stop the synthesis

    def close(self) -> None:
        if self._engine is not None:
            self._lib.RHVoice_delete_tts_engine(self._engine)
            self._engine = None
        super().close()
