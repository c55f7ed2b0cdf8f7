"""Streams of real speech for simulated devices, built from a model-lab dataset.

A dataset directory (``harken data synth`` output) holds ``manifest.json`` listing every clip
with its label and speaker; the simulator reads that JSON itself (edge code never imports the
lab). A device's stream is its household's clips (households.py) separated by gaps its traffic
draws (traffic.py), over a continuous low background hiss, all chosen by generators seeded
with ``(seed, device)``: the same seed gives every device the same audio on every run and in
any chunking. The stream remembers where each clip sits (``Timeline``) so a simulated person
can later tell what was really said.

Cheap by design (a fleet renders days of audio per device): gaps are not materialised, each
chunk is the hiss plus the clips that overlap it; the hiss is read from one table of Gaussian
noise shared by a process's devices, each at its own offset, instead of drawn per sample; clips
are decoded (and resampled when shifted) once into an LRU cache.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from edge.sim.households import Casting
from edge.sim.scenarios import ScenarioParams, active_level_dbfs
from edge.sim.traffic import ConstantTraffic, Traffic
from edge.sources import AudioSource
from shared.audio import SAMPLE_RATE, read_wav, resample
from shared.errors import AudioError, ConfigError, DatasetError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FLOOR_DBFS = (-68.0, -58.0)  # the background hiss of a device, chosen per device
SILENCE_LABEL = "_silence_"
CACHE_CLIPS = 1024  # 1 s clips: 64 MB at most
HISS_TABLE_SAMPLES = 1 << 22  # 262 s of noise
TIMELINE_KEEP_S = 300.0
BABBLE_TALKERS = 6
REF_LEVEL_SAMPLE = 60  # speech clips measured for the reference level


@dataclass(frozen=True)
class ClipRef:
    path: Path
    label: str
    speaker: str

    @property
    def is_speech(self) -> bool:
        return self.label != SILENCE_LABEL


class ClipPool:
    """The dataset's clips, decoded on demand (a small LRU cache; thread-safe)."""

    def __init__(self, clips: list[ClipRef], labels: list[str], cache_clips: int = CACHE_CLIPS):
        if not clips:
            raise DatasetError("the dataset lists no clips; synthesize one with `harken data synth DIR`")
        self.clips, self.labels = clips, labels
        self.cache_clips = cache_clips
        self._cache: OrderedDict[tuple[Path, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.speakers = sorted({c.speaker for c in clips if c.is_speech})

    @classmethod
    def from_dataset(cls, root: str | Path) -> "ClipPool":
        root = Path(root)
        path = root / MANIFEST
        try:
            raw = json.loads(path.read_text())
            clips = [ClipRef(root / c["path"], str(c["label"]), str(c.get("speaker") or "")) for c in raw["clips"]]
            labels = [str(x) for x in raw.get("labels", sorted({c.label for c in clips}))]
        except FileNotFoundError:
            raise DatasetError(f"{path} not found; give --data a directory made by `harken data synth`") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path} is not a dataset manifest ({exc}); re-create it with "
                               "`harken data synth`") from exc
        return cls(clips, labels)

    def audio(self, clip: ClipRef, shift: float = 1.0) -> np.ndarray:
        """The clip as float32 16 kHz; ``shift`` > 1 plays it faster (higher pitch, shorter)."""
        src_rate = int(round(SAMPLE_RATE * shift / 800.0)) * 800  # a rate with a small ratio: fast resampling
        key = (clip.path, src_rate)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            x = read_wav(clip.path)
        except AudioError as exc:
            raise DatasetError(f"{exc}; the dataset is damaged, re-create it with `harken data synth`") from exc
        if src_rate != SAMPLE_RATE:
            x = resample(x, src_rate, SAMPLE_RATE)
        x.setflags(write=False)
        with self._lock:
            self._cache[key] = x
            while len(self._cache) > self.cache_clips:
                self._cache.popitem(last=False)
        return x

    def speech_of(self, speakers) -> list[ClipRef]:
        """The word and ``_unknown_`` clips of ``speakers``."""
        chosen = set(speakers)
        return [c for c in self.clips if c.is_speech and c.speaker in chosen]

    def silence_of(self, speakers) -> tuple[list[ClipRef], float]:
        """The ``_silence_`` clips of ``speakers`` (and of no one), and their share of those speakers' clips."""
        chosen = set(speakers)
        mine = [c for c in self.clips if c.speaker in chosen or not c.speaker]
        silence = [c for c in mine if not c.is_speech]
        return silence, (len(silence) / len(mine) if mine else 0.0)

    def reference_level_dbfs(self, seed: int = 0) -> float:
        """Median active level of (a seeded sample of) the speech clips: what SNR is relative to."""
        speech = [c for c in self.clips if c.is_speech]
        if not speech:
            raise DatasetError("the dataset has no speech clips")
        rng = np.random.default_rng([seed, 104729])
        picks = rng.choice(len(speech), size=min(REF_LEVEL_SAMPLE, len(speech)), replace=False)
        return float(np.median([active_level_dbfs(self.audio(speech[i])) for i in picks]))


