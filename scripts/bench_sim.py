"""Throughput of the offline fleet harness (edge/sim/offline.py), with its parts measured alone.

    python scripts/bench_sim.py --data DATA --bundle kws.hkb --trust-key signing.pub \
        [--devices 20] [--hours 24] [--processes 2] [--traffic diurnal]

Prints one JSON object:
  run        the harness: devices x hours of audio, wall seconds, CPU seconds of the workers and of
             the parent (merging), audio seconds per worker CPU second and per wall second,
             windows, utterances
  baselines  measured in the same run, on one device's first ``--sample-hours`` of the same audio:
             ``audio``: the simulator alone (stream + channel, no pipeline), audio s per CPU s;
             ``pipeline``: the agent's pipeline alone on that audio, already rendered;
             ``sim_share``: the simulator's share of a device's CPU (1/audio over 1/audio + 1/pipeline)
  machine    cores, load average at start and end, python and numpy/onnxruntime versions

No figure is printed for a run that did not emit every window it should have.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge.pipeline import Pipeline, StaticModels  # noqa: E402
from edge.sim.device import SharedModels  # noqa: E402
from edge.sim.offline import OfflinePlan, run_offline  # noqa: E402
from edge.sim.offline_device import load_device_model  # noqa: E402
from shared.audio import SAMPLE_RATE  # noqa: E402


def _machine() -> dict:
    import onnxruntime

    return {"cores": os.cpu_count(), "load_avg": list(os.getloadavg()), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def _baselines(plan: OfflinePlan, hours: float) -> dict:
    """The simulator's own audio and the agent's pipeline, each alone, on device 0's audio."""
    world = plan.world()
    n, chunk = int(hours * 3600 * SAMPLE_RATE), plan.chunk_samples
    stream, channel = world.device(0)
    stream.take(1), channel.process(np.zeros(1, np.float32))  # the shared hiss table, built once per process
    t0 = time.process_time()
    for i in range(1, n, chunk):
        channel.process(stream.take(min(chunk, n - i)))
    audio_cpu = time.process_time() - t0
    model, gate = load_device_model(plan, SharedModels())
    windows: list[dict] = []
    pipeline = Pipeline(device="bench", boot=1, agent_version="bench", gate_config=gate, window_s=plan.window_s,
                        automation=plan.automation, models=StaticModels(model), sink=None, on_window=windows.append)
    stream, channel = world.device(0)  # the same audio again, timed in the pipeline only
    pipeline_cpu = 0.0
    for i in range(0, n, chunk):
        x = channel.process(stream.take(min(chunk, n - i)))
        t0 = time.process_time()
        pipeline.feed(x)
        pipeline_cpu += time.process_time() - t0
    audio_s = n / SAMPLE_RATE
    return {"audio_s": audio_s, "audio": round(audio_s / audio_cpu, 1), "pipeline": round(audio_s / pipeline_cpu, 1),
            "sim_share": round(audio_cpu / (audio_cpu + pipeline_cpu), 3),
            "utterances": pipeline.stats["utterances"], "windows": len(windows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--trust-key", action="append", required=True)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--traffic", default="diurnal", choices=("constant", "diurnal"))
    ap.add_argument("--speaker-split", default="auto", choices=("auto", "test", "all"))
    ap.add_argument("--sample-hours", type=float, default=1.0, help="Audio for the baselines.")
    args = ap.parse_args()
    plan = OfflinePlan(devices=args.devices, data_dir=args.data, bundle=args.bundle,
                       trust_keys=tuple(args.trust_key), hours=args.hours, processes=args.processes,
                       traffic=args.traffic, speaker_split=args.speaker_split)
    machine = _machine()
    baselines = _baselines(plan, min(args.sample_hours, args.hours))
    run = run_offline(plan, progress=lambda s: print(json.dumps(s), file=sys.stderr))
    windows = last = 0
    ordered = True
    for w in run:
        windows += 1
        ordered &= w["t_start"] >= last
        last = w["t_start"]
    s = run.summary
    expected = plan.devices * int(round(plan.hours * 3600 / plan.window_s))
    machine["load_avg_end"] = list(os.getloadavg())
    if windows != expected or s["windows"] != expected or not ordered:
        print(json.dumps({"error": f"{windows} windows (summary {s['windows']}, ordered {ordered}), "
                                   f"expected {expected}: no figures"}))
        return 1
    keys = ("devices", "processes", "hours", "audio_hours", "wall_s", "cpu_s", "parent_cpu_s", "audio_s_per_cpu_s",
            "audio_s_per_wall_s", "windows", "utterances", "decisions", "feedback_accepted", "speaker_split",
            "traffic")
    out = {"run": {k: s[k] for k in keys}, "baselines": baselines, "machine": machine,
           "utterances_per_device_day": round(s["utterances"] / (plan.devices * plan.hours / 24.0), 1)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
