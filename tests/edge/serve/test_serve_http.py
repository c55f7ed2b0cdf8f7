"""``harken serve`` over real HTTP (uvicorn on loopback, httpx): decisions, limits, malformed input, auth."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from shared.audio import to_int16
from tests.edge.conftest import WORDS
from tests.edge.serve.conftest import TOKEN

ROOT = Path(__file__).resolve().parents[3]


def _post_wav(client: httpx.Client, data: bytes, **kwargs) -> httpx.Response:
    return client.post("/v1/predict", content=data, headers={"Content-Type": "audio/wav"}, **kwargs)


def _replay(wav: Path, bundle: Path, key: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "shared.cli", "agent", "replay", str(wav), "--bundle", str(bundle),
                          "--trust-key", str(key), "--automation", "partial", "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)["decisions"]


def _key(u: dict) -> tuple:
    return (round(u["start_s"], 4), round(u["end_s"], 4), u["label"], u["confidence"], u["action"])


def test_a_wav_gets_the_decisions_harken_agent_replay_gives(served, speech_wav, bundle_paths, signing):
    with served.client() as client:
        r = _post_wav(client, speech_wav.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    replayed = _replay(speech_wav, bundle_paths[0], signing[2])
    assert len(replayed) >= 10  # 16 words spoken
    assert [_key(u) for u in body["utterances"]] == [
        (round(d["audio_start_s"], 4), round(d["audio_end_s"], 4), d["label"], d["confidence"], d["action"])
        for d in replayed]
    assert body["device"] == "serve-test-1" and body["automation"] == "partial"
    assert body["model"]["sha256"] == replayed[0]["model"]
    assert body["shadow_model"] and body["shadow_model"] != body["model"]["sha256"]
    for u in body["utterances"]:
        assert u["shadow_label"] in WORDS and 0.0 < u["shadow_confidence"] <= 1.0
        assert u["actions"]["partial"] == u["action"] and u["actions"]["full"] == "act"
        assert u["actions"]["assist"] == ("no_answer" if u["no_answer"] else "suggest")
