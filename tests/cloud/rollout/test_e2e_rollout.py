"""End to end: 20 real agents on real speech, a real collector, real lab models, rollouts.

The lab trains three bundles on one small espeak-ng dataset: ``kws:1`` (what the fleet runs),
``kws:2`` (a bigger network: the candidate) and ``kws:3`` (trained on the same clips with 70 %
of the labels replaced at random: a broken model). Twenty agents run ``kws:1`` on looped
dataset speech, report windows, state and events through mosquitto to a real collector
(SQLite), and the rollout controller is ticked once a second, as the collector does.

- kws:2 goes shadow → canary 25 % → 100 % in full automation; one device is offline when the
  rollout starts and converges when it returns; the collector and its controller are killed
  mid-rollout and a new pair takes over from the persisted state.
- kws:3 with the same plan is rolled back in its shadow stage, before any canary step, and the
  reason names the gate and its figures.
- kws:3 blue-green switches the whole fleet, fails a gate, and the whole fleet returns to kws:2.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud.delivery import Delivery, MqttPublisher
from cloud.registry import Registry
from cloud.rollout.controller import Controller
from cloud.rollout.repo import SqlDesiredRevs
from cloud.rollout.service import RolloutService
from shared import keys

from tests.brokers import Mosquitto
from tests.cloud.conftest import collector_config
from tests.cloud.rollout.fleet import FleetAgent, corrupt_dataset, speech_stream

pytestmark = pytest.mark.slow

N_DEVICES = 20
WORDS = ["yes", "no", "up", "down", "stop", "go"]  # the fleet hears these (a skewed mix of the 12 labels)
GATES = {"min_inferences": 60, "min_shadow_compared": 60, "min_feedback": 30, "min_shadow_agreement": 0.6,
         "max_label_distance": 0.3, "max_no_answer_increase": 0.15}


@dataclass
class Lab:
    data: Path
    public_key: Path
    release_key: Path  # release.pub: the fleet runs only released bundles
    bundles: dict[str, Path]


def _train(data: Path, out: Path, private_key, version: str, hp, seed: int = 0, *, release_key) -> Path:
    """Train, then release (version N, automation up to full: these rollouts run in full automation)."""
    from cloud.lab import pipeline
    from shared.release import release_file

    pipeline.run(pipeline.TrainRequest(data_dir=str(data), out=str(out), private_key=private_key, seed=seed,
                                       name="kws", version=version, hyperparameters=hp,
                                       runs_dir=str(out.parent / "runs")))
    release_file(out, release_key, version=int(version), expires_t=time.time() + 86400, max_automation="full")
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    from cloud.lab import fixtures, train

    root = tmp_path_factory.mktemp("lab")
    fixtures.tiny_dataset(root / "data", per_word=40)
    priv_path, pub_path = keys.generate_keypair(root / "keys")
    priv = keys.load_private_key(priv_path)
    release_priv_path, release_pub_path = keys.generate_keypair(root / "keys", name=keys.RELEASE_NAME)
    rel = keys.load_private_key(release_priv_path)
    small = fixtures.TINY_HYPERPARAMETERS
    bigger = train.Hyperparameters(hidden_layers=(128,), max_iter=200, batch_size=32)
    bad_data = corrupt_dataset(root / "data", root / "bad-data", fraction=0.7, seed=3)
    return Lab(root / "data", pub_path, release_pub_path, {
        "1": _train(root / "data", root / "kws-1.hkb", priv, "1", small, release_key=rel),
        "2": _train(root / "data", root / "kws-2.hkb", priv, "2", bigger, seed=1, release_key=rel),
        "3": _train(bad_data, root / "kws-3.hkb", priv, "3", small, release_key=rel),
    })


class ControllerLoop:
    """The collector's tick, once a second, on its own thread (``kill`` leaves the lease held)."""

    def __init__(self, store, delivery, registry, holder: str, lease_ttl_s: float = 6.0):
        self.controller = Controller(store, delivery, registry, holder=holder, lease_ttl_s=lease_ttl_s)
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"controller-{holder}")
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.controller.tick()
            except BaseException as exc:  # noqa: BLE001 - surfaced by the test
                self.errors.append(exc)

    def kill(self) -> None:
        self._stop.set()
        self.thread.join(30)


