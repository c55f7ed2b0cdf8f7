"""Streams of real speech for simulated devices, built from a model-lab dataset.

A dataset directory (``harken data synth`` output) holds ``manifest.json`` listing every clip
with its label and speaker; the simulator reads that JSON itself (edge code never imports the
lab). A device's stream is clips played one after another with gaps of 0.3-1.5 s, over a
continuous low background hiss, chosen by a generator seeded with ``(seed, device)``: the same
seed gives every device the same audio on every run. The stream remembers where each clip
sits (``Timeline``) so a simulated person can later tell what was really said.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from edge.sim.scenarios import ScenarioParams, active_level_dbfs
from edge.sources import AudioSource
from shared.audio import SAMPLE_RATE, read_wav, resample
from shared.errors import AudioError, ConfigError, DatasetError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
GAP_S = (0.3, 1.5)
FLOOR_DBFS = (-68.0, -58.0)  # the background hiss of a device, chosen per device
SILENCE_LABEL = "_silence_"
CACHE_CLIPS = 256
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

    def reference_level_dbfs(self, seed: int = 0) -> float:
        """Median active level of (a seeded sample of) the speech clips: what SNR is relative to."""
        speech = [c for c in self.clips if c.is_speech]
        if not speech:
            raise DatasetError("the dataset has no speech clips")
        rng = np.random.default_rng([seed, 104729])
        picks = rng.choice(len(speech), size=min(REF_LEVEL_SAMPLE, len(speech)), replace=False)
        return float(np.median([active_level_dbfs(self.audio(speech[i])) for i in picks]))


def held_out_speakers(speakers: list[str], fraction: float, seed: int) -> set[str]:
    """The speakers kept back until a new-speakers onset: a seeded share, at least one, never all."""
    if len(speakers) < 2:
        raise DatasetError(f"new-speakers needs at least two speakers in the dataset, it has {len(speakers)}")
    n = min(len(speakers) - 1, max(1, round(fraction * len(speakers))))
    order = np.random.default_rng([seed, 15485863]).permutation(len(speakers))
    return {speakers[i] for i in order[:n]}


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


class DeviceStream:
    """The endless speech stream of one device: ``take(n)`` returns the next n samples.

    After ``switch_sample`` (a new-speakers onset) clips come only from ``held_out`` speakers,
    played ``shift`` times faster; before it, never from them.
    """

    def __init__(self, pool: ClipPool, seed: int, device_index: int, *, held_out: set[str] | None = None,
                 switch_sample: int | None = None, shift: float = 1.0, timeline: Timeline | None = None):
        self.pool = pool
        self.rng = np.random.default_rng([seed, device_index])  # what plays: gaps and clips
        self._hiss = np.random.default_rng([seed, device_index, 3])  # apart, so chunking cannot change the schedule
        self.floor_rms = 10.0 ** (self.rng.uniform(*FLOOR_DBFS) / 20.0)
        self.timeline = timeline or Timeline()
        held_out = held_out or set()
        self._before = [c for c in pool.clips if c.speaker not in held_out or not c.is_speech]
        self._after = [c for c in pool.clips if c.speaker in held_out or not c.is_speech]
        self.switch_sample, self.shift = switch_sample, shift
        self.position = 0  # samples handed out
        self._end = 0  # samples scheduled (clips and gaps)
        self._pending: deque[np.ndarray] = deque()
        self.clips_played = 0

    def _schedule(self) -> None:
        gap = int(self.rng.uniform(*GAP_S) * SAMPLE_RATE)
        self._pending.append(np.zeros(gap, dtype=np.float32))
        self._end += gap
        switched = self.switch_sample is not None and self._end >= self.switch_sample
        choices = self._after if switched else self._before
        clip = choices[int(self.rng.integers(len(choices)))]
        x = self.pool.audio(clip, self.shift if switched else 1.0)
        self._pending.append(x)
        self.timeline.add(self._end, self._end + len(x), clip.label, clip.speaker)
        self._end += len(x)
        self.clips_played += 1

    def take(self, n: int) -> np.ndarray:
        while self._end - self.position < n:
            self._schedule()
        out = np.empty(n, dtype=np.float32)
        filled = 0
        while filled < n:
            head = self._pending[0]
            k = min(n - filled, len(head))
            out[filled:filled + k] = head[:k]
            filled += k
            if k == len(head):
                self._pending.popleft()
            else:
                self._pending[0] = head[k:]
        self.position += n
        out += (self._hiss.standard_normal(n) * self.floor_rms).astype(np.float32)
        return out


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


def device_stream(pool: ClipPool, params: ScenarioParams, *, seed: int, device_index: int, targeted: bool,
                  held_out: set[str] | None, timeline: Timeline | None = None) -> DeviceStream:
    """A device's stream under a scenario: held-out speakers stay out of every stream, and play
    (shifted) after the onset on targeted devices in the new-speakers scenario."""
    switch = params.onset_sample if (targeted and params.name == "new-speakers") else None
    return DeviceStream(pool, seed, device_index, held_out=held_out, switch_sample=switch,
                        shift=params.shift if switch is not None else 1.0, timeline=timeline)
