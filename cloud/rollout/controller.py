"""The rollout controller: the thin I/O shell around ``core.decide``.

``Controller.tick(now)`` is called by the collector (every few seconds). Only the holder of
the ``rollout-controller`` lease acts — a row in the store's ``leases`` table with holder
and expiry, renewed on every tick and taken over by another collector once it expires — so
with several collectors exactly one moves rollouts. For each rollout still in progress it
reads the store (device states, failure events, windows of the treatment and control
groups, operator commands), calls ``decide``, publishes what the decision asks for, and then
saves the rollout, its log and the handled commands in one transaction. Actions run before
the save: after a crash the same decision is taken again, and re-sending a desired state is
harmless (a device ignores revs it has applied).
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
from shared.errors import HarkenError

log = logging.getLogger(__name__)

LEASE_NAME = "rollout-controller"
EVENT_LOOKBACK_S = 60.0


@dataclass(frozen=True)
class TickReport:
    leader: bool
    rollouts: int = 0
    actions: int = 0
    errors: int = 0


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Controller:
    def __init__(self, store, delivery: Delivery, registry, *, holder: str | None = None,
                 lease_ttl_s: float = 30.0, clock=time.time):
        self.store = store
        self.delivery = delivery
        self.registry = registry
        self.repo = RolloutRepo(store)
        self.holder = holder or default_holder()
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock
        self._leader = False
        self._baselines: dict[tuple, dict] = {}

    @property
    def leader(self) -> bool:
        return self._leader

    def tick(self, now: float | None = None) -> TickReport:
        now = self.clock() if now is None else now
        leader = self.store.acquire_lease(LEASE_NAME, self.holder, self.lease_ttl_s, now=now)
        if leader != self._leader:
            log.info("rollout controller %s: %s the lease", self.holder, "took" if leader else "lost")
            self._leader = leader
        if not leader:
            return TickReport(False)
        rollouts = self.repo.workable()
        actions = errors = 0
        for r in rollouts:
            try:
                actions += self.step(r, now)
            except HarkenError as exc:  # one broken rollout must not stop the others
                errors += 1
                log.error("rollout %s: tick failed (%s); retrying next tick", r.id, exc)
        return TickReport(True, len(rollouts), actions, errors)

    def release(self) -> None:
        self.store.release_lease(LEASE_NAME, self.holder)
        self._leader = False

    def step(self, rollout: Rollout, now: float) -> int:
        devices = {d["device"]: d for d in self.store.devices() if d["device"] in rollout.tracks}
        obs = self.observe(rollout, devices, now)
        decision = decide(rollout, obs, now)
        floors = {d: int((row.get("state") or {}).get("desired_rev") or 0) for d, row in devices.items()}
        for action in decision.actions:
            if action.kind == "publish_bundle":
                self.delivery.publish_bundle(self.registry.bundle(action.model))
            elif action.kind == "write_desired":
                self.delivery.write_desired(action.targets, rollout=rollout.id, floors=floors)
        self.repo.save(decision.rollout, decision.log, decision.handled, now=now)
        for e in decision.log:
            if e.from_status != e.to_status or e.event in ("stage_started", "device_failed"):
                log.info("rollout %s: %s — %s", rollout.id, e.event, e.reason)
        return len(decision.actions)

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

        return of(src.treatment), of([] if src.historical else src.control)
