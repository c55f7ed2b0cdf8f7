"""A request body → float32 16 kHz mono audio, or a ``RequestError`` that says how to fix it.

Two formats, chosen by ``?format=`` (wins), else by ``Content-Type``, else by the bytes:

    wav     audio/wav, audio/x-wav, audio/wave, audio/vnd.wave: any WAV the agent reads
            (``shared.audio``: 8/16/24/32-bit PCM or float, any rate and channel count)
    s16le   audio/pcm: raw signed 16-bit little-endian PCM, 16 kHz, mono, no header

``application/octet-stream`` or no Content-Type: a body that starts with ``RIFF`` is a WAV;
anything else is refused (415), since raw PCM cannot be told from noise.
"""
from __future__ import annotations

import numpy as np

from shared.audio import SAMPLE_RATE, decode_wav_bytes, to_float32
from shared.errors import AudioError, HarkenError

FORMATS = ("wav", "s16le")
WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
PCM_TYPES = ("audio/pcm",)
SNIFFED_TYPES = ("", "application/octet-stream")
HOW_TO_SEND = ("send a WAV file as Content-Type: audio/wav, or raw 16 kHz mono s16le PCM as Content-Type: "
               "audio/pcm (or with ?format=s16le)")
# what shared.audio's messages say → (status, code); the first match wins
_WAV_PROBLEMS = (("not a WAV file", 400, "not_wav"), ("truncated", 400, "truncated_wav"),
                 ("empty", 400, "empty"), ("unsupported", 415, "unsupported_encoding"),
                 ("big-endian", 415, "unsupported_encoding"))


class RequestError(HarkenError):
    """A request Harken refuses: ``status`` (HTTP), ``code`` (counted), ``detail`` (how to fix it)."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(f"{code}: {detail}")
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}
        self.extra = extra or {}


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def resolve_format(content_type: str | None, query_format: str | None, head: bytes) -> str:
    """``wav`` or ``s16le`` for this request, or a RequestError (400 bad flag, 415 unknown type)."""
    if query_format is not None:
        if query_format not in FORMATS:
            raise RequestError(400, "bad_format", f"format={query_format!r} is not known: use format=wav or "
                               "format=s16le (raw 16 kHz mono signed 16-bit little-endian PCM)")
        return query_format
    kind = media_type(content_type)
    if kind in WAV_TYPES:
        return "wav"
    if kind in PCM_TYPES:
        return "s16le"
    if kind in SNIFFED_TYPES and head[:4] in (b"RIFF", b"RIFX"):
        return "wav"
    if kind in SNIFFED_TYPES:
        raise RequestError(415, "unknown_format", f"cannot tell the audio format (no RIFF header): {HOW_TO_SEND}")
    raise RequestError(415, "unsupported_media_type", f"Content-Type {kind!r} is not audio Harken reads: "
                       f"{HOW_TO_SEND}")


def decode(body: bytes, fmt: str, max_audio_s: float) -> np.ndarray:
    """The body as float32 16 kHz mono, at most ``max_audio_s`` long."""
    if not body:
        raise RequestError(400, "empty", "the request body is empty: send the audio as the body, e.g. "
                           "curl --data-binary @clip.wav -H 'Content-Type: audio/wav' ...")
    samples = _decode_wav(body) if fmt == "wav" else _decode_pcm(body)
    seconds = len(samples) / SAMPLE_RATE
    if seconds > max_audio_s:
        raise RequestError(413, "audio_too_long", f"the audio lasts {seconds:.1f} s; the limit is "
                           f"{max_audio_s:g} s (http_max_audio_s): split it into shorter requests",
                           extra={"limit_s": max_audio_s})
    return samples


def _decode_wav(body: bytes) -> np.ndarray:
    try:
        return decode_wav_bytes(body, name="the request body")
    except AudioError as exc:
        text = str(exc)
        for words, status, code in _WAV_PROBLEMS:
            if words in text:
                raise RequestError(status, code, text) from None
        raise RequestError(400, "bad_wav", text) from None


def _decode_pcm(body: bytes) -> np.ndarray:
    if len(body) % 2:
        raise RequestError(400, "pcm_odd_length", f"raw s16le PCM has 2 bytes per sample but the body has "
                           f"{len(body)} bytes: the upload was cut short or the audio is not 16-bit; send whole "
                           "16-bit samples, or a WAV file as Content-Type: audio/wav")
    return to_float32(np.frombuffer(body, dtype="<i2").astype(np.int16))
