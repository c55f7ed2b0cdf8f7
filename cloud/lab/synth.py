"""Synthesize a speech-commands dataset with several speech engines plus numpy augmentation.

Each clip is a pure function of ``(seed, clip index)``: the plan fixes label, word and
speaker (engine, voice, variant); a per-clip RNG seeded from ``(seed, index)`` picks the
engine's speed and pitch, then tempo, gain, noise and offset. Every engine is deterministic
for the same request, so the same seed gives the same dataset hash. Clips are written as
16 kHz mono 16-bit WAV, 1 s long.
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cloud.lab import augment, engines, voices
from cloud.lab import cast as cast_mod
from cloud.lab.dataset import GENERATOR, GENERATOR_VERSION, wav_bytes, write_manifest
from cloud.lab.engines import espeak
from shared.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

CLIP_SAMPLES = SAMPLE_RATE
MAX_WORD_SAMPLES = int(0.95 * CLIP_SAMPLES)
# speed factor → (up, down) of the polyphase resampling that applies it (small, so fast)
TEMPO_RATIOS = {0.9: (10, 9), 0.95: (20, 19), 1.0: (1, 1), 1.05: (20, 21), 1.1: (10, 11)}
TEMPO_FACTORS = tuple(TEMPO_RATIOS)
NOISE_PROBABILITY = 0.7
SNRS_DB = (10, 15, 20, 25, 30)
PEAKS_DBFS = (-30, -24, -18, -12, -6, -3)
SILENCE_LEVELS_DBFS = (-70, -60, -50, -40, -30)
UNKNOWN_FACTOR = 2
FLOOR_LEVELS_DBFS = (-75, -70, -65)  # self-noise of the "microphone", under every clip
# Default clips per word: synthesis + training of the six-engine default take ~160 + 80-200 s of CPU,
# 4-6 min on a quiet 2-core machine (the synthesis alone took 12.5 min at load 8-19).
DEFAULT_PER_WORD = 900
CHUNK = 16  # clips per task handed to a synthesis process
# Per-clip engine settings: each engine fills those it has (the rest stay None).
ENGINE_SETTING_TAGS = {"speed_wpm": None, "pitch": None, "stretch": None, "pitch_st": None, "formant_scale": None}


@dataclass(frozen=True)
class ClipSpec:
    index: int
    label: str
    word: str | None
    speaker: str  # "engine:voice+variant" (engines.speaker_name)
    seed: int


def clips_per_label(per_word: int) -> dict[str, int]:
    """``per_word`` for each word and ``_silence_``; ``_unknown_`` spans 26 words, so it gets
    UNKNOWN_FACTOR times as many (with fewer, its recall was the weakest of all classes)."""
    return {label: per_word * (UNKNOWN_FACTOR if label == voices.UNKNOWN_LABEL else 1)
            for label in voices.LABELS}


def plan(per_word: int, seed: int, cast_parts: Sequence[cast_mod.Cast]) -> list[ClipSpec]:
    """The clips to make (see ``clips_per_label``): the engines take turns by their shares
    (``cast.interleave``, one sequence over all labels, so even a tiny dataset hears every
    engine) and, within a label, each engine's speakers round-robin."""
    specs: list[ClipSpec] = []
    speakers = [part.speakers() for part in cast_parts]
    counts = clips_per_label(per_word)
    turns = iter(cast_mod.interleave([part.share for part in cast_parts], sum(counts.values())))
    for li, label in enumerate(voices.LABELS):
        taken = [0] * len(cast_parts)
        for i in range(counts[label]):
            k = next(turns)
            pool = speakers[k]
            speaker = pool[(taken[k] + li * 3) % len(pool)]
            taken[k] += 1
            if label == voices.UNKNOWN_LABEL:
                word = voices.UNKNOWN_WORDS[(i + seed) % len(voices.UNKNOWN_WORDS)]
            elif label == voices.SILENCE_LABEL:
                word = None
            else:
                word = label
            specs.append(ClipSpec(len(specs), label, word, speaker, seed))
    return specs


def _word_clip(spec: ClipSpec, rng: np.random.Generator, engine_set: engines.Engines) -> tuple[np.ndarray, dict]:
    engine_name, voice, variant = engines.parse_speaker(spec.speaker)
    engine = engine_set.get(engine_name)
    rendered = engine.render(spec.word, voice, variant, rng)  # draws the engine's speed and pitch
    tempo = float(rng.choice(TEMPO_FACTORS))
    word = augment.change_rate(augment.trim(rendered.samples), rendered.rate, SAMPLE_RATE)
    up, down = TEMPO_RATIOS[tempo]
    word = augment.change_rate(word, down, up)  # play back 'tempo' times faster (pitch moves too)
    steps = ["tempo"] if tempo != 1.0 else []
    if len(word) > MAX_WORD_SAMPLES:  # too long for the window: speed up just enough to fit
        word = augment.fit_length(word, MAX_WORD_SAMPLES)
        steps.append("fit")
    peak_dbfs = int(rng.choice(PEAKS_DBFS))
    word = augment.set_peak(word, peak_dbfs)
    offset = int(rng.integers(0, CLIP_SAMPLES - len(word) + 1))
    clip = augment.place_at(word, CLIP_SAMPLES, offset)
    noisy = rng.random() < NOISE_PROBABILITY
    noise_kind = str(rng.choice(augment.NOISE_TYPES)) if noisy else "none"
    snr_db = None
    if noisy:
        snr_db = int(rng.choice(SNRS_DB))
        scale = augment.rms(word) / 10 ** (snr_db / 20.0)
        clip = clip + scale * augment.noise(noise_kind, CLIP_SAMPLES, rng, SAMPLE_RATE)
        steps.append("noise")
    steps += ["gain", "offset"]
    tags = {**_voice_tags(spec.speaker, engine), "word": spec.word, **ENGINE_SETTING_TAGS, **rendered.tags,
            "tempo": tempo, "noise": noise_kind, "snr_db": snr_db, "gain_db": peak_dbfs,
            "offset_ms": int(offset * 1000 / SAMPLE_RATE), "augmentation": "+".join(steps)}
    return clip, tags


