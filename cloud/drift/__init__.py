"""Drift detection for the collector: pure logic, no I/O (see docs/drift.md).

    reference    a model's scores from its bundle's reference profile (healthy spread from chunks)
    signals      what is read from a window or rollup: count vectors per kind and signal
    tables       rollups laid out per model as [devices, steps, bins] for cohort arithmetic
    blocks       steps merged until they hold enough data
    scores       linear scores (ridit, share, accuracy) with random-effects variance
    baselines    a device's own baseline, learned over a warm-up
    budget       the false-alarm budget → CUSUM thresholds and per-look alpha
    cusum        the sequential statistic, onset and sudden/gradual pattern
    assess       one cohort, one kind: change (CUSUM) and level tests
    peers        a device's noise floor against its peers (dead microphones)
    attribution  the devices and tags that drive a cohort's drift
    alerts       the alert state machine (open, acked, resolved with hysteresis)
    engine       DriftEngine.evaluate(now, open_alerts) over a DriftSource
    report       the drift table over time (``harken drift report``)
    source       the DriftSource over the collector's store and registry
    job          the collector's periodic drift job (alerts kept in the store)
    stats        PSI (the dashboard's per-feature drift series)
"""
from cloud.drift.alerts import Alert, AlertChange, AlertPolicy, Finding, acknowledge, reconcile
from cloud.drift.engine import DriftConfig, DriftEngine, DriftSource
from cloud.drift.job import DriftJob
from cloud.drift.report import drift_report
from cloud.drift.source import StoreSource, profile_from_manifest, registry_profiles

__all__ = ["Alert", "AlertChange", "AlertPolicy", "DriftConfig", "DriftEngine", "DriftJob", "DriftSource", "Finding",
           "StoreSource", "acknowledge", "drift_report", "profile_from_manifest", "reconcile", "registry_profiles"]
