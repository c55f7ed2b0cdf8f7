"""Fleet and devices.

    GET /api/fleet                  {devices, online, offline, by_model: [{model, name, version, devices}],
                                     by_health: {health: n}, open_alerts, rollouts_active, ingest, now}
    GET /api/devices                [{device, online, first_seen_t, last_seen_t, agent_version, boot,
                                      automation, health, last_error, models: {active, previous, shadow}, tags,
                                      clock_offset_s (its clock minus the collector's; null until measured)}]
    GET /api/devices/{id}           one device, plus ``events`` (newest first) and ``now``
    GET /api/devices/{id}/events    ?limit= (newest first)
    GET /api/cohorts                [{selector, label}] for fleet, each tag, model and device
"""
from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Depends, Query

from cloud.api.backend import Backend
from cloud.api.deps import backend
from cloud.api.rollouts import is_active
from cloud.api.schemas import Device, Fleet

router = APIRouter(tags=["fleet"])


def _model_names(b: Backend) -> dict[str, dict]:
    return {m["sha256"]: m for m in b.models()}


@router.get("/api/fleet", summary="Fleet headline figures", response_model=Fleet,
            response_model_exclude_unset=True)
def fleet(b: Backend = Depends(backend)) -> dict:
    devices = b.devices()
    online = sum(1 for d in devices if d["online"])
    names = _model_names(b)
    running = Counter(d["models"].get("active") for d in devices if d["models"].get("active"))
    by_model = [{"model": sha, "name": names.get(sha, {}).get("name"), "version": names.get(sha, {}).get("version"),
                 "devices": n} for sha, n in running.most_common()]
    return {
        "devices": len(devices), "online": online, "offline": len(devices) - online,
        "by_model": by_model, "by_health": dict(Counter(d["health"] or "unknown" for d in devices)),
        "open_alerts": len(b.alerts("open", None)),
        "rollouts_active": sum(1 for r in b.rollouts() if is_active(r)),
        "ingest": b.ingest(), "now": b.now(),
    }


@router.get("/api/devices", summary="Every device with its reported state and tags", response_model=list[Device],
            response_model_exclude_unset=True)
def devices(tag: str | None = None, online: bool | None = None, b: Backend = Depends(backend)) -> list[dict]:
    out = b.devices()
    if tag is not None:
        out = [d for d in out if tag in d["tags"]]
    if online is not None:
        out = [d for d in out if bool(d["online"]) == online]
    return out


@router.get("/api/devices/{device_id}", summary="One device, with its recent events")
def device(device_id: str, limit: int = Query(50, ge=1, le=1000), b: Backend = Depends(backend)) -> dict:
    return {**b.device(device_id), "events": b.events(device_id, limit), "now": b.now()}


@router.get("/api/devices/{device_id}/events", summary="A device's lifecycle and feedback events")
def device_events(device_id: str, limit: int = Query(100, ge=1, le=10000), b: Backend = Depends(backend)) -> list[dict]:
    b.device(device_id)
    return b.events(device_id, limit)


@router.get("/api/cohorts", summary="Known cohort selectors")
def cohorts(b: Backend = Depends(backend)) -> list[dict]:
    return b.cohorts()
