"""Cohort selectors: which devices a rollout covers.

    fleet           every device that has reported its state
    tag:NAME        devices carrying the tag (``harken fleet tag``)
    device:ID       one device
    model:SHA       devices whose active model starts with SHA

Selectors joined by commas are a union (``tag:lab,device:kitchen-1``). The cohort is
resolved once, when the rollout starts, and frozen: devices that join later are not in it.
"""
from __future__ import annotations

from shared.errors import ConfigError

KINDS = ("fleet", "tag", "device", "model")


def parse(selector: str) -> list[tuple[str, str]]:
    parts = []
    for item in (s.strip() for s in (selector or "").split(",")):
        if not item:
            continue
        kind, _, value = item.partition(":")
        if kind not in KINDS or (kind == "fleet") != (value == ""):
            raise ConfigError(f"cohort {item!r} is not valid: use fleet, tag:NAME, device:ID or model:SHA "
                              "(comma-separated for a union)")
        parts.append((kind, value))
    if not parts:
        raise ConfigError("--cohort is empty: use fleet, tag:NAME, device:ID or model:SHA")
    return parts


def _matches(kind: str, value: str, device: dict) -> bool:
    if kind == "fleet":
        return True
    if kind == "tag":
        return value in (device.get("tags") or [])
    if kind == "device":
        return device["device"] == value
    active = ((device.get("state") or {}).get("models") or {}).get("active") or ""
    return bool(active) and active.startswith(value)


def select(selector: str, devices: list[dict]) -> list[str]:
    """Device ids (sorted) that match; only devices with a reported state can be rolled out to."""
    parts = parse(selector)
    chosen = {d["device"] for d in devices if d.get("state") and any(_matches(k, v, d) for k, v in parts)}
    return sorted(chosen)
