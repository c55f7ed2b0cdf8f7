"""Benchmark the agent's core pipeline against a bare webrtcvad + onnxruntime loop.

    .venv/bin/python scripts/bench_agent.py [--bundle B.hkb (--trust-key signing.pub | --no-verify)]
                                            [--lab-graph] [--seconds 60] [--repeat 3]

Without ``--bundle`` it builds the small signed test bundle of ``tests/edge/conftest.py``;
``--lab-graph`` puts the model lab's real feature graph (log-mel by DFT matmuls) in front of
a random linear head instead, so the model costs what a lab model costs. Speech is made with
espeak-ng. Each measurement runs in a child process pinned to one core that imports only
what a device imports, so RSS is the device's. Prints one JSON object: machine, versions,
and each figure beside its baseline and target.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT = ("Turn the kitchen lights on. Set a timer for ten minutes. What is the weather like tomorrow "
        "morning? Play some quiet music in the living room. Stop. Go back to the previous song. "
        "Turn the volume down a little. Open the garage door and switch off the heating. "
        "Call mum on her mobile phone. Remind me to water the plants at six. Yes. No. "
        "Left, right, up and down. Start the washing machine when the power is cheap. ")
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


# ---------------------------------------------------------------------------- parent: data

def espeak(text: str, folder: Path, name: str, speed: int = 160, voice: str = "en-us") -> np.ndarray:
    from shared.audio import read_wav

    raw, wav = folder / f"{name}.raw.wav", folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True, capture_output=True)
    return read_wav(wav)


def make_audio(folder: Path, seconds: float) -> dict[str, Path]:
    """Continuous read speech, and the same length at 90 % silence (isolated words in low noise)."""
    from shared.audio import write_wav

    rng = np.random.default_rng(0)
    n = int(seconds * 16000)
    parts, total, voices = [], 0, ("en-us", "en-gb", "en-us+f3", "en-gb+m3")
    while total < n:
        x = espeak(TEXT, folder, f"read{len(parts)}", speed=150 + 10 * len(parts), voice=voices[len(parts) % 4])
        parts.append(x)
        total += len(x)
    speech = np.concatenate(parts)[:n]
    quiet = rng.normal(0, 10 ** (-60 / 20), n).astype(np.float32)
    words = [espeak(w, folder, f"w-{w}") for w in WORDS]
    pos, voiced = 16000, 0
    while voiced < 0.1 * n and pos < n - 16000:
        w = words[rng.integers(len(words))]
        quiet[pos:pos + len(w)] += 0.8 * w
        voiced += len(w)
        pos += int(10 * len(w) * rng.uniform(0.8, 1.2))
    speech = speech + rng.normal(0, 10 ** (-60 / 20), n).astype(np.float32)
    paths = {"speech": folder / "speech.wav", "silence90": folder / "silence90.wav"}
    write_wav(paths["speech"], speech)
    write_wav(paths["silence90"], quiet)
    return paths


def make_bundle(folder: Path, lab_graph: bool) -> tuple[Path, Path, str]:
    from shared import keys
    from tests.edge import conftest as C

    priv, pub = keys.generate_keypair(folder / "keys")
    cache: dict = {}

    def say(text, speed=150, voice="en-us"):
        if (text, speed, voice) not in cache:
            cache[(text, speed, voice)] = C._speak(folder, text, speed, voice)
        return cache[(text, speed, voice)].copy()

    path = folder / "bench.hkb"
    utterances = C.calibration_utterances(say)
    if not lab_graph:
        C.make_test_bundle(path, keys.load_private_key(priv), utterances)
        return path, pub, "tests/edge/conftest.py test bundle (band energies + linear head)"
    make_lab_graph_bundle(path, keys.load_private_key(priv), utterances)
    return path, pub, "cloud.lab.graph feature graph (log-mel via DFT matmuls) + random linear head"


def make_lab_graph_bundle(path: Path, private_key, utterances) -> None:
    """The lab's feature graph (its real cost) composed with a random softmax head on ``pooled``."""
    import io

    import onnxruntime as ort
    from onnx import TensorProto, compose, helper, numpy_helper

    from cloud.lab import graph as G
    from shared.audio import to_int16
    from shared.bundle import write_bundle
    from shared.gate import GateConfig, place
    from shared.levels import level_dbfs, snr_db
    from shared.profile import build_profile
    from tests.edge.conftest import WORDS as LABELS

    feat = G.feature_model()
    dim = feat.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    n_feat = feat.graph.output[1].type.tensor_type.shape.dim[1].dim_value
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (dim, len(LABELS))).astype(np.float32), "head_w")
    head = helper.make_graph(
        [helper.make_node("MatMul", [G.POOLED, "head_w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)], "head",
        [helper.make_tensor_value_info(G.POOLED, TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(LABELS)])], [w])
    head_model = helper.make_model(head, opset_imports=[helper.make_opsetid("", G.OPSET)])
    head_model.ir_version = feat.ir_version
    merged = compose.merge_models(feat, head_model, io_map=[(G.POOLED, G.POOLED)],
                                  outputs=["label", "probabilities", G.FEATURES])
    model_bytes = merged.SerializeToString()
    placed = to_int16(np.stack([place(u, 16000, "centre") for u in utterances])).astype(np.float32) / 32768
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    label, probs, feats = sess.run(["label", "probabilities", G.FEATURES], {"audio": placed})
    names = [f"f{j}" for j in range(n_feat)]
    profile = build_profile(feats, names, utterance_ms=[len(u) / 16 for u in utterances],
                            level_dbfs=[level_dbfs(u) for u in utterances], snr_db=[snr_db(u) for u in utterances],
                            confidence=probs.max(axis=1), labels=label, label_names=list(LABELS))
    buf = io.BytesIO()
    np.save(buf, to_int16(placed[:3]))
    manifest = {"name": "bench-lab-graph", "version": "0.0.1", "labels": list(LABELS), "sample_rate": 16000,
                "input_samples": 16000, "placement": "centre", "opset": {"": G.OPSET},
                "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": G.FEATURES},
                "confidence_threshold": float(np.median(probs.max(axis=1))), "feature_names": names,
                "profile": profile, "gate": GateConfig().to_dict(),
                "test_vectors": {"file": "test_vectors.npy", "atol": 1e-4, "expected": [
                    {"label": LABELS[int(label[i])], "probabilities": probs[i].tolist()} for i in range(3)]}}
    write_bundle(path, model_bytes, manifest, private_key, {"test_vectors.npy": buf.getvalue()})


# ---------------------------------------------------------------------------- children

def _pin_one_core() -> int | None:
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return core
    except (AttributeError, OSError):
        return None


def _best_cpu(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _quantiles(values) -> dict:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3), "n": len(a)}


