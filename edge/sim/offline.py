"""The fleet on simulated time: N devices' real pipelines, no broker, as fast as the CPU allows.

    from edge.sim.offline import OfflinePlan, run_offline

    run = run_offline(OfflinePlan(devices=20, data_dir="data", bundle="kws.hkb",
                                  trust_keys=("signing.pub",), hours=24.0))
    for window in run:      # every window dict the pipelines emit, t_start nondecreasing
        ...
    run.summary             # after exhaustion (None before): see ``OfflineRun``

Each device is the agent's own pipeline on the device's stream (offline_device.py); its clock
is ``epoch + audio seconds``, so window k of every device starts at ``epoch + k * window_s``.
Scenarios act at ``scenario.onset_s`` audio seconds, on ``scenario.targets(devices, seed)``, as
in ``harken sim``; households, traffic and the person are those of the MQTT fleet too
(world.py), with diurnal traffic read at the UTC time of day of the simulated clock.

Workers: ``processes`` spawned processes (1: in this process), worker w owning devices
w, w+K, ... and advancing them in lockstep ``STEP_WINDOWS`` windows at a time. Each step's
windows are sorted by ``(t_start, device, seq)`` and queued; a worker blocks when
``QUEUE_STEPS`` steps wait unread, so memory stays bounded however long the run. The parent
merges the workers' sorted streams: windows come out in ``(t_start, device, seq)`` order, the
same sequence for any number of processes (only wall-clock fields — ``software.cpu_s``,
``rss_mb``, ``latency_ms`` — differ between runs).
"""
from __future__ import annotations

import heapq
import logging
import multiprocessing as mp
import pickle
import queue
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from edge.sim.device import device_ids
from edge.sim.offline_device import OfflineWorker, window_order
from edge.sim.scenarios import ScenarioParams
from edge.sim.world import Audience, World
from shared.audio import SAMPLE_RATE
from shared.errors import ConfigError, HarkenError
from shared.messages import AUTOMATION_LEVELS

log = logging.getLogger(__name__)

STEP_WINDOWS = 6
QUEUE_STEPS = 4
PUT_POLL_S = 0.5
GET_POLL_S = 1.0
PROGRESS_INTERVAL_S = 5.0
JOIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class OfflinePlan:
    """Everything a worker needs (picklable: it travels to spawned workers)."""

    devices: int
    data_dir: str
    bundle: str
    trust_keys: tuple[str, ...]
    hours: float = 24.0
    window_s: float = 10.0
    epoch: float = 1_700_000_000.0
    seed: int = 0
    scenario: ScenarioParams = field(default_factory=ScenarioParams)
    speakers_per_device: tuple[int, int] | None = (1, 3)
    speaker_split: str = "auto"
    traffic: str = "diurnal"
    talk_fraction: float = 0.3
    feedback_rate: float = 0.05
    audit_answer_rate: float = 1.0
    processes: int = 2
    tags: tuple[str, ...] = ()
    automation: str = "partial"
    chunk_samples: int = 16000

    @property
    def ids(self) -> list[str]:
        return device_ids(self.devices)

    @property
    def n_processes(self) -> int:
        return max(1, min(self.processes, self.devices))

    @property
    def step_samples(self) -> int:
        return int(round(STEP_WINDOWS * self.window_s * SAMPLE_RATE))

    @property
    def audience(self) -> Audience:
        return Audience(self.speakers_per_device, self.speaker_split, self.traffic, self.talk_fraction,
                        self.epoch % 86400.0)

    def world(self) -> World:
        return World.load(self.data_dir, params=self.scenario, devices=self.devices, seed=self.seed,
                          audience=self.audience, bundle=self.bundle)

    def shares(self) -> list[list[int]]:
        k = self.n_processes
        return [list(range(w, self.devices, k)) for w in range(k)]

    def check(self) -> "OfflinePlan":
        """Fail early, in the parent, on what would fail in every worker."""
        if self.devices < 1 or self.processes < 1:
            raise ConfigError("devices and processes must be at least 1")
        if not self.hours > 0:
            raise ConfigError(f"hours must be positive audio hours, got {self.hours}")
        if not 1.0 <= self.window_s <= 3600.0:
            raise ConfigError(f"window_s must be in [1, 3600] seconds, got {self.window_s}")
        for name in ("feedback_rate", "audit_answer_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)}")
        if self.automation not in AUTOMATION_LEVELS:
            raise ConfigError(f"automation {self.automation!r} is not one of {', '.join(AUTOMATION_LEVELS)}")
        if not 160 <= self.chunk_samples <= 160000:
            raise ConfigError(f"chunk_samples must be in [160, 160000], got {self.chunk_samples}")
        if not Path(self.bundle).is_file():
            raise ConfigError(f"bundle {self.bundle!r} is not a file; give a bundle made by `harken model train`")
        self.world()
        return self