def _voice_tags(speaker: str, engine) -> dict:
    """engine, voice, variant and accent: together with ``speaker`` they name one speaker."""
    engine_name, voice, variant = engines.parse_speaker(speaker)
    return {"engine": engine_name, "voice": voice, "variant": variant, "accent": engine.accent(voice)}


def _silence_clip(spec: ClipSpec, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    kind = str(rng.choice(augment.NOISE_TYPES))
    level_dbfs = int(rng.choice(SILENCE_LEVELS_DBFS))
    clip = augment.noise(kind, CLIP_SAMPLES, rng, SAMPLE_RATE) * 10 ** (level_dbfs / 20.0)
    tags = {"engine": None, "voice": None, "variant": None, "accent": None, "word": None,
            **ENGINE_SETTING_TAGS, "tempo": None, "noise": kind, "snr_db": None, "gain_db": level_dbfs,
            "offset_ms": None, "augmentation": "background"}
    return clip, tags


def make_clip(spec: ClipSpec, out_dir: str, engine_set: engines.Engines) -> dict:
    """Synthesize, augment and write one clip; return its manifest record."""
    rng = np.random.default_rng([spec.seed, spec.index])
    if spec.word is None:
        clip, tags = _silence_clip(spec, rng)
    else:
        clip, tags = _word_clip(spec, rng, engine_set)
    # A microphone never outputs digital silence. Without a floor, webrtcvad adapts to the
    # zeros around a clean word and then takes any quiet noise that follows for speech.
    floor_dbfs = int(rng.choice(FLOOR_LEVELS_DBFS))
    clip = clip + augment.noise("pink", CLIP_SAMPLES, rng, SAMPLE_RATE) * np.float32(10 ** (floor_dbfs / 20.0))
    tags["floor_dbfs"] = floor_dbfs
    peak = float(np.max(np.abs(clip)))
    if peak > 0.98:  # noise pushed the mix over full scale: scale down rather than clip
        clip = clip * (0.98 / peak)
    rel = f"clips/{spec.label}/{spec.label}_{spec.index:05d}.wav"
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wav_bytes(clip)
    path.write_bytes(data)  # no fsync per clip: manifest.json, written last and atomically, commits
    digest = hashlib.sha256(data).hexdigest()
    return {"path": rel, "label": spec.label, "speaker": spec.speaker, "sha256": digest, "tags": tags}


_worker_engines: engines.Engines | None = None  # one set per synthesis process (festival stays up)


def _process_engines(scratch: str) -> engines.Engines:
    global _worker_engines
    if _worker_engines is None:
        _worker_engines = engines.Engines(scratch)
        atexit.register(_worker_engines.close)
    return _worker_engines


def _make_chunk(args: tuple[list[ClipSpec], str, str]) -> list[dict]:
    specs, out_dir, scratch = args
    engine_set = _process_engines(scratch)
    return [make_clip(s, out_dir, engine_set) for s in specs]


def _run_chunks(chunks: list, workers: int, progress) -> list[dict]:
    records: list[dict] = []
    if workers <= 1:
        batches = map(_make_chunk, chunks)
        try:
            for batch in batches:
                records += batch
                if progress:
                    progress(len(batch))
        finally:
            _close_process_engines()
        return records
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for batch in pool.map(_make_chunk, chunks):
            records += batch
            if progress:
                progress(len(batch))
    return records


def _close_process_engines() -> None:
    global _worker_engines
    if _worker_engines is not None:
        _worker_engines.close()
        _worker_engines = None


def synthesize(out_dir: str | os.PathLike, per_word: int = DEFAULT_PER_WORD, seed: int = 0,
               accents=espeak.ACCENTS, variants=espeak.VARIANTS, workers: int = 2,
               progress: Callable[[int], None] | None = None,
               engine_names: Sequence[str] = engines.ENGINES, shares=None,
               cast_parts: Sequence[cast_mod.Cast] | None = None) -> dict:
    """Write a dataset to ``out_dir`` (clips + ``manifest.json``) and return the manifest.

    ``engine_names`` picks the engines (their default voices; ``accents`` and ``variants``
    are espeak-ng's) and ``shares`` their parts of the clips; ``cast_parts`` overrides both."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = list(cast_parts or cast_mod.default_cast(engine_names, accents, variants, shares))
    versions = cast_mod.check(parts)  # before any work: say what to install
    specs = plan(per_word, seed, parts)
    scratch = tempfile.mkdtemp(prefix=".synth-", dir=out)
    try:
        chunks = [(specs[i: i + CHUNK], str(out), scratch) for i in range(0, len(specs), CHUNK)]
        records = _run_chunks(chunks, workers, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    espeak_part = next((p for p in parts if p.engine == "espeak-ng"), None)
    params = {"per_word": per_word, "engines": cast_mod.describe(parts, versions),
              "accents": list(espeak_part.voices) if espeak_part else [],
              "variants": list(espeak_part.variants) if espeak_part else [],
              "espeak_ng": versions.get("espeak-ng"), "generator": GENERATOR,
              "generator_version": GENERATOR_VERSION}
    manifest = write_manifest(out, records, list(voices.LABELS), seed, params)
    log.info("synthesized %d clips into %s (dataset %s)", len(records), out, manifest["dataset_hash"][:12])
    return manifest