def child_agent(args) -> dict:
    from edge.decisions import CallbackSink
    from edge.pipeline import Pipeline, StaticModels
    from edge.replay import load_model
    from edge.windows import process_rss_mb
    from shared.audio import read_wav
    from shared.codec import encode
    from shared.gate import GateConfig

    core = _pin_one_core()
    gate_class = None
    if args.gate_class:
        import importlib

        module, _, name = args.gate_class.partition(":")
        gate_class = getattr(importlib.import_module(module), name)
    model = load_model(args.bundle, public_keys=[args.trust_key] if args.trust_key else None,
                       verify=args.trust_key is not None)
    out: dict = {"core": core, "audio": {}}
    spans: dict[str, list] = {}
    for name, path in (("speech", args.speech), ("silence90", args.silence)):
        x = read_wav(path)
        state: dict = {}

        def run(chunk=4096, sink=None, on_inference=None):
            windows = []
            p = Pipeline(device="bench", boot=1, agent_version="bench", gate_config=GateConfig(), automation="partial",
                         models=StaticModels(model), sink=sink, on_window=windows.append, on_inference=on_inference)
            if gate_class is not None:  # evaluating another gate implementation
                p.gate = gate_class(GateConfig())
            for i in range(0, len(x), chunk):
                state["t_feed"] = time.perf_counter()
                p.feed(x[i:i + chunk])
            p.flush()
            state["windows"], state["pipeline"] = windows, p

        cpu = _best_cpu(run, args.repeat)
        sizes = [len(encode(w)) for w in state["windows"]]
        lat, found, model_ms = [], [], []

        def on_decision(d):  # latency from the arrival of the 30 ms chunk that ended the utterance
            lat.append((time.perf_counter() - state["t_feed"]) * 1000.0)
            found.append((round(d.audio_start_s * 16000), round(d.audio_end_s * 16000)))

        run(chunk=480, sink=CallbackSink(on_decision), on_inference=lambda sha, ms, err: model_ms.append(ms))
        spans[name] = found
        out["audio"][name] = {
            "seconds": len(x) / 16000, "cpu_s": round(cpu, 4), "rtf": round(len(x) / 16000 / cpu, 1),
            "utterances": state["pipeline"].stats["utterances"], "inferences": state["pipeline"].stats["inferences"],
            "decision_latency_ms": _quantiles(lat), "inference_ms": _quantiles(model_ms), "window_bytes_max": max(sizes),
            "window_bytes_mean": round(float(np.mean(sizes)), 1), "windows": len(sizes)}
    out["rss_mb"] = round(process_rss_mb(), 1)
    out["model_warmup_ms"] = round(model.warmup_ms, 2)
    Path(args.spans).write_text(json.dumps(spans))
    return out


