"""The API's one view of the collector's parts, and the only place that knows their names.

``create_app`` takes ``Services`` (store, registry, drift engine, rollout controller, ingest
counters, token). ``Backend`` turns what those parts return into the API's JSON shapes,
documented per router. Parts that are absent (a store-only collector, a test) read as
empty rather than failing, so every page still renders.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from cloud.store.base import Store

log = logging.getLogger(__name__)

COHORT_KINDS = ("fleet", "tag", "device", "model")


class NotFound(LookupError):
    """The thing asked for does not exist; the message names it."""


class Unavailable(RuntimeError):
    """The collector runs without the part this request needs."""


@dataclass
class Services:
    """What the collector hands the API. Only ``store`` is required."""

    store: Store
    token: str | None = None
    registry: Any = None
    drift: Any = None
    rollouts: Any = None
    ingest: Any = None
    fleet: Any = None
    public_metrics: bool = False
    clock: Callable[[], float] = field(default=time.time)


@dataclass(frozen=True)
class Cohort:
    """A parsed cohort selector: which devices (None = all) and which model (None = any)."""

    selector: str
    devices: list[str] | None
    model: str | None


class Backend:
    def __init__(self, services: Services):
        self.s = services

    def now(self) -> float:
        return self.s.clock()

    # -- cohorts --------------------------------------------------------------------------
    def cohort(self, selector: str) -> Cohort:
        """``fleet``, ``tag:X``, ``device:ID`` or ``model:SHA`` (a prefix of the sha works)."""
        kind, _, arg = selector.partition(":")
        if kind == "fleet" and not arg:
            return Cohort(selector, None, None)
        if kind in ("tag", "device", "model") and arg:
            if kind == "tag":
                return Cohort(selector, self.s.store.devices_with_tag(arg), None)
            if kind == "device":
                return Cohort(selector, [arg], None)
            return Cohort(selector, None, arg)
        raise ValueError(f"cohort {selector!r} is not valid: use fleet, tag:NAME, device:ID or model:SHA")

    def cohorts(self) -> list[dict]:
        """Known selectors for the dashboard's picker."""
        devices = self.s.store.devices()
        tags = sorted({t for d in devices for t in d.get("tags") or []})
        out = [{"selector": "fleet", "label": "every device"}]
        out += [{"selector": f"tag:{t}", "label": f"tag {t}"} for t in tags]
        out += [{"selector": f"model:{m}", "label": f"model {m[:10]}"} for m in self.s.store.models()]
        out += [{"selector": f"device:{d['device']}", "label": f"device {d['device']}"} for d in devices]
        return out

    def windows(self, cohort: Cohort, since: float, until: float) -> Iterator[dict]:
        if cohort.devices is not None and not cohort.devices:
            return iter(())
        return self.s.store.windows(devices=cohort.devices, model=cohort.model, since=since, until=until)

    # -- devices ----------------------------------------------------------------------------
    @staticmethod
    def _device(row: dict) -> dict:
        state = row.get("state") or {}
        return {
            "device": row["device"], "online": row.get("online"), "first_seen_t": row.get("first_seen_t"),
            "last_seen_t": row.get("last_seen_t"), "agent_version": state.get("agent_version"),
            "boot": state.get("boot"), "automation": state.get("automation"), "health": state.get("health"),
            "last_error": state.get("last_error"), "models": state.get("models") or {},
            "tags": sorted(row.get("tags") or []),
        }

    def devices(self) -> list[dict]:
        return [self._device(r) for r in self.s.store.devices()]

    def device(self, device_id: str) -> dict:
        row = self.s.store.device(device_id)
        if row is None:
            raise NotFound(f"no device {device_id!r} has reported to this collector")
        return self._device(row)

    def events(self, device_id: str | None, limit: int) -> list[dict]:
        return self.s.store.events(device=device_id, limit=limit)

    # -- ingest -----------------------------------------------------------------------------
    def ingest(self) -> dict:
        """Totals since the collector started (from its counters) plus rejects by code (stored)."""
        rejected = self.s.store.reject_counts()
        counters = self.s.ingest
        snap = counters.snapshot() if counters is not None and hasattr(counters, "snapshot") else {}
        return {
            "messages_total": snap.get("messages_total"),
            "windows_total": snap.get("windows_total", snap.get("windows_new")),
            "duplicates_total": snap.get("duplicates_total"),
            "events_total": snap.get("events_total"),
            "rejected_total": sum(rejected.values()),
            "rejected": rejected,
            "lag_s": snap.get("lag_s"),
        }

    # -- models ------------------------------------------------------------------------------
    def reference_profile(self, sha: str) -> dict | None:
        reg = self.s.registry
        if reg is None:
            return None
        try:
            return (self._registry_model(sha).get("manifest") or {}).get("profile")
        except NotFound:
            return None

    def _registry_model(self, sha: str) -> dict:
        reg = self.s.registry
        if reg is None:
            raise NotFound(f"no model {sha!r}: this collector runs without a registry")
        found = reg.get(sha)
        if found is None:
            raise NotFound(f"no registered model {sha!r}")
        return found if isinstance(found, dict) else found.as_dict()

    def models(self) -> list[dict]:
        if self.s.registry is None:
            return []
        return [m if isinstance(m, dict) else m.as_dict() for m in self.s.registry.list()]

    def model(self, sha: str) -> dict:
        return self._registry_model(sha)

    # -- drift ---------------------------------------------------------------------------------
    def alerts(self, status: str | None, cohort: str | None) -> list[dict]:
        return self.s.store.alerts(status=status, cohort=cohort)

    def alert(self, alert_id: str) -> dict:
        found = self.s.store.alert(alert_id)
        if found is None:
            raise NotFound(f"no alert {alert_id!r}")
        return found

    def ack_alert(self, alert_id: str, by: str, note: str) -> dict:
        self.alert(alert_id)
        engine = self.s.drift
        if engine is None or not hasattr(engine, "ack"):
            raise Unavailable("acknowledging needs the drift engine, which this collector does not run")
        engine.ack(alert_id, by=by, note=note)
        return self.alert(alert_id)

    def drift_scores(self) -> list[dict]:
        """Latest score per (cohort, signal): [{cohort, signal, score}] (empty without an engine)."""
        engine = self.s.drift
        if engine is None or not hasattr(engine, "latest_scores"):
            return []
        return list(engine.latest_scores())

    def drift_report(self, cohort: str) -> dict:
        engine = self.s.drift
        if engine is None or not hasattr(engine, "report"):
            return {"cohort": cohort, "rows": []}
        return engine.report(cohort)

    # -- rollouts ------------------------------------------------------------------------------
    def _controller(self):
        if self.s.rollouts is None:
            raise Unavailable("this collector runs without a rollout controller")
        return self.s.rollouts

    def rollouts(self) -> list[Any]:
        return [] if self.s.rollouts is None else list(self.s.rollouts.list())

    def rollout(self, rollout_id: str) -> Any:
        found = self._controller().get(rollout_id)
        if found is None:
            raise NotFound(f"no rollout {rollout_id!r}")
        return found

    def rollout_log(self, rollout_id: str) -> list[dict]:
        ctl = self._controller()
        return list(ctl.log(rollout_id)) if hasattr(ctl, "log") else []

    def start_rollout(self, spec: dict, actor: str) -> Any:
        return self._controller().start(**spec, actor=actor)

    def act(self, rollout_id: str, action: str, actor: str, reason: str) -> Any:
        self.rollout(rollout_id)
        return self._controller().act(rollout_id, action, actor=actor, reason=reason)
