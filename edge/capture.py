"""Opt-in capture of low-confidence utterances, for the data iteration loop.

Off unless a ``CaptureConfig`` is given. Only utterances the active model was unsure about
(confidence below the bundle's threshold, or below ``max_confidence`` when set) are kept,
at most ``max_per_hour`` of them (a token bucket that holds up to ``burst``), each as
``{utterance}.wav`` plus a ``{utterance}.json`` sidecar (label, confidence, model, audio
time). Nothing else is ever written.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from shared.audio import write_wav
from shared.bundle import atomic_write
from shared.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureConfig:
    """Where and how much low-confidence audio to keep."""

    directory: str = field(metadata={"description": "folder for the WAV + JSON pairs"})
    max_per_hour: float = field(default=12.0, metadata={"description": "sustained rate limit, > 0"})
    burst: int = field(default=3, metadata={"description": "captures allowed back to back, >= 1"})
    max_confidence: float | None = field(default=None, metadata={
        "description": "capture below this confidence; None uses the bundle's threshold"})

    def __post_init__(self) -> None:
        if not isinstance(self.directory, (str, os.PathLike)) or not str(self.directory):
            raise ConfigError("capture directory must be a path; give an empty folder the agent may write")
        if not isinstance(self.max_per_hour, (int, float)) or not 0 < self.max_per_hour <= 3600:
            raise ConfigError(f"capture max_per_hour must be in (0, 3600], got {self.max_per_hour!r}")
        if not isinstance(self.burst, int) or not 1 <= self.burst <= 1000:
            raise ConfigError(f"capture burst must be an integer in [1, 1000], got {self.burst!r}")
        mc = self.max_confidence
        if mc is not None and (not isinstance(mc, (int, float)) or not 0 < mc <= 1):
            raise ConfigError(f"capture max_confidence must be in (0, 1] or null, got {mc!r}")


class Capture:
    """Rate-limited writer of low-confidence utterances. ``offer`` returns True when it kept one."""

    def __init__(self, config: CaptureConfig, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        self.directory = Path(config.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._tokens = float(config.burst)
        self._last = clock()
        self.captured = self.limited = self.failed = 0

    def _take_token(self) -> bool:
        now = self.clock()
        rate = self.config.max_per_hour / 3600.0
        self._tokens = min(float(self.config.burst), self._tokens + max(0.0, now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wanted(self, confidence: float, threshold: float) -> bool:
        limit = self.config.max_confidence if self.config.max_confidence is not None else threshold
        return confidence < limit

    def offer(self, utterance: str, samples: np.ndarray, *, label: str, confidence: float, threshold: float,
              model: str, audio_start_s: float) -> bool:
        if not self.wanted(confidence, threshold):
            return False
        if not self._take_token():
            self.limited += 1
            return False
        stem = self.directory / utterance
        sidecar = {"utterance": utterance, "label": label, "confidence": round(confidence, 6), "model": model,
                   "audio_start_s": audio_start_s, "duration_ms": 1000.0 * len(samples) / 16000, "t": self.clock()}
        try:
            write_wav(stem.with_suffix(".wav"), samples)
            atomic_write(stem.with_suffix(".json"), json.dumps(sidecar, sort_keys=True).encode())
        except OSError as exc:
            self.failed += 1
            log.warning("capture to %s failed (%s); check free space and permissions", self.directory, exc)
            return False
        self.captured += 1
        return True
