"""Issue 10 item 8: a reflashed device (state directory wiped) must not reuse (device, boot, seq)
keys, or the collector drops its new windows and events as duplicates, silently."""
from __future__ import annotations

import random
import shutil
import time

from cloud.store import open_store
from edge.agent import Agent
from edge.lifecycle import Lifecycle
from edge.store import BOOT_ID_LIMIT
from tests.cloud.conftest import Publisher, random_window
from tests.edge.hardening import agent_config, kill_group, start_collector, until
from tests.edge.test_agent_integration import CHUNK, ScriptedSource


def _count(db_url: str, sql: str, *params) -> int:
    with open_store(db_url) as s, s.transaction(write=False) as cur:
        return cur.execute(sql, params).fetchone()[0]


def _wait_collector_up(broker_port: int, db_url: str) -> None:
    probe = Publisher(broker_port)
    try:
        def stored_a_probe() -> bool:
            probe.window(random_window(random.Random(0), "probe", 1, 0, t_start=time.time()))
            return _count(db_url, "SELECT COUNT(*) FROM windows WHERE device = ?", "probe") > 0
        until(stored_a_probe, 30, "the collector to store a probe window", interval_s=0.5)
    finally:
        probe.close()


def test_boot_ids_are_random_63_bit_and_never_repeat_after_a_wipe(tmp_path, signing):
    boots = []
    for _ in range(3):
        lc = Lifecycle(tmp_path / "state", [signing[1]])
        lc.start()
        boots.append(lc.boot)
        assert 0 < lc.boot < BOOT_ID_LIMIT and lc.state_fields()["boot"] == lc.boot
        shutil.rmtree(tmp_path / "state")  # reflashed
    assert len(set(boots)) == 3


def test_a_reflashed_device_keeps_every_window_and_event_in_the_collector(mosquitto, tmp_path, signing,
                                                                         release_signing, bundle_paths, speech):
    db_url = f"sqlite:///{tmp_path / 'collector.db'}"
    collector = start_collector(mosquitto.url, db_url, tmp_path / "collector.log")
    try:
        _wait_collector_up(mosquitto.port, db_url)
        samples = speech[0][: 12 * CHUNK]  # ~3 s of speech: two windows of 2 s
        state = tmp_path / "state"
        produced, boots = 0, []
        for _ in range(2):  # first life, then the same device reflashed: its state directory is gone
            agent = Agent(agent_config(mosquitto.port, state, signing[2], release_key=release_signing[2],
                                       bundle=str(bundle_paths[0])),
                          source=ScriptedSource(samples), drain_s=15)
            agent.run()
            assert len(agent.spool) == 0  # the broker has every window of this life
            produced += agent.windows_out
            boots.append(agent.lifecycle.boot)
            shutil.rmtree(state)
        until(lambda: _count(db_url, "SELECT COUNT(*) FROM windows WHERE device = ?", "dev1") >= produced, 30,
              f"the collector to store all {produced} windows of both lives "
              f"(it has {_count(db_url, 'SELECT COUNT(*) FROM windows WHERE device = ?', 'dev1')})")
        assert _count(db_url, "SELECT COUNT(*) FROM windows WHERE device = ?", "dev1") == produced
        assert boots[0] != boots[1]
        until(lambda: _count(db_url, "SELECT COUNT(*) FROM events WHERE device = ? AND event = ?",
                             "dev1", "agent_started") == 2, 30, "both lives' agent_started events")
    finally:
        collector.terminate()
        try:
            collector.wait(20)
        except Exception:
            kill_group(collector)
