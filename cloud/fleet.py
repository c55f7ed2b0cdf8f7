"""The fleet view: what each device runs and whether it is there, and cohorts of devices.

A cohort names a set of devices (and optionally a model) for drift, rollouts and reports:

    fleet          every device
    tag:NAME       the devices tagged NAME (``harken fleet tag``)
    device:ID      one device
    model:SHA      windows of one model, on any device (a unique prefix of the sha is enough)

``select(store, cohort)`` turns one into a ``Selector`` the store understands.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from cloud.store import Store
from cloud.store.base import DEFAULT_BUCKET_S
from shared.errors import ConfigError
from shared.topics import check_device_id
from shared.window import summarize

COHORT_KINDS = ("fleet", "tag", "device", "model")


@dataclass(frozen=True)
class Cohort:
    kind: str
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> "Cohort":
        text = text.strip()
        if text == "fleet":
            return cls("fleet")
        kind, sep, value = text.partition(":")
        if not sep or kind not in COHORT_KINDS[1:] or not value:
            raise ConfigError(f"cohort {text!r} is not one of: fleet, tag:NAME, device:ID, model:SHA")
        if kind == "device":
            try:
                check_device_id(value)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if kind == "model" and not all(c in "0123456789abcdef" for c in value):
            raise ConfigError(f"model:{value} is not a (prefix of a) lowercase hex sha256")
        return cls(kind, value)

    def __str__(self) -> str:
        return self.kind if self.kind == "fleet" else f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Selector:
    """Which windows a cohort covers: ``devices=None`` is every device, ``model`` a sha prefix."""

    cohort: Cohort
    devices: tuple[str, ...] | None = None
    model: str | None = None

    def windows(self, store: Store, *, since=None, until=None):
        return store.windows(devices=self.devices, model=self.model, since=since, until=until)

    def merged(self, store: Store, *, since=None, until=None, bucket_s: int = DEFAULT_BUCKET_S) -> dict[str, dict]:
        return store.merged(devices=self.devices, model=self.model, since=since, until=until, bucket_s=bucket_s)


def select(store: Store, cohort: Cohort | str) -> Selector:
    cohort = Cohort.parse(cohort) if isinstance(cohort, str) else cohort
    if cohort.kind == "tag":
        return Selector(cohort, devices=tuple(store.devices_with_tag(cohort.value)))
    if cohort.kind == "device":
        return Selector(cohort, devices=(cohort.value,))
    if cohort.kind == "model":
        return Selector(cohort, model=cohort.value)
    return Selector(cohort)


@dataclass(frozen=True)
class DeviceView:
    device: str
    status: str  # online | offline | stale (said online, not heard from for offline_after_s)
    online: bool | None
    last_seen_t: float
    last_seen_ago_s: float
    agent_version: str | None
    boot: int | None
    active_model: str | None
    previous_model: str | None
    shadow_model: str | None
    automation: str | None
    health: str | None
    last_error: str | None
    tags: tuple[str, ...]
    clock_offset_s: float | None = None  # the device's clock minus the collector's (None: not measured yet)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tags"] = list(self.tags)
        return d


def device_view(row: dict, *, now: float, offline_after_s: float) -> DeviceView:
    state = row.get("state") or {}
    models = state.get("models") or {}
    ago = max(0.0, now - row["last_seen_t"])
    if row["online"] is False:
        status = "offline"
    else:
        status = "online" if ago <= offline_after_s else "stale"
    return DeviceView(
        device=row["device"], status=status, online=row["online"], last_seen_t=row["last_seen_t"],
        last_seen_ago_s=round(ago, 3), agent_version=state.get("agent_version"), boot=state.get("boot"),
        active_model=models.get("active"), previous_model=models.get("previous"),
        shadow_model=models.get("shadow"), automation=state.get("automation"), health=state.get("health"),
        last_error=state.get("last_error"), tags=tuple(row.get("tags") or ()),
        clock_offset_s=None if row.get("clock_offset_s") is None else round(row["clock_offset_s"], 1))


def format_offset(seconds: float | None) -> str:
    """A clock offset for people: ``+1.0y``, ``-3.0d``, ``+2m``, ``0s`` (under a second), ``-``."""
    if seconds is None:
        return "-"
    if abs(seconds) < 1:
        return "0s"
    sign, a = ("+" if seconds > 0 else "-"), abs(seconds)
    for unit, size in (("y", 365 * 86400.0), ("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        tenths = round(a / size, 1)  # the unit is chosen by the value as printed: a year less 1 s is +1.0y
        if tenths >= 2 or (unit == "y" and tenths >= 1):
            return f"{sign}{tenths:.1f}{unit}" if unit in ("y", "d") else f"{sign}{a / size:.0f}{unit}"
    return f"{sign}{a:.0f}s"


def fleet_status(store: Store, *, now: float | None = None, offline_after_s: float = 120.0) -> list[DeviceView]:
    now = time.time() if now is None else now
    return [device_view(r, now=now, offline_after_s=offline_after_s) for r in store.devices()]


def counts(views: list[DeviceView]) -> dict[str, int]:
    out = {"devices": len(views), "online": 0, "offline": 0, "stale": 0}
    for v in views:
        out[v.status] += 1
    return out


def device_detail(store: Store, device: str, *, now: float | None = None, offline_after_s: float = 120.0,
                  horizon_s: float = 3600.0, bucket_s: int = DEFAULT_BUCKET_S, events: int = 20) -> dict | None:
    """One device: its view, its reported state, recent events, and its figures per model
    over the last ``horizon_s`` (rollup buckets included, so the horizon starts at a bucket)."""
    now = time.time() if now is None else now
    row = store.device(device)
    if row is None:
        return None
    merged = store.merged(devices=[device], since=now - horizon_s, bucket_s=bucket_s)
    return {
        **device_view(row, now=now, offline_after_s=offline_after_s).as_dict(),
        "first_seen_t": row["first_seen_t"],
        "state": row["state"],
        "horizon_s": horizon_s,
        "summary": {model or "(none)": summarize(m) for model, m in sorted(merged.items())},
        "events": store.events(device=device, limit=events),
    }