# ---------------------------------------------------------------------------- workers

def _worker_process(plan: OfflinePlan, indices: list[int], out, stop, worker: int, log_level: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s [w{worker}] %(name)s: %(message)s")

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        sim = OfflineWorker(plan, indices)
        for batch in sim.steps():
            if not put(("windows", batch)):
                return
        put(("done", {"cpu_s": time.process_time(), "devices": sim.results(),
                      "speaker_split": sim.world.casting.split}))
    except Exception as exc:  # the parent re-raises it; a HarkenError keeps its class
        if not isinstance(exc, HarkenError):
            log.exception("offline worker %d failed", worker)
            exc = HarkenError(f"offline worker {worker} failed: {type(exc).__name__}: {exc}")
        try:
            body = pickle.dumps(exc)
        except Exception:  # an exception class that does not pickle: keep its message
            body = pickle.dumps(HarkenError(str(exc)))
        put(("failed", body))


class _Spawned:
    """Worker processes, each with its own bounded queue of steps."""

    def __init__(self, plan: OfflinePlan):
        ctx = mp.get_context("spawn")  # onnxruntime and numpy threads: never fork
        self.stop = ctx.Event()
        self.queues = [ctx.Queue(QUEUE_STEPS) for _ in plan.shares()]
        level = logging.getLogger().getEffectiveLevel()
        self.procs = [ctx.Process(target=_worker_process, name=f"sim-offline-{w}", daemon=True,
                                  args=(plan, share, self.queues[w], self.stop, w, level))
                      for w, share in enumerate(plan.shares())]
        for p in self.procs:
            p.start()

    def stream(self, w: int, results: dict) -> Iterator[list[dict]]:
        q, proc = self.queues[w], self.procs[w]
        while True:
            try:
                kind, body = q.get(timeout=GET_POLL_S)
            except queue.Empty:
                if not proc.is_alive():
                    raise HarkenError(f"offline worker {w} died (exit code {proc.exitcode}) before its last "
                                      "window; see its log above") from None
                continue
            if kind == "windows":
                yield body
            elif kind == "done":
                results[w] = body
                return
            else:
                raise pickle.loads(body)

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(JOIN_TIMEOUT_S)
            if p.is_alive():
                log.warning("offline worker %s did not stop in %.0f s; terminating it", p.name, JOIN_TIMEOUT_S)
                p.terminate()
                p.join(JOIN_TIMEOUT_S)
        for q in self.queues:
            q.close()
            q.cancel_join_thread()


def _local(plan: OfflinePlan, results: dict) -> Iterator[list[dict]]:
    """The one worker of ``processes=1``, in this process."""
    sim = OfflineWorker(plan, plan.shares()[0])
    yield from sim.steps()
    results[0] = {"cpu_s": sim.cpu_s, "devices": sim.results(), "speaker_split": sim.world.casting.split}


def _flatten(batches: Iterator[list[dict]]) -> Iterator[dict]:
    for batch in batches:
        yield from batch


# ---------------------------------------------------------------------------- the run

class OfflineRun:
    """Iterate it for the windows; ``summary`` (a dict) is set once the iteration is exhausted:

    devices, processes, hours, audio_hours (all devices), utterances, decisions, windows,
    windows_per_device, feedback_sent/feedback_accepted, wall_s, cpu_s (the workers' CPU
    seconds), parent_cpu_s (this process's, the caller's own work in the loop included),
    audio_s_per_cpu_s (over cpu_s), audio_s_per_wall_s, speaker_split (as resolved), traffic,
    scenario, onset_s, targets, per_device (device, speakers {household, after_onset},
    audio_s, clips, utterances, decisions, windows, feedback ...).

    ``progress(status)`` is called every ``PROGRESS_INTERVAL_S`` wall seconds with
    ``{"audio_s", "hours", "windows", "wall_s"}``. ``close()`` (or leaving a ``with`` block) stops
    the workers early.
    """

    def __init__(self, plan: OfflinePlan, progress: Callable[[dict], None] | None = None):
        self.plan = plan.check()
        self.progress = progress
        self.summary: dict | None = None
        self._iter = self._windows()

    def __iter__(self) -> Iterator[dict]:
        return self._iter

    def __next__(self) -> dict:
        return next(self._iter)

    def __enter__(self) -> "OfflineRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._iter.close()

    def _windows(self) -> Iterator[dict]:
        plan, results = self.plan, {}
        t0 = last = time.monotonic()
        cpu0 = time.process_time()
        spawned = _Spawned(plan) if plan.n_processes > 1 else None
        streams = ([_flatten(spawned.stream(w, results)) for w in range(plan.n_processes)] if spawned
                   else [_flatten(_local(plan, results))])
        count = 0
        try:
            for window in heapq.merge(*streams, key=window_order):
                count += 1
                if self.progress is not None and time.monotonic() - last >= PROGRESS_INTERVAL_S:
                    last = time.monotonic()
                    self.progress({"audio_s": round(window["t_start"] - plan.epoch, 1), "hours": plan.hours,
                                   "windows": count, "wall_s": round(last - t0, 1)})
                yield window
        finally:
            if spawned is not None:
                spawned.close()
        parent_cpu_s = time.process_time() - cpu0 - (results[0]["cpu_s"] if spawned is None else 0.0)
        self.summary = summarize(plan, results, time.monotonic() - t0, parent_cpu_s)
        if self.progress is not None:
            self.progress({"audio_s": plan.hours * 3600.0, "hours": plan.hours, "windows": count,
                           "wall_s": self.summary["wall_s"]})


def run_offline(plan: OfflinePlan, progress: Callable[[dict], None] | None = None) -> OfflineRun:
    """Check the plan and return the run; iterating it runs the devices."""
    return OfflineRun(plan, progress)


def summarize(plan: OfflinePlan, results: dict, wall_s: float, parent_cpu_s: float) -> dict:
    devices = sorted((d for r in results.values() for d in r["devices"]), key=lambda d: d["index"])
    total = lambda key: sum(d.get(key, 0) for d in devices)  # noqa: E731
    audio_s = total("audio_s")
    cpu_s = sum(r["cpu_s"] for r in results.values())
    return {
        "kind": "sim_offline_result", "devices": plan.devices, "processes": plan.n_processes, "seed": plan.seed,
        "hours": plan.hours, "epoch": plan.epoch, "window_s": plan.window_s, "audio_s": round(audio_s, 3),
        "audio_hours": round(audio_s / 3600, 6),
        "utterances": total("utterances"), "decisions": total("decisions"), "windows": total("windows"),
        "windows_per_device": {d["device"]: d["windows"] for d in devices},
        "feedback_sent": total("feedback_sent"), "feedback_accepted": total("feedback_accepted"),
        "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), "parent_cpu_s": round(parent_cpu_s, 2),
        "audio_s_per_cpu_s": round(audio_s / cpu_s, 1) if cpu_s > 0 else None,
        "audio_s_per_wall_s": round(audio_s / wall_s, 1) if wall_s > 0 else None,
        "speaker_split": next((r["speaker_split"] for r in results.values()), None),
        "speakers_per_device": plan.speakers_per_device,
        "traffic": plan.traffic, "talk_fraction": plan.talk_fraction, "scenario": plan.scenario.name,
        "onset_s": plan.scenario.onset_s, "tags": list(plan.tags),
        "targets": [plan.ids[i] for i in plan.scenario.targets(plan.devices, plan.seed)],
        "per_device": devices,
    }
