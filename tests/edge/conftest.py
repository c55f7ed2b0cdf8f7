"""Real speech (espeak-ng) and small, valid, signed test bundles for the agent's tests.

The test model is a real ONNX graph built with ``onnx.helper``: ``audio`` [N, 16000] →
framed band energies (``features`` [N, F], log of the mean power in F bands) → a random
linear layer → ``probabilities`` (Softmax) and ``label`` (ArgMax). Its reference profile,
threshold (median confidence) and test vectors come from running it with onnxruntime on
espeak-ng words cut by the real gate, so its histograms are populated like a real one's.
"""
from __future__ import annotations

import io
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from shared import keys
from shared.audio import SAMPLE_RATE, read_wav, to_int16
from shared.bundle import write_bundle
from shared.gate import GateConfig, cut_clip, place
from shared.levels import level_dbfs, snr_db
from shared.profile import build_profile
from shared.release import release_file

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "zero", "one")
INPUT_SAMPLES = 16000
FRAME = 160


def _speak(folder, text: str, speed: int, voice: str = "en-us") -> np.ndarray:
    stem = folder / f"{voice}-{speed}-{text.replace(' ', '_')}"
    raw, wav = stem.with_suffix(".raw.wav"), stem.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
                   check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)],
                   check=True, capture_output=True)
    return read_wav(wav)


@pytest.fixture(scope="session")
def say(tmp_path_factory):
    """``say(text, speed=150, voice="en-us") -> float32 16 kHz`` by espeak-ng, cached."""
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[tuple, np.ndarray] = {}

    def speak(text: str, speed: int = 150, voice: str = "en-us") -> np.ndarray:
        key = (text, speed, voice)
        if key not in cache:
            cache[key] = _speak(folder, text, speed, voice)
        return cache[key].copy()

    return speak


def make_stream(say, n_words: int, seed: int, gap_s=(0.6, 1.4), noise_dbfs: float = -65.0,
                speeds=(140, 160)) -> tuple[np.ndarray, list[str]]:
    """Words separated by quiet noise: a continuous stream like a microphone gives."""
    rng = np.random.default_rng(seed)
    parts, spoken = [], []
    for _ in range(n_words):
        word = WORDS[rng.integers(len(WORDS))]
        gap = int(rng.uniform(*gap_s) * SAMPLE_RATE)
        parts.append(np.zeros(gap, dtype=np.float32))
        parts.append(0.8 * say(word, int(rng.choice(speeds))))
        spoken.append(word)
    parts.append(np.zeros(SAMPLE_RATE, dtype=np.float32))
    x = np.concatenate(parts)
    x += rng.normal(0.0, 10 ** (noise_dbfs / 20), len(x)).astype(np.float32)
    return x.astype(np.float32), spoken


@pytest.fixture(scope="session")
def speech(say):
    """~25 s of continuous speech: 16 words with pauses (and the words, in order)."""
    return make_stream(say, 16, seed=7)


@pytest.fixture(scope="session")
def signing(tmp_path_factory):
    """(private key, public key, public key path) of a fresh Ed25519 pair."""
    priv_path, pub_path = keys.generate_keypair(tmp_path_factory.mktemp("keys"))
    return keys.load_private_key(priv_path), keys.load_public_key(pub_path), pub_path


@pytest.fixture(scope="session")
def release_signing(tmp_path_factory):
    """(private key, public key, public key path) of a release key, apart from the lab's key."""
    priv_path, pub_path = keys.generate_keypair(tmp_path_factory.mktemp("release-keys"), name="release")
    return keys.load_private_key(priv_path), keys.load_public_key(pub_path), pub_path


def release_test_bundle(path, release_key, version: int, *, days: float = 30, **kwargs):
    """Release a bundle file in place, as `harken model release` does (automation up to full)."""
    kwargs.setdefault("max_automation", "full")
    return release_file(path, release_key, version=version, expires_t=time.time() + days * 86400, **kwargs)[0]


