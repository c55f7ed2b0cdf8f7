"""Response models of the main GET routes, so ``/openapi.json`` describes what they return.

The routes build plain dicts (``alert_view``, ``rollout_view``, ``model_view``); these models
document their fields. They allow extra keys and the routes set ``response_model_exclude_unset``,
so a response carries exactly the keys its dict had: the models describe, they do not reshape.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Described(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- fleet and devices ---------------------------------------------------------------------------
class ModelCount(Described):
    model: str = Field(description="sha256 of the active model")
    name: str | None = None
    version: str | None = None
    devices: int = Field(description="devices running it as their active model")


class Fleet(Described):
    devices: int
    online: int
    offline: int
    by_model: list[ModelCount]
    by_health: dict[str, int] = Field(description="health → devices ('unknown' when not reported)")
    open_alerts: int
    rollouts_active: int
    ingest: dict[str, Any] = Field(description="the running ingest's counters (as /metrics)")
    now: float = Field(description="the collector's clock, epoch seconds")


class DeviceModels(Described):
    active: str | None = None
    previous: str | None = None
    shadow: str | None = None


class Device(Described):
    device: str
    online: bool
    status: str | None = Field(None, description="online, stale or offline")
    first_seen_t: float | None = None
    last_seen_t: float | None = None
    agent_version: str | None = None
    boot: Any = None
    automation: str | None = None
    health: str | None = None
    last_error: str | None = None
    models: DeviceModels
    tags: list[str]
    clock_offset_s: float | None = Field(None, description="its clock minus the collector's; null until measured")


# -- drift alerts --------------------------------------------------------------------------------
class Alert(Described):
    id: str
    status: str = Field(description="open, acked or resolved")
    cohort: str
    kind: str = Field(description="input, output or concept")
    pattern: str | None = None
    severity: float | None = Field(None, description="effect over its floor; >= 1 alarms")
    peak_severity: float | None = None
    n: int | None = None
    top: list[dict[str, Any]] = Field(description="the signals checked, strongest first")
    devices: list[dict[str, Any]] = Field(description="attribution to devices")
    tags: list[dict[str, Any]] = Field(description="attribution to tags")
    opened_t: float | None = None
    updated_t: float | None = None
    resolved_t: float | None = None
    acked_t: float | None = None
    acked_by: str | None = None
    evidence: dict[str, Any]


class Alerts(Described):
    alerts: list[Alert]
    now: float


# -- rollouts ------------------------------------------------------------------------------------
class RolloutStage(Described):
    name: str
    kind: str
    percent: float | None = None
    bake_s: float | None = None
    status: str


class RolloutDevices(Described):
    total: int
    converged: int
    pending: int
    failed: int


class Rollout(Described):
    id: str
    model: str = Field(description="sha256 of the model being rolled out")
    model_name: str | None = None
    cohort: str
    strategy: str | None = None
    state: str
    reason: str | None = None
    stage_index: int
    stages: list[RolloutStage]
    devices: RolloutDevices
    actions: list[str] = Field(description="the operator actions its state allows")
    terminal: bool
    created_t: float | None = None
    updated_t: float | None = None


class Rollouts(Described):
    rollouts: list[Rollout]
    now: float


# -- models --------------------------------------------------------------------------------------
class RegisteredModel(Described):
    sha256: str
    name: str | None = None
    version: str | None = None
    labels: list[str]
    aliases: list[str]
    created_t: float | None = None
    metrics: dict[str, Any] = Field(description="scalar evaluation figures (accuracy, macro_f1, ...)")
    devices: int = Field(description="devices running it as their active model")
    shadow_devices: int


class Models(Described):
    models: list[RegisteredModel]