class Span(NamedTuple):
    start: int  # sample positions in the stream
    end: int
    label: str
    speaker: str


class Timeline:
    """Where each clip sits in a stream, for looking up the truth later (thread-safe)."""

    def __init__(self, keep_s: float = TIMELINE_KEEP_S):
        self.keep_samples = int(keep_s * SAMPLE_RATE)
        self._spans: deque[Span] = deque()
        self._lock = threading.Lock()

    def add(self, start: int, end: int, label: str, speaker: str = "") -> None:
        with self._lock:
            self._spans.append(Span(start, end, label, speaker))
            while self._spans and self._spans[0].end < end - self.keep_samples:
                self._spans.popleft()

    def spans(self) -> list["Span"]:
        """The clips still remembered, oldest first."""
        with self._lock:
            return list(self._spans)

    def label_at(self, start_s: float, end_s: float) -> str | None:
        """Label of the clip overlapping ``[start_s, end_s)`` the most; None if none overlaps."""
        a, b = int(start_s * SAMPLE_RATE), int(end_s * SAMPLE_RATE)
        best, best_overlap = None, 0
        with self._lock:
            for s, e, label, _ in self._spans:
                overlap = min(b, e) - max(a, s)
                if overlap > best_overlap:
                    best, best_overlap = label, overlap
        return best


@functools.lru_cache(maxsize=1)
def hiss_table() -> np.ndarray:
    """Unit-RMS Gaussian noise every device reads at its own offset (read-only; a process's one copy)."""
    x = np.random.default_rng(2718281828).standard_normal(HISS_TABLE_SAMPLES, dtype=np.float32)
    x.setflags(write=False)
    return x