def child_bare(args) -> dict:
    """webrtcvad on every 30 ms frame + onnxruntime on each utterance the agent found: the floor."""
    import onnxruntime as ort
    import webrtcvad

    from edge.model import session_options
    from edge.windows import process_rss_mb
    from shared.audio import read_wav, to_int16
    from shared.bundle import load_bundle
    from shared.gate import place

    core = _pin_one_core()
    bundle = load_bundle(args.bundle, None, require_signature=False)
    sess = ort.InferenceSession(bundle.model_bytes, session_options(), providers=["CPUExecutionProvider"])
    io = bundle.manifest["io"]
    names = [io["label"], io["probabilities"], io["features"]]
    sess.run(names, {io["input"]: np.zeros((1, 16000), dtype=np.float32)})
    spans = json.loads(Path(args.spans).read_text())
    out: dict = {"core": core, "audio": {}}
    for name, path in (("speech", args.speech), ("silence90", args.silence)):
        x = read_wav(path)
        vad = webrtcvad.Vad(2)
        lat: list[float] = []

        def run():  # frames and inferences interleaved, as they happen on a live stream
            pcm = to_int16(x).tobytes()
            lat.clear()
            ends = {b // 480: (a, b) for a, b in spans[name]}  # the frame that ends each utterance
            for k, i in enumerate(range(0, len(pcm) - 959, 960)):
                vad.is_speech(pcm[i:i + 960], 16000)
                if k in ends:
                    a, b = ends[k]
                    t0 = time.perf_counter()
                    sess.run(names, {io["input"]: place(x[a:b], 16000, "centre")[None, :]})
                    lat.append((time.perf_counter() - t0) * 1000.0)

        cpu = _best_cpu(run, args.repeat)
        out["audio"][name] = {"cpu_s": round(cpu, 4), "rtf": round(len(x) / 16000 / cpu, 1),
                              "inferences": len(spans[name]), "inference_ms": _quantiles(lat)}
    out["rss_mb"] = round(process_rss_mb(), 1)
    return out


# ---------------------------------------------------------------------------- report

def _versions() -> dict:
    import onnxruntime

    from importlib.metadata import PackageNotFoundError, version

    def dist(*names):
        for n in names:
            try:
                return version(n)
            except PackageNotFoundError:
                continue
        return None

    return {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "webrtcvad": dist("webrtcvad", "webrtcvad-wheels"),
            "espeak-ng": subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()}


def _child(mode: str, args, bundle: Path, key: Path | None, audio: dict, spans: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--bundle", str(bundle), "--speech", str(audio["speech"]),
           "--silence", str(audio["silence90"]), "--spans", str(spans), "--repeat", str(args.repeat)]
    if key is not None:
        cmd += ["--trust-key", str(key)]
    if args.gate_class:
        cmd += ["--gate-class", args.gate_class]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout)


