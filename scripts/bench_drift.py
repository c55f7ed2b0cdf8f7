#!/usr/bin/env python3
"""Drift's judgments measured: false alerts per 1,000 device-days and detection delays, as JSON.

Three parts, each with the engine's default thresholds (only time settings are given):

- ``calibration``: households of held-out (test-split) speakers, their real utterances as the
  device's gate and the bundle saw them (``cloud.lab.records``), resampled at the window level
  over thousands of device-days (``cloud.drift.simulation``) through the engine's baselines,
  CUSUMs, level and peer tests; false alerts per 1,000 device-days with a Poisson 95 % bound,
  against the budget and twice it.
- ``healthy``: real agents (the simulator's offline harness: the agent's own pipeline on
  simulated time, households of test-split speakers, diurnal traffic) for the warm-up and a day,
  their windows written to a real SQLite store and rolled up, the collector's drift job evaluated
  after every step; every alert is a false alert.
- ``scenarios``: the same fleet with each simulator scenario from an onset after the warm-up:
  the step each targeted device and the fleet were flagged at, the onset error, the pattern.

    scripts/bench_drift.py --data DATA --bundle kws.hkb --public-key keys/signing.pub

The bundle must carry the lab's profile v2 and split speaker names (``harken model train``).
A part prints no rate when it ran no device-day, and no delay for a scenario nothing reached.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud.drift.engine import DriftConfig  # noqa: E402
from cloud.drift.job import DriftJob  # noqa: E402
from cloud.drift.reference import build_reference  # noqa: E402
from cloud.drift.simulation import Households, Speaker, count_alarms, simulate_table  # noqa: E402
from cloud.drift.source import profile_from_manifest  # noqa: E402
from cloud.lab.records import speaker_records  # noqa: E402
from cloud.store import open_store  # noqa: E402
from edge.sim.offline import OfflinePlan, run_offline  # noqa: E402
from edge.sim.scenarios import ScenarioParams  # noqa: E402
from shared import keys  # noqa: E402
from shared.bundle import load_bundle  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

EPOCH = 1_767_225_600.0  # 2026-01-01 00:00 UTC: days start at midnight
SCENARIOS = {
    "sudden-noise": dict(snr_db=5.0), "gradual-noise": dict(start_snr_db=30.0, snr_db=5.0, ramp_s=4 * 3600.0),
    "level-drop": dict(gain_db=-20.0), "band-limit": {}, "new-speakers": dict(shift=1.2),
    "broken-device": dict(fault="silence"),
}


MIN_SPEAKER_UTTERANCES = 10


def poisson_upper(k: int, exposure: float, level: float = 0.95) -> float:
    return float(stats.chi2.ppf(level, 2 * k + 2) / 2 / exposure)


def _engines(speakers) -> dict[str, int]:
    """Speakers per speech engine (names are ``engine:voice``): whether households and the
    reference are drawn from the same mix."""
    out: dict[str, int] = {}
    for name in speakers:
        engine = str(name).split(":", 1)[0]
        out[engine] = out.get(engine, 0) + 1
    return out


def calibration(bundle, data: str, cfg: DriftConfig, device_days: float, seed: int) -> dict:
    t = time.perf_counter()
    names = bundle.manifest["lineage"]["split"]["speaker_names"]["test"]
    records = speaker_records(data, bundle, names)
    # a household member says many things: a "speaker" the dataset holds one or two clips of
    # (most espeak-ng accent x variant voices) would repeat them for a whole session
    pool = [Speaker.from_record(r) for r in records.values()]
    speakers = [s for s in pool if len(s.confidence) >= MIN_SPEAKER_UTTERANCES]
    if len(speakers) < 3:
        raise SystemExit(f"calibration: only {len(speakers)} test speakers have >= {MIN_SPEAKER_UTTERANCES} "
                         "utterances; synthesize more clips per word (harken data synth --per-word)")
    ref = build_reference(profile_from_manifest(bundle.manifest), "m")
    days_per_run, devices = 10.0, 20
    monitored = alarms = 0.0
    by_kind: dict[str, int] = {}
    run = 0
    while monitored < device_days:
        h = Households(devices=devices, days=days_per_run + cfg.warmup_s / 86400.0, step_s=cfg.step_s, seed=seed + run)
        result = count_alarms(simulate_table(speakers, ref, h), cfg, h.step_s)
        monitored += result.device_days
        alarms += result.total
        for k, v in result.alarms.items():
            by_kind[k] = by_kind.get(k, 0) + v
        run += 1
    rate = 1000.0 * alarms / monitored if monitored else None
    upper = 1000.0 * poisson_upper(int(alarms), monitored) if monitored else None
    split = bundle.manifest["lineage"]["split"]["speaker_names"]
    return {"speakers": len(speakers), "speakers_too_few_utterances": len(pool) - len(speakers),
            "min_speaker_utterances": MIN_SPEAKER_UTTERANCES,
            "median_speaker_utterances": int(np.median([len(s.confidence) for s in speakers])),
            "engines": {"test (households)": _engines(s_name for s_name, s in zip(records, pool)
                                                      if len(s.confidence) >= MIN_SPEAKER_UTTERANCES),
                        "dev (reference)": _engines(split.get("dev") or [])},
            "device_days": round(monitored, 1),
            "false_alerts": int(alarms),
            "by_kind": by_kind, "per_1000_device_days": None if rate is None else round(rate, 3),
            "upper95_per_1000": None if upper is None else round(upper, 3),
            "budget_per_1000": cfg.alerts_per_1000_device_days,
            "tells_budget_from_twice": None if upper is None else upper < 2 * cfg.alerts_per_1000_device_days,
            "seconds": round(time.perf_counter() - t, 1)}


def replay(plan: OfflinePlan, cfg: DriftConfig, profiles: dict, db: Path) -> dict:
    """Real agents' windows into a real store, the drift job after every step; alerts and figures."""
    store = open_store(f"sqlite:///{db}")
    job = DriftJob(profile_of=profiles.get, config=cfg, bucket_s=int(cfg.step_s))
    run = run_offline(plan)
    buffer, next_eval, evaluations, levels = [], EPOCH + cfg.step_s + cfg.settle_s, 0, []
    monitored_s = 0.0  # device time the windows after the warm-up cover: what the rate is per
    t = time.perf_counter()

    def evaluate(now: float) -> None:
        nonlocal evaluations
        store.insert_windows(buffer, received_t=now)
        buffer.clear()
        store.rollup(int(cfg.step_s), retention_full_s=7 * 86400.0, now=now)
        job(store, now)
        evaluations += 1
        levels.extend(f.level for f in job.last_findings if f.level is not None)

    for window in run:
        while window["t_start"] >= next_eval:
            evaluate(next_eval)
            next_eval += cfg.step_s
        buffer.append(window)
        if window["t_start"] >= EPOCH + cfg.warmup_s:
            monitored_s += window["duration_s"]
    evaluate(next_eval)
    summary = run.summary or {}
    alerts = store.alerts()
    store.close()
    return {"alerts": alerts, "evaluations": evaluations, "max_level": max(levels, default=None),
            "monitored_device_days": monitored_s / 86400.0,
            "summary": summary, "seconds": round(time.perf_counter() - t, 1)}


