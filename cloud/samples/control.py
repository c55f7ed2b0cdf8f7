"""The collector's say over field samples: switch a device's uploads, ask for the audio of an alert.

Both travel in the device's retained desired state, in ``config``:

    {"samples": false | true}                      stop / resume uploads (an opted-in device only:
                                                   a device that did not opt in uploads nothing)
    {"sample_request": {"id", "alert", "from_t", "to_t", "max_clips"}}
                                                   upload the utterances in [from_t, to_t] (the
                                                   device's clock) still in its ring, and those to come
                                                   before to_t, at most max_clips (the device caps it too)

A command (``switch``, ``request_alert``) is a queued row (``sample_commands``), as rollout
commands are: the CLI and the API only write it, and the collector's maintenance publishes it
(``publish_pending``) over its own connection, retrying while the broker is away. A new desired
rev keeps the device's active and shadow model, automation and rollout from the last one, and
merges ``config`` into the last one's; the rollout controller's later revs carry ``config`` over
(``cloud.delivery``), so a switch is not undone by a canary step. The alert's time range is turned
into each device's clock with the offset the collector measured (``devices.clock_offset_s``).
"""
from __future__ import annotations

import json
import logging
import time
import uuid

from cloud.delivery import DeliveryError
from shared.errors import ConfigError
from shared.topics import check_device_id

log = logging.getLogger(__name__)

DEFAULT_BEFORE_S = 300.0
DEFAULT_AFTER_S = 600.0
DEFAULT_MAX_CLIPS = 20


def _queue(store, per_device: dict[str, dict], actor: str, now: float) -> str:
    cid = f"sc-{time.time_ns():016x}-{uuid.uuid4().hex[:6]}"  # ids sort in the order commands were given
    with store.transaction() as cur:
        cur.execute("INSERT INTO sample_commands (id, t, actor, devices, config) VALUES (?, ?, ?, ?, ?)",
                    (cid, now, actor, json.dumps(sorted(per_device)), json.dumps(per_device, sort_keys=True)))
    return cid


def _devices(devices) -> list[str]:
    out = sorted(set(devices))
    if not out:
        raise ConfigError("name at least one device")
    try:
        return [check_device_id(d) for d in out]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def switch(store, devices, on: bool, *, actor: str, now: float | None = None) -> dict:
    """Queue ``config.samples = on`` for ``devices``; returns the command."""
    now = time.time() if now is None else now
    per_device = {d: {"samples": bool(on)} for d in _devices(devices)}
    return {"id": _queue(store, per_device, actor, now), "devices": sorted(per_device), "config": {"samples": on}}


def request_alert(store, alert_id: str, *, actor: str, before_s: float = DEFAULT_BEFORE_S,
                  after_s: float = DEFAULT_AFTER_S, max_clips: int = DEFAULT_MAX_CLIPS, devices=None,
                  now: float | None = None) -> dict:
    """Queue a request for the utterances around alert ``alert_id``: from its onset (or opening)
    minus ``before_s`` to now plus ``after_s``, from its driving devices unless ``devices`` is given."""
    now = time.time() if now is None else now
    alert = store.alert(alert_id)
    if alert is None:
        raise ConfigError(f"no alert {alert_id!r}; `harken drift status` lists them")
    if alert["status"] == "resolved":
        raise ConfigError(f"alert {alert_id} is resolved; ask for samples around an open alert")
    if not 0 <= before_s <= 86400 or not 0 <= after_s <= 86400 or not 1 <= max_clips <= 10000:
        raise ConfigError("before_s and after_s must be 0..86400 s and max_clips 1..10000")
    ev = alert.get("evidence") or {}
    start = (ev.get("onset_t") or alert["opened_t"]) - before_s
    targets = _devices(devices if devices is not None else _alert_devices(store, alert))
    rid = f"sr-{uuid.uuid4().hex[:10]}"
    per_device = {}
    for d in targets:
        offset = (store.device(d) or {}).get("clock_offset_s") or 0.0  # its clock minus ours
        per_device[d] = {"sample_request": {"id": rid, "alert": alert_id, "from_t": round(start + offset, 3),
                                            "to_t": round(now + after_s + offset, 3), "max_clips": int(max_clips)}}
    cid = _queue(store, per_device, actor, now)
    return {"id": cid, "request": rid, "alert": alert_id, "devices": targets, "from_t": start, "to_t": now + after_s,
            "max_clips": max_clips}


def _alert_devices(store, alert: dict) -> list[str]:
    """The devices driving an alert, else every device of its cohort."""
    from cloud.fleet import select

    driving = [d["device"] for d in (alert.get("evidence") or {}).get("devices") or []
               if isinstance(d, dict) and d.get("driving") and d.get("device")]
    if driving:
        return driving
    selector = select(store, alert["cohort"])
    if selector.devices is not None:
        return list(selector.devices)
    return [d["device"] for d in store.devices()]


def pending(store) -> list[dict]:
    with store.transaction(write=False) as cur:
        rows = cur.execute("SELECT id, t, actor, config FROM sample_commands WHERE done_t IS NULL ORDER BY id"
                           ).fetchall()
    return [{"id": i, "t": t, "actor": a, "config": json.loads(c)} for i, t, a, c in rows]


def publish_pending(store, delivery, now: float | None = None) -> int:
    """Write and publish the desired states of the queued commands; returns how many were done.
    A command the broker does not take stays queued (DeliveryError is raised for the log)."""
    done = 0
    for cmd in pending(store):
        results = {}
        for device, config in sorted(cmd["config"].items()):
            state = (store.device(device) or {}).get("state") or {}
            results[device] = delivery.reconfigure(device, config, floor=state.get("desired_rev", 0))["rev"]
        with store.transaction() as cur:
            cur.execute("UPDATE sample_commands SET done_t = ?, result = ? WHERE id = ?",
                        (time.time() if now is None else now, json.dumps({"revs": results}), cmd["id"]))
        log.info("sample command %s by %s: desired state written for %d device(s)", cmd["id"], cmd["actor"],
                 len(results))
        done += 1
    return done


__all__ = ["DeliveryError", "pending", "publish_pending", "request_alert", "switch"]
