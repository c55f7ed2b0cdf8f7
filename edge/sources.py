"""Audio sources for the agent: WAV file, directory of WAV files, stdin, microphone.

Every source yields mono 16 kHz chunks from ``chunks()`` and releases what it holds on
``close()``. A chunk is int16 PCM when the audio is 16-bit (stdin, the microphone, a 16-bit
16 kHz WAV: the samples as they come, for the gate to use without conversion) and float32 in
[-1, 1] otherwise. Files are read in blocks of ``chunk_samples``, never whole. ``open_source(spec)`` picks one from a command-line argument;
``RealtimePacer`` slows a file source down to the pace a microphone would deliver.
"""
from __future__ import annotations

import abc
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from shared.audio import SAMPLE_RATE, WavReader
from shared.errors import AudioError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SAMPLES = 4096
_MIC_HINT = "install it with: pip install 'harken[mic]'"


def _check_chunk(chunk_samples: int) -> int:
    if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int) \
            or chunk_samples <= 0:
        raise ConfigError(f"chunk_samples must be a positive integer, got {chunk_samples!r}")
    return chunk_samples


class AudioSource(abc.ABC):
    """Where audio comes from. ``chunks()`` yields mono 16 kHz arrays: int16 PCM or float32."""

    name: str = "audio"
    sample_rate: int = SAMPLE_RATE

    @abc.abstractmethod
    def chunks(self) -> Iterator[np.ndarray]:
        """Yield mono 16 kHz chunks (int16 or float32) until the source is exhausted or closed."""

    def close(self) -> None:
        """Release the device or file; further ``chunks()`` yield nothing."""

    def __enter__(self) -> "AudioSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class WavFileSource(AudioSource):
    """One WAV file (any PCM/float encoding, rate and channel count), read in blocks."""

    def __init__(self, path: str | os.PathLike, chunk_samples: int = DEFAULT_CHUNK_SAMPLES):
        self.path = Path(path)
        self.chunk_samples = _check_chunk(chunk_samples)
        self.name = str(self.path)
        if not self.path.is_file():
            raise AudioError(f"{self.path}: no such WAV file; check the path")
        self._closed = False

    def chunks(self) -> Iterator[np.ndarray]:
        if self._closed:
            return
        with WavReader(self.path) as reader:
            for chunk in reader.blocks(self.chunk_samples):
                if self._closed:
                    return
                yield chunk

    def close(self) -> None:
        self._closed = True


class DirectorySource(AudioSource):
    """Every ``*.wav`` in a directory (sorted by name), one after another.

    A file that cannot be decoded is skipped, logged and recorded in ``bad_files`` as
    ``(path, message)`` so the rest of the data is not lost; ``files_read`` counts the
    good ones. A file that fails while it is read (an I/O error) ends early and is recorded
    too. Files are played back to back without a gap (the gate sees one stream).
    """

    def __init__(self, directory: str | os.PathLike, chunk_samples: int = DEFAULT_CHUNK_SAMPLES):
        self.directory = Path(directory)
        self.chunk_samples = _check_chunk(chunk_samples)
        self.name = str(self.directory)
        if not self.directory.is_dir():
            raise AudioError(f"{self.directory}: no such directory; check the path")
        self.files = sorted(p for p in self.directory.iterdir()
                            if p.is_file() and p.suffix.lower() == ".wav")
        if not self.files:
            raise AudioError(f"{self.directory}: no *.wav files in this directory; "
                             "put 16 kHz mono WAV files there or give a file path")
        self.bad_files: list[tuple[str, str]] = []
        self.files_read = 0
        self.current: Path | None = None
        self._closed = False

    def chunks(self) -> Iterator[np.ndarray]:
        for path in self.files:
            if self._closed:
                return
            try:
                reader = WavReader(path)
            except AudioError as exc:
                log.warning("skipping unreadable audio file: %s", exc)
                self.bad_files.append((str(path), str(exc)))
                continue
            self.current = path
            self.files_read += 1
            with reader:
                try:
                    for chunk in reader.blocks(self.chunk_samples):
                        if self._closed:
                            return
                        yield chunk
                except AudioError as exc:
                    log.warning("audio file failed while read: %s", exc)
                    self.bad_files.append((str(path), str(exc)))
        self.current = None

    def close(self) -> None:
        self._closed = True


