"""Drift detection for the collector: pure logic, no I/O.

    stats        PSI, Jensen-Shannon, chi-square, accuracy drop — exact from histogram counts
    calibrate    sample-size-aware thresholds (simulated null at alpha / m, effect-size floor)
    signals      what is watched: input / output / concept signals as count vectors
    tables       windows laid out per model as [devices, steps, bins] for cohort arithmetic
    scoring      one kind of drift for one cohort (per model, combined by n)
    detectors    sudden vs gradual over time (river-style)
    attribution  the devices and tags that drive a cohort's drift
    alerts       the alert state machine (open, acked, resolved with hysteresis)
    engine       DriftEngine.evaluate(now, open_alerts) over a WindowSource
    report       the score table over time (``harken drift report``)
    source       the WindowSource over the collector's store and registry
    job          the collector's periodic drift job (alerts kept in the store)
"""
from cloud.drift.alerts import Alert, AlertChange, AlertPolicy, Finding, acknowledge, reconcile
from cloud.drift.calibrate import Calibrator, SignalCheck
from cloud.drift.detectors import DetectorConfig, SuddenGradualDetector
from cloud.drift.engine import DriftConfig, DriftEngine, WindowSource
from cloud.drift.job import DriftJob
from cloud.drift.report import drift_report
from cloud.drift.source import StoreSource, profile_from_manifest, registry_profiles

__all__ = ["Alert", "AlertChange", "AlertPolicy", "Calibrator", "DetectorConfig", "DriftConfig", "DriftEngine",
           "DriftJob", "Finding", "SignalCheck", "StoreSource", "SuddenGradualDetector", "WindowSource", "acknowledge",
           "drift_report", "profile_from_manifest", "reconcile", "registry_profiles"]
