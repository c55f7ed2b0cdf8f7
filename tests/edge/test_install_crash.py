"""Issue 10 item 4: a model that crashes, hangs or bloats the install must not take the agent
down, and a crash while installing must not loop (restart → retained desired state → fetch →
crash). Real onnxruntime in real child processes, real agent processes, real mosquitto."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from edge.lifecycle import Lifecycle
from edge.sandbox import SmokeLimits
from shared.codec import encode
from shared.errors import SmokeTestError
from shared.messages import decode
from tests.edge import bundles as variants
from tests.edge.hardening import T, agent_values, burdened, kill_group, start_agent_process, until
from tests.edge.test_agent_integration import events_of
from tests.edge.test_lifecycle import Events
from tests.edge.watcher import Watcher


@pytest.fixture(scope="module")
def hog(bundle_paths, signing, release_signing):
    """Runs like bundle 0 but allocates ~1.5 GB on every inference: more than the default 1024 MB."""
    return burdened(bundle_paths[0].read_bytes(), signing[0], "hog", hog_mb=1500, release_key=release_signing[0])


@pytest.fixture(scope="module")
def hang(bundle_paths, signing, release_signing):
    """Runs like bundle 0 but never finishes an inference."""
    return burdened(bundle_paths[0].read_bytes(), signing[0], "hang", release_key=release_signing[0])


def _install_in_thread(lc: Lifecycle, data: bytes, timeout_s: float):
    """``lc.install(data)`` in a thread: (returned, raised); fails the test if it has not ended in time."""
    box: dict = {}

    def run():
        try:
            box["sha"] = lc.install(data)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"install still running after {timeout_s} s: the agent's control thread is stuck"
    return box.get("sha"), box.get("error")


def test_a_model_that_needs_too_much_memory_is_refused_with_the_default_limit(tmp_path, signing, hog, bundle_paths):
    events = Events()
    lc = Lifecycle(tmp_path / "state", [signing[1]], report=events)  # default limits: 1024 MB
    lc.start()
    sha, error = _install_in_thread(lc, hog, 120)
    assert isinstance(error, SmokeTestError) and error.code == "smoke_test_memory", (sha, error)
    assert "more than 1024 MB" in str(error) and "smoke_memory_mb" in str(error)  # says how to fix it
    rejected = events.last("bundle_rejected")
    assert rejected["reason"] == "smoke_test_memory" and rejected["model"] == variants.model_sha(hog)
    assert lc.store.list() == [] and "smoke_test_memory" in lc.slots.last_error
    assert lc.install(bundle_paths[0].read_bytes()) == variants.model_sha(bundle_paths[0].read_bytes())


def test_a_model_that_hangs_is_refused_at_the_time_limit(tmp_path, signing, hang):
    events = Events()
    lc = Lifecycle(tmp_path / "state", [signing[1]], report=events, smoke_limits=SmokeLimits(timeout_s=5))
    lc.start()
    t0 = time.monotonic()
    sha, error = _install_in_thread(lc, hang, 60)
    assert isinstance(error, SmokeTestError) and error.code == "smoke_test_timeout", (sha, error)
    assert time.monotonic() - t0 < 30 and "5 s" in str(error)
    assert events.last("bundle_rejected")["reason"] == "smoke_test_timeout" and lc.store.list() == []


def test_a_wrong_model_is_still_refused_by_the_child_smoke_test(tmp_path, signing, bundle_paths):
    lc = Lifecycle(tmp_path / "state", [signing[1]])
    lc.start()
    with pytest.raises(SmokeTestError) as caught:
        lc.install(variants.wrong_expectations(bundle_paths[1].read_bytes(), signing[0]))
    assert caught.value.code == "smoke_test_failed" and "test vector 0" in str(caught.value)


def test_a_crash_while_installing_is_reported_once_and_the_rest_of_the_desired_state_applies(
        mosquitto, tmp_path, signing, release_signing, bundle_paths, hang):
    """The agent is killed (SIGKILL, as the OOM killer or a watchdog would) while it installs a model;
    restarted, it must not fetch and install the same model again for the same desired state."""
    watcher = Watcher(mosquitto.port, [f"{T.prefix}/dev/dev1/#"], client_id="watcher-crash")
    a, bad = variants.model_sha(bundle_paths[0].read_bytes()), variants.model_sha(hang)
    watcher.publish(T.model(bad), hang, retain=True)
    watcher.publish(T.desired("dev1"), encode({"kind": "desired", "device": "dev1", "rev": 1, "t": 1.0,
                                               "active": bad, "automation": "assist"}), retain=True)
    state = tmp_path / "state"
    values = agent_values(mosquitto.port, state, signing[2], release_key=release_signing[2],
                          bundle=str(bundle_paths[0]), smoke_timeout_s=600)
    first = start_agent_process(values, tmp_path / "agent1.log")
    try:
        watcher.wait_for(lambda m: any(e["event"] == "bundle_received" for e in events_of(watcher)), timeout=60,
                         what="the bad bundle to arrive")
        until(lambda: (state / "installing.json").is_file(), 30, "the install marker")
    finally:
        kill_group(first)  # dies mid-install
    assert first.returncode == -signal.SIGKILL
    second = start_agent_process(values, tmp_path / "agent2.log")
    try:
        watcher.wait_for(lambda m: any(e["event"] == "bundle_rejected" for e in events_of(watcher)), timeout=60,
                         what="the crashed install to be reported")
        watcher.wait_for(lambda m: decode(watcher.on("/state")[-1], "state").get("desired_rev") == 1, timeout=60,
                         what="desired rev 1 applied without the bad model")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        kill_group(second)
        watcher.close()
    events = events_of(watcher)
    rejected = [e for e in events if e["event"] == "bundle_rejected"]
    assert [(e["model"], e["reason"], e["detail"]["rev"]) for e in rejected] == [(bad, "install_crashed", 1)]
    received = {(e["boot"], e["seq"]) for e in events if e["event"] == "bundle_received"}  # spool resends collapse
    assert len(received) == 1  # not fetched again after the restart
    assert "automation_changed" in [e["event"] for e in events]
    state_msg = decode(watcher.on("/state")[-1], "state")
    assert state_msg["models"]["active"] == a and state_msg["automation"] == "assist"
    assert "install_crashed" in state_msg["last_error"]
    assert not (state / "installing.json").exists()
