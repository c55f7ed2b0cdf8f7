"""Rollout plans: strategies turned into stages, durations, and deterministic canary steps.

A plan is a list of stages. Each stage has a kind (``shadow``: the candidate runs beside the
active model; ``canary`` / ``blue-green``: the candidate is the active model), the share of
the cohort it covers, a bake time, and optionally the automation level the candidate runs
at (that is how a plan walks the automation ladder).

    --strategy shadow              one shadow stage on the whole cohort
    --strategy canary              one canary stage per step (default 5, 25, 100 %)
    --strategy blue-green          the whole cohort at once
    --strategy shadow,canary       stages concatenated
    --strategy plan.toml           stages written out ([[stage]] kind, percent, bake, automation)

Devices are ordered once per rollout by sha256(rollout id, device); a step of p % takes the
first ceil(p·N/100) of them (at least one), so a device in the 5 % step stays in 25 %.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.errors import ConfigError
from shared.messages import AUTOMATION_LEVELS

KINDS = ("shadow", "canary", "blue-green")
DEFAULT_STEPS = (5.0, 25.0, 100.0)
DEFAULT_BAKE_S = 600.0
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """``"90"``, ``"30s"``, ``"10m"``, ``"1.5h"`` → seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION_RE.match(str(text))
        if not m:
            raise ConfigError(f"duration {text!r} is not valid: write e.g. 90, 30s, 10m or 1h")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds < 0:
        raise ConfigError(f"duration {text!r} must not be negative")
    return seconds


def parse_steps(text: str | None) -> tuple[float, ...]:
    if not text:
        return DEFAULT_STEPS
    try:
        steps = tuple(float(s) for s in str(text).split(",") if s.strip())
    except ValueError as exc:
        raise ConfigError(f"--steps {text!r} must be comma-separated percentages, e.g. 5,25,100") from exc
    if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise ConfigError(f"--steps {text!r} must increase strictly and lie in (0, 100], e.g. 5,25,100")
    if steps[-1] != 100:
        steps = (*steps, 100.0)
    return steps


@dataclass(frozen=True)
class Stage:
    kind: str
    percent: float = 100.0
    bake_s: float = DEFAULT_BAKE_S
    automation: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"stage kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not 0 < self.percent <= 100:
            raise ConfigError(f"stage percent {self.percent} must lie in (0, 100]")
        if self.automation is not None and self.automation not in AUTOMATION_LEVELS:
            raise ConfigError(f"stage automation {self.automation!r} is not one of {', '.join(AUTOMATION_LEVELS)}")
        if self.kind == "blue-green" and self.percent != 100:
            raise ConfigError("a blue-green stage covers the whole cohort (percent 100)")

    @property
    def label(self) -> str:
        auto = f" @{self.automation}" if self.automation else ""
        return f"{self.kind} {self.percent:g}%{auto}"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, default_bake_s: float = DEFAULT_BAKE_S) -> "Stage":
        unknown = set(d) - {"kind", "percent", "bake_s", "bake", "automation"}
        if unknown:
            raise ConfigError(f"unknown stage keys {sorted(unknown)}; a stage has kind, percent, bake, automation")
        bake = d.get("bake", d.get("bake_s", default_bake_s))
        return cls(kind=d.get("kind", ""), percent=float(d.get("percent", 100.0)), bake_s=parse_duration(bake),
                   automation=d.get("automation"))


def _strategy_stages(name: str, steps: tuple[float, ...], bake_s: float) -> list[Stage]:
    if name == "shadow":
        return [Stage("shadow", 100.0, bake_s)]
    if name == "canary":
        return [Stage("canary", s, bake_s) for s in steps]
    if name == "blue-green":
        return [Stage("blue-green", 100.0, bake_s)]
    raise ConfigError(f"strategy {name!r} is not shadow, canary, blue-green, a comma list of them, "
                      "or a plan file (.toml or .json)")


def load_plan_file(path: str | Path, bake_s: float) -> list[Stage]:
    path = Path(path)
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            import tomllib

            data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read plan file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"plan file {path} is not valid: {exc}") from exc
    stages = data.get("stage") or data.get("stages") if isinstance(data, dict) else data
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"plan file {path} needs a list of stages ([[stage]] tables in TOML)")
    if not all(isinstance(s, dict) for s in stages):
        raise ConfigError(f"plan file {path}: every stage is a table with kind, percent, bake, automation")
    return [Stage.from_dict(s, bake_s) for s in stages]


def build_plan(strategy: str, *, steps: str | None = None, bake: str | float | None = None) -> list[Stage]:
    """Stages for a ``--strategy`` value (names, a comma list of names, or a plan file)."""
    bake_s = parse_duration(bake) if bake is not None else DEFAULT_BAKE_S
    if strategy.endswith((".toml", ".json")) or Path(strategy).is_file():
        return load_plan_file(strategy, bake_s)
    step_list = parse_steps(steps)
    stages: list[Stage] = []
    for name in (s.strip() for s in strategy.split(",") if s.strip()):
        stages += _strategy_stages(name, step_list, bake_s)
    if not stages:
        raise ConfigError("--strategy is empty; use shadow, canary, blue-green or a plan file")
    return stages


def is_guard_stage(plan: list[Stage], index: int, below_percent: float) -> bool:
    """A canary step on less than ``below_percent`` of the cohort with a larger canary step (or
    blue-green) after it: its few devices cannot resolve the fine margins, the larger step can."""
    stage = plan[index]
    return (stage.kind == "canary" and stage.percent < below_percent
            and any(s.kind != "shadow" and s.percent >= below_percent for s in plan[index + 1:]))


def assignment_order(rollout_id: str, devices: list[str]) -> list[str]:
    """Devices in their fixed canary order for this rollout (hash of rollout id and device)."""
    return sorted(devices, key=lambda d: (hashlib.sha256(f"{rollout_id}:{d}".encode()).hexdigest(), d))


def step_count(percent: float, n_devices: int) -> int:
    """How many devices (of the ordered cohort) a step of ``percent`` covers: at least one."""
    if n_devices == 0:
        return 0
    return min(n_devices, max(1, math.ceil(percent * n_devices / 100.0 - 1e-9)))
