"""The VAD gate's settings (``GateConfig``): typed, bounded, written into every bundle's manifest.

``shared.gate`` applies them; they live apart so the rules (``shared.segmenter``) and the gate can
both read them without importing each other.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from shared.errors import ConfigError


def _describe(text: str) -> dict:
    return {"description": text}


@dataclass(frozen=True)
class GateConfig:
    """Settings of the VAD gate; written into the model bundle's manifest."""

    aggressiveness: int = field(default=2, metadata=_describe(
        "webrtcvad mode 0-3; higher rejects more non-speech"))
    frame_ms: int = field(default=30, metadata=_describe("VAD frame length: 10, 20 or 30 ms"))
    padding_ms: int = field(default=300, metadata=_describe(
        "length of the ring of recent frames the start/end decisions look at"))
    start_ratio: float = field(default=0.6, metadata=_describe(
        "voiced fraction of the ring that starts an utterance, (0, 1]"))
    end_ratio: float = field(default=0.9, metadata=_describe(
        "unvoiced fraction of the ring that ends an utterance, (0, 1]"))
    pre_roll_ms: int = field(default=150, metadata=_describe(
        "audio kept before the first (and after the last) voiced frame"))
    min_utterance_ms: int = field(default=150, metadata=_describe(
        "shorter speech spans are dropped"))
    max_utterance_ms: int = field(default=2000, metadata=_describe(
        "longer utterances are split into pieces of this length"))
    energy_floor_dbfs: float | None = field(default=None, metadata=_describe(
        "frames quieter than this count as unvoiced; None disables it"))

    def __post_init__(self) -> None:
        _int_field(self, "aggressiveness", 0, 3, "0 keeps the most audio, 3 the least")
        if type(self.frame_ms) is not int or self.frame_ms not in (10, 20, 30):
            raise ConfigError(f"gate frame_ms must be 10, 20 or 30 (webrtcvad frame sizes), "
                              f"got {self.frame_ms!r}")
        _int_field(self, "padding_ms", self.frame_ms, 5000, "300 is a good start")
        _ratio_field(self, "start_ratio")
        _ratio_field(self, "end_ratio")
        _int_field(self, "pre_roll_ms", 0, 2000, "150 keeps the onset of the first phoneme")
        _int_field(self, "min_utterance_ms", 0, 60000, "150 drops clicks")
        _int_field(self, "max_utterance_ms", self.frame_ms, 600000,
                   "set it to the model's input length")
        self._check_lengths()
        self._check_energy_floor()

    def _check_lengths(self) -> None:
        if self.max_utterance_ms < self.min_utterance_ms:
            raise ConfigError(
                f"gate max_utterance_ms ({self.max_utterance_ms}) is below min_utterance_ms "
                f"({self.min_utterance_ms}): no utterance could pass; raise max or lower min")
        if self.max_utterance_ms <= self.pre_roll_ms + self.frame_ms:
            raise ConfigError(
                f"gate max_utterance_ms ({self.max_utterance_ms}) leaves no room for speech "
                f"after the {self.pre_roll_ms} ms pre-roll; raise max_utterance_ms")

    def _check_energy_floor(self) -> None:
        floor = self.energy_floor_dbfs
        if floor is None:
            return
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) \
                or not -120.0 <= floor <= 0.0:
            raise ConfigError(f"gate energy_floor_dbfs must be null or a number in [-120, 0] "
                              f"dBFS (e.g. -50), got {floor!r}")

    @property
    def ring_frames(self) -> int:
        return max(1, round(self.padding_ms / self.frame_ms))

    @property
    def pre_roll_frames(self) -> int:
        return math.ceil(self.pre_roll_ms / self.frame_ms)

    @property
    def max_frames(self) -> int:
        return self.max_utterance_ms // self.frame_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GateConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"gate settings must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown gate setting(s) {', '.join(unknown)}; "
                              f"valid keys are {', '.join(sorted(known))}")
        return cls(**d)


def _int_field(cfg: GateConfig, name: str, low: int, high: int, hint: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"gate {name} must be an integer in [{low}, {high}], got {value!r}; "
                          f"{hint}")


def _ratio_field(cfg: GateConfig, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"gate {name} must be a fraction in (0, 1], got {value!r}; "
                          f"the defaults are start 0.6, end 0.9")
