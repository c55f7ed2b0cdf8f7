"""The audio and the bundle ``bench_agent.py`` measures with (parent process only: imports the lab).

Streams are composed from espeak-ng speech (four voices, resampled by sox without dither, so the
same seed gives the same files), over -60 dBFS noise, written as 16-bit 16 kHz WAV like a
recording: ``typical`` (commands and sentences, about a third of the time speech),
``speech`` (read sentences back to back, as continuous as speech gets) and ``silence90``
(isolated words, about 10 % of the time).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

SENTENCES = ("Turn the kitchen lights on.", "Set a timer for ten minutes.", "What is the weather like tomorrow morning?",
             "Play some quiet music in the living room.", "Go back to the previous song.",
             "Turn the volume down a little.", "Open the garage door and switch off the heating.",
             "Call mum on her mobile phone.", "Remind me to water the plants at six.",
             "Start the washing machine when the power is cheap.", "Left, right, up and down.")
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VOICES = (("en-us", 160), ("en-gb", 150), ("en-us+f3", 170), ("en-gb+m3", 140))
STREAMS = ("typical", "speech", "silence90")
NOISE_DBFS = -60.0


def espeak(text: str, folder: Path, name: str, voice: str, speed: int) -> np.ndarray:
    """One utterance, trimmed of espeak-ng's leading and trailing silence."""
    from shared.audio import read_wav

    raw, wav = folder / f"{name}.raw.wav", folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True,
                   capture_output=True)
    x = read_wav(wav)
    loud = np.flatnonzero(np.abs(x) > 0.005)
    return x[loud[0]:loud[-1] + 1]


def speech_pool(folder: Path) -> dict[str, list[np.ndarray]]:
    pool: dict[str, list[np.ndarray]] = {"sentences": [], "words": []}
    for v, (voice, speed) in enumerate(VOICES):
        pool["sentences"] += [espeak(t, folder, f"s{v}-{i}", voice, speed) for i, t in enumerate(SENTENCES)]
        pool["words"] += [espeak(w, folder, f"w{v}-{w}", voice, speed) for w in WORDS]
    return pool


