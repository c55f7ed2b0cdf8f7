"""End to end: 20 real agents on real speech, a real collector, real lab models, rollouts.

The lab trains three bundles on one small espeak-ng dataset: ``kws:1`` (what the fleet runs),
``kws:2`` (the same recipe with another seed: a candidate as good as the fleet's model) and
``kws:3`` (trained on the same clips with 70 % of the labels replaced at random: a broken
model); ``kws:4`` is ``kws:2`` with its graph
rewired to fail on any input but the ones the device checks at install
(``tests/cloud/rollout/broken_bundle.py``). Twenty agents run ``kws:1`` on looped dataset
speech, report windows, state and events through mosquitto to a real collector (SQLite), and
the rollout controller is ticked once a second, as the collector does.

Every rollout runs with the default gates (margins, error budget, minimum samples); only time
settings (bakes, device deadlines) and the canary steps are chosen for the test. Twenty agents
in one process give a few inferences a second in all (and starve each other on a loaded
machine), and each device loops its own 40 clips, so how a model change moves one word's share
differs from device to device: a partial step (5 or 10 devices against the rest) cannot show
the label mix within its 10-point margin in a test's time. The good rollout therefore goes
shadow → canary 100 %, where every device is compared with its own baseline on kws:1
(collected before the rollout starts); partial steps are judged in the unit tests, the
controller test and the simulation.

- kws:2 goes shadow → canary 100 % in full automation; one device is offline when the
  rollout starts and converges when it returns; the collector and its controller are killed
  mid-rollout and a new pair takes over from the persisted state.
- kws:3 with the same plan is rolled back in its shadow stage, before any canary step, and the
  reason names the gate and its figures.
- kws:4 installs on every device as a shadow and fails on every utterance: its shadow stage
  fails on the shadow_errors gate.
- kws:3 blue-green switches the whole fleet, fails a gate, and the whole fleet returns to kws:2.
"""
from __future__ import annotations

import re
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
from tests.cloud.rollout.broken_bundle import fails_in_the_field
from tests.cloud.rollout.fleet import FleetAgent, corrupt_dataset, speech_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # real speech at 2x: minutes per rollout

N_DEVICES = 20
WORDS = ["yes", "no", "up", "down", "stop", "go"]  # the fleet hears these (a skewed mix of the 12 labels)
BASELINE_INFERENCES = 100  # per device on kws:1 before the first rollout


@dataclass
class Lab:
    data: Path
    public_key: Path
    release_key: Path  # release.pub: the fleet runs only released bundles
    bundles: dict[str, Path]


def _train(data: Path, out: Path, private_key, version: str, hp, seed: int = 0, *, release_key) -> Path:
    """Train, then release."""
    from cloud.lab import pipeline

    pipeline.run(pipeline.TrainRequest(data_dir=str(data), out=str(out), private_key=private_key, seed=seed,
                                       name="kws", version=version, hyperparameters=hp,
                                       runs_dir=str(out.parent / "runs")))
    return _release(out, release_key, version)


def _release(bundle: Path, release_key, version: str) -> Path:
    """Release a bundle (version N, automation up to full: these rollouts run in full automation)."""
    from shared.release import release_file

    release_file(bundle, release_key, version=int(version), expires_t=time.time() + 86400, max_automation="full")
    return bundle


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    from cloud.lab import fixtures

    root = tmp_path_factory.mktemp("lab")
    fixtures.tiny_dataset(root / "data", per_word=40)
    priv_path, pub_path = keys.generate_keypair(root / "keys")
    priv = keys.load_private_key(priv_path)
    release_priv_path, release_pub_path = keys.generate_keypair(root / "keys", name=keys.RELEASE_NAME)
    rel = keys.load_private_key(release_priv_path)
    small = fixtures.TINY_HYPERPARAMETERS
    bad_data = corrupt_dataset(root / "data", root / "bad-data", fraction=0.7, seed=3)
    bundles = {
        "1": _train(root / "data", root / "kws-1.hkb", priv, "1", small, release_key=rel),
        "2": _train(root / "data", root / "kws-2.hkb", priv, "2", small, seed=1, release_key=rel),
        "3": _train(bad_data, root / "kws-3.hkb", priv, "3", small, release_key=rel),
    }
    bundles["4"] = fails_in_the_field(bundles["2"], root / "kws-4.hkb", priv, keys.load_public_key(pub_path), "4")
    _release(bundles["4"], rel, "4")
    return Lab(root / "data", pub_path, release_pub_path, bundles)


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
        # restarted under its client id, as a supervisor would (docs/scale.md): a new id would leave the
        # old session in the shared group, and mosquitto would queue half the fleet's windows there
        cfg = collector_config(self.broker.url, self.db_url, client_id="collector")
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
        # together: each agent waits up to its drain time for its spool to empty (20 × 5 s one by one)
        stopping = [threading.Thread(target=a.stop) for a in self.agents]
        for t in stopping:
            t.start()
        for t in stopping:
            t.join()
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
        print(f"{rid} +{e['t'] - log[0]['t']:6.1f}s {e['event']:16} {e['to_status']:18} {e['reason'][:300]}")
    for v in w.rollout(rid).verdicts:  # the figures each stage was decided on
        for g in v["gates"]:
            figures = {k: x for k, x in g["figures"].items() if not isinstance(x, dict)}
            print(f"{rid}   {v['label']:14} {g['gate']:18} {g['verdict']:5} {figures}")
    return log


