"""The whole agent on real parts: espeak-ng speech, webrtcvad, onnxruntime, a secured mosquitto."""
from __future__ import annotations

import json
import threading
from collections import Counter

import numpy as np
import pytest

from edge.agent import Agent
from edge.config import load_agent_config
from edge.model import LoadedModel
from edge.sources import AudioSource
from edge.spool import Spool
from shared import keys
from shared.audio import SAMPLE_RATE
from shared.codec import encode
from shared.messages import decode
from shared.topics import Topics
from tests.brokers import Mosquitto, free_port
from tests.edge import bundles as variants
from tests.edge.conftest import make_test_bundle
from tests.edge.test_link import SECURED, USERS
from tests.edge.watcher import Watcher

T = Topics()
WINDOW_S = 2.0
CHUNK = 4096


class ScriptedSource(AudioSource):
    """Yields ``samples`` in chunks; pauses before chunk ``i`` until ``holds[i]`` is set.

    ``reached[i]`` is set when it gets there; index ``len(chunks)`` is the end of the stream.
    """

    def __init__(self, samples: np.ndarray, holds: dict[int, threading.Event] | None = None):
        self.samples = samples
        self.holds = holds or {}
        self.reached = {i: threading.Event() for i in self.holds}
        self.n_chunks = -(-len(samples) // CHUNK)

    def chunks(self):
        for i in range(self.n_chunks + 1):
            if i in self.holds:
                self.reached[i].set()
                assert self.holds[i].wait(60), f"chunk {i} was never released"
            if i < self.n_chunks:
                yield self.samples[i * CHUNK:(i + 1) * CHUNK]


class Running:
    """``Agent.run`` in a thread; ``join`` re-raises what it raised."""

    def __init__(self, agent: Agent):
        self.agent, self.error = agent, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.agent.run()
        except BaseException as exc:  # pragma: no cover - surfaced by join
            self.error = exc

    def join(self, timeout=60):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent did not finish"
        if self.error:
            raise self.error


@pytest.fixture
def config(tmp_path, signing, release_signing, bundle_paths):
    def build(broker_port: int | None, **changes):
        values = dict(device_id="dev1", username="dev1", password=USERS["dev1"], trust_keys=[str(signing[2])],
                      release_keys=[str(release_signing[2])],
                      state_dir=str(tmp_path / "state"), window_s=WINDOW_S, reconnect_min_s=0.05,
                      reconnect_max_s=0.3, flush_rate=500, keepalive_s=5, bundle=str(bundle_paths[0]),
                      probation_utterances=1000, probation_s=3600)
        if broker_port is not None:
            values["broker_url"] = f"mqtt://127.0.0.1:{broker_port}"
        return load_agent_config(env={}, overrides={**values, **changes})
    return build


def watch(port: int) -> Watcher:
    return Watcher(port, [f"{T.prefix}/dev/dev1/#"], username="watcher", password=USERS["watcher"],
                   client_id="watcher-1")


def windows_of(watcher: Watcher) -> dict[tuple, dict]:
    """Windows by (device, boot, seq): duplicates collapse, as the collector stores them."""
    return {(w["device"], w["boot"], w["seq"]): w for w in (decode(p, "window") for p in watcher.on("/stats"))}


def events_of(watcher: Watcher) -> list[dict]:
    return [decode(p, "event") for p in watcher.on("/event")]


def full_windows(samples: np.ndarray) -> int:
    return len(samples) // int(WINDOW_S * SAMPLE_RATE)


def test_windows_arrive_complete_and_seq_continues_across_restarts(mosquitto_factory, config, speech, bundles,
                                                                   tmp_path):
    broker = mosquitto_factory(**SECURED)
    watcher = watch(broker.port)
    samples, _ = speech
    decisions, feedback = tmp_path / "decisions.jsonl", tmp_path / "feedback.jsonl"
    mid = ScriptedSource(samples).n_chunks // 2
    go = threading.Event()
    source = ScriptedSource(samples, {mid: go})
    run = Running(Agent(config(broker.port, decisions=str(decisions), feedback_path=str(feedback)),
                        source=source, drain_s=15))
    agent = run.agent
    assert source.reached[mid].wait(30)
    _until(lambda: agent.pipeline.position_s >= mid * CHUNK / SAMPLE_RATE)  # all audio before the hold is in
    made = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert len(made) >= 3
    with feedback.open("a") as f:  # a person corrects one prediction and confirms another
        f.write(json.dumps({"utterance": made[0]["utterance"], "label": "stop"}) + "\n")
        f.write(json.dumps({"utterance": made[1]["utterance"], "confirm": True}) + "\n")
    go.set()
    run.join()
    n = agent.windows_out
    assert n == full_windows(samples) + 1  # the partial last window is flushed at the end
    watcher.wait_for(lambda m: len(windows_of(watcher)) >= n, what=f"{n} windows")
    got = windows_of(watcher)
    assert sorted(got) == [("dev1", agent.lifecycle.boot, s) for s in range(n)]
    model = bundles[0].sha256
    assert all(w["model"] == model and w["agent_version"] == agent.version for w in got.values())
    assert sum(w["duration_s"] for w in got.values()) == pytest.approx(len(samples) / SAMPLE_RATE)
    assert sum(w["software"]["utterances"] for w in got.values()) >= 12
    assert sum(w["software"]["inferences"] for w in got.values()) == agent.pipeline.stats["inferences"] > 0
    assert all(len(w["input"]["features"]) == 10 for w in got.values())
    pairs = Counter()
    for w in got.values():
        pairs.update({(t, p): n for t, p, n in w["feedback"]["pairs"]})
    assert pairs == Counter([("stop", made[0]["label"]), (made[1]["label"], made[1]["label"])])
    assert [e["detail"]["utterance"] for e in events_of(watcher) if e["event"] == "feedback"] == \
        [made[0]["utterance"], made[1]["utterance"]]
    names = [e["event"] for e in events_of(watcher)]
    assert names[:4] == ["agent_started", "bundle_verified", "model_installed", "model_activated"]
    watcher.wait_for(lambda m: decode(watcher.on("/state")[-1])["online"] is False, what="the offline state")
    state = decode(watcher.on("/state")[-1], "state")
    assert state["models"]["active"] == model and state["health"] == "probation"
    assert state["boot"] == agent.lifecycle.boot
    assert len(agent.spool) == 0  # everything acknowledged, nothing left behind

    again = Agent(config(broker.port), source=ScriptedSource(samples[: 5 * CHUNK]), drain_s=15)
    again.run()
    boot2 = again.lifecycle.boot
    assert boot2 != agent.lifecycle.boot  # a new random boot id
    watcher.wait_for(lambda m: any(k[1] == boot2 for k in windows_of(watcher)), what="a window of the second boot")
    second = [k for k in windows_of(watcher) if k[1] == boot2]
    assert second == [("dev1", boot2, n)]  # seq continues from the spool
    watcher.close()


def test_broker_restart_mid_stream_every_window_exactly_once(mosquitto_factory, config, speech):
    broker = mosquitto_factory(**SECURED)
    watcher = watch(broker.port)
    samples, _ = speech
    third = 1 * int(WINDOW_S * SAMPLE_RATE * 4) // CHUNK  # ~8 s in
    go, end = threading.Event(), threading.Event()
    source = ScriptedSource(samples, {third: go, -(-len(samples) // CHUNK): end})
    run = Running(Agent(config(broker.port), source=source, drain_s=20))
    agent = run.agent
    assert source.reached[third].wait(30)
    watcher.wait_for(lambda m: len(windows_of(watcher)) >= 3, what="the first windows")
    broker.stop()  # the broker goes away mid-stream ...
    go.set()
    assert source.reached[source.n_chunks].wait(30)
    expected_full = full_windows(samples)
    _until(lambda: agent.windows_out == expected_full)
    assert len(agent.spool) >= expected_full - 4  # ... so the rest waits in the spool
    broker.start()  # ... and comes back on the same port
    end.set()
    run.join()
    n = agent.windows_out
    watcher.wait_for(lambda m: len(windows_of(watcher)) >= n, what=f"all {n} windows")
    assert sorted(windows_of(watcher)) == [("dev1", agent.lifecycle.boot, s) for s in range(n)]  # no gap, no loss
    assert len(agent.spool) == 0
    assert agent.link.connects >= 2
    watcher.close()


def test_agent_works_with_the_broker_down_from_the_start(tmp_path, config, speech):
    port = free_port()
    broker = Mosquitto(tmp_path / "broker", port=port, **SECURED).start()
    watcher = watch(port)  # its persistent session and subscription outlive the broker restart
    broker.stop()
    samples, _ = speech
    end = threading.Event()
    source = ScriptedSource(samples, {-(-len(samples) // CHUNK): end})
    run = Running(Agent(config(port, spool_max_bytes=64 * 1024), source=source, drain_s=20))
    agent = run.agent
    assert source.reached[source.n_chunks].wait(60)
    _until(lambda: agent.windows_out == full_windows(samples))
    assert not agent.link.connected.is_set() and agent.pipeline.stats["inferences"] > 0
    assert len(agent.spool) >= agent.windows_out  # windows and the start events, all on disk
    broker.start()
    end.set()
    run.join()
    n = agent.windows_out
    # both clients reconnect with backoff after the broker comes back: generous on a loaded machine
    watcher.wait_for(lambda m: len(windows_of(watcher)) >= n, timeout=90.0, what=f"{n} windows")
    assert sorted(windows_of(watcher)) == [("dev1", agent.lifecycle.boot, s) for s in range(n)]
    assert [e["event"] for e in events_of(watcher)][:2] == ["agent_started", "bundle_verified"]
    watcher.close()
    broker.stop()


def test_spool_bound_drops_the_oldest_and_the_next_window_says_so(tmp_path, config, speech):
    samples = np.tile(speech[0], 2)  # ~50 s in 1 s windows: more than 16 KiB of windows
    port = free_port()  # nothing ever listens: everything stays in the spool
    agent = Agent(config(port, spool_max_bytes=16 * 1024, window_s=1.0), source=ScriptedSource(samples), drain_s=0)
    agent.run()
    spool = Spool(agent.spool.path, agent.spool.max_bytes)  # what is on disk after the agent stopped
    assert spool.bytes <= 16 * 1024 and spool.dropped_total > 0
    kept = [decode(r.payload) for r in spool.peek(1000)]
    windows = [m for m in kept if m["kind"] == "window"]
    assert windows[-1]["seq"] == agent.windows_out - 1  # the newest survive
    reported = sum(w["software"].get("spool_dropped_windows", 0) for w in windows)
    assert 0 < reported <= spool.dropped_total


def _until(predicate, timeout=90.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        done.wait(0.02)
    raise AssertionError("timed out")


# ------------------------------------------------------------------- desired state end to end

@pytest.fixture(scope="module")
def untrusted_bundle(tmp_path_factory, calibration):
    """A third model (its own sha256), signed by a key the device does not trust."""
    folder = tmp_path_factory.mktemp("untrusted")
    key = keys.load_private_key(keys.generate_keypair(folder)[0])
    make_test_bundle(folder / "c.hkb", key, calibration, seed=2)
    return (folder / "c.hkb").read_bytes()


def test_desired_state_installs_a_chunked_bundle_and_refuses_an_untrusted_one(
        mosquitto_factory, config, speech, bundle_paths, untrusted_bundle):
    broker = mosquitto_factory(**SECURED)
    watcher = watch(broker.port)
    a_bytes, b_bytes = bundle_paths[0].read_bytes(), bundle_paths[1].read_bytes()
    a, b, c = (variants.model_sha(x) for x in (a_bytes, b_bytes, untrusted_bundle))
    header, chunks = variants.chunked(b_bytes, 8000)
    for i, chunk in enumerate(chunks):
        watcher.publish(T.chunk(b, i), chunk, retain=True)
    watcher.publish(T.model(b), header, retain=True)
    watcher.publish(T.model(c), untrusted_bundle, retain=True)  # raw, not chunked
    samples, _ = speech
    go, end = threading.Event(), threading.Event()
    source = ScriptedSource(samples, {0: go, -(-len(samples) // CHUNK): end})
    run = Running(Agent(config(broker.port), source=source, drain_s=15))
    agent = run.agent
    assert source.reached[0].wait(30)
    watcher.publish(T.desired("dev1"), encode({"kind": "desired", "device": "dev1", "rev": 1, "t": 1.0,
                                               "active": b, "automation": "assist"}), retain=True)
    watcher.wait_for(lambda m: any(e["event"] == "model_activated" and e.get("model") == b
                                   for e in events_of(watcher)), what="b activated")
    watcher.publish(T.desired("dev1"), encode({"kind": "desired", "device": "dev1", "rev": 2, "t": 2.0,
                                               "active": c}), retain=True)
    watcher.wait_for(lambda m: any(e["event"] == "bundle_rejected" and e.get("model") == c
                                   for e in events_of(watcher)), what="c refused")
    go.set()
    assert source.reached[source.n_chunks].wait(60)
    end.set()
    run.join()
    events = events_of(watcher)
    names = [e["event"] for e in events if e.get("model") == b]
    assert names == ["bundle_received", "bundle_verified", "model_installed", "model_activated"]
    refused = [e for e in events if e["event"] == "bundle_rejected"]
    assert [(e["model"], e["reason"]) for e in refused] == [(c, "bad_signature")]
    assert "automation_changed" in [e["event"] for e in events]
    models = {w["model"] for w in windows_of(watcher).values()}
    assert models == {b} and c not in agent.lifecycle.store.list()  # c never ran
    state = decode(watcher.on("/state")[-1], "state")
    assert state["models"] == {"active": b, "previous": a, "shadow": None}
    assert state["desired_rev"] == 2 and state["automation"] == "assist" and "bad_signature" in state["last_error"]
    watcher.close()


class FailingModel:
    """A real model whose predictions fail after it passed its smoke test (injected errors)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def predict(self, x):
        raise RuntimeError("injected inference failure")


def test_probation_rolls_back_on_injected_errors(mosquitto_factory, config, speech, bundle_paths):
    broker = mosquitto_factory(**SECURED)
    watcher = watch(broker.port)
    a_bytes, b_bytes = bundle_paths[0].read_bytes(), bundle_paths[1].read_bytes()
    a, b = variants.model_sha(a_bytes), variants.model_sha(b_bytes)

    def loader(bundle):
        model = LoadedModel.from_bundle(bundle)
        return FailingModel(model) if bundle.sha256 == b else model

    watcher.publish(T.model(b), b_bytes, retain=True)
    samples, _ = speech
    go = threading.Event()
    source = ScriptedSource(samples, {0: go})
    run = Running(Agent(config(broker.port, probation_utterances=5, max_error_rate=0.2), source=source,
                        loader=loader, drain_s=15))
    assert source.reached[0].wait(30)
    watcher.publish(T.desired("dev1"), encode({"kind": "desired", "device": "dev1", "rev": 1, "t": 1.0,
                                               "active": b}), retain=True)
    watcher.wait_for(lambda m: any(e["event"] == "model_activated" and e.get("model") == b
                                   for e in events_of(watcher)), what="b activated")
    go.set()
    run.join()
    events = events_of(watcher)
    back = [e for e in events if e["event"] == "model_rolled_back"]
    assert len(back) == 1 and back[0]["model"] == b and back[0]["reason"] == "error_rate"
    assert back[0]["detail"]["to"] == a
    windows = sorted(windows_of(watcher).values(), key=lambda w: w["seq"])
    on_b = [w for w in windows if w["model"] == b]
    assert on_b and sum(w["software"]["errors"] for w in on_b) == 5  # rolled back at the 5th error
    assert windows[-1]["model"] == a and sum(w["software"]["inferences"] for w in windows if w["model"] == a) > 0
    state = decode(watcher.on("/state")[-1], "state")
    assert state["models"]["active"] == a and state["health"] == "degraded"
    watcher.close()
