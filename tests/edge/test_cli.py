"""``harken agent``: the real command, run as a subprocess or through the root click group."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.config import AgentConfig, load_agent_config
from edge.feedback import FeedbackFile
from shared.audio import write_wav
from shared.cli import root
from shared.config import describe
from shared.errors import ConfigError

HARKEN = [str(Path(sys.executable).with_name("harken"))]


def harken(*args, env=None, input=None, timeout=120):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_AGENT_")}
    full_env.update(env or {})
    return subprocess.run(HARKEN + list(args), capture_output=True, input=input, env=full_env, timeout=timeout)


@pytest.fixture(scope="module")
def wav(tmp_path_factory, speech):
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    write_wav(path, speech[0][: 16000 * 12])
    return path


def test_config_reference_lists_every_setting():
    result = CliRunner().invoke(root, ["agent", "config-reference", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == {r["name"] for r in describe(AgentConfig)}
    assert rows["vad_aggressiveness"]["toml"] == "[vad] aggressiveness"
    assert rows["window_s"]["flag"] == "--window-s" and rows["window_s"]["env"] == "HARKEN_AGENT_WINDOW_S"
    table = CliRunner().invoke(root, ["agent", "config-reference"]).output
    assert table.count("\n") == len(rows) + 2 and "`--spool-max-bytes`" in table


def test_file_env_flag_precedence_and_strictness(tmp_path):
    conf = tmp_path / "agent.toml"
    conf.write_text('device_id = "d1"\nwindow_s = 5\n[vad]\naggressiveness = 1\nframe_ms = 20\n')
    env = {"HARKEN_AGENT_WINDOW_S": "7", "HARKEN_AGENT_VAD_AGGRESSIVENESS": "3"}
    assert load_agent_config(conf, env={}).window_s == 5
    cfg = load_agent_config(conf, env=env)
    assert (cfg.window_s, cfg.vad_aggressiveness, cfg.vad_frame_ms) == (7, 3, 20)
    assert load_agent_config(conf, env=env, overrides={"window_s": "9"}).window_s == 9
    gate = cfg.gate_config({"aggressiveness": 0, "frame_ms": 30, "pre_roll_ms": 90})
    assert (gate.aggressiveness, gate.frame_ms, gate.pre_roll_ms) == (3, 20, 90)  # config over bundle
    conf.write_text('device_id = "d1"\nwindows_s = 5\n')
    with pytest.raises(ConfigError, match="unknown key 'windows_s'"):
        load_agent_config(conf, env={})
    with pytest.raises(ConfigError, match="HARKEN_AGENT_WINDOWS"):
        load_agent_config(None, env={"HARKEN_AGENT_DEVICE_ID": "d1", "HARKEN_AGENT_WINDOWS": "3"})
    with pytest.raises(ConfigError, match="reconnect_min_s"):
        load_agent_config(None, env={}, overrides={"device_id": "d1", "reconnect_min_s": 9, "reconnect_max_s": 2})
    with pytest.raises(ConfigError, match="trust_keys"):
        load_agent_config(None, env={}, overrides={"device_id": "d1", "broker_url": "mqtt://127.0.0.1:1"})
    with pytest.raises(ConfigError, match="mqtts"):
        load_agent_config(None, env={}, overrides={"device_id": "d1", "tls_ca": str(conf)})
    with pytest.raises(ConfigError, match="vad settings"):
        load_agent_config(None, env={}, overrides={"device_id": "d1", "vad_min_utterance_ms": 3000,
                                                   "vad_max_utterance_ms": 1000})


def test_usage_and_config_errors_exit_2_and_1(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(root, ["agent", "run", "--no-such-flag"])
    assert bad.exit_code == 2 and "no-such-flag" in bad.output
    conf = tmp_path / "a.toml"
    conf.write_text('device_id = "d1"\nwindows_s = 5\n')
    unknown = runner.invoke(root, ["agent", "run", "--config", str(conf)])
    assert unknown.exit_code == 1 and "unknown key 'windows_s'" in str(unknown.exception)
    bounds = runner.invoke(root, ["agent", "run", "--device-id", "d1", "--window-s", "0.5"])
    assert bounds.exit_code == 1 and "window_s=0.5 must be >= 1" in str(bounds.exception)
    missing = harken("agent", "run", env={"HARKEN_AGENT_SOURCE": "/nonexistent.wav"})  # the real entry point
    assert missing.returncode == 1 and missing.stderr.startswith(b"error: device_id is required")


def test_run_offline_on_a_wav_flag_beats_env_and_secrets_stay_out_of_logs(tmp_path, wav, bundle_paths, signing,
                                                                          release_signing):
    env = {"HARKEN_AGENT_DECISIONS": str(tmp_path / "from-env.jsonl"), "HARKEN_AGENT_PASSWORD": "s3cret-pw",
           "HARKEN_AGENT_AUTOMATION": "full", "HARKEN_AGENT_TRUST_KEYS": str(signing[2]),
           "HARKEN_AGENT_RELEASE_KEYS": str(release_signing[2])}
    out = tmp_path / "from-flag.jsonl"
    result = harken("-vv", "agent", "run", "--device-id", "cli-1", "--source", str(wav), "--bundle",
                    str(bundle_paths[0]), "--state-dir", str(tmp_path / "state"), "--decisions", str(out), env=env)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert not (tmp_path / "from-env.jsonl").exists()
    decisions = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(decisions) >= 5 and all(d["action"] == "act" and d["automation"] == "full" for d in decisions)
    boot = decisions[0]["utterance"].split("-")[0]  # ids are {boot}-{n}; boot is a random 63-bit id
    assert [d["utterance"] for d in decisions][:2] == [f"{boot}-1", f"{boot}-2"] and 0 < int(boot) < 2 ** 63
    log = result.stderr.decode()
    assert "s3cret-pw" not in log and "'password': '***'" in log
    assert "model loaded" in log and "agent stopped" in log


def test_sigterm_stops_a_blocked_stdin_agent_cleanly(tmp_path, speech, bundle_paths, signing, release_signing):
    out = tmp_path / "d.jsonl"
    proc = subprocess.Popen(HARKEN + ["-v", "agent", "run", "--device-id", "cli-2", "--source", "-", "--bundle",
                                      str(bundle_paths[0]), "--trust-keys", str(signing[2]),
                                          "--release-keys", str(release_signing[2]), "--state-dir",
                                      str(tmp_path / "state"), "--decisions", str(out), "--automation", "assist"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={k: v for k, v in os.environ.items() if not k.startswith("HARKEN_AGENT_")})
    pcm = (speech[0][: 16000 * 8] * 32767).astype("<i2").tobytes()
    proc.stdin.write(pcm)
    proc.stdin.flush()  # the pipe stays open: the reader blocks waiting for more
    for line in proc.stderr:
        if b"agent" in line and b"started" in line:
            break
    idle = threading.Event()
    for _ in range(600):  # until the audio written so far has been decided on
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        idle.wait(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    err = proc.stderr.read().decode()
    assert "agent stopped" in err
    decisions = [json.loads(line) for line in out.read_text().splitlines()]
    assert decisions and all(d["action"] in ("suggest", "no_answer") for d in decisions)
    proc.stdin.close()


def test_feedback_appends_a_line_the_agent_reads(tmp_path):
    path = tmp_path / "feedback.jsonl"
    runner = CliRunner()
    assert runner.invoke(root, ["agent", "feedback", "3-17", "--label", "yes", "--file", str(path)]).exit_code == 0
    result = runner.invoke(root, ["agent", "feedback", "3-18", "--confirm"],
                           env={"HARKEN_AGENT_FEEDBACK_PATH": str(path)})
    assert result.exit_code == 0, result.output
    items = FeedbackFile(path).read()
    assert [(i.utterance, i.label, i.confirm) for i in items] == [("3-17", "yes", False), ("3-18", None, True)]
    assert runner.invoke(root, ["agent", "feedback", "3-19", "--file", str(path)]).exit_code == 2


def test_replay_prints_decisions(wav, bundle_paths, signing):
    runner = CliRunner()
    result = runner.invoke(root, ["agent", "replay", str(wav), "--bundle", str(bundle_paths[0]), "--trust-key",
                                  str(signing[2]), "--json", "--window-s", "4"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert len(got["decisions"]) >= 5 and len(got["windows"]) == 3
    unverified = runner.invoke(root, ["agent", "replay", str(wav), "--bundle", str(bundle_paths[0])])
    assert unverified.exit_code == 2 and "--trust-key" in unverified.output