def _inferences(w: World, model: str) -> dict[str, int]:
    out = {a.device_id: 0 for a in w.agents}
    for row in w.store.window_rows(model=model):
        out[row["device"]] = out.get(row["device"], 0) + row["body"]["software"]["inferences"]
    return out


def _gate(rollout, stage: int, name: str) -> dict:
    return next(g for g in rollout.verdicts[stage]["gates"] if g["gate"] == name)


def test_better_model_goes_shadow_canary_full_with_an_offline_device_and_a_collector_restart(world):
    w = world
    w.wait(lambda: min(_inferences(w, w.models["1"]).values()) >= BASELINE_INFERENCES, 600,
           f"every device to answer {BASELINE_INFERENCES} utterances on kws:1 (its own baseline)")
    away = w.agents[N_DEVICES - 1]
    away.stop()  # offline when the rollout starts: its retained state still names kws:1
    w.wait(lambda: w.store.device(away.device_id)["online"] is False, 30, "the device to be seen offline")
    r = w.service.start("kws:2", "fleet", "shadow,canary", steps="100", bake="15s",
                        policy={"deadline_s": 30.0, "max_attempts": 6})
    r = w.service.get(r.id)
    assert len(r.devices) == N_DEVICES
    w.wait(lambda: w.rollout(r.id).status == "running", 30, "the controller to start the rollout")
    time.sleep(8)
    away.start()  # comes back: the retained desired state and bundle are waiting for it
    w.wait(lambda: (w.states()[away.device_id].get("models") or {}).get("shadow") == w.models["2"], 120,
           "the returning device to run kws:2 as shadow")
    w.wait(lambda: w.rollout(r.id).stage >= 1, 600, "promotion from the shadow stage")
    # the collector (and its controller) die mid-rollout; a new one takes over from the store
    w.kill_collector()
    stage_at_kill = w.rollout(r.id).stage
    time.sleep(3)
    w.start_collector()
    done = w.wait(lambda: w.rollout(r.id).status in ("completed", "rolled_back", "failed", "aborted")
                  and w.rollout(r.id), 1200, "the rollout to finish")
    assert done.status == "completed", done.reason
    w.wait(lambda: set(w.active().values()) == {w.models["2"]}, 60, "every device to report kws:2")
    states = w.states()
    assert all(s.get("automation") == "full" and (s.get("models") or {}).get("shadow") is None
               for s in states.values())
    log = _log(w, r.id)
    events = [e["event"] for e in log]
    assert events.count("stage_started") == 2 and events[-1] in ("completed", "settled")
    agreement = _gate(done, 0, "shadow_agreement")
    assert agreement["verdict"] == "pass" and agreement["figures"]["low"] >= 0.8  # the default minimum
    assert agreement["figures"]["by_label"]  # the per-keyword table is kept
    assert _gate(done, 0, "shadow_errors")["figures"]["candidate_errors"] == 0
    # non-inferior within the default margins; the full stage has no control devices left, so each device is
    # also paired with its own recent windows on the old model (the shadow stage's)
    for gate in ("error_rate", "latency", "no_answer_rate", "label_mix"):
        result = _gate(done, 1, gate)
        assert result["verdict"] == "pass" and result["figures"]["design"] == "groups+own_baseline", result
    assert done.tracks[away.device_id].status == "converged"
    assert stage_at_kill >= 1 and w.loop.controller.leader and w.loop.controller.holder == f"collector-{w.generation}"
    restarted_t = max(e["t"] for e in log if e["event"] == "stage_started" and e["stage"] == stage_at_kill)
    assert any(e["event"] in ("promoted", "completed") and e["t"] > restarted_t for e in log)