# ---------------------------------------------------------------------------- the test graph

def _basis(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    freqs = np.geomspace(150.0, 6000.0, 2 * n_features)
    t = np.arange(FRAME) / SAMPLE_RATE
    win = np.hanning(FRAME)[:, None]
    basis = np.concatenate([win * np.cos(2 * np.pi * freqs * t[:, None]),
                            win * np.sin(2 * np.pi * freqs * t[:, None])], axis=1)
    summer = np.zeros((4 * n_features, n_features))
    for k in range(2 * n_features):
        summer[k, k // 2] = summer[2 * n_features + k, k // 2] = 1.0
    return basis.astype(np.float32), summer.astype(np.float32)


def build_graph(n_features: int, weights: np.ndarray, bias: np.ndarray, mu: np.ndarray, sd: np.ndarray,
                samples_dim: int | str = INPUT_SAMPLES) -> bytes:
    basis, summer = _basis(n_features)
    c = lambda name, v: numpy_helper.from_array(np.ascontiguousarray(v), name)  # noqa: E731
    inits = [c("shape", np.array([-1, INPUT_SAMPLES // FRAME, FRAME], dtype=np.int64)), c("basis", basis),
             c("summer", summer), c("eps", np.array(1e-6, dtype=np.float32)), c("mu", mu.astype(np.float32)),
             c("sd", sd.astype(np.float32)), c("W", weights.astype(np.float32)), c("b", bias.astype(np.float32))]
    n = helper.make_node
    nodes = [
        n("Reshape", ["audio", "shape"], ["frames"]),
        n("MatMul", ["frames", "basis"], ["proj"]),
        n("Mul", ["proj", "proj"], ["power"]),
        n("MatMul", ["power", "summer"], ["bands"]),
        n("ReduceMean", ["bands"], ["mean"], axes=[1], keepdims=0),
        n("Add", ["mean", "eps"], ["mean_eps"]),
        n("Log", ["mean_eps"], ["features"]),
        n("Sub", ["features", "mu"], ["centred"]),
        n("Div", ["centred", "sd"], ["z"]),
        n("MatMul", ["z", "W"], ["zw"]),
        n("Add", ["zw", "b"], ["logits"]),
        n("Softmax", ["logits"], ["probabilities"], axis=1),
        n("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    n_classes = weights.shape[1]
    graph = helper.make_graph(
        nodes, "harken_test", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", samples_dim])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_features])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _run(model_bytes: bytes, audio: np.ndarray):
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return sess.run(["label", "probabilities", "features"], {"audio": audio})


def calibration_utterances(say) -> list[np.ndarray]:
    """Each word at three speeds, cut by the default gate as the device would cut it."""
    pad = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    out = []
    for word in WORDS:
        for speed in (130, 150, 175):
            u = cut_clip(np.concatenate([pad, 0.8 * say(word, speed), pad]), GateConfig())
            assert u is not None, f"the gate found no speech in {word!r}"
            out.append(u.samples)
    return out


def make_test_bundle(path, private_key, utterances: list[np.ndarray], *, seed: int = 0,
                     labels=WORDS, n_features: int = 10, name: str = "test-words") -> str:
    """Write a signed test bundle to ``path``; returns the model sha256."""
    rng = np.random.default_rng(seed)
    placed = np.stack([place(u, INPUT_SAMPLES, "centre") for u in utterances])
    placed = to_int16(placed).astype(np.float32) / np.float32(32768.0)
    n_classes = len(labels)
    probe = build_graph(n_features, np.zeros((n_features, n_classes)), np.zeros(n_classes),
                        np.zeros(n_features), np.ones(n_features))
    feats = _run(probe, placed)[2]
    mu, sd = feats.mean(axis=0), feats.std(axis=0) + 1e-3
    weights = rng.normal(0.0, 1.2, (n_features, n_classes))
    model_bytes = build_graph(n_features, weights, rng.normal(0, 0.3, n_classes), mu, sd)
    label, probs, feats = _run(model_bytes, placed)
    confidence = probs.max(axis=1)
    names = [f"band{j}_logpow" for j in range(n_features)]
    profile = build_profile(
        feats, names, utterance_ms=[1000.0 * len(u) / SAMPLE_RATE for u in utterances],
        level_dbfs=[level_dbfs(u) for u in utterances], snr_db=[snr_db(u) for u in utterances],
        confidence=confidence, labels=label, label_names=list(labels))
    vec_idx = [0, 5, 11, 20]
    vectors = to_int16(placed[vec_idx])
    buf = io.BytesIO()
    np.save(buf, vectors)
    manifest = {
        "name": name, "version": f"0.{seed}.0", "labels": list(labels), "sample_rate": SAMPLE_RATE,
        "input_samples": INPUT_SAMPLES, "placement": "centre", "opset": {"": 17},
        "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"},
        "confidence_threshold": float(np.median(confidence)), "feature_names": names, "profile": profile,
        "gate": GateConfig().to_dict(),
        "test_vectors": {"file": "test_vectors.npy", "atol": 1e-4,
                         "expected": [{"label": labels[int(label[i])], "probabilities": probs[i].tolist()}
                                      for i in vec_idx]},
        "lineage": {"note": "tests/edge/conftest.py random test model", "seed": seed},
    }
    return write_bundle(path, model_bytes, manifest, private_key, {"test_vectors.npy": buf.getvalue()})


@pytest.fixture(scope="session")
def calibration(say):
    return calibration_utterances(say)


@pytest.fixture(scope="session")
def bundle_paths(tmp_path_factory, signing, release_signing, calibration):
    """Two different signed and released test bundles (seed 0 and seed 1, versions 1 and 2) of the same
    12 labels."""
    folder = tmp_path_factory.mktemp("bundles")
    paths = []
    for seed in (0, 1):
        path = folder / f"test-{seed}.hkb"
        make_test_bundle(path, signing[0], calibration, seed=seed)
        release_test_bundle(path, release_signing[0], version=seed + 1)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def bundles(bundle_paths, signing):
    from shared.bundle import load_bundle

    return [load_bundle(p, [signing[1]]) for p in bundle_paths]


@pytest.fixture(scope="session")
def models(bundles):
    from edge.model import LoadedModel

    return [LoadedModel.from_bundle(b) for b in bundles]


@pytest.fixture(scope="session")
def lab_model(tiny_lab):
    """The model lab's real trained bundle (tiny espeak-ng dataset, 12 labels x 4), loaded the
    way the agent loads it. Tests may import ``cloud``; the agent's code may not."""
    from edge.model import LoadedModel
    from shared.bundle import load_bundle

    return LoadedModel.from_bundle(load_bundle(tiny_lab.bundle_path, [keys.load_public_key(tiny_lab.public_key_path)]))


def run_pipeline(x: np.ndarray, chunk: int, provider, *, automation: str = "partial", flush: bool = True,
                 clock=lambda: 1000.0, sink=None, **kwargs):
    """Feed ``x`` in chunks of ``chunk`` samples; returns (decisions, windows, pipeline).

    Decisions are collected in a ListSink unless ``sink`` is given (then the list stays empty).
    """
    from edge.decisions import ListSink
    from edge.pipeline import Pipeline

    collected, windows = ListSink(), []
    kwargs.setdefault("gate_config", GateConfig())
    pipeline = Pipeline(device="dev-1", boot=3, agent_version="0.1.0", automation=automation, models=provider,
                        sink=sink or collected, on_window=windows.append, clock=clock, **kwargs)
    for i in range(0, len(x), chunk):
        pipeline.feed(x[i:i + chunk])
    if flush:
        pipeline.flush()
    return collected.decisions, windows, pipeline