class World:
    """Broker, collector + controller (replaceable), registry, and the fleet of agents."""

    def __init__(self, root: Path, lab: Lab):
        from cloud.collector import Collector
        from cloud.store import open_store

        self.root, self.lab = root, lab
        self.broker = Mosquitto(root / "broker").start()
        self.db_url = f"sqlite:///{root / 'harken.db'}"
        self.store = open_store(self.db_url)
        self.registry = Registry(self.store, root / "registry", [keys.load_public_key(lab.public_key)])
        self.models = {v: self.registry.register(p)[0].sha256 for v, p in lab.bundles.items()}
        self.service = RolloutService(self.store, self.registry)
        self.publisher = MqttPublisher(self.broker.url)
        self._collector_cls = Collector
        self.collector = self.loop = None
        self.generation = 0
        self.start_collector()
        self.agents = []
        for i in range(N_DEVICES):
            samples = speech_stream(lab.data, WORDS, n_clips=40, seed=i)
            self.agents.append(FleetAgent(f"dev-{i:02d}", root / "agents", self.broker.url, lab.public_key,
                                          lab.bundles["1"], samples, speed=2.0, window_s=2.0,
                                          probation_utterances=10, probation_s=20.0,
                                          release_keys=[str(lab.release_key)]).start())

    def start_collector(self) -> None:
        self.generation += 1
        cfg = collector_config(self.broker.url, self.db_url, client_id=f"collector-{self.generation}")
        self.collector = self._collector_cls(cfg)
        self.collector.start()
        delivery = Delivery(self.publisher, SqlDesiredRevs(self.store))
        self.loop = ControllerLoop(self.store, delivery, self.registry, holder=f"collector-{self.generation}")

    def kill_collector(self) -> None:
        self.loop.kill()
        self.collector.stop()

    def states(self) -> dict[str, dict]:
        return {d["device"]: d.get("state") or {} for d in self.store.devices()}

    def active(self) -> dict[str, str | None]:
        return {d: (s.get("models") or {}).get("active") for d, s in self.states().items()}

    def wait(self, predicate, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert not self.loop.errors, self.loop.errors
            assert not [a.error for a in self.agents if a.error], [a.error for a in self.agents if a.error]
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def rollout(self, rid: str):
        return self.service.get(rid)

    def close(self) -> None:
        for a in self.agents:
            a.stop()
        self.kill_collector()
        self.publisher.close()
        self.store.close()
        self.broker.stop()


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory):
    w = World(tmp_path_factory.mktemp("world"), lab)
    try:
        w.wait(lambda: len(w.active()) == N_DEVICES and set(w.active().values()) == {w.models["1"]}, 120,
               "every agent to report kws:1")
        yield w
    finally:
        w.close()


def _log(w: World, rid: str) -> list[dict]:
    log = w.service.log(rid)
    for e in log:  # shown with -s, and by pytest when a test fails
        print(f"{rid} +{e['t'] - log[0]['t']:6.1f}s {e['event']:16} {e['to_status']:18} {e['reason'][:200]}")
    return log


