"""Audio in: WAV decoding and encoding, resampling and sample conversions.

Everything Harken processes is mono at 16 kHz: float32 in [-1, 1], or int16 PCM where the
source is 16-bit (the gate takes both; int16 is cheaper and converted once per utterance).
``read_wav`` turns any PCM WAV (8/16/24/32-bit integer or 32/64-bit float, plain or
WAVE_FORMAT_EXTENSIBLE, any channel count and rate) into float32; ``WavReader`` streams a
file in blocks (int16 when it is 16-bit mono 16 kHz); ``write_wav`` writes 16-bit mono PCM
atomically. Pure numpy: this module runs on the device.
"""
from __future__ import annotations

import logging
import io
import math
import os
import struct
import wave
from pathlib import Path
from typing import Callable, Iterator

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
    with WavReader(path) as reader:
        return reader.read_all()


def decode_wav_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode WAV bytes as float32 mono 16 kHz in [-1, 1]; ``name`` appears in errors."""
    data = bytes(data)
    fmt, start, size = _scan_riff(lambda pos, n: data[pos:pos + n], len(data), name)
    return _to_float_16k(data[start:start + size], fmt, name)


def _to_float_16k(payload: bytes, fmt: dict, name: str) -> np.ndarray:
    samples = _decode_samples(payload, fmt, name)
    if fmt["rate"] != SAMPLE_RATE:
        samples = resample(samples, fmt["rate"], SAMPLE_RATE)
    return samples


def wav_format(data: bytes, name: str = "<bytes>") -> dict:
    """``{"tag", "channels", "rate", "bits"}`` of WAV bytes; raises AudioError as ``read_wav`` does."""
    data = bytes(data)
    fmt, _, _ = _scan_riff(lambda pos, n: data[pos:pos + n], len(data), name)
    return {k: fmt[k] for k in ("tag", "channels", "rate", "bits")}


class WavReader:
    """A WAV file read in blocks, so a long recording never sits in memory whole.

    ``blocks(n)`` yields mono 16 kHz audio ``n`` samples at a time: int16 PCM, as stored, when
    the file is 16-bit mono PCM at 16 kHz (the common case: no conversion at all); float32 in
    [-1, 1] for any other encoding, decoded block by block to the values ``read_wav`` gives.
    A file at another rate is resampled whole (the resampler's kernel spans blocks) and then
    yielded in blocks. Header problems (not a WAV, unsupported encoding, truncated, empty)
    raise ``AudioError`` when the reader is opened, before any audio is yielded.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(path)
        try:
            self._file = open(self.path, "rb")
            total = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            raise AudioError(
                f"{path}: cannot read the file ({exc.strerror or exc}); check the path and "
                "its permissions") from exc
        try:
            self.format, self._start, size = _scan_riff(self._read_at, total, self.name)
            self.frames = size // self.format["block_align"]  # a partial last frame is dropped
            if self.frames == 0:
                raise AudioError(f"{self.name}: empty: the WAV file holds no samples; re-record it")
        except BaseException:
            self._file.close()
            raise
        fmt = self.format
        self.is_pcm16 = (fmt["tag"] == _FORMAT_PCM and fmt["bits"] == 16 and fmt["channels"] == 1
                         and fmt["rate"] == SAMPLE_RATE)

    def _read_at(self, pos: int, n: int) -> bytes:
        self._file.seek(pos)
        return self._read(n)

    def _read(self, n: int) -> bytes:
        try:
            return self._file.read(n)
        except OSError as exc:
            raise AudioError(f"{self.name}: reading failed ({exc.strerror or exc}); check the "
                             "disk and re-copy the file") from exc

    def read_all(self) -> np.ndarray:
        """The whole file as float32 (what ``read_wav`` returns)."""
        return _to_float_16k(self._read_at(self._start, self.frames * self.format["block_align"]),
                             self.format, self.name)

    def blocks(self, block_samples: int) -> Iterator[np.ndarray]:
        """Yield the audio ``block_samples`` at a time (the last block may be shorter)."""
        if isinstance(block_samples, bool) or not isinstance(block_samples, int) or block_samples <= 0:
            raise ConfigError(f"block_samples must be a positive integer, got {block_samples!r}")
        if self.format["rate"] != SAMPLE_RATE:
            samples = self.read_all()
            for i in range(0, len(samples), block_samples):
                yield samples[i:i + block_samples]
            return
        align = self.format["block_align"]
        self._file.seek(self._start)
        for first in range(0, self.frames, block_samples):
            n = min(block_samples, self.frames - first)
            payload = self._read(n * align)
            if len(payload) < n * align:
                raise AudioError(f"{self.name}: the file shrank while it was read; re-copy it")
            yield (np.frombuffer(payload, dtype="<i2").astype(np.int16, copy=False) if self.is_pcm16
                   else _decode_samples(payload, self.format, self.name))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "WavReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _scan_riff(read_at: Callable[[int, int], bytes], total: int, name: str) -> tuple[dict, int, int]:
    """The format and the (offset, size) of the data chunk, reading only the chunk headers."""
    head = read_at(0, 12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        raise AudioError(
            f"{name}: not a WAV file (no RIFF/WAVE header); give a .wav file or {_CONVERT_HINT}")
    if head[:4] == b"RIFX":
        raise AudioError(f"{name}: big-endian RIFX WAV is not supported; {_CONVERT_HINT}")
    fmt, payload, pos = None, None, 12
    while pos + 8 <= total:
        header = read_at(pos, 8)
        chunk_id, size = header[:4], struct.unpack_from("<I", header, 4)[0]
        body_start = pos + 8
        if chunk_id == b"data":
            available = total - body_start
            if size == _UNKNOWN_SIZE:
                size = available
            elif size > available:
                raise AudioError(
                    f"{name}: truncated: the data chunk declares {size} bytes but only "
                    f"{available} are present; the file was cut short (re-copy or re-record it)")
            payload = (body_start, size)
            if fmt is not None:
                break
        elif chunk_id == b"fmt ":
            if body_start + size > total or size < 16:
                raise AudioError(f"{name}: truncated or malformed 'fmt ' chunk; {_CONVERT_HINT}")
            fmt = _parse_fmt(read_at(body_start, size), name)
        pos = body_start + size + (size & 1)  # chunks are word aligned
    if fmt is None:
        raise AudioError(f"{name}: WAV file without a 'fmt ' chunk (truncated?); {_CONVERT_HINT}")
    if payload is None:
        raise AudioError(
            f"{name}: WAV file without a 'data' chunk (truncated or empty); re-record it")
    return fmt, payload[0], payload[1]


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
