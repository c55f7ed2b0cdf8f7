"""The benchmarks' own bookkeeping: what they send, and when they refuse to report success."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cloud.drift.reference import build_reference
from cloud.drift.signals import extract
from cloud.window_schema import FastWindows
from shared.codec import decode_raw
from shared.messages import validate
from shared.profile import build_profile

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest() -> dict:
    rng = np.random.default_rng(0)
    n, labels = 200, ["yes", "no", "go"]
    profile = build_profile(rng.normal(size=(n, 4)), [f"f{i}" for i in range(4)],
                            utterance_ms=rng.uniform(200, 1500, n), level_dbfs=rng.uniform(-40, -10, n),
                            snr_db=rng.uniform(5, 40, n), confidence=rng.uniform(0.3, 1.0, n),
                            labels=rng.integers(0, 3, n), label_names=labels)
    return {"profile": profile, "labels": labels}


def test_bench_collector_windows_are_valid_fit_the_profile_and_come_at_the_real_rate(manifest):
    data = load_script("bench_collector_data")
    gen = data.ProfileWindows(manifest, "c" * 64)
    ref = build_reference(manifest["profile"], gen.model)
    items = data.fleet_windows(gen, 30, devices=3, t_end=1_800_000_000.0)
    windows = [decode_raw(payload) for _, payload in items]
    for w in windows:
        validate(w, expect="window")
        FastWindows().decode(json.dumps(w).encode())  # the collector takes them on its fast path
        extract(w, ref)  # raises on bins that do not fit the model's profile (drift would skip the window)
    assert sum(w["software"]["utterances"] for w in windows) > 0
    for device in ("dev-00000", "dev-00001", "dev-00002"):
        own = [w for w in windows if w["device"] == device]
        assert [w["seq"] for w in own] == list(range(10))
        assert np.allclose(np.diff([w["t_start"] for w in own]), data.WINDOW_S)  # one per default window
        assert own[-1]["t_start"] <= 1_800_000_000.0


def result(devices: list[dict], **extra) -> dict:
    return {"per_device": devices, "device_errors": {}, "failures": {}, **extra}


def device(name: str, first=0, nxt=5, error=False) -> dict:
    return {"device": name, "boot": 1, "first_seq": first, "next_seq": nxt, "unsent_seqs": [], "error": error}


CLEAN = {"missing": 0, "extra": 0, "duplicates": 0}


def test_soak_fails_when_a_started_device_died_never_reported_or_produced_no_window():
    soak = load_script("soak")
    healthy = result([device("a"), device("b")])
    assert soak.fleet_ok(CLEAN, soak.fleet_health(healthy, started=2))
    unreported = soak.fleet_health(healthy, started=3)  # a sim process died with its devices
    assert unreported["unreported"] == 1 and not soak.fleet_ok(CLEAN, unreported)
    silent = soak.fleet_health(result([device("a"), device("b", first=None, nxt=None), device("c", 3, 3)]), 3)
    assert silent["without_window"] == 2 and silent["without_window_devices"] == ["b", "c"]
    assert not soak.fleet_ok(CLEAN, silent)
    died = soak.fleet_health(result([device("a"), device("b")], device_errors={"b": "crashed"}), 2)
    assert died["died"] == 1 and not soak.fleet_ok(CLEAN, died)
    broken_worker = soak.fleet_health(result([device("a")], failures={"1": "exit 9"}), 1)
    assert not soak.fleet_ok(CLEAN, broken_worker)
    assert not soak.fleet_ok({**CLEAN, "missing": 1}, soak.fleet_health(healthy, 2))
