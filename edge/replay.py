"""``harken agent replay``: run recorded WAV files through the agent's pipeline, offline.

The files are played back to back as one stream (an utterance never spans two files: the
gate is flushed at each file's end), through the same pipeline the live agent runs, with
one verified bundle. Each decision names its file and its time inside the file. Files are
read in blocks of ``chunk_samples`` (16-bit 16 kHz files as int16, unconverted), so memory
does not grow with their length.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Sequence

from edge.decisions import ListSink
from edge.model import LoadedModel
from edge.pipeline import Pipeline, StaticModels
from shared import keys as keyring
from shared.audio import WavReader
from shared.bundle import load_bundle
from shared.errors import ConfigError
from shared.gate import GateConfig

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SAMPLES = 160000  # 10 s read per block: per-block costs vanish, memory stays small
REPLAY_VERSION = "replay"


def _trusted_keys(public_keys) -> list:
    out = []
    for key in public_keys or []:
        out.append(keyring.load_public_key(key) if isinstance(key, (str, os.PathLike)) else key)
    return out


def load_model(bundle_path, *, public_keys=None, verify: bool = True) -> LoadedModel:
    """Load, verify (unless ``verify`` is False) and smoke-test a bundle."""
    bundle = load_bundle(bundle_path, _trusted_keys(public_keys), require_signature=verify)
    model = LoadedModel.from_bundle(bundle)
    model.smoke_test()
    return model


def replay(paths: Sequence[str | os.PathLike], bundle_path, *, public_keys=None, verify: bool = True,
           gate_config: GateConfig | None = None, window_s: float = 10.0, automation: str = "partial",
           chunk_samples: int = DEFAULT_CHUNK_SAMPLES, device: str = "replay", boot: int = 0,
           clock: Callable[[], float] = time.time) -> tuple[list[dict], list[dict]]:
    """Replay WAV files; returns (decisions as dicts, windows as validated dicts).

    ``public_keys``: paths or loaded Ed25519 public keys. ``gate_config`` None uses the
    gate settings written in the bundle (the ones its model was trained with), or the
    defaults when it has none.
    """
    if not paths:
        raise ConfigError("give at least one WAV file to replay")
    if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int) or chunk_samples <= 0:
        raise ConfigError(f"chunk_samples must be a positive integer, got {chunk_samples!r}")
    model = load_model(bundle_path, public_keys=public_keys, verify=verify)
    if gate_config is None:
        gate_config = GateConfig.from_dict(model.manifest["gate"]) if "gate" in model.manifest else GateConfig()
    sink, windows = ListSink(), []
    pipeline = Pipeline(device=device, boot=boot, agent_version=REPLAY_VERSION, gate_config=gate_config,
                        window_s=window_s, automation=automation, models=StaticModels(model), sink=sink,
                        on_window=windows.append, clock=clock)
    starts = play(paths, pipeline, chunk_samples)
    decisions = [_with_file(d.to_dict(), starts) for d in sink.decisions]
    log.info("replayed %d file(s), %.1f s of audio: %d decisions, %d windows", len(paths),
             pipeline.position_s, len(decisions), len(windows))
    return decisions, windows


def play(paths: Sequence[str | os.PathLike], pipeline: Pipeline,
         chunk_samples: int = DEFAULT_CHUNK_SAMPLES) -> list[tuple[float, str]]:
    """Stream the files through ``pipeline`` back to back; returns (start second, path) of each."""
    starts: list[tuple[float, str]] = []
    for path in paths:
        with WavReader(path) as reader:
            starts.append((pipeline.position_s, str(path)))
            for block in reader.blocks(chunk_samples):
                pipeline.feed(block)
        pipeline.flush(close_window=False)
    pipeline.flush()
    return starts


def _with_file(decision: dict, starts: list[tuple[float, str]]) -> dict:
    offset, name = starts[0]
    for start, path in starts:  # the last file that starts at or before the decision
        if start <= decision["audio_start_s"]:
            offset, name = start, path
    decision["file"] = name
    decision["file_start_s"] = round(decision["audio_start_s"] - offset, 4)
    return decision