class DeviceStream:
    """The endless stream of one device: ``take(n)`` returns the next n samples.

    Each utterance slot plays a ``silence`` clip with probability ``silence_share``, else a
    ``speech`` clip (by default: every clip of the dataset, in its proportions); ``traffic``
    draws the gaps (default: constant). From ``switch_sample`` on (a new-speakers onset), speech
    comes from ``speech_after``, played ``shift`` times faster.
    """

    def __init__(self, pool: ClipPool, seed: int, device_index: int, *, speech: list[ClipRef] | None = None,
                 silence: list[ClipRef] | None = None, silence_share: float | None = None,
                 speech_after: list[ClipRef] | None = None, switch_sample: int | None = None, shift: float = 1.0,
                 traffic: Traffic | None = None, timeline: Timeline | None = None):
        self.pool = pool
        self.rng = np.random.default_rng([seed, device_index])  # what plays: gaps and clips
        self.floor_rms = np.float32(10.0 ** (self.rng.uniform(*FLOOR_DBFS) / 20.0))
        self._hiss_at = int(np.random.default_rng([seed, device_index, 3]).integers(HISS_TABLE_SAMPLES))
        self.timeline = timeline or Timeline()
        self.traffic = traffic or ConstantTraffic()
        self.speech = speech if speech is not None else [c for c in pool.clips if c.is_speech]
        if silence is None:
            silence, silence_share = pool.silence_of({c.speaker for c in pool.clips})
        self.silence, self.silence_share = silence, float(silence_share or 0.0)
        if not self.speech:
            raise DatasetError("a simulated device has no speech clips to play; check the dataset's speakers")
        self.speech_after = speech_after or self.speech
        self.switch_sample, self.shift = switch_sample, shift
        self.position = 0  # samples handed out
        self._end = 0  # samples scheduled (clips and gaps)
        self._pending: deque[tuple[int, np.ndarray]] = deque()  # (start sample, audio) of clips not yet over
        self.clips_played = 0

    def _schedule(self) -> None:
        gap_s = self.traffic.gap_s(self._end / SAMPLE_RATE, self.rng)
        start = self._end + int(gap_s * SAMPLE_RATE)
        switched = self.switch_sample is not None and start >= self.switch_sample
        if self.silence and self.rng.random() < self.silence_share:
            clip = self.silence[int(self.rng.integers(len(self.silence)))]
        else:
            choices = self.speech_after if switched else self.speech
            clip = choices[int(self.rng.integers(len(choices)))]
        x = self.pool.audio(clip, self.shift if (switched and clip.is_speech) else 1.0)
        self._pending.append((start, x))
        self.timeline.add(start, start + len(x), clip.label, clip.speaker)
        self._end = start + len(x)
        self.clips_played += 1

    def _hiss(self, start: int, n: int) -> np.ndarray:
        table = hiss_table()
        out = np.empty(n, dtype=np.float32)
        i, p = 0, (start + self._hiss_at) % len(table)
        while i < n:
            k = min(n - i, len(table) - p)
            np.multiply(table[p:p + k], self.floor_rms, out=out[i:i + k])
            i, p = i + k, 0
        return out

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` samples: the hiss plus every clip overlapping them."""
        a, b = self.position, self.position + n
        out = self._hiss(a, n)
        for start, x in self._advance(b):
            lo, hi = max(start, a), min(start + len(x), b)
            if lo < hi:
                out[lo - a:hi - a] += x[lo - start:hi - start]
        return out

    def skip(self, n: int) -> None:
        """Move ``n`` samples on without rendering them (the schedule and timeline advance alike)."""
        self._advance(self.position + n)

    def _advance(self, b: int) -> list[tuple[int, np.ndarray]]:
        """Schedule up to sample ``b``; returns the clips that may overlap [position, b); position = b."""
        while self._end < b:
            self._schedule()
        overlapping = list(self._pending)
        while self._pending and self._pending[0][0] + len(self._pending[0][1]) <= b:
            self._pending.popleft()
        self.position = b
        return overlapping


class BabbleNoise:
    """Babble: ``talkers`` streams of back-to-back speech clips, summed, about unit RMS."""

    def __init__(self, pool: ClipPool, rng: np.random.Generator, talkers: int = BABBLE_TALKERS):
        self.pool = pool
        self._speech = [c for c in pool.clips if c.is_speech]
        # one generator per talker: what a talker says cannot depend on how the noise is chunked
        self._talkers = [np.random.default_rng(int(s)) for s in rng.integers(0, 2 ** 63 - 1, size=talkers)]
        self._buffers = [np.zeros(0, dtype=np.float32) for _ in range(talkers)]

    def _next_clip(self, rng: np.random.Generator) -> np.ndarray:
        x = self.pool.audio(self._speech[int(rng.integers(len(self._speech)))])
        level = active_level_dbfs(x)
        frame = 160
        n = len(x) // frame
        power = np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1)
        keep = np.repeat(power >= 10.0 ** (level / 10.0) * 1e-3, frame)  # drop the clip's silences
        word = x[:n * frame][keep]
        return (word / (10.0 ** (level / 20.0))).astype(np.float32) if len(word) else np.zeros(frame, np.float32)

    def take(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        for i, buf in enumerate(self._buffers):
            while len(buf) < n:
                buf = np.concatenate([buf, self._next_clip(self._talkers[i])])
            out += buf[:n]
            self._buffers[i] = buf[n:]
        return out / np.float32(math.sqrt(len(self._buffers)))


class SimSource(AudioSource):
    """A device's audio source: its stream through its channel, ``duration_s`` long (None: endless)."""

    def __init__(self, stream: DeviceStream, transform, *, chunk_samples: int = 4096,
                 duration_s: float | None = None, name: str = "sim"):
        if chunk_samples <= 0:
            raise ConfigError(f"chunk_samples must be positive, got {chunk_samples}")
        self.stream, self.transform = stream, transform
        self.chunk_samples = chunk_samples
        self.total = None if duration_s is None else int(round(duration_s * SAMPLE_RATE))
        self.name = name
        self._closed = threading.Event()

    def chunks(self) -> Iterator[np.ndarray]:
        while not self._closed.is_set():
            n = self.chunk_samples
            if self.total is not None:
                n = min(n, self.total - self.stream.position)
                if n <= 0:
                    return
            yield self.transform.process(self.stream.take(n))

    def close(self) -> None:
        self._closed.set()


def device_stream(pool: ClipPool, params: ScenarioParams, casting: Casting, *, seed: int, device_index: int,
                  targeted: bool, traffic: Traffic | None = None, timeline: Timeline | None = None) -> DeviceStream:
    """A device's stream: its household over the pool's background; after a new-speakers onset
    on a targeted device, its new household, shifted (see households.py)."""
    switch = params.onset_sample if (targeted and params.name == "new-speakers") else None
    silence, share = pool.silence_of(casting.pool)
    after = pool.speech_of(casting.new_household(device_index)) if switch is not None else None
    return DeviceStream(pool, seed, device_index, speech=pool.speech_of(casting.household(device_index)),
                        silence=silence, silence_share=share, speech_after=after, switch_sample=switch,
                        shift=params.shift if switch is not None else 1.0, traffic=traffic, timeline=timeline)
