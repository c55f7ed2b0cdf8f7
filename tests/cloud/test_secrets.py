"""Secrets stay out of `ps`, the API's map needs a token, tokens carry roles, keys are private.

`harken collector run` as a real process on the secured broker, with its MQTT password and
its API tokens in files; `harken keys generate --force` over a key left readable.
"""
from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cloud import broker as brokers
from cloud.store import open_store
from shared.codec import encode
from shared.topics import Topics
from tests.brokers import free_port
from tests.cloud.conftest import random_window, wait_until
from tests.cloud.test_broker import REPO, Client, cli
from tests.edge.test_secret_files import command_line

T = Topics()
READER, OPERATOR = "reader-token-0123456789abcdef", "operator-token-0123456789abcd"


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _get(port: int, path: str, token: str | None = None, method: str = "GET") -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"{}" if method == "POST" else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                                 if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:
        return 0  # not listening yet


def test_the_collector_takes_its_secrets_from_files_and_ps_shows_none(tmp_path):
    d = tmp_path / "broker"
    brokers.init_broker(d, devices=["dev-A"], port=free_port(), plain_port=free_port())
    broker = brokers.start(d).broker
    creds, http_port, db = broker.credentials(), free_port(), f"sqlite:///{tmp_path / 'c.db'}"
    password = _private(tmp_path / "mqtt-password", creds["collector"] + "\n")
    tokens = _private(tmp_path / "tokens", f"grafana read {READER}\nops-anna operate {OPERATOR}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "collector", "run", "--broker", broker.tls_url, "--db", db,
         "--username", "collector", "--password-file", str(password), "--tls-ca", str(broker.ca_path),
         "--http-port", str(http_port), "--http-tokens-file", str(tokens), "--rollouts-enabled"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "collector.log", "wb"))
    dev = Client(broker.settings.port, "dev-A", creds["dev-A"], ca=broker.ca_path, client_id="dev-A")
    try:
        cmdline = command_line(proc)
        for secret in (creds["collector"], READER, OPERATOR):
            assert secret.encode() not in cmdline
        assert not dev.connect().is_failure
        seq = 0

        def stored() -> bool:
            nonlocal seq
            dev.publish(T.stats("dev-A"), encode(random_window(random.Random(seq), "dev-A", 1, seq,
                                                               t_start=time.time())))
            seq += 1
            with open_store(db) as s:
                return bool(list(s.windows(device="dev-A")))

        assert wait_until(stored, 30, 0.3), (tmp_path / "collector.log").read_text()[-2000:]  # it logged in
        assert wait_until(lambda: _get(http_port, "/readyz") == 200, 20)
        assert _get(http_port, "/openapi.json") == 401
        assert _get(http_port, "/openapi.json", READER) == 200
        assert _get(http_port, "/api/fleet", READER) == 200
        assert _get(http_port, "/api/alerts/a-x/ack", READER, "POST") == 403  # a reader changes nothing
        assert _get(http_port, "/api/alerts/a-x/ack", OPERATOR, "POST") == 404  # allowed; no such alert
    finally:
        dev.close()
        proc.terminate()
        proc.wait(30)
        brokers.stop(d)
    log = (tmp_path / "collector.log").read_text()
    assert creds["collector"] not in log and READER not in log


def test_keys_generate_force_leaves_the_private_key_owner_only(tmp_path):
    first = cli("keys", "generate", str(tmp_path / "k"))
    assert first.returncode == 0, first.stderr
    key = tmp_path / "k" / "signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key.chmod(0o644)  # someone loosened it (or an old tool wrote it so)
    again = cli("keys", "generate", str(tmp_path / "k"), "--force")
    assert again.returncode == 0, again.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
