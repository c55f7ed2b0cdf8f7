"""The rollout controller: the thin I/O shell around ``core.decide``.

``Controller.tick(now)`` is called by the collector (every few seconds). Only the holder of
the ``rollout-controller`` lease acts, so with several collectors exactly one moves rollouts.
The lease (``cloud.store.leases``) lives on the database's clock, not the replicas', and carries
an epoch, a fencing token:
- it is taken or renewed at the start of every tick, and renewed again during a step — before
  observing, before each action and between chunks of ``DESIRED_CHUNK`` devices' desired
  states — whenever a sixth of its TTL has passed, so a step longer than the TTL keeps it; a
  renewal that finds the epoch changed (the lease lapsed, or another controller took it) stops
  the step (``LeaseLost``);
- every leader-only write checks the epoch in its own transaction: the rollout's save
  (``RolloutRepo``, fenced) and the desired revs (``SqlDesiredRevs.write_many``). A controller
  that stalled past its TTL gets its writes refused, whatever it believes.
The TTL (``rollout_lease_ttl_s``; by default twice the longest database call and at least 90 s)
must stay well above the longest call between two renewals: one database statement
(``db_timeout_s`` + 5 s) or one publish of a chunk (30 s).
What fencing cannot stop is a publish already under way: a controller paused for longer than the
TTL between its fenced rev write and the publish of those revs still sends them; devices ignore
a rev at or below one they applied, and the new leader's next write carries a higher rev.

For each rollout still in progress the controller reads the store (device states, failure events,
windows of the treatment and control groups, operator commands), calls ``decide``, publishes
what the decision asks for, and then saves the rollout, its log and the handled commands in one
transaction. Actions run before the save: after a crash the same decision is taken again, and
re-sending a desired state is harmless (a device ignores revs it has applied).
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from cloud.delivery import Delivery
from cloud.rollout.core import FAILURE_EVENTS, DeviceEvent, DeviceState, Observations, decide
from cloud.rollout.gates import Sample, Totals
from cloud.rollout.repo import RolloutRepo
from cloud.rollout.state import Rollout
from cloud.store.base import Lease, LeaseLost
from shared.errors import HarkenError

log = logging.getLogger(__name__)

LEASE_NAME = "rollout-controller"
LEASE_TTL_S = 90.0
RENEWALS_PER_TTL = 6  # during a step the lease is renewed once this fraction of its TTL has passed
DESIRED_CHUNK = 500  # devices per desired-state write and publish; the lease is renewed between them
EVENT_LOOKBACK_S = 60.0


@dataclass(frozen=True)
class TickReport:
    leader: bool
    rollouts: int = 0
    actions: int = 0
    errors: int = 0
    epoch: int | None = None  # the lease's epoch while this controller held it


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Controller:
    def __init__(self, store, delivery: Delivery, registry, *, holder: str | None = None,
                 lease_ttl_s: float = LEASE_TTL_S, clock=time.time):
        self.store = store
        self.delivery = delivery
        self.registry = registry
        self.repo = RolloutRepo(store, lease=self.current_lease)
        self.holder = holder or default_holder()
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock
        self._lease: Lease | None = None
        self._renewed = float("-inf")  # monotonic time of the last renewal
        self._baselines: dict[tuple, dict] = {}

    @property
    def leader(self) -> bool:
        return self._lease is not None

    @property
    def epoch(self) -> int | None:
        return self._lease.epoch if self._lease else None

    def current_lease(self) -> Lease:
        """The lease this controller believes it holds (the store checks it on every write)."""
        if self._lease is None:
            raise LeaseLost(f"rollout controller {self.holder} does not hold the lease; only its holder writes")
        return self._lease

    def _acquire(self) -> Lease | None:
        before = self._lease
        self._lease = self.store.acquire_lease(LEASE_NAME, self.holder, self.lease_ttl_s)
        self._renewed = time.monotonic()
        if self._lease is None and before is not None:
            log.info("rollout controller %s: lost the lease (epoch %d)", self.holder, before.epoch)
        elif self._lease is not None and (before is None or before.epoch != self._lease.epoch):
            log.info("rollout controller %s: took the lease (epoch %d)", self.holder, self._lease.epoch)
        return self._lease

    def keep_lease(self) -> Lease:
        """Renew the lease during a step once a sixth of its TTL has passed; ``LeaseLost`` if it
        changed hands or lapsed meanwhile (the step's decision may be stale: stop it)."""
        held = self.current_lease()
        if time.monotonic() - self._renewed < self.lease_ttl_s / RENEWALS_PER_TTL:
            return held
        lease = self._acquire()
        if lease is None or lease.epoch != held.epoch:
            raise LeaseLost(f"rollout controller {self.holder}: the lease (epoch {held.epoch}) "
                            f"{'changed hands' if lease is None else 'lapsed'} during a step; the step stops")
        return lease

    def tick(self, now: float | None = None) -> TickReport:
        now = self.clock() if now is None else now
        if self._acquire() is None:
            return TickReport(False)
        epoch = self._lease.epoch
        rollouts = self.repo.workable()
        actions = errors = 0
        for r in rollouts:
            try:
                actions += self.step(r, now)
            except LeaseLost as exc:  # another controller acts now: leave the rest to it
                log.warning("rollout %s: %s", r.id, exc)
                self._lease = None
                return TickReport(False, len(rollouts), actions, errors, epoch)
            except HarkenError as exc:  # one broken rollout must not stop the others
                errors += 1
                log.error("rollout %s: tick failed (%s); retrying next tick", r.id, exc)
        return TickReport(True, len(rollouts), actions, errors, epoch)

    def release(self) -> None:
        self.store.release_lease(LEASE_NAME, self.holder)
        self._lease = None

    def step(self, rollout: Rollout, now: float) -> int:
        self.keep_lease()
        devices = {d["device"]: d for d in self.store.devices() if d["device"] in rollout.tracks}
        obs = self.observe(rollout, devices, now)
        decision = decide(rollout, obs, now)
        floors = {d: int((row.get("state") or {}).get("desired_rev") or 0) for d, row in devices.items()}
        for action in decision.actions:
            self.keep_lease()
            if action.kind == "publish_bundle":
                self.delivery.publish_bundle(self.registry.bundle(action.model))
            elif action.kind == "write_desired":
                self._write_desired(action.targets, rollout.id, floors)
        self.repo.save(decision.rollout, decision.log, decision.handled, now=now)
        for e in decision.log:
            if e.from_status != e.to_status or e.event in ("stage_started", "device_failed"):
                log.info("rollout %s: %s — %s", rollout.id, e.event, e.reason)
        return len(decision.actions)

    def _write_desired(self, targets: dict, rollout_id: str, floors: dict[str, int]) -> None:
        """Desired states in chunks, the lease renewed before each and checked as its revs are written."""
        items = list(targets.items())
        for i in range(0, len(items), DESIRED_CHUNK):
            lease = self.keep_lease()
            self.delivery.write_desired(dict(items[i:i + DESIRED_CHUNK]), rollout=rollout_id, floors=floors,
                                        lease=lease)

    # -- observations -------------------------------------------------------------------------
    def observe(self, r: Rollout, devices: dict[str, dict], now: float) -> Observations:
        states = {d: DeviceState.from_message(row["state"]) for d, row in devices.items() if row.get("state")}
        obs = Observations(states=states, events=self._events(r), commands=self.repo.open_commands(r.id))
        if r.status in ("running", "awaiting_approval") and r.stage_started_t is not None:
            obs.treatment, obs.control = self.samples(r)
            obs.treatment_before, obs.control_before = self.baselines(r)
        return obs

    def _events(self, r: Rollout) -> list[DeviceEvent]:
        sent = [tr.sent_t for tr in r.tracks.values() if tr.sent_t is not None and tr.stage >= 0]
        if not sent or r.status not in ("running", "awaiting_approval", "paused"):
            return []
        # by when the collector received them: a device's clock may be off by any amount
        rows = self.store.events(received_since=min(sent) - EVENT_LOOKBACK_S, limit=100_000)
        return [DeviceEvent(e["device"], e["received_t"], e["event"], e.get("model"), e.get("reason") or "")
                for e in rows if e["event"] in FAILURE_EVENTS and e["device"] in r.tracks and e.get("model") == r.model]

    def samples(self, r: Rollout) -> tuple[Sample, Sample]:
        """(treatment, control) for the current stage, from stored windows (``Rollout.sources``)."""
        src = r.sources()
        if src.paired:  # the active model on the same utterances is the control
            shadowed = [w for w in self.store.windows(devices=src.treatment, since=src.since)
                        if w.get("shadow_model") == r.model]
            sample = Sample.of(shadowed)
            return sample, sample
        treatment = Sample.of(self.store.windows(devices=src.treatment, model=r.model, since=src.since))
        windows = self.store.windows(devices=src.control, since=src.control_since, until=src.control_until)
        control = Sample.of(w for w in windows if w.get("model") == r.baseline[w["device"]].active)
        return treatment, control

    def baselines(self, r: Rollout) -> tuple[Sample | None, Sample | None]:
        """The stage's treatment and control devices on their baseline model before the rollout
        switched models (``Sources.before_*``). That period is over, so it is read once per rollout."""
        src = r.sources()
        if src.paired or src.before_since is None:
            return None, None
        key = (r.id, src.before_since, src.before_until)
        if key not in self._baselines:
            windows = self.store.windows(devices=r.devices, since=src.before_since, until=src.before_until)
            per_device = {}
            for w in windows:
                if w.get("model") == r.baseline[w["device"]].active:
                    per_device.setdefault(w["device"], Totals()).add(w)
            self._baselines[key] = per_device
            while len(self._baselines) > 8:  # a few rollouts at a time hold the memory
                self._baselines.pop(next(iter(self._baselines)))
        per_device = self._baselines[key]

        def of(devices: list[str]) -> Sample:
            return Sample.from_totals({d: per_device[d] for d in devices if d in per_device})

        return of(src.treatment), of(src.control)