class StdinSource(AudioSource):
    """Raw 16 kHz signed 16-bit little-endian mono PCM from a byte stream (stdin).

    An odd trailing byte at the end of the stream cannot form a sample: it is dropped
    and counted in ``dropped_bytes``.
    """

    def __init__(self, stream: BinaryIO | None = None,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES):
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.chunk_samples = _check_chunk(chunk_samples)
        self.name = "stdin"
        self.dropped_bytes = 0
        self._closed = False

    def chunks(self) -> Iterator[np.ndarray]:
        want = 2 * self.chunk_samples
        carry = b""
        while not self._closed:
            try:
                data = self.stream.read(want - len(carry))
            except (OSError, ValueError) as exc:  # ValueError: read on a closed stream
                raise AudioError(f"stdin: cannot read audio ({exc}); pipe raw 16 kHz "
                                 "s16le mono PCM into it") from exc
            if not data:
                break
            data = carry + data
            usable = len(data) - (len(data) & 1)
            carry = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], dtype="<i2").astype(np.int16, copy=False)
        self.dropped_bytes += len(carry)

    def close(self) -> None:
        self._closed = True


class MicrophoneSource(AudioSource):
    """A live input device through the optional ``sounddevice`` package.

    The stream is opened at 16 kHz mono int16 (PortAudio converts when the device runs at
    another rate or depth). ``device`` is a device name or index, None for the default.
    Buffer overruns (audio lost because the reader fell behind) are counted in
    ``overflows``.
    """

    def __init__(self, device: str | int | None = None,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES):
        try:
            import sounddevice  # optional: only microphone users install it
        except ImportError as exc:
            raise ConfigError(f"the microphone needs the sounddevice package; {_MIC_HINT}") \
                from exc
        except OSError as exc:  # sounddevice is installed but PortAudio is not
            raise ConfigError(f"sounddevice cannot load PortAudio ({exc}); install "
                              "libportaudio2 (apt-get install libportaudio2)") from exc
        self._sd = sounddevice
        self.device = device
        self.chunk_samples = _check_chunk(chunk_samples)
        self.name = f"mic:{device}" if device is not None else "mic"
        self.overflows = 0
        self._stream = None
        self._closed = threading.Event()

    def _open(self):
        try:
            stream = self._sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16",
                                          blocksize=self.chunk_samples, device=self.device)
            stream.start()
        except Exception as exc:  # PortAudioError, ValueError for an unknown device
            raise AudioError(f"{self.name}: cannot open the input device ({exc}); list the "
                             "devices with: python -m sounddevice") from exc
        log.info("microphone opened: %s at %d Hz", self.name, SAMPLE_RATE)
        return stream

    def chunks(self) -> Iterator[np.ndarray]:
        if self._closed.is_set():
            return
        self._stream = self._open()
        try:
            while not self._closed.is_set():
                try:
                    data, overflowed = self._stream.read(self.chunk_samples)
                except Exception as exc:
                    if self._closed.is_set():
                        return
                    raise AudioError(f"{self.name}: reading the input device failed "
                                     f"({exc}); check that it is still connected") from exc
                self.overflows += bool(overflowed)
                yield np.asarray(data).reshape(-1)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()

    def close(self) -> None:
        self._closed.set()


class RealtimePacer(AudioSource):
    """Deliver another source's chunks no faster than real time (``--realtime``).

    Chunk k is released when the audio up to its end would have been recorded:
    ``t0 + samples_so_far / 16000 / speed``. The clock and sleep are injectable.
    """

    def __init__(self, source: AudioSource, speed: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed <= 0:
            raise ConfigError(f"speed must be a positive number (1.0 = real time), got {speed!r}")
        self.source = source
        self.speed = float(speed)
        self.name = source.name
        self._clock = clock
        self._sleep = sleep

    def chunks(self) -> Iterator[np.ndarray]:
        t0 = self._clock()
        samples = 0
        for chunk in self.source.chunks():
            samples += len(chunk)
            wait = t0 + samples / (self.source.sample_rate * self.speed) - self._clock()
            if wait > 0:
                self._sleep(wait)
            yield chunk

    def close(self) -> None:
        self.source.close()


def open_source(spec: str, chunk_samples: int = DEFAULT_CHUNK_SAMPLES) -> AudioSource:
    """Pick a source: ``-`` stdin, ``mic`` or ``mic:NAME`` a microphone, a directory, a WAV."""
    _check_chunk(chunk_samples)
    if spec == "-":
        return StdinSource(chunk_samples=chunk_samples)
    if spec == "mic" or spec.startswith("mic:"):
        device: str | int | None = spec[4:] or None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        return MicrophoneSource(device, chunk_samples=chunk_samples)
    path = Path(spec)
    if path.is_dir():
        return DirectorySource(path, chunk_samples=chunk_samples)
    if path.is_file():
        return WavFileSource(path, chunk_samples=chunk_samples)
    raise AudioError(f"{spec}: no such file or directory; give a WAV file, a directory of WAV "
                     "files, '-' for raw PCM on stdin, or 'mic' / 'mic:NAME' for a microphone")
