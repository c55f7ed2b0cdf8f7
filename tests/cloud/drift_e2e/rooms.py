"""Real speech for the drift acceptance tests: the reference as a device hears it, and rooms.

A *room* is what one device's microphone hears: dataset clips (real espeak-ng speech) played
one after another with 600 ms of quiet background between them — the layout of the model
lab's own stream test (``cloud.lab.stream.build_stream``) — through a *channel* (a stream
transform of ``edge.sim.scenarios``: added noise, a gain change, band-limiting, a dead
microphone; ``Identity`` when healthy). It is an ``edge.sources.AudioSource``, so a real agent
reads it; no pacing: audio is fed as fast as the agent runs.

``device_profile`` is the reference profile of the dev clips as a device's gate cuts them from
such a stream. The lab's bundle carries a profile of dev clips cut one by one by a fresh gate,
which is not what a device sees: a long-running webrtcvad, warm from the audio before, runs on
past the word into the background, so a device's utterances are longer (measured here: none of
the lab reference's 48 dev utterances reaches 1000 ms; 54 % of a device's reach 1.5-2 s), and
a healthy device raises input drift on ``utterance_ms`` (severity 2.2) at its first window.
``reprofiled_bundle`` signs the lab's real model again with the device-view profile (same model
sha256); the lab should build its profile this way (see the drift_e2e report).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cloud.lab import features, infer, stream
from edge.sim.audio import ClipPool, ClipRef
from edge.sources import AudioSource
from shared import keys
from shared.audio import SAMPLE_RATE
from shared.bundle import Bundle, write_bundle
from shared.gate import GateConfig, place
from shared.levels import level_dbfs, snr_db
from shared.profile import build_profile

CHUNK_SAMPLES = 4096
GAP_SAMPLES = int(stream.GAP_MS * SAMPLE_RATE / 1000)


def device_profile(clips: Sequence[np.ndarray], bundle: Bundle, seed: int = 0) -> dict:
    """The reference profile of ``clips`` played as one stream through the bundle's gate."""
    gate = GateConfig.from_dict(bundle.manifest["gate"])
    order = np.random.default_rng(seed).permutation(len(clips))
    signal, _ = stream.build_stream([clips[i] for i in order], seed)
    utts = stream.cut(signal, gate)
    windows = np.stack([place(u.samples, bundle.input_samples, bundle.placement) for u in utts])
    out = infer.run(infer.session(bundle.model_bytes), windows)
    return build_profile(out.features, features.FEATURE_NAMES,
                         utterance_ms=np.array([u.duration_ms for u in utts]),
                         level_dbfs=np.array([level_dbfs(u.samples) for u in utts]),
                         snr_db=np.array([snr_db(u.samples) for u in utts]),
                         confidence=out.confidence, labels=out.label, label_names=bundle.labels)


def reprofiled_bundle(bundle: Bundle, profile: dict, private_key_path: Path, out: Path) -> str:
    """The same model and files, signed again with ``profile`` as its reference; returns its sha256."""
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("format", "model_sha256", "files")}
    manifest["profile"] = profile
    return write_bundle(out, bundle.model_bytes, manifest, keys.load_private_key(private_key_path),
                        dict(bundle.files))


class Room(AudioSource):
    """``duration_s`` of clips from ``voices`` with quiet gaps, through ``channel``.

    From ``switch_s`` of audio on (if given), clips come from ``new_voices`` instead, played
    ``shift`` times faster (higher pitch): a different speaker population.
    """

    def __init__(self, pool: ClipPool, voices: Sequence[ClipRef], channel, duration_s: float, seed: int, *,
                 new_voices: Sequence[ClipRef] = (), switch_s: float | None = None, shift: float = 1.0,
                 name: str = "room"):
        self.pool, self.voices, self.channel = pool, list(voices), channel
        self.new_voices, self.switch_s, self.shift = list(new_voices), switch_s, shift
        self.total = int(round(duration_s * SAMPLE_RATE))
        self.rng = np.random.default_rng(seed)
        self.name = name
        self._closed = False

    def _clip(self, start_sample: int) -> np.ndarray:
        switched = self.switch_s is not None and start_sample >= self.switch_s * SAMPLE_RATE
        choices = self.new_voices if switched else self.voices
        return self.pool.audio(choices[int(self.rng.integers(len(choices)))], self.shift if switched else 1.0)

    def _audio(self) -> Iterator[np.ndarray]:
        """Gap, clip, gap, clip, ... laid out by the lab's stream builder, one clip at a time."""
        made = 0
        while made < self.total:
            signal, _ = stream.build_stream([self._clip(made)], int(self.rng.integers(2 ** 31)))
            signal = signal[:-GAP_SAMPLES]  # the next clip brings its own gap
            yield signal[: self.total - made]
            made += len(signal)

    def chunks(self) -> Iterator[np.ndarray]:
        pending = np.zeros(0, dtype=np.float32)
        for piece in self._audio():
            pending = np.concatenate([pending, piece])
            while len(pending) >= CHUNK_SAMPLES and not self._closed:
                yield self.channel.process(pending[:CHUNK_SAMPLES])
                pending = pending[CHUNK_SAMPLES:]
            if self._closed:
                return
        if len(pending):
            yield self.channel.process(pending)

    def close(self) -> None:
        self._closed = True


class Until:
    """``channel`` up to audio sample ``end_sample``, the untouched stream after it (an episode)."""

    def __init__(self, channel, end_sample: int):
        self.channel, self.end_sample = channel, int(end_sample)
        self.position = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        start, self.position = self.position, self.position + len(x)
        out = self.channel.process(x)
        k = max(0, self.end_sample - start)
        if k < len(x):
            out[k:] = x[k:]
        return out