def compose(pool: dict, kind: str, seconds: float, seed: int) -> tuple[np.ndarray, float]:
    """A stream of ``kind``; returns it and the share of its samples that are speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    out = rng.normal(0.0, 10 ** (NOISE_DBFS / 20), n).astype(np.float32)
    pos, speech = 16000, 0
    while True:
        if kind == "silence90":
            clip, pause = pool["words"][rng.integers(len(pool["words"]))], rng.uniform(8.0, 10.0)
        elif kind == "typical":
            source = pool["sentences"] if rng.random() < 0.6 else pool["words"]
            clip, pause = source[rng.integers(len(source))], rng.uniform(1.0, 3.0)
        else:  # read aloud: sentence after sentence, short breaths between
            clip, pause = pool["sentences"][rng.integers(len(pool["sentences"]))], None
        if pos + len(clip) > n:
            break
        out[pos:pos + len(clip)] += rng.uniform(0.3, 0.9) * clip
        speech += len(clip)
        pos += len(clip) + (int(len(clip) * pause) if pause else int(rng.uniform(0.15, 0.4) * 16000))
    return out, speech / n


def make_streams(folder: Path, seconds: float) -> dict[str, dict]:
    from shared.audio import write_wav

    pool = speech_pool(folder)
    streams = {}
    for seed, kind in enumerate(STREAMS):
        x, share = compose(pool, kind, seconds, seed)
        path = folder / f"{kind}.wav"
        write_wav(path, x)
        streams[kind] = {"path": str(path), "seconds": len(x) / 16000, "speech_share": round(share, 3)}
    write_wav(folder / "warmup.wav", compose(pool, "typical", 30.0, 99)[0])  # run once, untimed, by each child
    return streams


def train_lab_bundle(folder: Path) -> tuple[Path, Path, str]:
    """A small bundle from the model lab with ``harken model train``'s default hyperparameters:
    the default feature graph and network (what a device runs), a small espeak-ng dataset."""
    from cloud.lab import pipeline, train
    from cloud.lab.fixtures import tiny_dataset
    from shared import keys

    tiny_dataset(folder / "data", per_word=10)
    private, public = keys.generate_keypair(folder / "keys")
    path = folder / "lab.hkb"
    pipeline.run(pipeline.TrainRequest(data_dir=str(folder / "data"), out=str(path),
                                       private_key=keys.load_private_key(private), name="bench-lab", record_run=False,
                                       hyperparameters=train.Hyperparameters()))
    return path, Path(public), "model lab, default hyperparameters, tiny espeak-ng dataset (6 speakers x 10 per word)"


def random_head_bundle(folder: Path) -> tuple[Path, Path, str]:
    """The lab's feature graph in front of a random linear head (``--lab-graph``)."""
    import io

    import onnxruntime as ort
    from onnx import TensorProto, compose as onnx_compose, helper, numpy_helper

    from cloud.lab import graph as G
    from shared import keys
    from shared.audio import to_int16
    from shared.bundle import write_bundle
    from shared.gate import GateConfig, cut_clip, place
    from shared.levels import level_dbfs, snr_db
    from shared.profile import build_profile

    pool = speech_pool(folder)
    utterances = [u.samples for u in (cut_clip(np.pad(w, 8000)) for w in pool["words"]) if u is not None]
    feat = G.feature_model()
    dim = feat.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    n_feat = feat.graph.output[1].type.tensor_type.shape.dim[1].dim_value
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.05, (dim, len(WORDS))).astype(np.float32),
                                "head_w")
    head = helper.make_graph(
        [helper.make_node("MatMul", [G.POOLED, "head_w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)], "head",
        [helper.make_tensor_value_info(G.POOLED, TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(WORDS)])], [w])
    head_model = helper.make_model(head, opset_imports=[helper.make_opsetid("", G.OPSET)])
    head_model.ir_version = feat.ir_version
    merged = onnx_compose.merge_models(feat, head_model, io_map=[(G.POOLED, G.POOLED)],
                                       outputs=["label", "probabilities", G.FEATURES])
    model_bytes = merged.SerializeToString()
    placed = to_int16(np.stack([place(u, 16000, "centre") for u in utterances])).astype(np.float32) / 32768
    label, probs, feats = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(
        ["label", "probabilities", G.FEATURES], {"audio": placed})
    names = [f"f{j}" for j in range(n_feat)]
    profile = build_profile(feats, names, utterance_ms=[len(u) / 16 for u in utterances],
                            level_dbfs=[level_dbfs(u) for u in utterances], snr_db=[snr_db(u) for u in utterances],
                            confidence=probs.max(axis=1), labels=label, label_names=list(WORDS))
    buf = io.BytesIO()
    np.save(buf, to_int16(placed[:3]))
    manifest = {"name": "bench-lab-graph", "version": "0.0.1", "labels": list(WORDS), "sample_rate": 16000,
                "input_samples": 16000, "placement": "centre", "opset": {"": G.OPSET},
                "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": G.FEATURES},
                "confidence_threshold": float(np.median(probs.max(axis=1))), "feature_names": names,
                "profile": profile, "gate": GateConfig().to_dict(),
                "test_vectors": {"file": "test_vectors.npy", "atol": 1e-4, "expected": [
                    {"label": WORDS[int(label[i])], "probabilities": probs[i].tolist()} for i in range(3)]}}
    private, public = keys.generate_keypair(folder / "keys")
    path = folder / "lab-graph.hkb"
    write_bundle(path, model_bytes, manifest, keys.load_private_key(private), {"test_vectors.npy": buf.getvalue()})
    return path, Path(public), "model lab feature graph (log-mel via DFT matmuls) + random linear head"