def test_better_model_goes_shadow_canary_full_with_an_offline_device_and_a_collector_restart(world):
    w = world
    away = w.agents[N_DEVICES - 1]
    away.stop()  # offline when the rollout starts: its retained state still names kws:1
    w.wait(lambda: w.store.device(away.device_id)["online"] is False, 30, "the device to be seen offline")
    r = w.service.start("kws:2", "fleet", "shadow,canary", steps="25,100", bake="15s", gates=GATES,
                        policy={"deadline_s": 30.0, "max_attempts": 6})
    r = w.service.get(r.id)
    assert len(r.devices) == N_DEVICES
    w.wait(lambda: w.rollout(r.id).status == "running", 30, "the controller to start the rollout")
    time.sleep(8)
    away.start()  # comes back: the retained desired state and bundle are waiting for it
    w.wait(lambda: (w.states()[away.device_id].get("models") or {}).get("shadow") == w.models["2"], 120,
           "the returning device to run kws:2 as shadow")
    w.wait(lambda: w.rollout(r.id).stage >= 1, 240, "promotion from the shadow stage")
    # the collector (and its controller) die mid-rollout; a new one takes over from the store
    w.kill_collector()
    stage_at_kill = w.rollout(r.id).stage
    time.sleep(3)
    w.start_collector()
    done = w.wait(lambda: w.rollout(r.id).status in ("completed", "rolled_back", "failed", "aborted")
                  and w.rollout(r.id), 420, "the rollout to finish")
    assert done.status == "completed", done.reason
    w.wait(lambda: set(w.active().values()) == {w.models["2"]}, 60, "every device to report kws:2")
    states = w.states()
    assert all(s.get("automation") == "full" and (s.get("models") or {}).get("shadow") is None
               for s in states.values())
    log = _log(w, r.id)
    events = [e["event"] for e in log]
    assert events.count("stage_started") == 3 and events[-1] in ("completed", "settled")
    shadow_verdict = done.verdicts[0]
    agreement = next(g for g in shadow_verdict["gates"] if g["gate"] == "shadow_agreement")
    assert agreement["verdict"] == "pass" and agreement["figures"]["compared"] >= GATES["min_shadow_compared"]
    assert done.tracks[away.device_id].status == "converged"
    assert stage_at_kill >= 1 and w.loop.controller.leader and w.loop.controller.holder == f"collector-{w.generation}"
    restarted_t = max(e["t"] for e in log if e["event"] == "stage_started" and e["stage"] == stage_at_kill)
    assert any(e["event"] in ("promoted", "completed") and e["t"] > restarted_t for e in log)


def test_worse_model_is_rolled_back_in_shadow_before_any_canary_step(world):
    w = world
    r = w.service.start("kws:3", "fleet", "shadow,canary", steps="25,100", bake="15s", gates=GATES,
                        policy={"deadline_s": 60.0})
    done = w.wait(lambda: w.rollout(r.id).status not in ("pending", "running") and w.rollout(r.id), 300,
                  "a verdict on kws:3")
    assert done.status == "rolled_back" and done.stage == 0, done.reason
    assert done.reason.startswith("gate shadow_agreement failed in shadow 100%"), done.reason
    agreement = next(g for g in done.verdicts[0]["gates"] if g["gate"] == "shadow_agreement")
    assert agreement["figures"]["agreement"] < GATES["min_shadow_agreement"]
    assert f"{agreement['figures']['agreement']:.3f}" in done.reason
    w.wait(lambda: all((s.get("models") or {}).get("shadow") is None for s in w.states().values())
           and set(w.active().values()) == {w.models["2"]}, 120, "the shadow to come off every device")
    assert not [e for e in _log(w, r.id) if e["event"] == "promoted"]


def test_blue_green_fails_a_gate_and_the_whole_fleet_switches_back(world):
    w = world
    time.sleep(10)  # a baseline of kws:2 windows to compare with
    r = w.service.start("kws:3", "fleet", "blue-green", bake="5m", gates=GATES, policy={"deadline_s": 60.0})
    w.wait(lambda: sum(1 for a in w.active().values() if a == w.models["3"]) >= N_DEVICES // 2, 120,
           "the fleet to switch to kws:3")
    done = w.wait(lambda: w.rollout(r.id).status != "running" and w.rollout(r.id).status != "pending"
                  and w.rollout(r.id), 300, "a verdict on the blue-green stage")
    assert done.status == "rolled_back", done.reason
    assert done.reason.startswith("gate ") and " failed in blue-green 100%" in done.reason
    w.wait(lambda: set(w.active().values()) == {w.models["2"]}, 120, "every device back on kws:2")
    w.wait(lambda: w.rollout(r.id).settled, 30, "the rollback to settle")
    assert _log(w, r.id)[-1]["reason"].startswith(f"{N_DEVICES}/{N_DEVICES} devices")
