"""The faults a chaos run injects at random, and the record of what each one did.

    broker     SIGKILL or SIGTERM mosquitto, keep it down for --down-s, start it again
    collector  the same for the collector process
    agent      the same for one agent (its microphone keeps playing meanwhile)
    disk_full  fill one agent's tmpfs until writes fail with ENOSPC, for --full-s, then free it
    db_stall   hold the collector's windows table locked (ACCESS EXCLUSIVE) for --stall-s

Faults come in rounds: each kind once per round in a random order, a random gap (0.5 to 1.5
times --fault-every-s) apart. At most --max-concurrent run at once, and never two on the
same part; a kind whose part is busy waits for the next round. A fault is *effective* when it
did what it is for: the process was up when it was killed, the agent logged a spool write
that failed on its full disk, the collector's writer was seen waiting on the lock.
"""
from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass

KINDS = ("broker", "collector", "agent", "disk_full", "db_stall")
SPOOL_FAILED = "could not be spooled"  # what the agent logs when its spool refuses a write


@dataclass(frozen=True)
class FaultPlan:
    every_s: float = 20.0
    down_s: tuple[float, float] = (1.0, 10.0)
    full_s: tuple[float, float] = (10.0, 40.0)
    stall_s: tuple[float, float] = (5.0, 45.0)
    max_concurrent: int = 3
    kinds: tuple[str, ...] = KINDS
    signals: tuple[str, ...] = ("SIGKILL", "SIGTERM")


@dataclass
class Rig:
    broker: object
    collector: object
    agents: list
    db: object


class Chaos:
    """``run(deadline)`` injects faults until the deadline or ``stop``; ``finish()`` waits for the
    ones under way to undo themselves (everything killed is started again)."""

    def __init__(self, rig: Rig, plan: FaultPlan, rng: random.Random):
        self.rig, self.plan, self.rng = rig, plan, rng
        self.stop = threading.Event()
        self.log: list[dict] = []
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._t0 = time.monotonic()

    # -- scheduling ------------------------------------------------------------------------
    def run(self, deadline: float) -> None:
        while True:
            for kind in self.rng.sample(self.plan.kinds, len(self.plan.kinds)):
                gap = self.plan.every_s * self.rng.uniform(0.5, 1.5)
                if self.stop.wait(max(0.0, min(gap, deadline - time.monotonic()))) or time.monotonic() >= deadline:
                    return
                while self._active() >= self.plan.max_concurrent:
                    if self.stop.wait(0.2):
                        return
                target = self._claim(kind)
                if target is not None:
                    thread = threading.Thread(target=self._inject, args=(kind, target), name=f"fault-{kind}",
                                              daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def finish(self, timeout_s: float = 120.0) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def _active(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def _claim(self, kind: str) -> str | None:
        """The part this fault hits, now marked busy; None when it (or every agent) is busy."""
        with self._lock:
            if kind in ("agent", "disk_full"):
                free = [a.device for a in self.rig.agents if a.device not in self._busy and a.alive]
                target = self.rng.choice(free) if free else None
            else:
                target = {"db_stall": "db"}.get(kind, kind)
                target = None if target in self._busy else target
            if target is not None:
                self._busy.add(target)
            return target

    def _inject(self, kind: str, target: str) -> None:
        entry = {"kind": kind, "target": target, "t_s": round(time.monotonic() - self._t0, 1)}
        t = time.monotonic()
        try:
            entry.update(getattr(self, f"_{kind}")(target))
        except Exception as exc:  # recorded in the report; the end of the run heals what it left down
            entry.update(effective=False, error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._busy.discard(target)
        entry["duration_s"] = round(time.monotonic() - t, 1)
        self.log.append(entry)

    def summary(self) -> dict[str, dict]:
        out = {k: {"fired": 0, "effective": 0} for k in self.plan.kinds}
        for e in self.log:
            row = out[e["kind"]]
            row["fired"] += 1
            row["effective"] += bool(e["effective"])
            if "signal" in e:
                row.setdefault("signals", {}).setdefault(e["signal"], 0)
                row["signals"][e["signal"]] += 1
        return out

    # -- the faults --------------------------------------------------------------------------
    def _hold(self, span: tuple[float, float]) -> float:
        """Wait a random time in ``span`` (cut short by ``stop``); the seconds waited."""
        t = time.monotonic()
        self.stop.wait(self.rng.uniform(*span))
        return time.monotonic() - t

    def _restart(self, process, sig_name: str) -> dict:
        was_up = process.alive
        process.kill(getattr(signal, sig_name))
        self._hold(self.plan.down_s)
        process.start()
        return {"signal": sig_name, "effective": was_up}

    def _broker(self, _target: str) -> dict:
        return self._restart(self.rig.broker, self.rng.choice(self.plan.signals))

    def _collector(self, _target: str) -> dict:
        return self._restart(self.rig.collector, self.rng.choice(self.plan.signals))

    def _agent(self, target: str) -> dict:
        return self._restart(self._agent_named(target), self.rng.choice(self.plan.signals))

    def _disk_full(self, target: str) -> dict:
        agent = self._agent_named(target)
        before = agent.log_count(SPOOL_FAILED)
        deadline = time.monotonic() + self.rng.uniform(*self.plan.full_s)
        try:
            while True:
                try:
                    agent.disk.fill()
                except AssertionError:  # the agent freed a page meanwhile: the next top-up takes it
                    pass
                if self.stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))) or time.monotonic() >= deadline:
                    break
        finally:
            agent.disk.free()
        return {"effective": agent.log_count(SPOOL_FAILED) > before}

    def _db_stall(self, _target: str) -> dict:
        return {"effective": self.rig.db.stall(self.rng.uniform(*self.plan.stall_s), self.stop)}

    def _agent_named(self, device: str):
        return next(a for a in self.rig.agents if a.device == device)
