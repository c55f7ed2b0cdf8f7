"""Audio in: WAV decoding and encoding, resampling, sample conversions and framing.

Everything Harken processes is float32 mono at 16 kHz in [-1, 1]. ``read_wav`` turns any
PCM WAV (8/16/24/32-bit integer or 32/64-bit float, plain or WAVE_FORMAT_EXTENSIBLE, any
channel count and rate) into that; ``write_wav`` writes 16-bit mono PCM atomically.
Pure numpy: this module runs on the device.
"""
from __future__ import annotations

import logging
import io
import math
import os
import struct
import wave
from pathlib import Path

import numpy as np

from shared.errors import AudioError, ConfigError
from shared.files import atomic_write

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

_FORMAT_PCM = 0x0001
_FORMAT_FLOAT = 0x0003
_FORMAT_EXTENSIBLE = 0xFFFE
_KNOWN_CODECS = {
    0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MP3", 0x00FF: "AAC",
}
_UNKNOWN_SIZE = 0xFFFFFFFF  # written by streaming encoders that cannot seek back
_CONVERT_HINT = "convert it with: sox IN.wav -r 16000 -c 1 -b 16 -e signed-integer OUT.wav"

_SINC_ZERO_CROSSINGS = 16  # half-width of the resampling kernel, in zero crossings
_KAISER_BETA = 8.6  # ~ -90 dB side lobes
_ROLLOFF = 0.94  # cutoff as a fraction of the lower Nyquist rate
_RESAMPLE_BLOCK = 8192  # output samples per vectorised block (bounds memory)


# ---------------------------------------------------------------------------- decoding

def read_wav(path: str | os.PathLike) -> np.ndarray:
    """Read a WAV file as float32 mono 16 kHz in [-1, 1]; raise AudioError naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AudioError(
            f"{path}: cannot read the file ({exc.strerror or exc}); check the path and "
            "its permissions") from exc
    return decode_wav_bytes(data, name=str(path))


def decode_wav_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode WAV bytes as float32 mono 16 kHz in [-1, 1]; ``name`` appears in errors."""
    fmt, payload = _parse_riff(bytes(data), name)
    samples = _decode_samples(payload, fmt, name)
    if fmt["rate"] != SAMPLE_RATE:
        samples = resample(samples, fmt["rate"], SAMPLE_RATE)
    return samples


def wav_format(data: bytes, name: str = "<bytes>") -> dict:
    """``{"tag", "channels", "rate", "bits"}`` of WAV bytes; raises AudioError as ``read_wav`` does."""
    fmt, _ = _parse_riff(bytes(data), name)
    return {k: fmt[k] for k in ("tag", "channels", "rate", "bits")}


def _parse_riff(data: bytes, name: str) -> tuple[dict, bytes]:
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise AudioError(
            f"{name}: not a WAV file (no RIFF/WAVE header); give a .wav file or {_CONVERT_HINT}")
    if data[:4] == b"RIFX":
        raise AudioError(f"{name}: big-endian RIFX WAV is not supported; {_CONVERT_HINT}")
    fmt, payload, pos = None, None, 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body_start = pos + 8
        if chunk_id == b"data":
            available = len(data) - body_start
            if size == _UNKNOWN_SIZE:
                size = available
            elif size > available:
                raise AudioError(
                    f"{name}: truncated: the data chunk declares {size} bytes but only "
                    f"{available} are present; the file was cut short (re-copy or re-record it)")
            payload = data[body_start:body_start + size]
            if fmt is not None:
                break
        elif chunk_id == b"fmt ":
            if body_start + size > len(data) or size < 16:
                raise AudioError(f"{name}: truncated or malformed 'fmt ' chunk; {_CONVERT_HINT}")
            fmt = _parse_fmt(data[body_start:body_start + size], name)
        pos = body_start + size + (size & 1)  # chunks are word aligned
    if fmt is None:
        raise AudioError(f"{name}: WAV file without a 'fmt ' chunk (truncated?); {_CONVERT_HINT}")
    if payload is None:
        raise AudioError(
            f"{name}: WAV file without a 'data' chunk (truncated or empty); re-record it")
    return fmt, payload