def test_worse_model_is_rolled_back_in_shadow_before_any_canary_step(world):
    w = world
    r = w.service.start("kws:3", "fleet", "shadow,canary", steps="25,100", bake="15s", policy={"deadline_s": 60.0})
    done = w.wait(lambda: w.rollout(r.id).status not in ("pending", "running") and w.rollout(r.id), 300,
                  "a verdict on kws:3")
    assert done.status == "rolled_back" and done.stage == 0, done.reason
    assert done.reason.startswith("gate shadow_agreement failed in shadow 100%"), done.reason
    agreement = _gate(done, 0, "shadow_agreement")
    assert agreement["figures"]["high"] < 0.8  # judged on its upper bound
    said = float(re.search(r"shadow agreement ([0-9.]+) over", done.reason).group(1))
    assert abs(said - agreement["figures"]["agreement"]) <= 0.0006, (said, agreement)  # the figure is kept to 4 places
    w.wait(lambda: all((s.get("models") or {}).get("shadow") is None for s in w.states().values())
           and set(w.active().values()) == {w.models["2"]}, 120, "the shadow to come off every device")
    assert not [e for e in _log(w, r.id) if e["event"] == "promoted"]


def test_a_shadow_candidate_that_fails_on_every_utterance_fails_its_shadow_stage(world):
    w = world
    w.wait(lambda: all(x.settled for x in w.service.list()), 60, "the earlier rollouts to settle")
    r = w.service.start("kws:4", "fleet", "shadow,canary", steps="25,100", bake="15s", policy={"deadline_s": 60.0})
    w.wait(lambda: sum((s.get("models") or {}).get("shadow") == w.models["4"] for s in w.states().values())
           >= N_DEVICES // 2, 120, "kws:4 to install as the shadow (it passes the smoke test)")
    done = w.wait(lambda: w.rollout(r.id).status not in ("pending", "running") and w.rollout(r.id), 300,
                  "a verdict on kws:4")
    log = _log(w, r.id)
    assert done.status == "rolled_back" and done.stage == 0, done.reason
    assert done.reason.startswith("gate shadow_errors failed in shadow 100%: the candidate failed on "), done.reason
    errors = _gate(done, 0, "shadow_errors")["figures"]
    assert errors["candidate_errors"] == errors["candidate_n"] >= 200 and errors["candidate"] == 1.0
    assert f"{errors['candidate_n']} of {errors['candidate_n']} shadow inferences (100.0%)" in done.reason
    assert not [e for e in log if e["event"] == "device_failed"]  # every device installed it
    w.wait(lambda: all((s.get("models") or {}).get("shadow") is None for s in w.states().values())
           and set(w.active().values()) == {w.models["2"]}, 120, "the shadow to come off every device")


def test_blue_green_fails_a_gate_and_the_whole_fleet_switches_back(world):
    w = world  # the fleet has run kws:2 for minutes: its windows are the baseline to compare with
    w.wait(lambda: all(x.settled for x in w.service.list()), 60, "the earlier rollouts to settle")
    r = w.service.start("kws:3", "fleet", "blue-green", bake="5m", policy={"deadline_s": 60.0})
    w.wait(lambda: sum(1 for a in w.active().values() if a == w.models["3"]) >= N_DEVICES // 2, 120,
           "the fleet to switch to kws:3")
    done = w.wait(lambda: w.rollout(r.id).status != "running" and w.rollout(r.id).status != "pending"
                  and w.rollout(r.id), 300, "a verdict on the blue-green stage")
    assert done.status == "rolled_back", done.reason
    assert done.reason.startswith("gate ") and " failed in blue-green 100%" in done.reason
    w.wait(lambda: set(w.active().values()) == {w.models["2"]}, 120, "every device back on kws:2")
    w.wait(lambda: w.rollout(r.id).settled, 30, "the rollback to settle")
    assert _log(w, r.id)[-1]["reason"].startswith(f"{N_DEVICES}/{N_DEVICES} devices")
