"""Issue 10 item 2: an agent whose disk fills up loses nothing and does not go silent.

Real parts: a real tmpfs mounted for the test and filled to ENOSPC, a real mosquitto, the real
agent (espeak-ng speech, webrtcvad, onnxruntime). Before the fix, the first PUBACK after the
disk filled made ``Spool.ack`` raise inside paho's ``on_publish``: paho's network thread
ended, the process stayed up and sent nothing more.
"""
from __future__ import annotations

import threading

from edge.agent import Agent
from edge.lifecycle import Lifecycle, ProbationPolicy
from edge.flusher import SpoolFlusher
from edge.spool import Spool
from shared.audio import SAMPLE_RATE
from shared.messages import decode
from tests.edge.hardening import T, SmallDisk, agent_config, until
from tests.edge.test_agent_integration import CHUNK, Running, ScriptedSource, events_of, windows_of
from tests.edge.watcher import Watcher


def test_full_disk_loses_no_window_and_the_device_keeps_talking(mosquitto, tmp_path, signing, bundle_paths,
                                                                 speech, release_signing):
    samples = speech[0]
    n_chunks = -(-len(samples) // CHUNK)
    backlog_at, full_at = n_chunks // 3, 2 * n_chunks // 3
    go_backlog, go_full, go_end = threading.Event(), threading.Event(), threading.Event()
    source = ScriptedSource(samples, {backlog_at: go_backlog, full_at: go_full, n_chunks: go_end})
    watcher = Watcher(mosquitto.port, [f"{T.prefix}/dev/dev1/#"], client_id="watcher-full-disk")
    with SmallDisk(tmp_path / "disk") as disk:
        config = agent_config(mosquitto.port, disk.path / "state", signing[2], release_key=release_signing[2],
                              bundle=str(bundle_paths[0]))
        run = Running(Agent(config, source=source, drain_s=15))
        agent = run.agent

        def processed_up_to(chunk: int) -> bool:
            end = min(chunk * CHUNK, len(samples)) / SAMPLE_RATE
            return agent.pipeline is not None and agent.pipeline.position_s >= end

        assert source.reached[backlog_at].wait(30)
        until(lambda: processed_up_to(backlog_at) and len(windows_of(watcher)) >= 1, what="the first windows")
        mosquitto.stop()  # the broker goes away: windows wait in the spool
        go_backlog.set()
        assert source.reached[full_at].wait(30)
        until(lambda: processed_up_to(full_at), what="the audio before the disk fills")
        backlog = [decode(r.payload) for r in agent.spool.peek(1000)]
        assert sum(m["kind"] == "window" for m in backlog) >= 3

        disk.fill()  # no byte left: every spool write, the deletions after a PUBACK included, fails
        mosquitto.start()  # the broker is back and acknowledges the backlog
        until(lambda: len(windows_of(watcher)) >= agent.windows_out, what="the backlog at the broker")
        until(lambda: agent.flusher.undeleted > 0, what="a deletion that failed on the full disk")
        sent_before = len(windows_of(watcher))

        go_full.set()  # the device goes on listening while its disk is full
        until(lambda: processed_up_to(n_chunks) and agent.windows_out > sent_before, what="windows on a full disk")
        assert len(agent._held) > 0  # the spool could not take them: they wait in memory
        disk.free()
        until(lambda: len(windows_of(watcher)) >= agent.windows_out, 30,
              "the windows made while the disk was full to reach the broker")
        go_end.set()
        run.join()
        assert len(agent.spool) == 0 and agent.flusher.undeleted == 0  # the failed deletions were retried
        assert agent.link.callback_errors == 0 and agent.link.restarts == 0
    got = windows_of(watcher)
    boot = agent.lifecycle.boot
    assert sorted(got) == [("dev1", boot, s) for s in range(agent.windows_out)]  # none lost
    assert [e["event"] for e in events_of(watcher)][:2] == ["agent_started", "bundle_verified"]
    watcher.close()


def test_a_failed_commit_on_a_full_disk_leaves_the_spool_usable(tmp_path):
    with SmallDisk(tmp_path / "disk", size="2m") as disk:
        spool = Spool(disk.path / "spool.db", 1 << 20)
        ids = [spool.put("w", b"x" * 500) for _ in range(5)]
        disk.fill()
        failures = 0
        for i in ids:
            try:
                spool.ack(i)
            except Exception:
                failures += 1
        assert failures > 0  # the disk really refused the deletions
        assert len(spool) == 5 - (len(ids) - failures)  # counters match what is on disk
        disk.free()
        for i in ids:
            spool.ack(i)  # a transaction left open by the failed COMMIT would make this raise
        assert len(spool) == 0 and spool.bytes == 0
        spool.put("w", b"after")
        assert [r.payload for r in spool.peek(5)] == [b"after"]
        spool.close()


def test_flusher_retries_a_deletion_that_failed_and_never_sends_it_again(tmp_path):
    with SmallDisk(tmp_path / "disk", size="2m") as disk:
        spool = Spool(disk.path / "spool.db", 1 << 20)
        for i in range(3):
            spool.put("w", b"%d" % i)
        sent, acks, connected = [], [], threading.Event()

        def publish(topic, payload, *, on_ack):
            sent.append(payload)
            acks.append(on_ack)
            return len(sent)

        connected.set()
        flusher = SpoolFlusher(spool, publish, connected, rate_per_s=100, max_inflight=10,
                               retry_delete_s=0.05).start()
        try:
            until(lambda: len(sent) == 3, what="three sends")
            disk.fill()
            for ack in acks:
                ack(True, "")  # the PUBACKs, in the network thread: nothing may raise here
            assert flusher.undeleted > 0 and len(spool) > 0
            disk.free()
            until(lambda: len(spool) == 0, what="the retried deletions")
            assert sent == [b"0", b"1", b"2"] and flusher.acked == 3  # nothing sent twice
        finally:
            flusher.stop()
            spool.close()


def test_lifecycle_runs_on_when_the_slots_file_cannot_be_saved(tmp_path, signing, bundle_paths):
    with SmallDisk(tmp_path / "disk") as disk:
        lc = Lifecycle(disk.path / "state", [signing[1]], ProbationPolicy(utterances=5))
        lc.start()
        a = lc.install(bundle_paths[0].read_bytes())
        lc.activate(a)
        disk.fill()
        for _ in range(5):  # probation passes while the disk is full: the save fails, nothing raises
            lc.record_inference(a, 2.0, None)
        assert lc.slots.probation is None and lc.health() == "degraded"
        assert "slots not saved" in lc.state_fields()["last_error"]
        disk.free()
        lc.tick()
        assert lc.health() == "ok"
        again = Lifecycle(disk.path / "state", [signing[1]])
        assert again.slots_file.read().probation is None and again.slots_file.read().active == a


def test_an_agent_started_on_a_full_disk_runs_and_sends_its_windows_once_space_returns(
        mosquitto, tmp_path, signing, bundle_paths, speech, release_signing):
    """Found by scripts/chaos.py: a clean stop removes the spool's WAL files, and reopening it needs
    32 KiB for WAL's shared memory; on a full disk the agent exited at start (exit 1, again and again
    under a supervisor) until space came back."""
    samples = speech[0]
    n_chunks = -(-len(samples) // CHUNK)
    half = n_chunks // 2
    go_on = threading.Event()
    watcher = Watcher(mosquitto.port, [f"{T.prefix}/dev/dev1/#"], client_id="watcher-full-start")
    with SmallDisk(tmp_path / "disk") as disk:
        config = agent_config(mosquitto.port, disk.path / "state", signing[2], release_key=release_signing[2],
                              bundle=str(bundle_paths[0]))
        Agent(config, source=ScriptedSource(samples[:4 * CHUNK]), drain_s=15).run()  # installs its model, stops
        disk.fill()
        source = ScriptedSource(samples, {half: go_on})
        run = Running(Agent(config, source=source, drain_s=15))
        agent = run.agent
        assert source.reached[half].wait(30)
        until(lambda: agent.pipeline.position_s >= half * CHUNK / SAMPLE_RATE and len(agent._held) >= 2,
              what="windows made on the full disk")
        assert agent.spool.exclusive and agent.link.connected.is_set()  # up, connected, windows wait in memory
        disk.free()
        go_on.set()
        run.join()
        assert len(agent.spool) == 0 and not agent._held
    boot = agent.lifecycle.boot
    got = sorted(k for k in windows_of(watcher) if k[1] == boot)
    first = agent.pipeline.seq - agent.windows_out
    assert got == [("dev1", boot, s) for s in range(first, agent.pipeline.seq)]  # every window of this start
    watcher.close()
