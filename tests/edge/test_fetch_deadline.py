"""Issue 10 item 5: a bundle with a chunk missing on the broker must not block the rest of the
desired state, silently. Real mosquitto, real agent, real bundles (chunked and whole)."""
from __future__ import annotations

import threading

import pytest

from edge.agent import Agent
from shared.codec import encode
from shared.messages import decode
from tests.edge import bundles as variants
from tests.edge.conftest import make_test_bundle, release_test_bundle
from tests.edge.hardening import T, agent_config
from tests.edge.test_agent_integration import Running, ScriptedSource, events_of
from tests.edge.watcher import Watcher


@pytest.fixture(scope="module")
def third_bundle(tmp_path_factory, signing, release_signing, calibration):
    """A third model (its own sha256) signed by the trusted key and released."""
    path = tmp_path_factory.mktemp("third") / "c.hkb"
    make_test_bundle(path, signing[0], calibration, seed=2)
    release_test_bundle(path, release_signing[0], version=3)
    return path.read_bytes()


def test_a_bundle_missing_a_chunk_is_rejected_at_its_deadline_and_the_rest_applies(
        mosquitto, tmp_path, signing, release_signing, bundle_paths, third_bundle, speech):
    watcher = Watcher(mosquitto.port, [f"{T.prefix}/dev/dev1/#"], client_id="watcher-fetch")
    a, b, c = (variants.model_sha(x) for x in (bundle_paths[0].read_bytes(), bundle_paths[1].read_bytes(),
                                                  third_bundle))
    header, chunks = variants.chunked(bundle_paths[1].read_bytes(), 8000)
    for i, chunk in enumerate(chunks):
        if i != 3:  # chunk 3 never reached the broker
            watcher.publish(T.chunk(b, i), chunk, retain=True)
    watcher.publish(T.model(b), header, retain=True)
    watcher.publish(T.model(c), third_bundle, retain=True)
    go = threading.Event()
    source = ScriptedSource(speech[0], {0: go})
    config = agent_config(mosquitto.port, tmp_path / "state", signing[2], release_key=release_signing[2],
                          bundle=str(bundle_paths[0]),
                          fetch_timeout_s=1.0)
    run = Running(Agent(config, source=source, drain_s=15))
    agent = run.agent
    try:
        assert source.reached[0].wait(30)
        watcher.publish(T.desired("dev1"), encode({
            "kind": "desired", "device": "dev1", "rev": 1, "t": 1.0, "active": b, "shadow": c,
            "automation": "assist"}), retain=True)
        watcher.wait_for(lambda m: any(e["event"] == "bundle_rejected" and e.get("model") == b
                                       for e in events_of(watcher)), timeout=30, what="b rejected at its deadline")
        watcher.wait_for(lambda m: any(e["event"] == "shadow_started" and e.get("model") == c
                                       for e in events_of(watcher)), what="the shadow model started")
        watcher.wait_for(lambda m: decode(watcher.on("/state")[-1], "state").get("desired_rev") == 1,
                         what="desired rev 1 applied")
    finally:
        go.set()
        run.join()
        watcher.close()
    events = events_of(watcher)
    rejected = [e for e in events if e["event"] == "bundle_rejected"]
    assert [(e["model"], e["reason"]) for e in rejected] == [(b, "fetch_timeout")]
    assert "of 1" not in rejected[0]["detail"]["error"] and f"{len(chunks) - 1} of {len(chunks)}" in \
        rejected[0]["detail"]["error"]  # says how far it got
    assert "automation_changed" in [e["event"] for e in events]
    state = decode(watcher.on("/state")[-1], "state")
    assert state["models"] == {"active": a, "previous": None, "shadow": c}  # b never ran; the rest applied
    assert state["automation"] == "assist" and "fetch_timeout" in state["last_error"]
    assert not agent.lifecycle.store.has(b) and agent.desired.fetching == []
