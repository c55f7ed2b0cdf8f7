"""Chaos: a secured broker, a collector on PostgreSQL and real agents, while faults strike at random.

    .venv/bin/python scripts/chaos.py [--minutes 15] [--agents 20] [--window-s 5] [--fault-every-s 20]
                                      [--data DIR --model B.hkb --trust-key signing.pub --release-key release.pub]

Runs mosquitto on a directory `harken broker init` writes (free loopback ports, TLS, a user per
device), `harken collector run` on a fresh PostgreSQL schema (HARKEN_TEST_PG, default the local
`test` database), and ``--agents`` real `harken agent run` processes (webrtcvad, onnxruntime, the
lab's released bundle), each on its own small tmpfs and fed real-time espeak-ng speech from the
simulator's world. For ``--minutes`` it kills and restarts the broker, the collector and agents,
fills agents' disks to ENOSPC and stalls the database (scripts/chaos_faults.py). Then it stops
the faults, restarts what is down, lets the spools drain, notes which agents are alive and
connected (the collector's `devices.online`), stops the agents cleanly and counts, window by
window, what the agents produced (their spools' seq counters) against what the collector stored
(scripts/chaos_count.py).

Prints one JSON object: windows produced, stored, lost, duplicates; agents alive and connected;
the collector's resident memory at the start, the end and its peak; the faults by kind. "ok" is
true only with 0 lost, 0 duplicates and every agent alive and connected; the exit code is then 0.
A run that measured nothing (no window stored, a fault kind that never fired or never took
effect) prints no figures: ``{"ok": false, "refused": [...]}``, exit code 1, as does a failed run.
Without ``--data`` it builds the model lab's tiny dataset and bundle first (about 30 s). Needs
root (tmpfs mounts). Everything stays on loopback; ``--workdir`` keeps the logs and the schema.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from chaos_count import ledger, read_spool, verdict  # noqa: E402
from chaos_faults import KINDS, Chaos, FaultPlan, Rig  # noqa: E402
from chaos_rig import Agent, Broker, Collector, Database, device_sources  # noqa: E402
from soak import lab_or_given, rss_mb, versions  # noqa: E402

from edge.sim.device import device_ids  # noqa: E402


def span(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    out = (float(lo), float(hi or lo))
    if not 0 <= out[0] <= out[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: give LO,HI seconds with 0 <= LO <= HI")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="Minutes of faults.")
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--window-s", type=float, default=5.0, help="The agents' statistics window.")
    ap.add_argument("--fault-every-s", type=float, default=20.0, help="Mean gap between two faults.")
    ap.add_argument("--down-s", type=span, default=(1.0, 10.0), help="LO,HI seconds a killed process stays down.")
    ap.add_argument("--full-s", type=span, default=(10.0, 40.0), help="LO,HI seconds a disk stays full.")
    ap.add_argument("--stall-s", type=span, default=(5.0, 45.0), help="LO,HI seconds the database stays locked "
                    "(the collector's statement timeout is 30 s).")
    ap.add_argument("--max-concurrent", type=int, default=3, help="Faults under way at once, at most.")
    ap.add_argument("--faults", default=",".join(KINDS), help=f"Fault kinds (comma-separated; {', '.join(KINDS)}).")
    ap.add_argument("--disk-mb", type=int, default=16, help="Size of each agent's tmpfs.")
    ap.add_argument("--resend-s", type=float, default=30.0, help="The agents' resend_unconfirmed_s: how long after "
                    "the collector confirmed a later window one it never confirmed is sent again.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-s", type=float, default=30.0, help="Seconds between memory samples.")
    ap.add_argument("--drain-timeout-s", type=float, default=180.0)
    ap.add_argument("--data"), ap.add_argument("--model"), ap.add_argument("--trust-key")
    ap.add_argument("--release-key", help="release.pub of the --model's release (`harken model release`).")
    ap.add_argument("--workdir", help="Keep logs, broker directory and the database schema here (default: "
                                      "a temporary directory, removed with the schema).")
    args = ap.parse_args(argv)
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        ap.error(f"--faults takes kinds from {', '.join(KINDS)}")
    args.plan = FaultPlan(every_s=args.fault_every_s, down_s=args.down_s, full_s=args.full_s, stall_s=args.stall_s,
                          max_concurrent=args.max_concurrent, kinds=kinds)
    return args


def until(predicate, timeout_s: float, interval_s: float = 1.0) -> float:
    """Seconds until ``predicate()`` held (or the timeout passed)."""
    t0 = time.monotonic()
    while not predicate() and time.monotonic() - t0 < timeout_s:
        time.sleep(interval_s)
    return round(time.monotonic() - t0, 1)


class Run:
    """One chaos run: ``start``, ``inject``, ``heal_and_drain``, ``stop_agents``, ``count``; ``close`` always."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args, self.workdir = args, workdir
        self.rig: Rig | None = None
        self.exits: list[dict] = []
        self.restarted_to_read: list[str] = []  # agents restarted (cleanly) at the end so their spool can be read
        self.rss: dict = {"series": []}
        self.times: dict[str, float] = {}
        self._t0 = time.monotonic()

    def start(self) -> None:
        a = self.args
        lab = lab_or_given(a, self.workdir)
        devices = device_ids(a.agents)
        db = Database()
        self.rig = Rig(None, None, [], db)
        broker = self.rig.broker = Broker(self.workdir / "broker", devices)
        broker.start()
        collector = self.rig.collector = Collector(broker, db.url, self.workdir)
        collector.start()
        collector.wait_connected()
        for device, source in zip(devices, device_sources(lab[0], lab[1], a.agents, a.seed)):
            agent = Agent(device, source, broker, lab, self.workdir, window_s=a.window_s, disk_size=f"{a.disk_mb}m",
                          resend_s=a.resend_s)
            self.rig.agents.append(agent)
            agent.mount()
            agent.start()
            agent.play()
        waited = until(lambda: self.ready() == len(devices), 180)
        if self.ready() < len(devices):
            raise RuntimeError(f"only {self.ready()} of {len(devices)} agents came online and had a window "
                               f"confirmed within {waited} s; see {self.workdir}/agents")
        self.times["startup_s"] = round(time.monotonic() - self._t0, 1)
        self.rss["start"] = rss_mb(collector.proc.pid)

    def ready(self) -> int:
        """Agents online whose spool has had a receipt (so they keep windows until the collector has them)."""
        online = self.rig.db.online()
        return sum(bool(online.get(a.device)) and read_spool(a.spool_path).receipts for a in self.rig.agents)

    def inject(self) -> Chaos:
        chaos = Chaos(self.rig, self.args.plan, random.Random(self.args.seed))
        t0 = time.monotonic()
        deadline = t0 + self.args.minutes * 60.0
        thread = threading.Thread(target=chaos.run, args=(deadline,), name="chaos", daemon=True)
        thread.start()
        next_sample = t0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            self.watch()
            if time.monotonic() >= next_sample:
                self.rss["series"].append([round(time.monotonic() - t0), self.rig.collector.starts,
                                           rss_mb(self.rig.collector.proc.pid)])
                next_sample += self.args.sample_s
        chaos.finish()
        thread.join()
        self.times["chaos_s"] = round(time.monotonic() - t0, 1)
        return chaos

    def watch(self) -> None:
        """Note any process that ended without a fault, and start it again (as a supervisor would)."""
        for p in (self.rig.broker, self.rig.collector, *self.rig.agents):
            if not p.down_expected and not p.alive:
                self.exits.append({"process": p.name, "code": p.proc.returncode,
                                   "t_s": round(time.monotonic() - self._t0, 1)})
                p.down_expected = True
                p.start()

    def heal_and_drain(self) -> None:
        """Everything up again, then wait until the spools are empty and every window is stored."""
        rig = self.rig
        for p in (rig.broker, rig.collector):
            if not p.alive:
                p.start()
        self.watch()
        rig.collector.wait_connected(120)
        for a in rig.agents:  # one that started on a full disk holds its spool alone: restart it to read it
            try:
                read_spool(a.spool_path, timeout_s=1.0)
            except sqlite3.OperationalError:
                a.kill(signal.SIGTERM)
                a.start()
                self.restarted_to_read.append(a.device)

        def drained() -> bool:
            try:
                spools = [read_spool(a.spool_path, timeout_s=1.0) for a in rig.agents]
            except sqlite3.OperationalError:
                return False
            online = rig.db.online()
            return (all(not s.unsent for s in spools) and all(online.get(a.device) for a in rig.agents)
                    and len(rig.db.windows()) >= sum(s.last_seq + 1 for s in spools))

        self.times["drain_s"] = until(drained, self.args.drain_timeout_s)

    def stop_agents(self) -> dict:
        """Note who is alive and connected, then stop every agent as a device shuts down (SIGTERM)."""
        online = self.rig.db.online()
        agents = self.rig.agents
        out = {"total": len(agents), "alive": sum(a.alive for a in agents),
               "connected": sum(a.alive and bool(online.get(a.device)) for a in agents),
               "messages_resent_after_broker_loss": sum(a.resent() for a in agents)}
        self.rss["end"] = rss_mb(self.rig.collector.proc.pid)
        t0 = time.monotonic()
        for a in agents:
            a.mute()
        with ThreadPoolExecutor(len(agents)) as pool:
            out["exit_codes"] = sorted(set(pool.map(lambda a: a.kill(signal.SIGTERM), agents)))
        self.times["agents_stop_s"] = round(time.monotonic() - t0, 1)
        return out

    def count(self) -> dict:
        spools = {a.device: read_spool(a.spool_path) for a in self.rig.agents}
        want = sum(r.last_seq + 1 - len(r.unsent) for r in spools.values())
        self.times["settle_s"] = until(lambda: len(self.rig.db.windows()) >= want, 60)
        return ledger(spools, self.rig.db.windows())

    def close(self) -> None:
        rig = self.rig
        if rig is None:
            return
        for p in (*rig.agents, rig.collector, rig.broker):
            if p is not None and p.proc is not None:
                p.kill(signal.SIGTERM if p is rig.collector or p is rig.broker else signal.SIGKILL)
        for a in rig.agents:
            a.mute()
            a.unmount()
        if not self.args.workdir:
            rig.db.drop()


