"""Benchmark field samples: what uploading costs the agent, and how fast the collector stores clips.

    .venv/bin/python scripts/bench_samples.py [--seconds 60] [--clips 300] [--repeat 3]

Agent: the pipeline over espeak-ng speech with the small signed test bundle of
``tests/edge/conftest.py``, once without field samples (the baseline) and once opted in with a
real on-disk sample spool (low-confidence and audit clips, default caps); the figure is the
extra time per utterance and per clip. Collector: ``--clips`` real speech clips (64 KiB chunks)
through the ingest handler, one SQLite commit per batch of 50 messages and the assembler (file
written under its sha256, row stored), beside the baseline of only hashing and writing the same
files. Prints one JSON object; refuses to print a figure when no clip was queued or stored.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def speech(folder: Path, seconds: float) -> np.ndarray:
    from tests.edge.conftest import _speak, make_stream

    cache: dict = {}

    def say(text, speed=150, voice="en-us"):
        if (text, speed, voice) not in cache:
            cache[(text, speed, voice)] = _speak(folder, text, speed, voice)
        return cache[(text, speed, voice)].copy()

    x, _ = make_stream(say, max(4, int(seconds / 1.6)), seed=5)
    return x, say


def run_agent(x, model, folder: Path, opted_in: bool, repeat: int) -> dict:
    from edge.decisions import ListSink
    from edge.pipeline import Pipeline, StaticModels
    from edge.samples import SampleSettings, SampleUploader
    from edge.spool import Spool
    from shared.gate import GateConfig
    from shared.topics import Topics

    best, last = None, None
    for i in range(repeat):
        spool = Spool(folder / f"samples-{opted_in}-{i}.db", 256 * 1024 * 1024) if opted_in else None
        sampler = SampleUploader(SampleSettings(opt_in=True), device="bench", topics=Topics(),
                                 put=spool.put_many) if opted_in else None
        p = Pipeline(device="bench", boot=1, agent_version="bench", gate_config=GateConfig(), automation="partial",
                     models=StaticModels(model), sink=ListSink(), on_window=lambda w: None, sampler=sampler)
        t0 = time.perf_counter()
        for j in range(0, len(x), 4096):
            p.feed(x[j:j + 4096])
        p.flush()
        dt = time.perf_counter() - t0
        if best is None or dt < best:
            best = dt
        last = {"utterances": p.stats["utterances"], "clips": sampler.stats["queued"] if sampler else 0,
                "clip_bytes": sampler.stats["queued_bytes"] if sampler else 0,
                "spool_messages": len(spool) if spool else 0}
        if spool:
            spool.close()
    return {"seconds": best, **last}


def run_collector(clips: list[bytes], folder: Path) -> dict:
    from cloud.ingest_handler import IngestHandler
    from cloud.samples.assemble import Assembler
    from cloud.samples.files import SampleFiles
    from cloud.store import Batch, open_store
    from shared import samples as wire
    from shared.topics import Topics

    store = open_store(f"sqlite:///{folder / 'bench.db'}")
    handler, topics = IngestHandler(Topics()), Topics()
    assembler = Assembler(store, SampleFiles(folder / "samples"))
    messages = []
    for i, wav in enumerate(clips):
        meta = {"reason": "low_confidence", "captured_t": 1.0 + i, "duration_ms": 1000.0 * (len(wav) - 44) / 32000,
                "model": "ab" * 32, "label": "yes", "confidence": 0.3}
        messages += wire.messages(topics, f"dev-{i % 50}", wav, meta)
    t0 = time.perf_counter()
    for i in range(0, len(messages), 50):
        batch = Batch()
        for topic, payload in messages[i:i + 50]:
            handler.add(batch, topic, payload, 1000.0)
        assembler.assemble(store.write(batch).samples_ready)
    dt = time.perf_counter() - t0
    stored = store.sample_summary()["total"]
    store.close()
    baseline = SampleFiles(folder / "baseline")
    t0 = time.perf_counter()
    import hashlib
    for wav in clips:
        baseline.write(hashlib.sha256(wav).hexdigest(), wav)
    return {"seconds": dt, "stored": stored, "messages": len(messages), "files_only_seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from edge.model import LoadedModel
    from shared.audio import wav_bytes
    from shared import keys
    from shared.audio import to_int16
    from shared.bundle import load_bundle
    from shared.gate import GateConfig, cut_clip
    from tests.edge.conftest import calibration_utterances, make_test_bundle

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x, say = speech(folder, args.seconds)
        priv, pub = keys.generate_keypair(folder / "keys")
        make_test_bundle(folder / "b.hkb", keys.load_private_key(priv), calibration_utterances(say))
        model = LoadedModel.from_bundle(load_bundle(folder / "b.hkb", [keys.load_public_key(pub)]))
        off = run_agent(x, model, folder, False, args.repeat)
        on = run_agent(x, model, folder, True, args.repeat)
        if on["clips"] == 0:
            raise SystemExit("no clip was queued: the agent figure would measure nothing")
        words = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
        clips = [wav_bytes(to_int16(cut_clip(say(w, s), GateConfig()).samples))
                 for w in words for s in range(120, 240, 4)][:args.clips]
        coll = run_collector(clips, folder)
        if coll["stored"] != len(clips):
            raise SystemExit(f"the collector stored {coll['stored']} of {len(clips)} clips: no figure")
    audio_s = len(x) / 16000
    print(json.dumps({
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "agent": {"audio_s": round(audio_s, 1), "utterances": on["utterances"], "clips_queued": on["clips"],
                  "clip_bytes": on["clip_bytes"], "spool_messages": on["spool_messages"],
                  "baseline_s_per_audio_s": round(off["seconds"] / audio_s, 5),
                  "opted_in_s_per_audio_s": round(on["seconds"] / audio_s, 5),
                  "extra_ms_per_utterance": round(1000 * (on["seconds"] - off["seconds"]) / on["utterances"], 3),
                  "extra_ms_per_clip": round(1000 * (on["seconds"] - off["seconds"]) / on["clips"], 3)},
        "collector": {"clips": len(clips), "messages": coll["messages"],
                      "mean_clip_bytes": round(sum(map(len, clips)) / len(clips)),
                      "clips_per_s": round(len(clips) / coll["seconds"], 1),
                      "baseline_files_only_clips_per_s": round(len(clips) / coll["files_only_seconds"], 1)},
    }, indent=2))


if __name__ == "__main__":
    main()