def healthy(args, cfg: DriftConfig, profiles: dict, work: Path) -> dict:
    hours = args.hours + cfg.warmup_s / 3600.0
    plan = OfflinePlan(devices=args.devices, data_dir=args.data, bundle=args.bundle, trust_keys=(args.public_key,),
                       hours=hours, window_s=10.0, epoch=EPOCH, seed=args.seed, speaker_split="test",
                       traffic="diurnal", processes=args.processes)
    out = replay(plan, cfg, profiles, work / "healthy.db")
    device_days = out["monitored_device_days"]  # as played, not as asked: no windows, no rate
    n = len(out["alerts"])
    return {"devices": args.devices, "monitored_hours": args.hours, "warmup_h": cfg.warmup_s / 3600.0,
            "device_days": round(device_days, 2), "utterances": out["summary"].get("utterances"),
            "windows": out["summary"].get("windows"), "evaluations": out["evaluations"],
            "false_alerts": n, "alerts": [(a["cohort"], a["signal"]) for a in out["alerts"]],
            "per_1000_device_days": round(1000.0 * n / device_days, 3) if device_days else None,
            "max_detector_level": None if out["max_level"] is None else round(out["max_level"], 3),
            "seconds": out["seconds"]}


def scenario(name: str, args, cfg: DriftConfig, profiles: dict, work: Path) -> dict:
    onset_s = cfg.warmup_s + 2 * 3600.0
    hours = (onset_s + args.after_h * 3600.0) / 3600.0
    affected = None if name == "broken-device" else args.fraction  # a broken device is one device
    params = ScenarioParams(name=name, onset_s=onset_s, affected=affected, **SCENARIOS[name]).check()
    plan = OfflinePlan(devices=args.scenario_devices, data_dir=args.data, bundle=args.bundle,
                       trust_keys=(args.public_key,), hours=hours, window_s=10.0, epoch=EPOCH, seed=args.seed,
                       scenario=params, speaker_split="test", traffic="diurnal", processes=args.processes)
    out = replay(plan, cfg, profiles, work / f"{name}.db")
    targets = set(out["summary"].get("targets") or [])
    onset_t = EPOCH + onset_s
    rows = []
    for a in sorted(out["alerts"], key=lambda r: r["opened_t"]):
        ev = a["evidence"]
        rows.append({"cohort": a["cohort"], "kind": a["signal"], "pattern": a["pattern"],
                     "opened_after_steps": round((a["opened_t"] - onset_t) / cfg.step_s, 2),
                     "onset_error_steps": None if ev.get("onset_t") is None
                     else round((ev["onset_t"] - onset_t) / cfg.step_s, 2)})
    early = [r for r in rows if r["opened_after_steps"] < 0]
    flagged = {r["cohort"].split(":", 1)[1] for r in rows if r["cohort"].startswith("device:")}
    delays = [r["opened_after_steps"] for r in rows if r["cohort"].startswith("device:")
              and r["cohort"].split(":", 1)[1] in targets]
    return {"targets": sorted(targets), "flagged_targets": sorted(flagged & targets),
            "flagged_others": sorted(flagged - targets), "before_onset": len(early),
            "median_delay_steps": sorted(delays)[len(delays) // 2] if delays else None,
            "max_delay_steps": max(delays) if delays else None, "alerts": rows, "seconds": out["seconds"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--public-key", required=True)
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--hours", type=float, default=24.0, help="monitored hours after the warm-up")
    p.add_argument("--scenario-devices", type=int, default=6)
    p.add_argument("--fraction", type=float, default=0.5, help="share of devices a scenario targets")
    p.add_argument("--after-h", type=float, default=1.0, help="hours played after a scenario's onset")
    p.add_argument("--calibration-device-days", type=float, default=3000.0)
    p.add_argument("--parts", default="calibration,healthy,scenarios")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--warmup-h", type=float, default=DriftConfig().warmup_s / 3600.0,
                   help="device warm-up (a time setting; thresholds stay the defaults)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bundle = load_bundle(Path(args.bundle).read_bytes(), [keys.load_public_key(args.public_key)])
    cfg = DriftConfig(warmup_s=args.warmup_h * 3600.0)
    profiles = {bundle.sha256: profile_from_manifest(bundle.manifest)}
    parts = set(args.parts.split(","))
    report: dict = {"machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                                "load_avg": list(__import__("os").getloadavg())},
                    "config": {"step_s": cfg.step_s, "warmup_s": cfg.warmup_s,
                               "alerts_per_1000_device_days": cfg.alerts_per_1000_device_days},
                    "bundle": {"sha256": bundle.sha256, "name": bundle.manifest.get("name")}}
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        work = Path(tmp)
        if "calibration" in parts:
            report["calibration"] = calibration(bundle, args.data, cfg, args.calibration_device_days, args.seed)
        if "healthy" in parts:
            report["healthy"] = healthy(args, cfg, profiles, work)
        if "scenarios" in parts:
            report["scenarios"] = {name: scenario(name, args, cfg, profiles, work)
                                   for name in args.scenarios.split(",") if name}
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