def report(args, run: Run, chaos: Chaos, windows: dict, agents: dict) -> tuple[dict, int]:
    faults = chaos.summary()
    v = verdict(windows, faults, agents, run.exits)
    if v.refused:
        return {"ok": False, "refused": v.refused, "faults": faults}, 1
    series = run.rss["series"]
    return {
        "ok": v.ok, "failed": v.failed,
        "windows": windows,
        "agents": agents,
        "faults": faults,
        "unexpected_exits": run.exits,
        "restarted_to_read_their_spool": run.restarted_to_read,
        "collector_rss_mb": {"start": run.rss["start"], "end": run.rss["end"],
                             "peak": max((r[2] for r in series if r[2] is not None), default=None),
                             "instance_at_end": run.rig.collector.starts,
                             "series": {"columns": ["t_s", "instance", "rss_mb"], "rows": series}},
        "starts": {"broker": run.rig.broker.starts, "collector": run.rig.collector.starts,
                   "agents": sum(a.starts for a in run.rig.agents)},
        "duration": run.times,
        "config": {k: getattr(args, k) for k in ("minutes", "agents", "window_s", "fault_every_s", "down_s",
                                                 "full_s", "stall_s", "max_concurrent", "disk_mb", "resend_s",
                                                 "seed")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_end": os.getloadavg()},
        "versions": versions(),
        "fault_log": chaos.log,
    }, 0 if v.ok else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="harken-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(args, workdir)
    try:
        run.start()
        chaos = run.inject()
        run.heal_and_drain()
        agents = run.stop_agents()
        out, code = report(args, run, chaos, run.count(), agents)
    except Exception as exc:  # a run that could not be carried out measured nothing
        out, code = {"ok": False, "refused": [f"{type(exc).__name__}: {exc}"]}, 1
    finally:
        run.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