def _parse_fmt(body: bytes, name: str) -> dict:
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise AudioError(f"{name}: malformed WAVE_FORMAT_EXTENSIBLE header; {_CONVERT_HINT}")
        tag = struct.unpack_from("<H", body, 24)[0]  # first two bytes of the subformat GUID
    if tag not in (_FORMAT_PCM, _FORMAT_FLOAT):
        codec = _KNOWN_CODECS.get(tag, f"format tag 0x{tag:04x}")
        raise AudioError(
            f"{name}: unsupported encoding {codec} (only PCM and IEEE float WAV are read); "
            f"{_CONVERT_HINT}")
    valid = {_FORMAT_PCM: (8, 16, 24, 32), _FORMAT_FLOAT: (32, 64)}[tag]
    if bits not in valid:
        kind = "PCM" if tag == _FORMAT_PCM else "float"
        raise AudioError(f"{name}: unsupported {bits}-bit {kind} encoding; {_CONVERT_HINT}")
    if channels < 1 or rate < 1:
        raise AudioError(f"{name}: header says {channels} channels at {rate} Hz; the file is "
                         "damaged, re-record or re-convert it")
    if block_align < channels * bits // 8:
        block_align = channels * bits // 8  # some writers leave it zero; derive it
    return {"tag": tag, "channels": channels, "rate": rate, "bits": bits,
            "block_align": block_align}


def _decode_samples(payload: bytes, fmt: dict, name: str) -> np.ndarray:
    channels, bits, align = fmt["channels"], fmt["bits"], fmt["block_align"]
    n_frames = len(payload) // align  # a partial last frame is dropped
    if n_frames == 0:
        raise AudioError(f"{name}: empty: the WAV file holds no samples; re-record it")
    width = bits // 8
    raw = np.frombuffer(payload, dtype=np.uint8, count=n_frames * align).reshape(n_frames, align)
    raw = raw[:, :channels * width].reshape(n_frames, channels, width)
    if fmt["tag"] == _FORMAT_FLOAT:
        dtype = "<f4" if bits == 32 else "<f8"
        values = raw.copy().view(dtype)[..., 0].astype(np.float64)
        values = np.clip(values, -1.0, 1.0)  # NaN passes through; the gate counts it
    elif bits == 8:
        values = (raw[..., 0].astype(np.float64) - 128.0) / 128.0
    elif bits == 24:
        padded = np.zeros((n_frames, channels, 4), dtype=np.uint8)
        padded[..., 1:] = raw  # little endian: the value lands in the top three bytes
        values = padded.view("<i4")[..., 0].astype(np.float64) / 2147483648.0
    else:
        dtype = "<i2" if bits == 16 else "<i4"
        values = raw.copy().view(dtype)[..., 0].astype(np.float64) / float(2 ** (bits - 1))
    return values.mean(axis=1).astype(np.float32)


# ---------------------------------------------------------------------------- encoding

