"""The real ``harken serve`` command: settings checked at start, then HTTP until SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from edge.serve.config import load_serve_config
from shared.errors import ConfigError
from tests.brokers import free_port
from tests.edge.serve.conftest import TOKEN

ROOT = Path(__file__).resolve().parents[3]


def _harken(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "shared.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_harken_serve_answers_then_stops_on_sigterm(tmp_path, bundle_paths, signing, release_signing, short_clips):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    port = free_port()
    proc = _harken("serve", "--device-id", "serve-cli", "--bundle", str(bundle_paths[0]), "--trust-keys",
                   str(signing[2]), "--release-keys", str(release_signing[2]), "--state-dir", str(tmp_path / "state"),
                   "--http-token-file", str(token), "--http-port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the bundle is verified and smoke-tested in a child before the port opens
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "harken serve did not become ready"
            time.sleep(0.05)
        r = httpx.post(f"{url}/v1/predict", content=short_clips[0][0], timeout=30,
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "audio/wav"})
        assert r.status_code == 200 and len(r.json()["utterances"]) >= 2
        assert r.json()["device"] == "serve-cli" and r.json()["automation"] == "partial"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    slots = json.loads((tmp_path / "state" / "slots.json").read_text())
    assert slots["active"] == r.json()["model"]["sha256"]  # installed in the device's model store


def test_harken_serve_refuses_to_start_without_a_token_file(tmp_path, bundle_paths, signing, release_signing):
    proc = _harken("serve", "--device-id", "serve-cli", "--bundle", str(bundle_paths[0]), "--trust-keys",
                   str(signing[2]), "--release-keys", str(release_signing[2]), "--state-dir", str(tmp_path / "state"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "bearer token is required" in err and "token_urlsafe" in err


@pytest.mark.parametrize("token, words", [("short", "at least 16"), ("two words here, long enough", "one word")])
def test_a_weak_token_is_refused(tmp_path, bundle_paths, signing, release_signing, token, words):
    path = tmp_path / "token"
    path.write_text(token)
    with pytest.raises(ConfigError, match=words):
        load_serve_config(env={}, overrides={"device_id": "s", "bundle": str(bundle_paths[0]),
                                             "trust_keys": [str(signing[2])], "release_keys": [str(release_signing[2])],
                                             "http_token_file": str(path)})


def test_serve_needs_trust_keys_and_a_model(tmp_path, bundle_paths, signing, release_signing):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    base = {"device_id": "s", "http_token_file": str(path), "state_dir": str(tmp_path / "state"),
            "release_keys": [str(release_signing[2])]}
    with pytest.raises(ConfigError, match="trust_keys"):
        load_serve_config(env={}, overrides={**base, "bundle": str(bundle_paths[0])})
    with pytest.raises(ConfigError, match="no model to serve"):
        load_serve_config(env={}, overrides={**base, "trust_keys": [str(signing[2])]})
    cfg = load_serve_config(env={"HARKEN_SERVE_HTTP_MAX_PENDING": "3"},
                            overrides={**base, "trust_keys": [str(signing[2])], "bundle": str(bundle_paths[0])})
    assert cfg.http_max_pending == 3 and cfg.token == TOKEN


def test_without_the_serve_extra_the_cli_names_the_pip_command(monkeypatch):
    import click

    from shared.cli import _load

    for name in ("edge.serve.cli", "edge.serve.app"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes the import fail
    with pytest.raises(click.ClickException, match=r"pip install 'harken\[serve\]'"):
        _load("serve")


def test_the_agent_and_the_serve_core_never_import_the_http_stack():
    code = ("import sys, edge.agent, edge.cli, edge.serve.service, edge.serve.config; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"
