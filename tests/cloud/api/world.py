"""A collector's world for the API and dashboard tests: a real SQLite store with an hour of
fleet data, a registry with two signed models, and rollouts moved by the real controller.

Timeline (relative to ``now``):

    -60 min  devices start on model A (dev-06 on B; dev-04/05 shadow B)
    -40 min  r-kitchen: canary of B to tag:kitchen (steps 34 %, 100 %; bake 10 min)
             r-shadow:  shadow of B on tag:shadow, manual approval
    -40 min  the first kitchen device converges to B; shadow devices already shadow B
    -29 min  both rollouts' first stage passes its gates: r-kitchen promotes to 100 %,
             r-shadow waits for approval
    -29 min  the other kitchen devices converge to B
    -22 min  last controller tick: r-kitchen is baking its last stage
    -10 min, now   the real drift engine evaluates; its alert changes are stored
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cloud.api.backend import Services
from cloud.delivery import Delivery
from cloud.drift import Alert, DriftConfig, DriftEngine, StoreSource, acknowledge, registry_profiles
from cloud.registry import Registry
from cloud.rollout.controller import Controller
from cloud.rollout.repo import SqlDesiredRevs
from cloud.rollout.plan import build_plan
from cloud.rollout.service import RolloutService, load_gates
from cloud.rollout.start import start_rollout
from cloud.store import Batch, Received, Store, open_store
from shared.keys import generate_keypair, load_private_key, load_public_key
from shared.messages import validate
from tests.cloud.api import fleet_data
from tests.cloud.api.bundles import make_bundle
from tests.cloud.api.fleet_data import LABELS, Fleet

TOKEN = "test-token-4f9c2a7d1e"
# a minute's step and a 12-minute warm-up: dev-03 learns its baseline on model B (it is the kitchen
# canary's first device, from -39.5 min) before it gets louder (-20 min)
DRIFT = DriftConfig(step_s=60, short_steps=3, long_steps=40, concept_step_s=600, warmup_s=12 * 60,
                    min_baseline_blocks=3, settle_s=0.0)
# Three kitchen devices and an hour of light traffic cannot show non-inferiority at the default
# margins (the device is the unit of variance): these pages need a rollout whose first stage
# passed, so the fixture's margins are wide. The gates' own judgement is tested in tests/cloud/rollout.
GATES = {"min_inferences": 50, "min_feedback": 10, "min_shadow_compared": 50, "min_devices": 2,
         "error_rate_floor": 0.2, "max_no_answer_increase": 0.3, "max_label_share_change": 1.0,
         "max_feedback_accuracy_drop": 0.6, "min_shadow_agreement": 0.6}


class Recorder:
    """Stands in for the broker: records what the controller publishes."""

    def __init__(self):
        self.messages: list[tuple[str, bytes, bool]] = []

    def publish_all(self, messages) -> int:
        batch = list(messages)
        self.messages += batch
        return len(batch)


@dataclass
class World:
    path: Path
    store: Store
    fleet: Fleet
    registry: Registry
    rollouts: RolloutService
    published: Recorder
    drift: DriftEngine

    @property
    def now(self) -> float:
        return self.fleet.now

    def alert_id(self, cohort: str, kind: str) -> str:
        return next(a["id"] for a in self.store.alerts(cohort=cohort) if a["signal"] == kind)

    def controller(self) -> Controller:
        """The real rollout controller over this world's store (publishing to the recorder)."""
        return Controller(self.store, Delivery(self.published, SqlDesiredRevs(self.store)), self.registry,
                          holder="tests", clock=lambda: self.now)

    def services(self, **kw) -> Services:
        args = dict(store=self.store, token=TOKEN, registry=self.registry, rollouts=self.rollouts,
                    drift=self.drift, clock=lambda: self.now)
        return Services(**{**args, **kw})


def _converge(store: Store, fleet: Fleet, devices, t: float) -> None:
    """The devices install model B, activate it and report the new state."""
    batch = Batch()
    b = fleet.sha(fleet_data.B)
    for d in devices:
        _tags, _active, shadow, _online = fleet_data.DEVICES[d]
        for i, event in enumerate(("bundle_received", "bundle_verified", "model_installed", "model_activated")):
            batch.events.append(Received(validate({"kind": "event", "v": "1.0", "device": d, "boot": 1, "seq": 2 + i,
                                                   "t": t - 8 + 2 * i, "event": event, "model": b,
                                                   "reason": "desired state"}), t))
        batch.states.append(Received(fleet_data.state(d, t, b, fleet.sha(shadow), fleet.sha(fleet_data.A)), t))
        batch.see(d, t)
    store.write(batch)


def build(path: Path, now: float | None = None) -> World:
    now = time.time() if now is None else now
    path.mkdir(parents=True, exist_ok=True)
    priv, pub = generate_keypair(path / "keys")
    store = open_store(str(path / "harken.db"))
    registry = Registry(store, path / "registry", [load_public_key(pub)])
    key = load_private_key(priv)
    profile = fleet_data.reference_profile()
    shas = []
    for i, (version, acc) in enumerate((("1.0.0", 0.93), ("1.1.0", 0.95))):
        bundle = path / f"kws-{version}.hkb"
        make_bundle(bundle, key, name="kws", version=version, seed=i, labels=LABELS, profile=profile, accuracy=acc,
                    parent=shas[0] if shas else None)
        shas.append(registry.register(bundle, now=now - 7200 + i * 600)[0].sha256)
    registry.set_alias("production", shas[0])
    registry.set_alias("candidate", shas[1])
    fleet = fleet_data.begin(store, now, *shas)
    service = RolloutService(store, registry)
    engine = DriftEngine(StoreSource(store, registry_profiles(registry)), DRIFT)
    world = World(path, store, fleet, registry, service, Recorder(), engine)
    controller = world.controller()
    t1 = now - 2400
    # ids fixed (the service draws random ones) so the canary order, and so the data, is the same every run
    r1 = start_rollout(store, registry, "candidate", "tag:kitchen", build_plan("canary", steps="34,100", bake="10m"),
                       gates=load_gates(GATES), now=t1, rollout_id="r-kitchen")
    start_rollout(store, registry, "candidate", "tag:shadow", build_plan("shadow", bake="10m"), approval="manual",
                  gates=load_gates(GATES), now=t1 + 1, rollout_id="r-shadow")
    controller.tick(t1 + 2)
    first = service.get(r1.id).stage_devices(0)
    _converge(store, fleet, first, t1 + 20)
    controller.tick(t1 + 30)
    t2 = t1 + 660
    rest = [d for d in service.get(r1.id).devices if d not in first]
    switch = {**{d: t1 + 30 for d in first}, **{d: t2 + 30 for d in rest}}
    fleet_data.write_windows(store, fleet, switch)
    controller.tick(t2)
    _converge(store, fleet, rest, t2 + 20)
    controller.tick(t2 + 30)
    controller.tick(t2 + 420)
    fleet_data.finish(store, fleet, switch)
    for t in (now - 600, now):
        evaluate_drift(world, t)
    output = Alert.from_row(world.store.alert(world.alert_id("device:dev-03", "output")))
    world.store.save_alert(acknowledge(output, now - 60, by="ops-lee").to_row())
    return world


def evaluate_drift(world: World, now: float) -> list:
    """One drift evaluation, persisted as the collector's drift job does it."""
    open_alerts = [Alert.from_row(a) for a in world.store.alerts() if a["status"] != "resolved"]
    changes = world.drift.evaluate(now, open_alerts)
    for change in changes:
        world.store.save_alert(change.alert.to_row())
    return changes
