"""A simulated fleet: N real agents spread over K worker processes, one status line, one result.

    run_fleet(plan, stop=event, on_status=print_line) -> result dict

Each worker (a spawned process, or a thread when K = 1) loads the dataset once, shares one
onnxruntime session per bundle between its agents (``SharedModels``), starts its devices
one after another and reports a status every ``status_interval_s``. The parent adds them up
and, when every device's stream has ended or ``stop`` is set, collects each device's result:
its boot, window seqs, what is still in its spool, utterances and feedback. Workers ignore
SIGINT: Ctrl-C reaches the parent, which sets ``stop``, and every agent shuts down as a device
does (last window, spool drained to the broker for up to 5 s, retained state "offline").
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
import resource
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge.sim.device import SharedModels, SimDevice, agent_config, device_ids, start_device
from edge.sim.scenarios import ScenarioParams
from edge.sim.world import Audience, World
from shared.files import atomic_write
from shared.errors import ConfigError, HarkenError
from shared.topics import DEFAULT_PREFIX

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 2.0
JOIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FleetPlan:
    """Everything a worker needs to build its devices (picklable: it travels to spawned workers)."""

    devices: int
    data_dir: str
    state_root: str
    scenario: ScenarioParams = field(default_factory=ScenarioParams)
    broker_url: str = ""
    model: str = ""
    trust_keys: tuple[str, ...] = ()
    release_keys: tuple[str, ...] = ()
    credentials: dict = field(default_factory=dict)  # {device id: password}
    tls_ca: str = ""
    prefix: str = DEFAULT_PREFIX
    speed: float = 10.0
    seed: int = 0
    duration_s: float | None = None
    feedback_rate: float = 0.0
    audit_answer_rate: float = 1.0
    tags: tuple[str, ...] = ()
    chunk_samples: int = 16000  # the pipeline's results do not depend on it; bigger chunks cost less CPU
    window_s: float | None = None
    agent_config: str = ""
    processes: int | None = None
    speakers_per_device: tuple[int, int] | None = None  # None: every device hears every speaker
    speaker_split: str = "all"
    traffic: str = "constant"
    talk_fraction: float = 0.3
    day_start_h: float = 8.0  # local hour at audio second 0 (diurnal traffic)
    truth_log: bool = False  # each device writes what was really said per decision (edge/sim/truth.py)

    @property
    def answers(self) -> bool:
        """Whether a simulated person answers decisions (at random, or when they are audited)."""
        return self.feedback_rate > 0 or self.audit_answer_rate > 0

    @property
    def audience(self) -> Audience:
        return Audience(self.speakers_per_device, self.speaker_split, self.traffic, self.talk_fraction,
                        self.day_start_h * 3600.0)

    def world(self) -> World:
        """What this plan's devices hear (loads the dataset; one per worker)."""
        return World.load(self.data_dir, params=self.scenario, devices=self.devices, seed=self.seed,
                          audience=self.audience, bundle=self.model)

    @property
    def ids(self) -> list[str]:
        return device_ids(self.devices)

    @property
    def n_processes(self) -> int:
        return max(1, min(self.processes or min(2, self.devices), self.devices))

    def check(self) -> "FleetPlan":
        """Fail early, in the parent, on what would fail in every worker."""
        self.scenario.check()
        if self.devices < 1:
            raise ConfigError("--devices must be at least 1")
        if self.speed <= 0:
            raise ConfigError(f"--speed must be positive (1 = real time), got {self.speed}")
        for name in ("feedback_rate", "audit_answer_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a fraction in [0, 1], got {getattr(self, name)}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError("--duration must be positive audio seconds")
        if self.credentials:
            missing = [d for d in self.ids if d not in self.credentials]
            if missing:
                raise ConfigError(f"{len(missing)} device(s) have no password in the credentials file (first: "
                                  f"{missing[0]}); add them with `harken broker init DIR --devices {self.devices}`")
        if self.model and not Path(self.model).is_file():
            raise ConfigError(f"--model {self.model!r} is not a file; give a bundle made by `harken model train`")
        first = self.ids[0]
        agent_config(self, first, self.credentials.get(first, ""), Path(self.state_root) / first)
        self.world()
        return self

    def shares(self) -> list[list[int]]:
        k = self.n_processes
        return [list(range(w, self.devices, k)) for w in range(k)]


# ---------------------------------------------------------------------------- one worker

def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _summary(devices: list[SimDevice], worker: int, total: int) -> dict:
    rows = [d.status() for d in devices]
    keys = ("up", "running", "windows", "acked", "spooled", "utterances", "feedback", "error")
    out = {k: sum(int(r[k]) for r in rows) for k in keys}
    out.update(worker=worker, pid=os.getpid(), rss_mb=round(_rss_mb(), 1), started=len(devices), devices=total,
               audio_s=[round(r["audio_s"], 2) for r in rows])
    return out


def _enough_files(devices: int) -> None:
    """An agent holds ~6 descriptors (spool database and its WAL, socket, feedback files)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8 * devices + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want) if hard != resource.RLIM_INFINITY else want,
                                                    hard))


def run_worker(plan: FleetPlan, indices: list[int], stop, out, worker: int = 0,
               status_interval_s: float = STATUS_INTERVAL_S) -> None:
    """Run the devices ``indices`` until their streams end or ``stop``; results go to ``out``."""
    try:
        _enough_files(len(indices))
        world = plan.world()
        loader, ids = SharedModels(), plan.ids
        devices: list[SimDevice] = []
        last = time.monotonic()
        for i in indices:
            if stop.is_set():
                break
            dev = SimDevice(plan, i, ids[i], world=world, loader=loader, password=plan.credentials.get(ids[i], ""))
            devices.append(dev)
            start_device(dev)
            if time.monotonic() - last >= status_interval_s:
                out.put(("status", worker, _summary(devices, worker, len(indices))))
                last = time.monotonic()
        parent = os.getppid()
        while any(d.running for d in devices) and not stop.wait(min(0.5, status_interval_s)):
            if time.monotonic() - last >= status_interval_s:
                out.put(("status", worker, _summary(devices, worker, len(indices))))
                last = time.monotonic()
            if os.getppid() != parent:  # the parent died: shut down rather than run orphaned
                break
        for d in devices:
            d.stop()
        for d in devices:
            if not d.join(JOIN_TIMEOUT_S):
                log.error("device %s did not stop within %.0f s", d.device_id, JOIN_TIMEOUT_S)
        out.put(("status", worker, _summary(devices, worker, len(indices))))
        out.put(("result", worker, [d.result() for d in devices]))
    except HarkenError as exc:
        out.put(("failed", worker, str(exc)))
    except Exception as exc:  # a bug: report it instead of leaving the parent waiting
        log.exception("worker %d failed", worker)
        out.put(("failed", worker, f"{type(exc).__name__}: {exc}"))


def _worker_process(plan: FleetPlan, indices: list[int], stop, out, worker: int, log_level: int,
                    status_interval_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s [w{worker}] %(name)s: %(message)s")
    run_worker(plan, indices, stop, out, worker, status_interval_s)


# ---------------------------------------------------------------------------- the parent

class _Workers:
    """K workers: spawned processes, or one thread when K = 1 (tests, small fleets)."""

    def __init__(self, plan: FleetPlan, status_interval_s: float):
        shares = plan.shares()
        self.n = len(shares)
        if self.n == 1:
            self.queue, self.stop = queue.Queue(), threading.Event()
            self.handles = [threading.Thread(target=run_worker, name="sim-worker", daemon=True,
                                             args=(plan, shares[0], self.stop, self.queue, 0, status_interval_s))]
        else:
            ctx = mp.get_context("spawn")  # agents run threads: never fork a process that has them
            self.queue, self.stop = ctx.Queue(), ctx.Event()
            level = logging.getLogger().getEffectiveLevel()
            self.handles = [ctx.Process(target=_worker_process, name=f"sim-worker-{w}",
                                        args=(plan, share, self.stop, self.queue, w, level, status_interval_s))
                            for w, share in enumerate(shares)]
        for h in self.handles:
            h.start()

    def dead_without_result(self, done: set[int]) -> dict[int, str]:
        out = {}
        for w, h in enumerate(self.handles):
            if w not in done and not h.is_alive():
                code = getattr(h, "exitcode", None)
                out[w] = f"worker {w} exited (code {code}) without a result"
        return out

    def join(self) -> None:
        for h in self.handles:
            h.join(10.0)


def aggregate(statuses: dict[int, dict], devices: int, wall_s: float, previous: dict | None = None) -> dict:
    """The fleet's status; ``speed`` is audio seconds per wall second per running device since
    ``previous`` (the last status), so start-up does not dilute it."""
    rows = list(statuses.values())
    audio = [a for r in rows for a in r["audio_s"]]
    out = {k: sum(r[k] for r in rows) for k in ("up", "running", "started", "windows", "acked", "spooled",
                                                 "utterances", "feedback", "error")}
    mean_audio = sum(audio) / len(audio) if audio else 0.0
    out.update(devices=devices, wall_s=round(wall_s, 1), audio_s=round(mean_audio, 1),
               audio_min_s=round(min(audio), 1) if audio else 0.0, audio_total_s=round(sum(audio), 1),
               rss_mb={r["pid"]: r["rss_mb"] for r in rows})
    base = previous or {"wall_s": 0.0, "audio_total_s": 0.0}
    dt = wall_s - base["wall_s"]
    out["speed"] = round((out["audio_total_s"] - base["audio_total_s"]) / dt / max(1, out["running"]), 2) \
        if dt > 0 else 0.0
    return out


def status_line(s: dict) -> str:
    m, sec = divmod(int(s["audio_s"]), 60)
    line = (f"sim {s['wall_s']:7.1f}s  devices {s['up']}/{s['devices']} up ({s['running']} running)  "
            f"windows {s['windows']} ({s['spooled']} in spools)  audio {m}:{sec:02d}/device (x{s['speed']:.1f})  "
            f"utterances {s['utterances']}")
    if s["feedback"]:
        line += f"  feedback {s['feedback']}"
    if s["error"]:
        line += f"  errors {s['error']}"
    return line


def run_fleet(plan: FleetPlan, *, stop: threading.Event | None = None,
              on_status: Callable[[dict], None] | None = None, status_interval_s: float = STATUS_INTERVAL_S) -> dict:
    """Run the fleet to the end of its streams (or ``stop``); returns the result (JSON-able)."""
    plan.check()
    write_fleet_file(plan)
    stop = stop or threading.Event()
    t0 = time.monotonic()
    workers = _Workers(plan, status_interval_s)
    statuses: dict[int, dict] = {}
    results: dict[int, list] = {}
    failures: dict[int, str] = {}
    last_print, shown = 0.0, None
    while len(results) + len(failures) < workers.n:
        if stop.is_set():
            workers.stop.set()
        try:
            kind, w, body = workers.queue.get(timeout=0.5)
        except queue.Empty:
            failures.update(workers.dead_without_result(set(results) | set(failures)))
            continue
        if kind == "status":
            statuses[w] = body
        elif kind == "result":
            results[w] = body
        else:
            failures[w] = body
            workers.stop.set()  # a worker that cannot run means a broken setup: stop the rest too
        now = time.monotonic()
        if on_status is not None and statuses and now - last_print >= status_interval_s:
            shown = aggregate(statuses, plan.devices, now - t0, shown)
            on_status(shown)
            last_print = now
    workers.join()
    return _result(plan, statuses, results, failures, time.monotonic() - t0)


def write_fleet_file(plan: FleetPlan) -> Path:
    """``STATE_ROOT/fleet.json``: the devices, their tags and whether the scenario targets them.

    The agent does not report tags; an operator applies them with ``harken fleet tag``.
    """
    targets = set(plan.scenario.targets(plan.devices, plan.seed))
    body = {"scenario": plan.scenario.name, "onset_s": plan.scenario.onset_s, "seed": plan.seed,
            "devices": [{"device": d, "tags": list(plan.tags), "targeted": i in targets}
                        for i, d in enumerate(plan.ids)]}
    path = Path(plan.state_root) / "fleet.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(body, indent=1) + "\n").encode())
    return path


def _result(plan: FleetPlan, statuses: dict, results: dict, failures: dict, wall_s: float) -> dict:
    devices = sorted((d for rows in results.values() for d in rows), key=lambda d: d["device"])
    total = lambda key: sum(d.get(key, 0) for d in devices)  # noqa: E731
    audio = [d["audio_s"] for d in devices]
    return {
        "kind": "sim_result", "scenario": plan.scenario.name, "onset_s": plan.scenario.onset_s,
        "targets": [plan.ids[i] for i in plan.scenario.targets(plan.devices, plan.seed)],
        "devices": plan.devices, "processes": plan.n_processes, "speed": plan.speed, "seed": plan.seed,
        "wall_s": round(wall_s, 2), "audio_s_mean": round(sum(audio) / len(audio), 2) if audio else 0.0,
        "windows": total("windows"), "windows_unsent": sum(len(d["unsent_seqs"]) for d in devices),
        "utterances": total("utterances"), "decisions": total("decisions"),
        "feedback_sent": total("feedback_sent"), "feedback_accepted": total("feedback_accepted"),
        "rss_mb": aggregate(statuses, plan.devices, wall_s)["rss_mb"] if statuses else {},
        "failures": {str(w): msg for w, msg in failures.items()},
        "device_errors": {d["device"]: d["error"] for d in devices if d.get("error")},
        "per_device": devices,
    }
