"""No downgrades, end to end: a real agent behind a real mosquitto with the ACL `harken broker init`
writes, and someone holding the operator's MQTT credentials trying what the review found open.
"""
from __future__ import annotations

import getpass
import threading
import time

import pytest
from click.testing import CliRunner

from cloud.broker.config import OPERATOR, render_acl
from edge.agent import Agent
from edge.config import load_agent_config
from shared.codec import encode
from shared.messages import decode
from shared.release import make_revocations
from shared.topics import Topics
from tests.brokers import Mosquitto
from tests.edge import bundles as variants
from tests.edge.conftest import release_test_bundle
from tests.edge.test_agent_integration import Running, ScriptedSource, _until, events_of
from tests.edge.watcher import Watcher

T = Topics()
USERS = {"dev1": "pw-dev1", OPERATOR: "pw-operator"}
sha = variants.model_sha


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker", users=USERS, acl=render_acl(T.prefix),
                  extra_conf=f"user {getpass.getuser()}\n").start()
    yield b
    b.stop()


@pytest.fixture
def operator(broker):
    w = Watcher(broker.port, [f"{T.prefix}/dev/dev1/#"], username=OPERATOR, password=USERS[OPERATOR])
    yield w
    w.close()


def start_agent(tmp_path, broker, signing, release_signing, bundle, speech) -> tuple[Running, threading.Event]:
    config = load_agent_config(env={}, overrides=dict(
        device_id="dev1", username="dev1", password=USERS["dev1"], broker_url=broker.url,
        trust_keys=[str(signing[2])], release_keys=[str(release_signing[2])], state_dir=str(tmp_path / "state"),
        bundle=str(bundle), window_s=2.0, reconnect_min_s=0.05, reconnect_max_s=0.3, keepalive_s=5,
        probation_utterances=1000, probation_s=3600))
    hold = threading.Event()
    source = ScriptedSource(speech[0], {0: hold})  # the agent runs, its audio waits until the test ends
    run = Running(Agent(config, source=source, drain_s=5))
    assert source.reached[0].wait(30)
    return run, hold


def desired(rev: int, **fields) -> bytes:
    return encode({"kind": "desired", "v": "1.0", "device": "dev1", "rev": rev, "t": time.time(), **fields})


def wait_event(watcher: Watcher, what: str, **match):
    watcher.wait_for(lambda _: any(all(e.get(k) == v for k, v in match.items()) for e in events_of(watcher)),
                     timeout=30, what=what)


def test_operator_credentials_cannot_downgrade_raise_automation_or_switch_probation_off(
        tmp_path, broker, operator, signing, release_signing, bundle_paths, speech):
    running = tmp_path / "v2-assist.hkb"  # what the device runs: version 2, released for automation <= assist
    running.write_bytes(bundle_paths[1].read_bytes())
    release_test_bundle(running, release_signing[0], version=2, max_automation="assist")
    older = bundle_paths[0].read_bytes()  # version 1: signed, released, unexpired; older
    run, hold = start_agent(tmp_path, broker, signing, release_signing, running, speech)
    agent = run.agent
    v1, v2 = sha(older), sha(running.read_bytes())
    assert agent.lifecycle.slots.active == v2 and agent.pipeline.automation == "shadow"
    operator.publish(T.model(v1), older, retain=True)
    operator.publish(T.desired("dev1"), desired(1, active=v1, automation="full",
                                                probation={"utterances": 0, "seconds": 0, "max_error_rate": 1.0}),
                     retain=True)
    wait_event(operator, "the downgrade refused", event="bundle_rejected", model=v1, reason="downgrade")
    wait_event(operator, "automation capped", event="desired_rejected", reason="automation_not_released")
    wait_event(operator, "probation kept", event="desired_rejected", reason="probation_not_released")
    refused = next(e for e in events_of(operator) if e["event"] == "bundle_rejected")
    assert "older than version 2" in refused["detail"]["error"] and "--version" in refused["detail"]["error"]
    _until(lambda: agent.lifecycle.slots.desired_rev == 1)
    assert agent.lifecycle.slots.active == v2 and v1 not in agent.lifecycle.store.list()
    assert agent.pipeline.automation == "assist"  # as far as v2's release allows, not full
    assert agent.lifecycle.policy.utterances == 1000 and agent.lifecycle.policy.max_error_rate == 0.05
    capped = next(e for e in events_of(operator) if e.get("reason") == "automation_not_released")
    assert capped["detail"] == {"wanted": "full", "allowed": "assist"} and capped["model"] == v2
    # a release that allows more: version 3, automation up to full, probation down to 5 utterances
    newer = tmp_path / "v3.hkb"
    newer.write_bytes(bundle_paths[0].read_bytes())
    release_test_bundle(newer, release_signing[0], version=3, max_automation="full",
                        probation_floor={"utterances": 5})
    v3 = sha(newer.read_bytes())  # the same model bytes as v1, released again under a higher version
    operator.publish(T.model(v3), newer.read_bytes(), retain=True)
    operator.publish(T.desired("dev1"), desired(2, active=v3, automation="full", probation={"utterances": 5}),
                     retain=True)
    _until(lambda: agent.lifecycle.slots.desired_rev == 2)
    assert agent.lifecycle.slots.active == v3 and agent.pipeline.automation == "full"
    assert agent.lifecycle.policy.utterances == 5
    hold.set()
    run.join()
    state = decode(operator.on("/state")[-1], "state")
    assert state["models"]["active"] == v3 and state["automation"] == "full"


def test_a_revocation_published_with_harken_model_revoke_stops_the_model_and_keeps_it_out(
        tmp_path, broker, operator, signing, release_signing, bundle_paths, speech):
    from cloud.cli.model import group

    first, second = bundle_paths[0].read_bytes(), bundle_paths[1].read_bytes()
    v1, v2 = sha(first), sha(second)
    run, hold = start_agent(tmp_path, broker, signing, release_signing, bundle_paths[0], speech)
    agent = run.agent
    operator.publish(T.model(v2), second, retain=True)
    operator.publish(T.desired("dev1"), desired(1, active=v2), retain=True)
    wait_event(operator, "v2 activated", event="model_activated", model=v2)
    # a list signed with the lab's key (not a release key) is ignored
    operator.publish(T.revocations(), make_revocations(signing[0], models=[v2], seq=1), retain=True)
    wait_event(operator, "the forged list refused", event="desired_rejected", reason="bad_revocations")
    assert agent.lifecycle.slots.active == v2
    release_key = release_signing[2].with_name("release.key")
    (tmp_path / "operator.pw").write_text(USERS[OPERATOR] + "\n")
    result = CliRunner().invoke(group, ["revoke", v2, "--list", str(tmp_path / "revoked.json"), "--release-key",
                                        str(release_key), "--broker", broker.url, "--username", OPERATOR,
                                        "--password-file", str(tmp_path / "operator.pw")])
    assert result.exit_code == 0, result.output
    assert "1 model(s)" in result.output
    wait_event(operator, "v2 rolled back", event="model_rolled_back", model=v2, reason="revoked")
    assert agent.lifecycle.slots.active == v1
    operator.publish(T.desired("dev1"), desired(2, active=v2), retain=True)
    wait_event(operator, "v2 refused", event="bundle_rejected", model=v2, reason="revoked")
    _until(lambda: agent.lifecycle.slots.desired_rev == 2)
    assert agent.lifecycle.slots.active == v1
    hold.set()
    run.join()
