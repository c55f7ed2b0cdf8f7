"""`harken collector run` as a real process: SIGTERM stops it cleanly; SIGKILL under load
loses nothing and stores nothing twice once it is restarted."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from cloud.store import open_store
from shared.codec import encode
from tests.cloud.conftest import Publisher, random_window, wait_until

N_WINDOWS = 2500


def _start_collector(broker_url: str, db_url: str, client_id: str, log_path) -> subprocess.Popen:
    env = {**os.environ, "HARKEN_LOG_LEVEL": "INFO"}
    env.pop("HARKEN_DB", None)
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "collector", "run", "--broker", broker_url, "--db", db_url,
         "--group", "itest", "--client-id", client_id, "--http-port", "0"],
        stdout=subprocess.DEVNULL, stderr=open(log_path, "ab"), env=env, cwd=os.getcwd())


def _stored(db_url: str, device: str | None = None) -> int:
    """Windows stored for ``device``, or for every device but the probe."""
    where, params = ("device = ?", (device,)) if device else ("device <> ?", ("probe",))
    with open_store(db_url) as s:
        with s.transaction(write=False) as cur:
            return cur.execute(f"SELECT COUNT(*) FROM windows WHERE {where}", params).fetchone()[0]


def _wait_up(pub: Publisher, db_url: str) -> None:
    """Publish probe windows until the collector (subscribed by then) has stored one."""
    deadline = time.monotonic() + 30
    seq = 0
    while time.monotonic() < deadline:
        pub.window(random_window(random.Random(seq), "probe", 1, seq, t_start=time.time()))
        if wait_until(lambda: _stored(db_url, "probe") > 0, 0.5):
            return
        seq += 1
    raise AssertionError("the collector never came up")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path, pg_schemas):
    return f"sqlite:///{tmp_path / 'c.db'}" if request.param == "sqlite" else pg_schemas()


def test_sigterm_stops_cleanly(mosquitto, tmp_path, sqlite_url):
    proc = _start_collector(mosquitto.url, sqlite_url, "itest-term", tmp_path / "collector.log")
    pub = Publisher(mosquitto.port)
    try:
        _wait_up(pub, sqlite_url)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        log = (tmp_path / "collector.log").read_text()
        assert "collector stopped:" in log
        assert "Traceback" not in log
    finally:
        pub.close()
        if proc.poll() is None:
            proc.kill()


def test_kill_9_under_load_loses_nothing_and_duplicates_nothing(mosquitto, tmp_path, db_url):
    log_path = tmp_path / "collector.log"
    proc = _start_collector(mosquitto.url, db_url, "itest-kill", log_path)
    probe = Publisher(mosquitto.port)
    pub = Publisher(mosquitto.port, client_id="itest-device-pub", clean=False)
    now = time.time()
    payloads = [(pub.topics.stats(f"dev-{i % 50}"),
                 encode(random_window(random.Random(i), f"dev-{i % 50}", 1, i // 50, t_start=now + i // 50)))
                for i in range(N_WINDOWS)]
    infos = []

    def publish_all() -> None:
        for topic, payload in payloads:
            infos.append(pub.client.publish(topic, payload, qos=1))
            if len(infos) % 100 == 0:
                infos[-100].wait_for_publish(30)  # keep at most ~100 in flight

    try:
        _wait_up(probe, db_url)
        sender = threading.Thread(target=publish_all)
        sender.start()
        assert wait_until(lambda: _stored(db_url) >= N_WINDOWS // 3, 60)
        proc.send_signal(signal.SIGKILL)  # mid-batch, mid-commit, mid-ack: whatever it was doing
        proc.wait(10)
        killed_at = _stored(db_url)
        assert killed_at < N_WINDOWS, "the kill came too late to test anything"
        sender.join(120)
        for info in infos:
            info.wait_for_publish(30)
        proc = _start_collector(mosquitto.url, db_url, "itest-kill", log_path)
        assert wait_until(lambda: _stored(db_url) == N_WINDOWS, 90), \
            f"stored {_stored(db_url)} of {N_WINDOWS} (killed at {killed_at})"
        time.sleep(1.0)  # anything redelivered late must still not be stored twice
        with open_store(db_url) as s:
            keys = [(w["device"], w["seq"]) for w in s.windows() if w["device"] != "probe"]
        assert len(keys) == N_WINDOWS and len(set(keys)) == N_WINDOWS
        assert set(keys) == {(f"dev-{i % 50}", i // 50) for i in range(N_WINDOWS)}
    finally:
        pub.close()
        probe.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)


# -- configuration and the small commands ---------------------------------------------------------
def test_config_precedence_and_strictness(tmp_path):
    from cloud.config import load_collector_config, resolve_db_url
    from shared.errors import ConfigError

    f = tmp_path / "collector.toml"
    f.write_text('broker_url = "mqtt://broker:1884"\ndb_url = "sqlite:///file.db"\n[http]\nport = 9000\n')
    cfg = load_collector_config(f, env={})
    assert (cfg.broker_url, cfg.db_url, cfg.http_port) == ("mqtt://broker:1884", "sqlite:///file.db", 9000)
    cfg = load_collector_config(f, env={"HARKEN_DB": "sqlite:///env.db", "HARKEN_COLLECTOR_GROUP": "g2"})
    assert (cfg.db_url, cfg.group) == ("sqlite:///env.db", "g2")
    cfg = load_collector_config(f, env={"HARKEN_DB": "sqlite:///env.db"}, overrides={"db_url": "sqlite:///flag.db"})
    assert cfg.db_url == "sqlite:///flag.db"
    assert load_collector_config(env={}).db_url == "sqlite:///./harken.db"
    assert resolve_db_url(None, "sqlite:///file.db", env={}) == "sqlite:///file.db"
    assert resolve_db_url(None, "sqlite:///file.db", env={"HARKEN_DB": "x.db"}) == "x.db"
    for bad in ({"batch_max": 0}, {"broker_url": "http://x"}, {"broker_url": "mqtt://u:p@x"}, {"group": "a/b"},
                {"retention_full_s": 100.0, "rollup_bucket_s": 300}, {"db_url": "mysql://x"},
                {"tls_ca": "/nonexistent.pem", "broker_url": "mqtts://x"}):
        with pytest.raises(ConfigError):
            load_collector_config(env={}, overrides=bad)
    with pytest.raises(ConfigError, match="rollout_lease_ttl_s .60. must be at least twice the longest database call"):
        load_collector_config(env={}, overrides={"rollout_lease_ttl_s": 60.0})  # db_timeout_s 30 + 5, twice: 70
    with pytest.raises(ConfigError, match="at least three rollout ticks"):
        load_collector_config(env={}, overrides={"rollout_lease_ttl_s": 80.0, "rollout_tick_s": 30.0})
    assert load_collector_config(env={}, overrides={"rollout_lease_ttl_s": 12.0, "db_timeout_s": 1.0}).lease_ttl_s == 12
    assert load_collector_config(env={}).lease_ttl_s == 90  # automatic: at least 90 s ...
    assert load_collector_config(env={}, overrides={"db_timeout_s": 120.0}).lease_ttl_s == 250  # ... twice 120 + 5
    assert load_collector_config(env={}, overrides={"rollout_lease_ttl_s": 10.0, "rollouts_enabled": False})
    f.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_collector_config(f, env={})
    with pytest.raises(ConfigError, match="HARKEN_COLLECTOR_NOPE"):
        load_collector_config(env={"HARKEN_COLLECTOR_NOPE": "1"})


def test_rejected_and_settings_commands(sqlite_url):
    import json

    from click.testing import CliRunner

    from cloud.store import Reject
    from shared.cli import root

    with open_store(sqlite_url) as s:
        s.insert_rejected([Reject.of(1.0, "harken/v1/dev/a/stats", "not_json", "payload is not JSON", b"\x01")])
    r = CliRunner().invoke(root, ["collector", "rejected", "--json", "--db", sqlite_url])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["counts"] == {"not_json": 1} and data["latest"][0]["head_hex"] == "01"
    r = CliRunner().invoke(root, ["collector", "settings", "--json"])
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert rows["password"]["secret"] and rows["batch_max"]["default"] == 500 and rows["group"]["description"]
