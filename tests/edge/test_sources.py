"""Audio sources: WAV file, directory with a bad file, stdin, microphone, pacing, open_source."""
from __future__ import annotations

import io
import sys
import time
import types

import numpy as np
import pytest

from edge.sources import (AudioSource, DirectorySource, MicrophoneSource, RealtimePacer,
                          StdinSource, WavFileSource, open_source)
from shared.audio import read_wav, resample, to_int16, write_wav
from shared.errors import AudioError, ConfigError


def tone(freq: float, seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def collect(source: AudioSource) -> list[np.ndarray]:
    return list(source.chunks())


def test_wav_file_source_yields_fixed_chunks_of_the_decoded_file(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, tone(440, 0.7, 22050), sample_rate=22050)  # resampled on the way in
    chunks = collect(WavFileSource(path, chunk_samples=1000))
    expected = read_wav(path)
    assert len(expected) == 11200
    assert [len(c) for c in chunks[:-1]] == [1000] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= 1000
    assert all(c.dtype == np.float32 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), expected)


def test_directory_source_skips_a_bad_file_counts_it_and_continues(tmp_path):
    write_wav(tmp_path / "01.wav", tone(300, 0.5))
    (tmp_path / "02.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    write_wav(tmp_path / "03.WAV", tone(600, 0.25))
    (tmp_path / "notes.txt").write_text("not audio")
    source = DirectorySource(tmp_path, chunk_samples=4096)
    assert [p.name for p in source.files] == ["01.wav", "02.wav", "03.WAV"]
    chunks = collect(source)
    assert all(c.dtype == np.int16 for c in chunks)  # 16-bit 16 kHz files: the stored samples
    audio = np.concatenate(chunks)
    assert len(audio) == 8000 + 4000
    assert np.array_equal(audio[:8000], to_int16(tone(300, 0.5)))
    assert source.files_read == 2
    assert len(source.bad_files) == 1
    bad_path, message = source.bad_files[0]
    assert bad_path.endswith("02.wav") and "02.wav" in message


def test_directory_source_refuses_a_directory_without_wavs(tmp_path):
    with pytest.raises(AudioError, match="no \\*.wav files"):
        DirectorySource(tmp_path)


def test_stdin_source_reads_raw_pcm_and_drops_an_odd_byte():
    pcm = to_int16(tone(500, 0.3))
    source = StdinSource(io.BytesIO(pcm.tobytes() + b"\x7f"), chunk_samples=1024)
    chunks = collect(source)
    assert [len(c) for c in chunks[:-1]] == [1024] * (len(chunks) - 1)
    assert all(c.dtype == np.int16 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), pcm)
    assert source.dropped_bytes == 1


