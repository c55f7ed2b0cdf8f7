"""The window accumulator: bins agree with shared.histogram, windows are cut on audio time,
validate, merge exactly and stay within about 1 KB on the wire."""
from __future__ import annotations

import numpy as np
import pytest

from edge.pipeline import StaticModels
from edge.windows import WindowAccumulator, process_cpu_s, process_rss_mb
from shared.codec import encode
from shared.histogram import LATENCY_MS_EDGES, counts_of
from shared.messages import LATENCY_STAGES, decode
from shared.window import merge_windows, summarize
from tests.edge.conftest import WORDS, run_pipeline


def _acc(profile, **kw):
    args = dict(device="dev-1", boot=2, seq=5, agent_version="0.1.0", automation="partial",
                audio_start_sample=160000, t_start=1234.5, model="a" * 64, profile=profile)
    return WindowAccumulator(**{**args, **kw})


def test_bins_follow_the_shared_convention(models):
    profile = models[0].profile
    rng = np.random.default_rng(1)
    feats = rng.normal(np.mean(profile["features"]["edges"], axis=1), 1.0, (200, 10))
    lat = rng.lognormal(0.0, 2.0, 200)
    conf = rng.uniform(0, 1, 200)
    dur, lvl, snr = rng.uniform(100, 2500, 200), rng.uniform(-70, 0, 200), rng.uniform(-5, 60, 200)
    acc = _acc(profile)
    for i in range(200):
        acc.update_latency("model", lat[i]).update_utterance(dur[i], lvl[i], snr[i], 0.0)
        acc.update_prediction(WORDS[i % 12], conf[i], conf[i] < 0.5, feats[i].tolist())
    w = acc.to_message(end_sample=320000, cpu_s=0.5, rss_mb=50.0)
    assert w["software"]["latency_ms"] == {"model": counts_of(LATENCY_MS_EDGES, lat)}
    assert w["input"]["utterance_ms"] == counts_of(profile["utterance_ms"]["edges"], dur)
    assert w["input"]["level_dbfs"] == counts_of(profile["level_dbfs"]["edges"], lvl)
    assert w["input"]["snr_db"] == counts_of(profile["snr_db"]["edges"], snr)
    assert w["output"]["confidence"] == counts_of(profile["confidence"]["edges"], conf)
    assert w["input"]["features"] == [counts_of(e, feats[:, j]) for j, e in enumerate(profile["features"]["edges"])]
    assert w["output"]["labels"] == {name: 200 // 12 + (i < 200 % 12) for i, name in enumerate(WORDS)}
    assert w["output"]["no_answer"] == int(np.sum(conf < 0.5))
    assert (w["duration_s"], w["audio_start_s"], w["seq"], w["t_start"]) == (10.0, 10.0, 5, 1234.5)


def test_nan_goes_to_the_last_bin_and_clipping_is_counted(models):
    acc = _acc(models[0].profile)
    acc.update_utterance(500.0, float("nan"), 20.0, 0.01).update_utterance(500.0, -20.0, 20.0, 0.0)
    w = acc.to_message(end_sample=160000 + 480, cpu_s=0.0, rss_mb=1.0)
    assert w["input"]["level_dbfs"][-1] == 1
    assert w["input"]["clipped_utterances"] == 1 and w["software"]["utterances"] == 2


def busy_window(models) -> dict:
    """A full 10 s window of the default config: 12 labels seen, 10 features, shadow, feedback."""
    rng = np.random.default_rng(3)
    profile = models[0].profile
    acc = _acc(profile, shadow_model="b" * 64, shadow_profile=models[1].profile)
    acc.update_frames(333, 140, 0, 0)
    for i in range(14):
        acc.update_utterance(rng.uniform(300, 2000), rng.uniform(-45, -10), rng.uniform(5, 45), 0.0)
        for stage in LATENCY_STAGES:
            acc.update_latency(stage, rng.lognormal(0.0, 1.0))
        conf = rng.uniform(0.2, 1.0)
        feats = [rng.choice(e) + rng.normal(0, 0.5) for e in profile["features"]["edges"]]
        acc.update_prediction(WORDS[i % 12], conf, conf < 0.6, feats).update_action("act" if conf >= 0.6 else "defer")
        acc.update_shadow(WORDS[i % 12], WORDS[(i * 5) % 12], rng.uniform(0.2, 1.0))
    for i in range(6):
        acc.update_feedback(WORDS[i], WORDS[(i + 1) % 12])
    return acc.to_message(end_sample=320000, cpu_s=0.0312, rss_mb=47.3)


def test_a_busy_default_window_encodes_within_1_kb(models):
    w = busy_window(models)
    assert len(w["output"]["labels"]) == 12 and len(w["input"]["features"]) == 10
    assert len(w["software"]["latency_ms"]) == 4 and w["shadow"]["compared"] == 14
    size = len(encode(w))
    assert size <= 1024, f"a default window encodes to {size} bytes"
    assert decode(encode(w), "window")["output"] == w["output"]


def test_windows_are_cut_on_audio_time(speech, models):
    x = speech[0]
    t = iter(range(100, 200))
    _, windows, _ = run_pipeline(x, 4096, StaticModels(models[0]), clock=lambda: float(next(t)),
                                 start_seq=41)
    n_full = len(x) // 160000
    assert [w["seq"] for w in windows] == list(range(41, 41 + n_full + 1))
    assert [w["duration_s"] for w in windows] == [10.0] * n_full + [(len(x) - n_full * 160000) / 16000]
    assert [w["audio_start_s"] for w in windows] == [10.0 * k for k in range(n_full + 1)]
    assert all(w["t_start"] >= 100 for w in windows)
    assert [w["t_start"] for w in windows] == sorted(w["t_start"] for w in windows)
    frames = sum(w["software"]["frames"] for w in windows)
    assert frames == len(x) // 480
    for w in windows:
        assert len(encode(w)) <= 1024
        assert w["model"] == models[0].sha256 and "shadow" not in w


def test_pipeline_windows_merge_exactly(speech, models):
    decisions, windows, pipeline = run_pipeline(speech[0], 4096, StaticModels(models[0]))
    merged = merge_windows(windows)
    s = summarize(merged)
    assert s["utterances"] == pipeline.stats["utterances"] == s["inferences"] == len(decisions)
    assert sum(merged["output"]["labels"].values()) == len(decisions)
    assert merged["output"]["labels"] == {lab: [d.label for d in decisions].count(lab)
                                          for lab in {d.label for d in decisions}}
    for feature in merged["input"]["features"]:
        assert sum(feature) == len(decisions)
    assert 0.0 < s["speech_ratio"] < 0.6
    assert s["latency_ms"]["model"]["p50"] is not None


def test_process_figures_are_plausible():
    rss = process_rss_mb()
    assert 10.0 < rss < 4096.0
    before = process_cpu_s()
    sum(i * i for i in range(200000))
    assert process_cpu_s() > before


def test_resident_memory_rereads_the_open_file_and_follows_a_fork():
    """The pipeline keeps /proc/self/statm open; each read is current, and a forked child reads its own."""
    import mmap
    import os

    from edge.windows import ResidentMemory

    def ballast() -> mmap.mmap:  # 64 MiB of fresh pages, touched (heap memory freed earlier could be reused)
        m = mmap.mmap(-1, 64 * 2 ** 20)
        m.write(b"\1" * (64 * 2 ** 20))
        return m

    meter = ResidentMemory()
    before = meter.mb()
    pages = ballast()
    grown = meter.mb()
    assert grown - before > 50.0
    pages.close()
    assert meter.mb() < grown - 50.0  # freed, and seen on the same descriptor
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child grows on its own; its meter must read the child, not the parent
        mine = ballast()
        os.write(write, f"{meter.mb()} {ResidentMemory().mb()} {mine[-1]}".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    inherited, fresh, _ = map(float, os.read(read, 128).decode().split())
    os.close(read)
    os.close(write)
    assert abs(inherited - fresh) < 8.0


def test_feedback_is_credited_to_the_model_that_predicted():
    acc = _acc(None, model="a" * 64)
    acc.update_feedback("yes", "no").update_feedback("yes", "no", "a" * 64, audit=True)
    acc.update_feedback("up", "up", "b" * 64).update_feedback("up", "down", "b" * 64, audit=True)
    fb = acc.to_message(end_sample=160000 + 480, cpu_s=0.0, rss_mb=1.0)["feedback"]
    assert fb == {"pairs": [["yes", "no", 2]], "audit": [["yes", "no", 1]],
                  "by_model": {"b" * 64: [["up", "down", 1], ["up", "up", 1]]},
                  "audit_by_model": {"b" * 64: [["up", "down", 1]]}}
    assert sorted(acc.feedback_items()) == sorted([("a" * 64, "yes", "no", False), ("a" * 64, "yes", "no", True),
                                                   ("b" * 64, "up", "up", False), ("b" * 64, "up", "down", True)])


def test_a_busy_window_with_every_1_1_field_encodes_within_1_kb(models):
    """The busy window plus audit requests, audited labels and labels for the previous model."""
    w = busy_window(models)
    assert w["v"] == "1.1" and len(w["output"]["confidence_by_label"]) == 12
    assert [sum(c) for c in zip(*w["output"]["confidence_by_label"].values())] == w["output"]["confidence"]
    w["output"]["audit_requested"] = 1
    w["feedback"]["audit"] = [["yes", "no", 1]]
    w["feedback"]["by_model"] = {"c" * 64: [["up", "up", 2], ["go", "no", 1]]}
    w["feedback"]["audit_by_model"] = {"c" * 64: [["go", "no", 1]]}
    size = len(encode(decode(encode(w), "window")))
    assert size <= 1024, f"a busy 1.1 window encodes to {size} bytes"
