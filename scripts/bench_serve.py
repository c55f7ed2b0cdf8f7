"""Benchmark ``harken serve`` over real HTTP against calling the same bundle in-process, in one run.

    .venv/bin/python scripts/bench_serve.py [--lab-graph] [--clients 8] [--requests 400] [--words 2]

Builds a signed bundle (the test model of ``tests/edge/conftest.py``, or with ``--lab-graph`` the
lab's real feature graph with a random head: what a lab model costs) and short espeak-ng clips
(``--words`` words each, as a thin client sends a command). Then, in the same run:

- in-process: this process starts ``edge.serve.service.Service`` (the same agent, gate, bundle and
  per-request stream as the server) and calls ``predict`` on each clip in turn;
- HTTP: ``harken serve`` runs as a child process on a free loopback port; ``--clients`` threads
  with keep-alive connections POST the same clips, ``--requests`` in all.

Every HTTP answer must be 200 and carry exactly the decisions the in-process call gave for that
clip; otherwise the script prints what failed and no figure, and exits 1. Prints one JSON object:
machine, versions, requests/s and p50/p99 latency of both, and the server's own time per request
(waiting for the model, and running the gate and the model).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_agent import _versions, make_bundle  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
WARMUP = 10


def make_clips(folder: Path, n_clips: int, words: int) -> list[bytes]:
    """``n_clips`` WAV files of ``words`` espeak-ng words with short pauses, as bytes."""
    from shared.audio import write_wav
    from tests.edge import conftest as C

    cache: dict = {}

    def say(text, speed=150, voice="en-us"):
        if (text, speed, voice) not in cache:
            cache[(text, speed, voice)] = C._speak(folder, text, speed, voice)
        return cache[(text, speed, voice)].copy()

    clips = []
    for seed in range(n_clips):
        x, _ = C.make_stream(say, words, seed=100 + seed, gap_s=(0.3, 0.6))
        path = folder / f"clip{seed}.wav"
        write_wav(path, x)
        clips.append(path.read_bytes())
    return clips


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(latencies_s: list[float], wall_s: float) -> dict:
    ms = np.asarray(latencies_s) * 1000.0
    return {"requests": len(ms), "requests_per_s": round(len(ms) / wall_s, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def _decisions(answer: dict) -> list[tuple]:
    return [(u["start_s"], u["end_s"], u["label"], u["confidence"], u["action"]) for u in answer["utterances"]]


def serve_settings(folder: Path, bundle: Path, key: Path, max_pending: int) -> dict:
    token = folder / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    return {"device_id": "bench-serve", "bundle": str(bundle), "trust_keys": [str(key)],
            "http_token_file": str(token), "http_max_pending": max_pending}


def in_process(settings: dict, state: Path, clips: list[bytes], n: int) -> tuple[dict, list]:
    """The same Service the server runs, called directly; returns (figures, decisions per clip)."""
    from edge.serve.config import load_serve_config
    from edge.serve.service import Service

    service = Service(load_serve_config(env={}, overrides={**settings, "state_dir": str(state)})).start()
    try:
        expected = [_decisions(service.predict(c, "wav", time.monotonic() + 60)) for c in clips]
        for i in range(WARMUP):
            service.predict(clips[i % len(clips)], "wav", time.monotonic() + 60)
        latencies = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            answer = service.predict(clips[i % len(clips)], "wav", time.monotonic() + 60)
            latencies.append(time.perf_counter() - t)
            if _decisions(answer) != expected[i % len(clips)]:
                raise SystemExit(f"in-process request {i} gave other decisions than the first call on its clip")
        wall = time.perf_counter() - t0
    finally:
        service.stop()
    return _stats(latencies, wall), expected


def start_server(settings: dict, state: Path, port: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "shared.cli", "serve", "--state-dir", str(state), "--http-port", str(port)]
    for name, value in settings.items():
        for v in (value if isinstance(value, list) else [value]):
            args += ["--" + name.replace("_", "-"), str(v)]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"harken serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("harken serve did not become ready in 120 s")


def over_http(port: int, clips: list[bytes], expected: list, n: int, clients: int) -> tuple[dict, dict, list]:
    """``clients`` threads POST ``n`` requests in all; returns (figures, server processing, failures)."""
    import httpx

    url, headers = f"http://127.0.0.1:{port}/v1/predict", {"Authorization": f"Bearer {TOKEN}",
                                                            "Content-Type": "audio/wav"}
    latencies: list[float] = []
    processing: list[float] = []
    failures: list[str] = []
    lock, start = threading.Lock(), threading.Barrier(clients + 1)
    counter = iter(range(n))

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(WARMUP // clients + 1):
                http.post(url, content=clips[i % len(clips)], headers=headers)
            start.wait()
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    r = http.post(url, content=clips[i % len(clips)], headers=headers)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"request {i}: {exc!r}")
                    continue
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code != 200:
                        failures.append(f"request {i}: HTTP {r.status_code} {r.text[:200]}")
                    elif _decisions(r.json()) != expected[i % len(clips)]:
                        failures.append(f"request {i}: decisions differ from the in-process call")
                    else:
                        latencies.append(dt)
                        processing.append((r.json()["queued_ms"], r.json()["processing_ms"]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if len(latencies) != n and not failures:
        failures.append(f"{n - len(latencies)} requests have no answer")
    server = {name: {f"p{q}_ms": round(float(np.percentile(col, q)), 2) for q in (50, 99)}
              for name, col in zip(("queued", "processing"), np.asarray(processing).T)} if processing else {}
    return (_stats(latencies, wall) if latencies else {}), server, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab-graph", action="store_true", help="the lab's feature graph (a lab model's cost)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--words", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="harken-bench-serve-") as tmp:
        folder = Path(tmp)
        bundle, key, what = make_bundle(folder, args.lab_graph)
        clips = make_clips(folder, args.clips, args.words)
        settings = serve_settings(folder, bundle, key, max_pending=max(16, 2 * args.clients))
        local, expected = in_process(settings, folder / "state-local", clips, args.requests)
        port = _free_port()
        proc = start_server(settings, folder / "state-http", port)
        try:
            http, processing, failures = over_http(port, clips, expected, args.requests, args.clients)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if failures:
        print(f"bench_serve: {len(failures)} request(s) failed; no figures:\n  " + "\n  ".join(failures[:10]),
              file=sys.stderr)
        return 1
    audio_s = [len(c) / 32000 for c in clips]
    print(json.dumps({
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)},
        "versions": _versions(), "bundle": what, "clients": args.clients,
        "clip_audio_s": {"mean": round(float(np.mean(audio_s)), 2), "max": round(float(max(audio_s)), 2)},
        "utterances_per_clip": round(float(np.mean([len(e) for e in expected])), 2),
        "http": http, "http_server_side": processing, "in_process": local,
        "http_vs_in_process": {"requests_per_s": round(http["requests_per_s"] / local["requests_per_s"], 3),
                               "p50": round(http["p50_ms"] / local["p50_ms"], 3),
                               "p99": round(http["p99_ms"] / local["p99_ms"], 3)},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