class Trickle(io.RawIOBase):
    """A pipe that hands out at most 333 bytes per read (odd, to split samples)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        part = self.data[self.pos:self.pos + min(n, 333)]
        self.pos += len(part)
        return part


def test_stdin_source_reassembles_samples_split_across_reads():
    pcm = to_int16(tone(700, 0.1))
    source = StdinSource(Trickle(pcm.tobytes()), chunk_samples=512)
    assert np.array_equal(to_int16(np.concatenate(collect(source))), pcm)
    assert source.dropped_bytes == 0


def test_realtime_pacer_delivers_at_the_audio_pace(tmp_path):
    path = tmp_path / "half_second.wav"
    write_wav(path, tone(440, 0.5))
    start = time.monotonic()
    times = []
    for _ in RealtimePacer(WavFileSource(path, chunk_samples=1600)).chunks():
        times.append(time.monotonic() - start)
    assert len(times) == 5
    assert times[0] >= 0.09 and times[-1] >= 0.49  # never ahead of real time
    assert times[-1] < 2.0  # and not wildly behind (generous: shared machine)


def test_realtime_pacer_with_an_injected_clock():
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    class Fixed(AudioSource):
        name = "fixed"

        def chunks(self):
            yield from (np.zeros(8000, dtype=np.float32) for _ in range(3))

    chunks = list(RealtimePacer(Fixed(), speed=2.0, clock=lambda: now[0], sleep=sleep).chunks())
    assert len(chunks) == 3 and slept == pytest.approx([0.25, 0.25, 0.25])


def test_microphone_without_sounddevice_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"pip install 'harken\[mic\]'"):
        MicrophoneSource()
    with pytest.raises(ConfigError, match=r"harken\[mic\]"):
        open_source("mic")


def test_microphone_reads_blocks_and_counts_overflows(monkeypatch):
    opened = {}

    class FakeStream:
        def __init__(self, **kwargs):
            opened.update(kwargs, reads=0, closed=False)

        def start(self):
            pass

        def read(self, n):
            opened["reads"] += 1
            return np.full((n, 1), 8192, dtype=opened["dtype"]), opened["reads"] == 2

        def stop(self):
            pass

        def close(self):
            opened["closed"] = True

    fake = types.SimpleNamespace(InputStream=FakeStream)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    source = open_source("mic:3", chunk_samples=800)
    assert isinstance(source, MicrophoneSource) and source.name == "mic:3"
    got = []
    for chunk in source.chunks():
        got.append(chunk)
        if len(got) == 3:
            source.close()
    assert [c.shape for c in got] == [(800,)] * 3 and int(got[0][0]) == 8192 and got[0].dtype == np.int16
    assert opened["device"] == 3 and opened["samplerate"] == 16000 and opened["closed"]
    assert opened["dtype"] == "int16"  # PortAudio hands over 16-bit PCM: no float on the way to the VAD
    assert source.overflows == 1


def test_open_source_picks_the_right_kind(tmp_path, monkeypatch):
    write_wav(tmp_path / "x.wav", tone(440, 0.1))
    assert isinstance(open_source(str(tmp_path / "x.wav")), WavFileSource)
    assert isinstance(open_source(str(tmp_path), chunk_samples=160), DirectorySource)
    pcm = to_int16(tone(440, 0.05))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm.tobytes())))
    source = open_source("-")
    assert isinstance(source, StdinSource)
    assert np.array_equal(to_int16(np.concatenate(collect(source))), pcm)
    with pytest.raises(AudioError, match="nowhere.wav: no such file.*'mic'"):
        open_source(str(tmp_path / "nowhere.wav"))
    with pytest.raises(ConfigError):
        open_source(str(tmp_path), chunk_samples=0)


def test_closed_source_stops_yielding(tmp_path):
    write_wav(tmp_path / "long.wav", tone(440, 1.0))
    with WavFileSource(tmp_path / "long.wav", chunk_samples=1600) as source:
        got = []
        for chunk in source.chunks():
            got.append(chunk)
            source.close()
    assert len(got) == 1


def test_a_long_file_is_read_in_blocks_not_whole(tmp_path):
    """A file source holds one block: memory does not grow with the file."""
    import tracemalloc

    x = to_int16(0.1 * np.sin(np.arange(16000 * 120) * 0.05).astype(np.float32))  # two minutes
    write_wav(tmp_path / "long.wav", x)
    tracemalloc.start()
    n = 0
    for chunk in WavFileSource(tmp_path / "long.wav", chunk_samples=4096).chunks():
        n += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == len(x)
    assert peak < 200_000  # the file is 3.8 MB; one block is 8 KB


def test_file_source_feeds_the_gate_identically_to_reading_it_whole(tmp_path):
    """Sources only chunk: resampled 8 kHz input reaches the gate as read_wav gives it."""
    x = resample(tone(200, 0.5, 16000), 16000, 8000)
    write_wav(tmp_path / "n.wav", x, sample_rate=8000)
    got = np.concatenate(collect(open_source(str(tmp_path / "n.wav"), chunk_samples=333)))
    assert np.array_equal(got, read_wav(tmp_path / "n.wav"))