def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM WAV file bytes; the same samples always give the same bytes.

    ``samples`` is float in [-1, 1] (clipped and rounded) or int16 (written as is).
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(to_int16(samples).astype("<i2").tobytes())
    return buf.getvalue()


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit mono PCM (``wav_bytes``) atomically (temporary file, fsync, rename)."""
    atomic_write(path, wav_bytes(samples, sample_rate))


def to_int16(x: np.ndarray) -> np.ndarray:
    """int16 samples from float (x * 32768, rounded, clipped; NaN -> 0) or int16 (copied)."""
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x.copy()
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"expected float or int16 samples, got dtype {x.dtype}; "
                          "convert integer audio with to_float32 first")
    scaled = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0) * 32768.0
    return np.clip(np.round(scaled), -32768, 32767).astype(np.int16)


def to_float32(x: np.ndarray) -> np.ndarray:
    """float32 samples from int16 (x / 32768) or from any float array (cast)."""
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x.astype(np.float32) / np.float32(32768.0)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise ConfigError(f"expected int16 or float samples, got dtype {x.dtype}")


# ---------------------------------------------------------------------------- resampling

def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample 1-D audio with a Kaiser-windowed sinc kernel (polyphase, numpy only).

    Deterministic; the cutoff sits at 94 % of the lower Nyquist rate, so downsampling
    removes what would alias. The output has ceil(len(x) * dst_rate / src_rate) samples.
    """
    for label, rate in (("src_rate", src_rate), ("dst_rate", dst_rate)):
        if not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ConfigError(f"{label} must be a positive integer in Hz, got {rate!r}")
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if src_rate == dst_rate:
        return x.astype(np.float32)
    g = math.gcd(int(src_rate), int(dst_rate))
    up, down = int(dst_rate) // g, int(src_rate) // g
    n_out = -(-len(x) * up // down)
    if n_out == 0:
        return np.zeros(0, dtype=np.float32)
    cutoff = _ROLLOFF * min(1.0, up / down)  # relative to the input Nyquist rate
    half = int(math.ceil(_SINC_ZERO_CROSSINGS / cutoff))
    offsets = np.arange(-half + 1, half + 1)  # taps relative to floor(t)
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out, dtype=np.float64)
    for start in range(0, n_out, _RESAMPLE_BLOCK):
        n = np.arange(start, min(start + _RESAMPLE_BLOCK, n_out), dtype=np.int64)
        base, phase = np.divmod(n * down, up)
        phases, inverse = np.unique(phase, return_inverse=True)
        taps = _sinc_taps(phases / up, offsets, cutoff, half)[inverse.reshape(-1)]
        idx = base[:, None] + offsets[None, :] + half
        out[n] = np.einsum("ij,ij->i", taps, padded[idx])
    return out.astype(np.float32)


def _sinc_taps(frac: np.ndarray, offsets: np.ndarray, cutoff: float, half: int) -> np.ndarray:
    tau = frac[:, None] - offsets[None, :]  # distance from each input tap, in input samples
    ratio = np.clip(tau / half, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio * ratio)) / np.i0(_KAISER_BETA)
    return cutoff * np.sinc(cutoff * tau) * window


# ---------------------------------------------------------------------------- framing

class Framer:
    """Cut a stream of arbitrary chunks into frames of exactly ``frame_samples``.

    ``feed(chunk)`` returns the frames completed by this chunk (copies, float32);
    leftovers are carried to the next call and counted by ``pending``.
    """

    def __init__(self, frame_samples: int):
        if not isinstance(frame_samples, int) or frame_samples <= 0:
            raise ConfigError(f"frame_samples must be a positive integer, got {frame_samples!r}")
        self.frame_samples = frame_samples
        self._rest = np.zeros(0, dtype=np.float32)

    @property
    def pending(self) -> int:
        """Samples held back until the next frame is complete."""
        return len(self._rest)

    def feed(self, chunk: np.ndarray) -> list[np.ndarray]:
        return list(self.feed_block(chunk))

    def feed_block(self, chunk: np.ndarray) -> np.ndarray:
        """Like ``feed``, as one [n_frames, frame_samples] float32 array (a copy)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        buf = np.concatenate([self._rest, chunk]) if len(self._rest) else chunk
        n = len(buf) // self.frame_samples
        block = buf[:n * self.frame_samples].reshape(n, self.frame_samples).copy()
        self._rest = buf[n * self.frame_samples:].copy()
        return block

    def clear(self) -> np.ndarray:
        """Drop and return the pending samples (at the end of a stream)."""
        rest, self._rest = self._rest, np.zeros(0, dtype=np.float32)
        return rest
