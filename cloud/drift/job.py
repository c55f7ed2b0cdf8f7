"""The collector's drift job: evaluate on a schedule and keep the alerts in the store.

    Collector(config, jobs=[DriftJob(registry_dir="registry", config=DriftConfig())])

The collector's maintenance tick calls ``job(store, now)``. When ``every_s`` has passed since
the last evaluation, the job reads the store's open and acknowledged alerts, evaluates the
engine at ``now`` and saves every change (opened, updated — bookkeeping such as the healthy
streak included — and resolved), so hysteresis survives a collector restart. Opened and
resolved alerts and material updates are logged at INFO. One engine lives as long as the job,
so device baselines are learned once per process (and again, from the rollups, after a
restart).
"""
from __future__ import annotations

import logging
from typing import Callable

from cloud.drift.alerts import Alert, AlertChange, Finding, reconcile
from cloud.drift.engine import DriftConfig, DriftEngine
from cloud.drift.source import StoreSource, registry_profiles
from cloud.store.base import DEFAULT_BUCKET_S

log = logging.getLogger(__name__)


class DriftJob:
    """``job(store, now)``: evaluate drift every ``every_s`` (default: ``config.step_s``)."""

    def __init__(self, *, registry_dir: str | None = None,
                 profile_of: Callable[[str], dict | None] | None = None,
                 config: DriftConfig = DriftConfig(), every_s: float | None = None,
                 bucket_s: int = DEFAULT_BUCKET_S):
        if (registry_dir is None) == (profile_of is None):
            raise ValueError("give the drift job either registry_dir or profile_of")
        self.registry_dir = registry_dir
        self.profile_of = profile_of
        self.config = config
        self.every_s = config.step_s if every_s is None else every_s
        self.bucket_s = bucket_s
        self.engine: DriftEngine | None = None
        self.last_t: float | None = None
        self.last_findings: list[Finding] = []

    def _profiles(self, store) -> Callable[[str], dict | None]:
        if self.profile_of is not None:
            return self.profile_of
        from cloud.registry import Registry

        return registry_profiles(Registry(store, self.registry_dir))

    def __call__(self, store, now: float) -> list[AlertChange]:
        if self.last_t is not None and now - self.last_t < self.every_s:
            return []
        self.last_t = now
        if self.engine is None or self.engine.source.store is not store:
            self.engine = DriftEngine(StoreSource(store, self._profiles(store), self.bucket_s), self.config)
        engine = self.engine
        open_alerts = [Alert.from_row(r) for r in store.alerts() if r["status"] != "resolved"]
        self.last_findings = engine.findings(now)
        changes = reconcile(open_alerts, self.last_findings, now, self.config.policy)
        for change in changes:
            store.save_alert(change.alert.to_row())
            a = change.alert
            if change.change != "updated" or change.material:
                log.info("drift alert %s %s: %s drift on %s, severity %.2f, pattern %s, top %s", a.id, change.change,
                         a.kind, a.cohort, a.severity, a.pattern or "-",
                         (a.evidence.get("top") or [{}])[0].get("signal", "-"))
        return changes

    def latest_scores(self) -> list[dict]:
        """The last evaluation's verdict per (cohort, kind), for the HTTP API and the dashboard."""
        return [{"cohort": f.cohort, "signal": f.kind, "score": f.severity, "level": f.level,
                 "detected": f.detected, "pattern": f.pattern, "n": f.n} for f in self.last_findings]