def figure(value, baseline, target: str, ok: bool) -> dict:
    return {"value": value, "baseline": baseline, "target": target, "ok": bool(ok)}


def report(agent: dict, bare: dict) -> dict:
    a, b = agent["audio"], bare["audio"]
    lat = a["speech"]["decision_latency_ms"]
    ratio = {k: round(a[k]["cpu_s"] / b[k]["cpu_s"], 3) for k in a}
    return {
        "rtf_speech": figure(a["speech"]["rtf"], b["speech"]["rtf"], ">= 300 (baseline: bare loop)",
                             a["speech"]["rtf"] >= 300),
        "rtf_silence90": figure(a["silence90"]["rtf"], b["silence90"]["rtf"], ">= 2000 (baseline: bare loop)",
                                a["silence90"]["rtf"] >= 2000),
        "time_vs_bare_loop_speech": figure(ratio["speech"], 1.0, "<= 1.25", ratio["speech"] <= 1.25),
        "time_vs_bare_loop_silence90": figure(ratio["silence90"], 1.0, "<= 1.25", ratio["silence90"] <= 1.25),
        "inference_p50_ms": figure(a["speech"]["inference_ms"]["p50"], b["speech"]["inference_ms"]["p50"],
                                   "(baseline: bare session.run)", True),
        "decision_latency_p50_ms": figure(lat["p50"], b["speech"]["inference_ms"]["p50"],
                                          "(baseline: bare session.run)", True),
        "decision_latency_p99_ms": figure(lat["p99"], b["speech"]["inference_ms"]["p99"], "<= 10",
                                          lat["p99"] is not None and lat["p99"] <= 10),
        "steady_rss_mb": figure(agent["rss_mb"], bare["rss_mb"], "<= 120 (baseline: bare loop process)",
                                agent["rss_mb"] <= 120),
        "window_bytes_max": figure(max(a[k]["window_bytes_max"] for k in a), None, "<= 1024",
                                   max(a[k]["window_bytes_max"] for k in a) <= 1024),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--trust-key", type=Path)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--lab-graph", action="store_true")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gate-class", help="MODULE:CLASS of a VadGate variant to measure instead of shared.gate's")
    ap.add_argument("--child", choices=["agent", "bare"])
    ap.add_argument("--speech", type=Path)
    ap.add_argument("--silence", type=Path)
    ap.add_argument("--spans", type=Path)
    args = ap.parse_args()
    if args.child:
        print(json.dumps((child_agent if args.child == "agent" else child_bare)(args)))
        return
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        folder = Path(tmp)
        audio = make_audio(folder, args.seconds)
        if args.bundle:
            bundle, key, what = args.bundle, (None if args.no_verify else args.trust_key), f"given: {args.bundle}"
        else:
            bundle, key, what = make_bundle(folder, args.lab_graph)
        spans = folder / "spans.json"
        agent = _child("agent", args, bundle, key, audio, spans)
        bare = _child("bare", args, bundle, key, audio, spans)
    print(json.dumps({
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "pinned_core": agent["core"],
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "versions": _versions(), "bundle": what, "gate": args.gate_class or "shared.gate.VadGate", "seconds": args.seconds, "repeat": args.repeat,
        "figures": report(agent, bare), "agent": agent, "bare_loop": bare,
    }, indent=1))


if __name__ == "__main__":
    main()
