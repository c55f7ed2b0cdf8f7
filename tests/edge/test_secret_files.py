"""`--password-file`: the agent reads its MQTT password from a file, so `ps` never shows it."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from edge.config import load_agent_config
from shared.audio import write_wav
from shared.errors import ConfigError
from shared.topics import Topics
from tests.edge.test_cli import HARKEN
from tests.edge.test_link import SECURED, USERS
from tests.edge.watcher import Watcher

T = Topics()


def _secret(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "password"
    path.write_text(text)
    path.chmod(0o600)
    return path


def command_line(proc: subprocess.Popen, timeout_s: float = 10.0) -> bytes:
    """The process's command line as `ps` shows it (empty for a moment right after the exec)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        if cmdline:
            return cmdline
        time.sleep(0.005)
    raise AssertionError(f"no command line for the agent (exit code {proc.poll()})")


def test_the_agent_logs_in_with_a_password_file_that_ps_never_shows(mosquitto_factory, tmp_path, speech,
                                                                    bundle_paths, signing, release_signing):
    broker = mosquitto_factory(**SECURED)
    watcher = Watcher(broker.port, [T.stats("dev1")], username="watcher", password=USERS["watcher"])
    wav = tmp_path / "speech.wav"
    write_wav(wav, speech[0][: 16000 * 6])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_AGENT_")}
    proc = subprocess.Popen(HARKEN + [
        "agent", "run", "--device-id", "dev1", "--username", "dev1",
        "--password-file", str(_secret(tmp_path, USERS["dev1"] + "\n")),
        "--broker-url", f"mqtt://127.0.0.1:{broker.port}", "--source", str(wav), "--window-s", "2",
        "--bundle", str(bundle_paths[0]), "--trust-keys", str(signing[2]), "--release-keys", str(release_signing[2]),
        "--state-dir", str(tmp_path / "s")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        cmdline = command_line(proc)
        assert b"--password-file" in cmdline and USERS["dev1"].encode() not in cmdline
        watcher.wait_for(lambda m: len(m) >= 2, 60, "windows from the agent")  # it logged in
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert USERS["dev1"].encode() not in err
    finally:
        watcher.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("text, overrides, message", [
    ("", {}, "is empty"),
    ("pw\n", {"password": "also-given"}, "both password and password_file are set"),
])
def test_a_bad_password_file_is_a_clear_error(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_agent_config(env={}, overrides={"device_id": "d1", "password_file": str(_secret(tmp_path, text)),
                                             **overrides})


def test_the_first_line_is_the_password(tmp_path):
    cfg = load_agent_config(env={}, overrides={"device_id": "d1", "password_file": str(_secret(tmp_path, "pw 1\n#\n"))})
    assert cfg.password == "pw 1"
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="cannot be read"):
        load_agent_config(env={}, overrides={"device_id": "d1", "password_file": str(missing)})
