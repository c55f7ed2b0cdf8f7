"""The API's one view of the collector's parts, and the only place that knows their names.

``create_app`` takes ``Services``: the store, the registry (``cloud.registry.Registry``), the
drift engine (``cloud.drift.DriftEngine``), the rollout service (``cloud.rollout.service.RolloutService``), the ingest
counters (``cloud.ingest.IngestStats`` or the ``Ingest`` that holds them) and the token. ``Backend`` turns what those parts return into the API's JSON shapes,
documented per router. Parts that are absent (a store-only collector, a test) read as
empty rather than failing, so every page still renders.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from cloud import fleet
from cloud.api import evidence
from cloud.drift import Alert, DriftConfig, DriftEngine, StoreSource, acknowledge, drift_report, registry_profiles
from cloud.fleet import Selector
from cloud.store.base import DEFAULT_BUCKET_S, Store
from shared.errors import ConfigError, StoreError

log = logging.getLogger(__name__)


class NotFound(LookupError):
    """The thing asked for does not exist; the message names it."""


class Unavailable(RuntimeError):
    """The collector runs without the part this request needs."""


class Conflict(RuntimeError):
    """The request does not fit the thing's current state (e.g. acknowledging a resolved alert)."""


@dataclass
class Services:
    """What the collector hands the API. Only ``store`` is required."""

    store: Store
    token: str | None = None
    tokens: Any = None  # a cloud.api.auth.TokenBook; None: just ``token`` (role operate)
    readiness: Callable[[], list[str]] | None = None  # the collector's reasons not to be ready
    registry: Any = None
    drift: Any = None
    rollouts: Any = None
    ingest: Any = None
    samples: Any = None  # the sample directory (cloud.samples.files.SampleFiles)
    public_metrics: bool = False
    offline_after_s: float = 120.0
    rollup_bucket_s: int = DEFAULT_BUCKET_S
    drift_findings: Callable[[], list] | None = None
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_config(cls, config, store: Store, **parts) -> "Services":
        """Services for a collector: token and timings from its ``CollectorConfig``, plus
        ``parts`` (registry=, drift=, rollouts=, ingest=, drift_findings=, public_metrics=)."""
        from cloud.api.auth import TokenBook

        return cls(store=store, token=config.http_token or None, offline_after_s=config.offline_after_s,
                   tokens=TokenBook.build(config.http_token, config.http_tokens_file),
                   rollup_bucket_s=config.rollup_bucket_s, **parts)


