"""A fleet of real agents in one process, for the end-to-end rollout tests.

Each ``FleetAgent`` is a real ``edge.agent.Agent`` (its own state directory, MQTT link,
spool, lifecycle, onnxruntime sessions) fed by a ``LoopSource``: real speech — clips of the
lab's dataset laid end to end with quiet gaps — looped and paced like a microphone.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from edge.agent import Agent
from edge.config import load_agent_config
from edge.sources import AudioSource
from shared.audio import SAMPLE_RATE, read_wav


class LoopSource(AudioSource):
    """``samples`` again and again, ``speed`` times faster than real time, until closed."""

    name = "loop"

    def __init__(self, samples: np.ndarray, chunk_samples: int = 1600, speed: float = 1.0):
        self.samples = samples.astype(np.float32)
        self.chunk_samples = chunk_samples
        self.speed = speed
        self._closed = threading.Event()

    def chunks(self) -> Iterator[np.ndarray]:
        t0, sent, n = time.monotonic(), 0, len(self.samples)
        while not self._closed.is_set():
            chunk = self.samples[np.arange(sent, sent + self.chunk_samples) % n]
            sent += self.chunk_samples
            wait = t0 + sent / (SAMPLE_RATE * self.speed) - time.monotonic()
            if wait > 0 and self._closed.wait(wait):
                return
            yield chunk

    def close(self) -> None:
        self._closed.set()


def speech_stream(data_dir: Path, labels: list[str], n_clips: int, seed: int, gap_s=(0.5, 0.9),
                  noise_dbfs: float = -65.0) -> np.ndarray:
    """Dataset clips of ``labels`` laid end to end with quiet noise between them."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    pool = [c["path"] for c in manifest["clips"] if c["label"] in labels]
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    parts = []
    for path in rng.sample(pool, min(n_clips, len(pool))):
        parts.append(np.zeros(int(rng.uniform(*gap_s) * SAMPLE_RATE), dtype=np.float32))
        parts.append(read_wav(data_dir / path))
    x = np.concatenate(parts)
    return (x + nrng.normal(0.0, 10 ** (noise_dbfs / 20), len(x))).astype(np.float32)


def corrupt_dataset(src: Path, dst: Path, fraction: float, seed: int) -> Path:
    """A copy of a dataset (clips shared by symlink) with ``fraction`` of the labels replaced."""
    from cloud.lab.dataset import write_manifest

    raw = json.loads((src / "manifest.json").read_text())
    rng = random.Random(seed)
    labels = raw["labels"]
    records = []
    for c in raw["clips"]:
        c = dict(c)
        if rng.random() < fraction:
            c["label"] = rng.choice([lab for lab in labels if lab != c["label"]])
        records.append(c)
    dst.mkdir(parents=True, exist_ok=True)
    if not (dst / "clips").exists():
        os.symlink((src / "clips").resolve(), dst / "clips")
    write_manifest(dst, records, labels, raw.get("seed", 0), {**raw.get("params", {}), "corrupted": fraction})
    return dst


class FleetAgent:
    """One real agent on its own thread; ``stop`` then ``start`` again is a device going away and back."""

    def __init__(self, device_id: str, root: Path, broker_url: str, trust_key: Path, bundle: Path,
                 samples: np.ndarray, *, speed: float = 2.0, window_s: float = 2.0, **overrides):
        self.device_id = device_id
        self.samples = samples
        self.speed = speed
        self.config = load_agent_config(env={}, overrides={
            "device_id": device_id, "broker_url": broker_url, "state_dir": str(root / device_id),
            "trust_keys": [str(trust_key)], "window_s": window_s, "automation": "full",
            "keepalive_s": 5, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0, **overrides})
        self.bundle = bundle  # installed at the first start only: later starts run what the slots say
        self.agent: Agent | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> "FleetAgent":
        import dataclasses

        first = not (self.config.state_path / "slots.json").exists()
        config = dataclasses.replace(self.config, bundle=str(self.bundle)) if first else self.config
        self.agent = Agent(config, source=LoopSource(self.samples, speed=self.speed))
        self.thread = threading.Thread(target=self._run, name=f"agent-{self.device_id}", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.thread.join(30)
            self.agent = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def reset_state(root: Path, device_id: str) -> None:
    shutil.rmtree(root / device_id, ignore_errors=True)
