"""Field samples end to end on real parts: two real agents (espeak-ng speech, webrtcvad,
onnxruntime) on the secured mosquitto `harken broker init` writes, and a real collector (SQLite).

One device opted in, the other did not. The opted-in one uploads its low-confidence and audit
utterances, answers the collector's request around an alert from its ring, keeps every clip through
an outage of its connection (its spool holds them), and stops when the collector switches it off;
every clip it queued is stored exactly once. The other sends nothing, whatever it is asked. Neither can
write the other's sample topics. Then the samples are labelled with the CLI and exported.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

from cloud import broker as brokers
from cloud.collector import Collector
from cloud.samples import control
from cloud.samples.export import read_export
from edge.agent import Agent
from edge.config import load_agent_config
from shared import keys
from shared import samples as wire
from shared.audio import SAMPLE_RATE
from shared.codec import encode
from shared.messages import decode
from shared.topics import Topics
from tests.brokers import free_port
from tests.cloud.conftest import collector_config, wait_until
from tests.cloud.tcp_proxy import StallingProxy
from tests.cloud.test_broker import NOT_AUTHORIZED, Client
from tests.edge.conftest import _speak, calibration_utterances, make_stream, make_test_bundle, release_test_bundle
from tests.edge.test_agent_integration import CHUNK, Running, ScriptedSource
from tests.edge.watcher import Watcher

T = Topics()
DEVICES = ("dev-in", "dev-out")


@pytest.fixture(scope="module")
def speech_and_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e-speech")
    cache: dict = {}

    def say(text: str, speed: int = 150, voice: str = "en-us"):
        if (text, speed, voice) not in cache:
            cache[(text, speed, voice)] = _speak(folder, text, speed, voice)
        return cache[(text, speed, voice)].copy()

    priv, pub = keys.generate_keypair(folder / "keys")
    release_priv, release_pub = keys.generate_keypair(folder / "release-keys", name="release")
    bundle = folder / "words.hkb"
    make_test_bundle(bundle, keys.load_private_key(priv), calibration_utterances(say), seed=0)
    release_test_bundle(bundle, keys.load_private_key(release_priv), version=1)
    samples, _ = make_stream(say, 36, seed=11)  # ~55 s of words with pauses
    return samples, bundle, (pub, release_pub)


@pytest.fixture
def rig(tmp_path):
    d = tmp_path / "broker"
    brokers.init_broker(d, devices=list(DEVICES), port=free_port(), plain_port=free_port())
    broker = brokers.start(d).broker
    made: list = []
    yield broker, d, made
    for thing in made:
        thing.close() if hasattr(thing, "close") else thing.stop()
    brokers.stop(d)


def agent_for(device: str, broker, tmp_path, bundle, pubs, source, **changes) -> Agent:
    creds = broker.credentials()
    pub, release_pub = pubs
    config = load_agent_config(env={}, overrides={
        "device_id": device, "broker_url": broker.tls_url, "username": device, "password": creds[device],
        "tls_ca": str(broker.ca_path), "trust_keys": [str(pub)], "release_keys": [str(release_pub)],
        "state_dir": str(tmp_path / device),
        "bundle": str(bundle), "window_s": 5.0, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
        "keepalive_s": 5, "flush_rate": 200, "samples_flush_rate": 500, "probation_utterances": 100000,
        "probation_s": 86400, "latency_budget_ms": 60000.0, "audit_rate": 0.25,
        "decisions": str(tmp_path / f"{device}.decisions.jsonl"), **changes})
    return Agent(config, source=source, drain_s=20)


def recorded(agent: Agent) -> list[dict]:
    """Wrap the agent's sample spool: every header it queues, in order (the test's ground truth)."""
    headers: list[dict] = []
    inner = agent.samples._put

    def put(messages):
        inner(messages)
        headers.append(decode(messages[0][1], "sample"))

    agent.samples.uploader._put = put
    return headers


def stored(collector: Collector, device: str) -> dict[str, dict]:
    return {s["sha256"]: s for s in collector.store.samples(device=device, limit=10000)}


def test_opted_in_device_uploads_exactly_once_and_the_other_never(rig, tmp_path, speech_and_bundle):
    broker, _, made = rig
    samples, bundle, pub = speech_and_bundle
    creds = broker.credentials()
    collector = Collector(collector_config(
        broker.tls_url, f"sqlite:///{tmp_path / 'harken.db'}", username="collector", password=creds["collector"],
        tls_ca=str(broker.ca_path), samples_dir=str(tmp_path / "samples"), rollup_interval_s=0.2,
        registry_dir=str(tmp_path / "registry")))
    collector.start()
    made.append(collector)
    assert collector.ingest.wait_connected(15)
    wire_watch = Watcher(broker.settings.plain_port, [f"{T.prefix}/dev/+/sample", f"{T.prefix}/dev/+/sample/#"],
                         username="operator", password=creds["operator"], client_id="operator")
    made.append(wire_watch)

    n = -(-len(samples) // CHUNK)
    holds = {n // 3: threading.Event(), 2 * n // 3: threading.Event()}
    source = ScriptedSource(samples, holds)
    network = StallingProxy(broker.settings.port)  # dev-in's way to the broker, which the test can cut
    made.append(network)
    agent_in = agent_for("dev-in", broker, tmp_path, bundle, pub, source, samples_upload=True,
                         broker_url=f"mqtts://127.0.0.1:{network.port}")
    queued = recorded(agent_in)
    agent_out = agent_for("dev-out", broker, tmp_path, bundle, pub, ScriptedSource(samples))
    run_in, run_out = Running(agent_in), Running(agent_out)

    # 1. the first third: low-confidence and audit utterances go up, each stored once
    assert source.reached[n // 3].wait(60)
    threshold = agent_in.lifecycle.active.threshold

    def wanted() -> dict[str, str]:  # what the decisions so far say should have gone up, and why
        return {d["utterance"]: "audit" if d["audit"] else "low_confidence" for d in decisions(tmp_path, "dev-in")
                if d["audit"] or d["confidence"] < threshold}

    _until(lambda: agent_in.pipeline.position_s >= (n // 3) * CHUNK / SAMPLE_RATE
           and {h["utterance"]: h["reason"] for h in queued} == wanted())
    first = list(queued)
    assert len(first) >= 3
    assert wait_until(lambda: set(stored(collector, "dev-in")) == {h["sha256"] for h in first}, 30)

    # 2. the collector asks both devices for the audio around an alert: dev-in answers from its ring
    collector.store.save_alert({"id": "al-e2e", "status": "open", "cohort": "fleet", "signal": "input",
                                "pattern": "sudden", "opened_t": time.time() - 60,
                                "evidence": {"onset_t": time.time() - 120}})
    control.request_alert(collector.store, "al-e2e", actor="test", before_s=600, after_s=600, max_clips=5,
                          devices=list(DEVICES))
    assert wait_until(lambda: any(s["reason"] == "alert" for s in stored(collector, "dev-in").values()), 30)
    alerts = [h for h in queued if h["reason"] == "alert"]
    assert 1 <= len(alerts) <= 5 and {h["alert"] for h in alerts} == {"al-e2e"}

    # 3. the device loses the broker for the second third: its clips wait in its spool
    network.stall()
    before = len(queued)
    holds[n // 3].set()
    assert source.reached[2 * n // 3].wait(60)
    _until(lambda: agent_in.pipeline.position_s >= (2 * n // 3) * CHUNK / SAMPLE_RATE)
    _until(lambda: len(queued) > before)
    assert len(agent_in.samples.spool) > 0 and len(stored(collector, "dev-in")) < len(queued)  # waiting
    network.resume()
    assert wait_until(lambda: set(stored(collector, "dev-in")) == {h["sha256"] for h in queued}, 90)

    # 4. the collector switches dev-in off: the last third leaves nothing
    control.switch(collector.store, ["dev-in"], False, actor="test")
    assert wait_until(lambda: ((collector.store.device("dev-in") or {}).get("state") or {})
                      .get("samples", {}).get("enabled") is False, 30)
    off_at, off_t = len(queued), time.time()
    holds[2 * n // 3].set()
    run_in.join(120)
    run_out.join(120)
    assert len(queued) == off_at  # nothing queued once switched off ...
    late = [d for d in decisions(tmp_path, "dev-in") if d["t"] > off_t and (d["audit"] or d["confidence"] < threshold)]
    assert late, "the last third held utterances that would have been uploaded"  # ... though some qualified

    # every clip dev-in queued is stored exactly once, its file intact; nothing of dev-out anywhere
    rows = stored(collector, "dev-in")
    assert sorted(rows) == sorted(h["sha256"] for h in queued) and len(rows) == len(queued)
    for h in queued:
        row = rows[h["sha256"]]
        assert (row["reason"], row["utterance"], row["predicted"]) == (h["reason"], h["utterance"], h["label"])
        assert collector.sample_files.verify(h["sha256"])
    assert stored(collector, "dev-out") == {} and not (tmp_path / "dev-out" / "samples.db").exists()
    assert agent_out.pipeline.stats["inferences"] == agent_in.pipeline.stats["inferences"] > 20
    heads_on_wire = [decode(p, "sample") for t, p, _ in wire_watch.messages if t.endswith("/sample")]
    assert {h["device"] for h in heads_on_wire} == {"dev-in"}  # dev-out never published one
    with collector.store.transaction(write=False) as cur:
        assert cur.execute("SELECT COUNT(*) FROM sample_parts").fetchone()[0] == 0
    assert collector.store.reject_counts() == {}
    _label_and_export(collector, tmp_path, rows)


def test_a_device_cannot_write_another_devices_samples(rig, tmp_path):
    broker, _, made = rig
    creds = broker.credentials()
    collector = Collector(collector_config(
        broker.tls_url, f"sqlite:///{tmp_path / 'harken.db'}", username="collector", password=creds["collector"],
        tls_ca=str(broker.ca_path), samples_dir=str(tmp_path / "samples")))
    collector.start()
    made.append(collector)
    assert collector.ingest.wait_connected(15)
    intruder = Client(broker.settings.port, "dev-out", creds["dev-out"], ca=broker.ca_path, client_id="dev-out")
    made.append(intruder)
    assert not intruder.connect().is_failure
    wav = b"RIFF" + bytes(3000)
    msgs = wire.messages(T, "dev-in", wav, {"reason": "audit", "captured_t": time.time(), "duration_ms": 1.0})
    for topic, payload in msgs:  # dev-in's topics, dev-out's credentials
        assert intruder.publish(topic, payload).value == NOT_AUTHORIZED
    # on its own topic, claiming to be dev-in: the broker lets it through, the collector refuses it
    forged = encode(decode(msgs[0][1], "sample"))
    assert not intruder.publish(T.sample("dev-out"), forged).is_failure
    assert wait_until(lambda: collector.store.reject_counts().get("device_mismatch") == 1, 15)
    assert collector.store.samples() == []
    rejected = collector.store.rejected(code="device_mismatch")[0]
    assert rejected["topic"] == T.sample("dev-out") and "dev-in" in rejected["detail"]


def _label_and_export(collector: Collector, tmp_path, rows: dict[str, dict]) -> None:
    """Label what dev-in sent with the CLI (two labellers disagree once), export, read it back."""
    from click.testing import CliRunner

    from shared.cli import root

    db = ["--db", collector.config.db_url, "--samples-dir", collector.config.samples_dir]
    run = lambda *a: CliRunner().invoke(root, ["samples", *a, *db], catch_exceptions=False)  # noqa: E731
    ids = sorted(r["id"] for r in rows.values())
    for i, sid in enumerate(ids):
        assert run("label", sid, rows_by_id(rows)[sid]["predicted"], "--by", "ana").exit_code == 0
    assert run("label", ids[0], "stop" if rows_by_id(rows)[ids[0]]["predicted"] != "stop" else "go",
               "--by", "ben").exit_code == 0
    conflicts = json.loads(run("list", "--conflicts", "--json").output)["samples"]
    assert [s["id"] for s in conflicts] == [ids[0]]
    out = tmp_path / "export"
    report = json.loads(run("export", str(out), "--json").output)
    assert report["exported"] == len(ids) and report["conflicts"] == 1
    entries = {e["id"]: e for e in read_export(out)}
    for sid, e in entries.items():
        row = rows_by_id(rows)[sid]
        assert e["sha256"] == row["sha256"] == hashlib.sha256((out / e["file"]).read_bytes()).hexdigest()
        assert e["labels"][0]["by"] == "ana" and e["labels"][0]["label"] == row["predicted"]
    assert [h["by"] for h in entries[ids[0]]["labels"]] == ["ana", "ben"]


def decisions(tmp_path, device: str) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / f"{device}.decisions.jsonl").read_text().splitlines()]


def rows_by_id(rows: dict[str, dict]) -> dict[str, dict]:
    return {r["id"]: r for r in rows.values()}


def _until(predicate, timeout_s: float = 60.0) -> None:
    assert wait_until(predicate, timeout_s, 0.02), "timed out"