class Backend:
    def __init__(self, services: Services):
        self.s = services
        self._own_engine: DriftEngine | None = None

    def now(self) -> float:
        return self.s.clock()

    def readiness(self) -> list[str]:
        """Why messages do not reach the store now: the collector's own view, and a query on ours."""
        reasons = list(self.s.readiness()) if self.s.readiness is not None else []
        try:
            self.s.store.ping()
        except StoreError as exc:
            reasons.append(f"the store does not answer: {exc}")
        return reasons

    # -- cohorts --------------------------------------------------------------------------
    def cohort(self, selector: str) -> Selector:
        """``fleet``, ``tag:X``, ``device:ID`` or ``model:SHA``; ValueError says what is wrong."""
        try:
            return fleet.select(self.s.store, selector)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    def cohorts(self) -> list[dict]:
        """Known selectors for the dashboard's picker."""
        devices = self.s.store.devices()
        tags = sorted({t for d in devices for t in d.get("tags") or []})
        out = [{"selector": "fleet", "label": "every device"}]
        out += [{"selector": f"tag:{t}", "label": f"tag {t}"} for t in tags]
        out += [{"selector": f"model:{m}", "label": f"model {m[:10]}"} for m in self.s.store.models() if m]
        out += [{"selector": f"device:{d['device']}", "label": f"device {d['device']}"} for d in devices]
        return out

    def windows(self, selector: Selector, since: float, until: float) -> Iterator[dict]:
        """Full windows only (they are deleted after the store's retention)."""
        if selector.devices is not None and not selector.devices:
            return iter(())
        return selector.windows(self.s.store, since=since, until=until)

    def bodies(self, selector: Selector, since: float, until: float, bucket_s: int) -> Iterator[dict]:
        """What a series of ``bucket_s`` buckets reads: per-device rollup merges (and the windows
        not rolled up yet) when its buckets are whole rollup buckets, else the full windows."""
        if selector.devices is not None and not selector.devices:
            return iter(())
        if bucket_s % self.s.rollup_bucket_s:
            return self.windows(selector, since, until)
        bodies = self.s.store.device_buckets(devices=selector.devices, since=since, until=until,
                                             bucket_s=self.s.rollup_bucket_s)
        prefix = selector.model
        return (b for b in bodies if prefix is None or (b.get("model") or "").startswith(prefix))

    def merged(self, selector: Selector, since: float, until: float) -> dict[str, dict]:
        """Exact merge per model over a horizon (rollups included, bucket-aligned)."""
        if selector.devices is not None and not selector.devices:
            return {}
        return selector.merged(self.s.store, since=since, until=until, bucket_s=self.s.rollup_bucket_s)

    # -- devices ----------------------------------------------------------------------------
    def _device(self, row: dict, now: float) -> dict:
        v = fleet.device_view(row, now=now, offline_after_s=self.s.offline_after_s)
        return {
            "device": v.device, "status": v.status, "online": v.status == "online",
            "first_seen_t": row.get("first_seen_t"), "last_seen_t": v.last_seen_t,
            "agent_version": v.agent_version, "boot": v.boot, "automation": v.automation, "health": v.health,
            "last_error": v.last_error, "tags": list(v.tags), "clock_offset_s": v.clock_offset_s,
            "models": {"active": v.active_model, "previous": v.previous_model, "shadow": v.shadow_model},
        }

    def devices(self) -> list[dict]:
        now = self.now()
        return [self._device(r, now) for r in self.s.store.devices()]

    def device(self, device_id: str) -> dict:
        row = self.s.store.device(device_id)
        if row is None:
            raise NotFound(f"no device {device_id!r} has reported to this collector")
        return self._device(row, self.now())

    def events(self, device_id: str | None, limit: int) -> list[dict]:
        return self.s.store.events(device=device_id, limit=limit)

    # -- ingest -----------------------------------------------------------------------------
    def ingest(self) -> dict:
        """Counters since the collector started (None without ingest) and rejects by code (stored)."""
        rejected = self.s.store.reject_counts()
        stats = getattr(self.s.ingest, "stats", self.s.ingest)
        get = (lambda name: getattr(stats, name, None)) if stats is not None else (lambda name: None)
        extra = get("extra") or {}
        return {
            "messages_total": get("messages"), "windows_total": get("windows_new"),
            "events_total": get("events_new"), "states_total": get("states"),
            "duplicates_total": extra.get("duplicates"), "store_failures_total": get("store_failures"),
            "last_commit_t": get("last_commit_t") or None,
            "rejected_total": sum(rejected.values()), "rejected": rejected,
            "lag_s": get("lag_s") if get("lag_s") is not None else extra.get("lag_s"),
            **self._intake(),
        }

    def _intake(self) -> dict:
        """What waits for the writer, what was shed, what retained copies were cleared (None without ingest)."""
        queue = getattr(self.s.ingest, "queue", None)
        sweep = getattr(self.s.ingest, "sweep", None)
        return {"queue_depth": queue.qsize() if queue is not None else None,
                "shed_total": queue.shed if queue is not None else None,
                "shed_bytes_total": queue.shed_bytes if queue is not None else None,
                "retained_cleared_total": sweep.cleared if sweep is not None else None}

    # -- field samples -------------------------------------------------------------------------
    def sample_files(self):
        if self.s.samples is None:
            raise Unavailable("this collector runs without a sample directory (samples_dir)")
        return self.s.samples

    # -- models ------------------------------------------------------------------------------
    @staticmethod
    def _record(rec) -> dict:
        """A registry record (``cloud.registry.ModelRecord``) as a plain dict with its manifest."""
        if isinstance(rec, dict):
            return rec
        return {**rec.summary(), "created_t": rec.registered_t, "manifest": rec.manifest}

    def models(self) -> list[dict]:
        if self.s.registry is None:
            return []
        return [self._record(r) for r in self.s.registry.list()]

    def model(self, ref: str) -> dict:
        """A model by sha256 (or a unique prefix), ``name:version`` or alias."""
        if self.s.registry is None:
            raise NotFound(f"no model {ref!r}: this collector runs without a registry")
        try:
            return self._record(self.s.registry.resolve(ref))
        except ConfigError as exc:
            raise NotFound(str(exc)) from exc

    def reference_profile(self, sha: str) -> dict | None:
        try:
            return (self.model(sha).get("manifest") or {}).get("profile")
        except NotFound:
            return None

    # -- drift ---------------------------------------------------------------------------------
    # ``services.drift`` is the collector's ``cloud.drift.DriftEngine`` (its source, config and
    # learned baselines are reused); without one the API builds its own over the store and registry.
    def drift_config(self) -> DriftConfig:
        return self.s.drift.config if self.s.drift is not None else DriftConfig()

    def _drift_engine(self) -> DriftEngine:
        if self.s.drift is not None:
            return self.s.drift
        if self.s.registry is None:
            raise Unavailable("drift needs the registry (the models' reference profiles); configure one")
        if self._own_engine is None:  # its baselines are cached: keep one per app
            self._own_engine = DriftEngine(StoreSource(self.s.store, registry_profiles(self.s.registry)))
        return self._own_engine

    def alerts(self, status: str | None, cohort: str | None) -> list[dict]:
        return self.s.store.alerts(status=status, cohort=cohort)

    def alert(self, alert_id: str) -> dict:
        found = self.s.store.alert(alert_id)
        if found is None:
            raise NotFound(f"no alert {alert_id!r}")
        return found

    def ack_alert(self, alert_id: str, by: str, note: str) -> dict:
        """Acknowledge (the drift alert state machine's rule): a resolved alert cannot be."""
        alert = Alert.from_row(self.alert(alert_id))
        try:
            acked = acknowledge(alert, self.now(), by=by)
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
        if acked is not alert:
            if note:
                acked = replace(acked, evidence={**acked.evidence, "ack_note": note})
            self.s.store.save_alert(acked.to_row())
        return self.alert(alert_id)

    def alert_histograms(self, row: dict) -> list[dict]:
        """The top signals' counts against their references (empty without a registry)."""
        if self.s.registry is None:
            return []
        selector = self.cohort(row["cohort"])

        def manifest_of(sha: str) -> dict | None:
            rec = self.s.registry.get(sha)
            return rec.manifest if rec is not None else None

        return evidence.histograms(row, lambda since, until: self.windows(selector, since, until), manifest_of,
                                   self.drift_config())

    def drift_report(self, cohort: str, since: float, until: float, step_s: float) -> list[dict]:
        return drift_report(self._drift_engine(), cohort, since, until, step_s)

    def drift_severities(self) -> list[dict]:
        """Latest severity per (cohort, kind): the engine's last findings when the collector
        shares them (``services.drift_findings``), else its open and acknowledged alerts."""
        if self.s.drift_findings is not None:
            return [{"cohort": f.cohort, "kind": f.kind, "severity": f.level if f.level is not None else f.severity,
                     "detected": f.detected} for f in self.s.drift_findings()]
        return [{"cohort": a["cohort"], "kind": a["signal"], "severity": (a.get("evidence") or {}).get("severity"),
                 "detected": True} for a in self.alerts(None, None) if a["status"] != "resolved"]

    # -- rollouts ------------------------------------------------------------------------------
    # ``services.rollouts`` is a ``cloud.rollout.service.RolloutService``: starting and acting
    # only write the store; the controller carries commands out at its next tick.
    def _service(self):
        if self.s.rollouts is None:
            raise Unavailable("this collector runs without rollouts (no registry configured)")
        return self.s.rollouts

    def rollouts(self) -> list[Any]:
        return [] if self.s.rollouts is None else list(self.s.rollouts.list())

    def rollout(self, ref: str) -> Any:
        found = self._service().get(ref)
        if found is None:
            raise NotFound(f"no rollout {ref!r}")
        return found

    def rollout_log(self, rollout_id: str) -> list[dict]:
        return list(self._service().log(rollout_id))

    def pending_commands(self, rollout_id: str) -> list[dict]:
        repo = getattr(self._service(), "repo", None)
        if repo is None:
            return []
        return [{"id": c.id, "action": c.action, "t": c.t, "actor": c.actor, "note": c.note}
                for c in repo.open_commands(rollout_id)]

    def start_rollout(self, spec: dict, actor: str) -> Any:
        return self._service().start(**spec, actor=actor, now=self.now())

    def act(self, ref: str, action: str, actor: str, reason: str) -> Any:
        rollout = self.rollout(ref)
        return self._service().act(rollout.id, action, actor=actor, reason=reason, now=self.now())
