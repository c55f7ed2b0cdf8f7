"""WAV decoding of every encoding, in blocks or whole, errors that name the file, resampling."""
from __future__ import annotations

import struct
import wave

import numpy as np
import pytest

from shared.audio import (SAMPLE_RATE, WavReader, decode_wav_bytes, read_wav, resample, wav_format,
                          to_float32, to_int16, write_wav)
from shared.errors import AudioError, ConfigError

_PCM_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def encode(x: np.ndarray, bits: int) -> bytes:
    """Interleaved little-endian sample bytes for float audio shaped (frames, channels)."""
    if bits == 8:
        return np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    if bits == 16:
        return np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    if bits == 24:
        v = np.clip(np.round(x * 8388608), -8388608, 8388607).astype("<i4").reshape(-1)
        return v.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    if bits == 32:
        return np.clip(np.round(x * 2147483648.0), -2147483648, 2147483647).astype("<i4").tobytes()
    raise ValueError(bits)


def make_wav(x: np.ndarray, rate: int, bits: int = 16, kind: str = "pcm",
             data_size: int | None = None, extra_chunk: bool = True) -> bytes:
    """A WAV file built by hand. kind: pcm | float | extensible | extensible-float."""
    x = x.reshape(len(x), -1)
    channels = x.shape[1]
    body = x.astype("<f4").tobytes() if "float" in kind else encode(x, bits)
    block = channels * bits // 8
    head = struct.pack("<HHIIHH", 0xFFFE if kind.startswith("extensible") else
                       (3 if kind == "float" else 1), channels, rate, rate * block, block, bits)
    if kind.startswith("extensible"):
        sub = 3 if kind.endswith("float") else 1
        head += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", sub) + _PCM_GUID_TAIL
    chunks = b"fmt " + struct.pack("<I", len(head)) + head
    if extra_chunk:  # an odd-sized chunk before the data exercises the word alignment
        chunks += b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\x00"
    size = len(body) if data_size is None else data_size
    chunks += b"data" + struct.pack("<I", size) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def sine(freq: float, rate: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def peak_hz(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * rate / len(x)


@pytest.mark.parametrize("bits,kind,tolerance", [
    (8, "pcm", 1 / 128), (16, "pcm", 1 / 32768), (24, "pcm", 1e-6), (32, "pcm", 1e-6),
    (32, "float", 1e-6), (16, "extensible", 1 / 32768), (24, "extensible", 1e-6),
    (32, "extensible-float", 1e-6),
])
def test_every_encoding_decodes_close_to_the_original(bits, kind, tolerance):
    original = sine(440, SAMPLE_RATE, 0.25)
    got = decode_wav_bytes(make_wav(original, SAMPLE_RATE, bits, kind), "tone.wav")
    assert got.dtype == np.float32 and got.shape == original.shape
    assert np.max(np.abs(got - original)) <= tolerance + 1e-7


def test_stereo_is_downmixed_by_mean():
    left, right = sine(300, SAMPLE_RATE, 0.2, 0.6), sine(700, SAMPLE_RATE, 0.2, 0.2)
    got = decode_wav_bytes(make_wav(np.stack([left, right], axis=1), SAMPLE_RATE, 24), "st.wav")
    assert np.max(np.abs(got - (left + right) / 2)) < 1e-6


def test_six_channels_and_44k1_are_converted_to_16k_mono():
    tone = sine(1000, 44100, 1.0)
    x = np.repeat(tone[:, None], 6, axis=1)
    got = decode_wav_bytes(make_wav(x, 44100, 16), "surround.wav")
    assert len(got) == SAMPLE_RATE
    assert peak_hz(got) == pytest.approx(1000, abs=1.0)
    assert np.std(got[1000:-1000]) * np.sqrt(2) == pytest.approx(0.5, rel=0.01)


def test_espeak_22050_hz_output_matches_sox_conversion(espeak_wav):
    raw, converted = espeak_wav
    with wave.open(str(raw)) as w:
        assert w.getframerate() == 22050
    ours, theirs = read_wav(raw), read_wav(converted)
    assert abs(len(ours) - len(theirs)) <= 1
    n = min(len(ours), len(theirs))
    residual = np.sqrt(np.mean((ours[:n] - theirs[:n]) ** 2) / np.mean(theirs[:n] ** 2))
    assert residual < 0.05  # two different resamplers agree to within -26 dB


def test_truncated_file_says_so_and_names_it(tmp_path):
    data = make_wav(sine(440, SAMPLE_RATE, 0.2), SAMPLE_RATE)
    path = tmp_path / "cut.wav"
    path.write_bytes(data[:-1000])
    with pytest.raises(AudioError, match=r"cut\.wav.*truncated.*declares \d+ bytes"):
        read_wav(path)


def test_empty_wav_names_the_file(tmp_path):
    path = tmp_path / "empty.wav"
    write_wav(path, np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match=r"empty\.wav.*no samples"):
        read_wav(path)


def test_not_a_wav_names_the_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is a text file, not audio\n")
    with pytest.raises(AudioError, match=r"notes\.wav: not a WAV file.*sox"):
        read_wav(path)


@pytest.mark.parametrize("tag,codec", [
    (0x0055, "MP3"), (0x0002, "MS ADPCM"), (0x1234, "format tag 0x1234")])
def test_compressed_encoding_is_refused_with_a_fix(tag, codec):
    data = bytearray(make_wav(sine(440, SAMPLE_RATE, 0.1), SAMPLE_RATE))
    struct.pack_into("<H", data, 20, tag)
    with pytest.raises(AudioError, match=rf"voice\.wav: unsupported encoding {codec}.*sox"):
        decode_wav_bytes(bytes(data), "voice.wav")


def test_unreadable_path_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: cannot read"):
        read_wav(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="cannot read"):
        read_wav(tmp_path)  # a directory


def test_streamed_wav_with_unknown_data_size_is_read():
    x = sine(440, SAMPLE_RATE, 0.1)
    got = decode_wav_bytes(make_wav(x, SAMPLE_RATE, data_size=0xFFFFFFFF), "pipe.wav")
    assert np.max(np.abs(got - x)) < 1e-4


def test_write_wav_round_trip_is_16_bit_mono_and_atomic(tmp_path):
    path = tmp_path / "out.wav"
    path.write_bytes(b"old content")
    x = np.array([0.0, 0.5, -0.5, 1.5, -2.0, 1 / 32768], dtype=np.float32)
    write_wav(path, x)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        pcm = np.frombuffer(w.readframes(10), dtype="<i2")
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32768, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # no temp file left
    write_wav(path, pcm)  # int16 is written as is
    assert np.array_equal(to_int16(read_wav(path)), pcm)


def test_int16_float32_conversions():
    pcm = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    f = to_float32(pcm)
    assert f.dtype == np.float32 and f[0] == -1.0 and f[3] == 1 / 32768
    assert np.array_equal(to_int16(f), pcm)
    assert to_int16(np.array([np.nan, 2.0, -2.0])).tolist() == [0, 32767, -32768]
    with pytest.raises(ConfigError):
        to_int16(np.array([1, 2], dtype=np.int32))


@pytest.mark.parametrize("src,dst,freq", [(44100, 16000, 1000), (8000, 16000, 1000),
                                          (48000, 16000, 3000), (16000, 22050, 440)])
def test_resample_keeps_frequency_and_amplitude(src, dst, freq):
    y = resample(sine(freq, src, 1.0), src, dst)
    assert len(y) == dst
    assert peak_hz(y, dst) == pytest.approx(freq, abs=1.0)
    assert np.std(y[500:-500]) * np.sqrt(2) == pytest.approx(0.5, rel=0.01)


def test_resample_removes_what_would_alias():
    y = resample(sine(10000, 44100, 1.0), 44100, 16000)  # would fold to 6 kHz
    assert 20 * np.log10(np.std(y[500:-500]) * np.sqrt(2) / 0.5) < -60  # away from the edges


def test_resample_is_deterministic_and_identity_at_same_rate():
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    assert np.array_equal(resample(x, 22050, 16000), resample(x, 22050, 16000))
    assert np.array_equal(resample(x, 16000, 16000), x)
    assert len(resample(x[:0], 44100, 16000)) == 0
    with pytest.raises(ConfigError):
        resample(x, 0, 16000)


def test_wav_format_tells_rate_channels_and_encoding_without_decoding():
    stereo = np.stack([sine(440, 44100), sine(660, 44100)], axis=1)
    assert wav_format(make_wav(stereo, 44100, 24, "extensible")) == {"tag": 1, "channels": 2, "rate": 44100, "bits": 24}
    assert wav_format(make_wav(sine(440, 8000), 8000, 32, "float"))["tag"] == 3
    with pytest.raises(AudioError, match="not a WAV"):
        wav_format(b"nothing here", "x.wav")


@pytest.mark.parametrize("bits,kind,channels,rate", [
    (16, "pcm", 1, 16000), (16, "pcm", 2, 16000), (8, "pcm", 1, 16000), (24, "pcm", 3, 16000),
    (32, "float", 1, 16000), (16, "extensible", 1, 16000), (16, "pcm", 1, 8000), (16, "pcm", 1, 44100),
])
def test_a_wav_read_in_blocks_is_the_file_read_whole(tmp_path, bits, kind, channels, rate):
    """int16 blocks (16-bit mono 16 kHz) are the stored samples; others are read_wav's floats."""
    x = np.stack([sine(300 + 100 * c, rate, 0.37, 0.4) for c in range(channels)], axis=1)
    path = tmp_path / "t.wav"
    path.write_bytes(make_wav(x, rate, bits, kind))
    whole = read_wav(path)
    for block in (1, 333, 4096, 10 ** 6):
        with WavReader(path) as reader:
            blocks = list(reader.blocks(block))
        assert all(len(b) == block for b in blocks[:-1]) and 0 < len(blocks[-1]) <= block
        pcm16 = (bits, channels, rate) == (16, 1, 16000)
        assert reader.is_pcm16 == pcm16 and all(b.dtype == (np.int16 if pcm16 else np.float32) for b in blocks)
        got = np.concatenate(blocks)
        assert np.array_equal(to_float32(got) if pcm16 else got, whole)


def test_a_wav_reader_refuses_a_bad_file_before_yielding_anything(tmp_path):
    good = make_wav(sine(440, SAMPLE_RATE), SAMPLE_RATE)
    tag = good.index(b"fmt ") + 8
    cases = {"cut.wav": (good[:-100], "truncated"), "empty.wav": (make_wav(np.zeros(1), SAMPLE_RATE, data_size=0)[:-2], "holds no samples"),
             "junk.wav": (b"RIFF\x00\x00\x00\x00WAVEjunk", "without a 'fmt '"),
             "mp3.wav": (good[:tag] + struct.pack("<H", 0x55) + good[tag + 2:], "MP3")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AudioError, match=message) as err:
            WavReader(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(AudioError, match="cannot read the file"):
        WavReader(tmp_path / "missing.wav")
