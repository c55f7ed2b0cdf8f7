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


def test_bench_agent_bare_latency_runs_the_model_on_each_closed_utterance_when_its_closing_frame_arrives(tmp_path):
    from shared.audio import WavReader, write_wav
    from shared.gate import place

    loops = load_script("bench_agent_loops")
    rng = np.random.default_rng(3)
    audio = rng.normal(0, 0.1, 16000).astype(np.float32)  # 33 full frames and a partial one
    path = tmp_path / "a.wav"
    write_wav(path, audio)
    with WavReader(path) as reader:
        pcm = reader.read_all()  # float32, x / 32768 of the stored int16
    runs = []

    class Session:
        def run(self, names, feed):
            runs.append(feed["audio"].copy())

    closes = [[960, 4800, 9600], [9600, 12000, 14400], [0, 480, 15999]]  # the last closes on no frame edge
    out = loops.bare_latency(Session(), ["label"], "audio", 8000, "centre", str(path), closes, 2, pace=1000.0)
    assert out["inferences"] == len(runs) == 2 and len(out["processing_ms"]) == len(out["processing_cpu_ms"]) == 2
    assert all(cpu >= 0 and wall >= 0 for wall, cpu in zip(out["processing_ms"], out["processing_cpu_ms"]))
    for got, (start, end, _) in zip(runs, closes):  # the utterance's own samples, placed as the agent places them
        np.testing.assert_array_equal(got[0], place(pcm[start:end], 8000, "centre"))


def test_bench_agent_paced_frames_come_no_faster_than_the_pace(tmp_path):
    import time

    from shared.audio import write_wav

    loops = load_script("bench_agent_loops")
    path = tmp_path / "a.wav"
    write_wav(path, np.zeros(480 * 20, dtype=np.float32))
    t0 = time.perf_counter()
    frames = list(loops.paced_frames(str(path), pace=10.0))  # 30 ms frames every 3 ms
    assert len(frames) == 20 and all(len(f) == 480 and f.dtype == np.int16 for f in frames)
    assert time.perf_counter() - t0 >= 19 * 0.003


def test_bench_agent_refuses_a_baseline_that_ran_other_code_or_other_work(tmp_path):
    bench = load_script("bench_agent")
    old_code = tmp_path / "old"

    def run(code, spans=((0, 480),), decisions=1, cpu=1.0) -> dict:
        stream = {"spans": [list(s) for s in spans], "cpu_s": cpu, "latency": {
            "decisions": decisions, "processing_ms": [1.0], "processing_cpu_ms": [1.0]}}
        return {"code": str(code), "rss_mb": 90.0, "streams": {"typical": stream}}

    streams, agents, bares = {"typical": {"seconds": 60.0}}, [run(bench.ROOT)], [run("", cpu=0.8)]
    got = bench.baseline(old_code, streams, agents, bares, [run(old_code, cpu=1.1)])
    assert got["typical"]["this_code_speedup"] == 1.1 and got["typical"]["ratio_to_bare"] == 1.375
    for olds, says in (([run(bench.ROOT)], "not"), ([run(old_code, spans=((0, 960),))], "other utterances"),
                       ([run(old_code, decisions=2)], "other decisions")):
        with pytest.raises(SystemExit, match=says):
            bench.baseline(old_code, streams, agents, bares, olds)
