"""What ``bench_agent.py`` times, each in a child process that imports only what a device imports.

- ``agent_run``: ``harken agent replay`` after start-up: a Pipeline (gate, model, decisions,
  windows) fed from the WAV file in blocks, exactly as ``edge.replay.play`` does.
- ``bare_run``: the floor, webrtcvad + onnxruntime with nothing around them, doing the same
  work: the same file read in the same blocks (``wave``), every 30 ms frame through webrtcvad,
  every utterance the agent found converted to float, placed in the model window and run.
- ``agent_latency``: the agent fed 30 ms at a time, as a microphone feeds it, paced (``pace``
  times real time: the thread sleeps until each frame is due, so it idles between frames as on a
  device) at the device's priority (``device_priority``); for each decision the gate's hang-over
  (audio from the end of the last voiced frame to the frame that closed the utterance) and the
  processing: wall time from that frame's arrival to the decision, and the thread's CPU time over
  the same span (which other processes' preemption does not inflate).
- ``bare_latency``: the bare loop fed and paced the same way, at the same priority; when the frame
  that closed one of the agent's utterances arrives, it runs webrtcvad on it and the model on the
  utterance: its processing is the floor of the agent's.
"""
from __future__ import annotations

import contextlib
import os
import time
import wave

import numpy as np

FRAME = 480  # 30 ms at 16 kHz: webrtcvad's frame in the gate's default settings
DEVICE_NICE = -10  # what deploy/systemd/harken-agent.service sets (Nice=-10)


def pin_one_core() -> int | None:
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return core
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def device_priority():
    """Run the block at the agent service's niceness; yields the niceness in effect (a process
    without the right to raise its priority keeps its own, and the report says so)."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, DEVICE_NICE)
    except (PermissionError, OSError):
        pass
    try:
        yield os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, before)
        except OSError:
            pass


def paced_frames(path: str, pace: float):
    """The file's 30 ms frames (int16), each released when it is due at ``pace`` times real time."""
    from shared.audio import WavReader

    step, t0 = FRAME / 16000 / pace, time.perf_counter()
    with WavReader(path) as reader:
        for k, frame in enumerate(reader.blocks(FRAME)):
            wait = t0 + k * step - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            yield frame


def quantiles(values) -> dict:
    if not len(values):
        return {"p50": None, "p99": None, "max": None, "n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "n": len(a)}


def gate_config_of(model):
    from shared.gate import GateConfig

    return GateConfig.from_dict(model.manifest["gate"]) if "gate" in model.manifest else GateConfig()


def agent_run(model, path: str, chunk: int) -> dict:
    """One replay of ``path``; CPU seconds and what happened (frames, utterances, windows)."""
    from edge.decisions import ListSink
    from edge.pipeline import Pipeline, StaticModels
    from edge.replay import play
    from shared.codec import encode

    sink, windows = ListSink(), []
    t0 = time.process_time()
    pipeline = Pipeline(device="bench", boot=1, agent_version="bench", gate_config=gate_config_of(model),
                        automation="partial", models=StaticModels(model), sink=sink, on_window=windows.append)
    play([path], pipeline, chunk)
    cpu = time.process_time() - t0
    gate, stats = pipeline.gate, pipeline.stats
    sizes = [len(encode(w)) for w in windows]
    return {"cpu_s": cpu, "samples": gate.samples_in, "frames": gate.frames, "voiced_frames": gate.voiced_frames,
            "pass_ratio": round(gate.pass_ratio, 4), "utterances": stats["utterances"],
            "inferences": stats["inferences"], "decisions": stats["decisions"], "windows": len(windows),
            "window_bytes_max": max(sizes, default=0), "window_bytes_mean": round(float(np.mean(sizes)), 1),
            "spans": [[round(d.audio_start_s * 16000), round(d.audio_end_s * 16000)] for d in sink.decisions]}


def agent_latency(model, path: str, pace: float) -> dict:
    """Feed 30 ms at a time, paced, at the device's priority; hang-over and processing of each decision."""
    from edge.decisions import CallbackSink
    from edge.pipeline import Pipeline, StaticModels

    config = gate_config_of(model)
    pre_roll = config.pre_roll_frames * FRAME
    arrived, hangover, processing, processing_cpu, closes, splits = [0, 0], [], [], [], [], [0]
    pipeline = None

    def on_decision(d):
        processing.append((time.perf_counter_ns() - arrived[0]) / 1e6)
        processing_cpu.append((time.thread_time_ns() - arrived[1]) / 1e6)
        closed = round(pipeline.position_s * 16000)  # end of the frame that closed the utterance
        end = round(d.audio_end_s * 16000)
        closes.append([round(d.audio_start_s * 16000), end, closed])
        if closed > end:  # ended by the hang-over: the audio after the last voiced frame was trimmed to the pre-roll
            hangover.append((closed - (end - pre_roll)) / 16.0)
        else:  # split at max_utterance_ms while speech went on: no end of speech to wait for
            splits[0] += 1

    pipeline = Pipeline(device="bench", boot=1, agent_version="bench", gate_config=config, automation="partial",
                        models=StaticModels(model), sink=CallbackSink(on_decision), on_window=lambda w: None)
    with device_priority() as nice:
        for frame in paced_frames(path, pace):
            arrived[:] = time.perf_counter_ns(), time.thread_time_ns()
            pipeline.feed(frame)
    pipeline.flush()
    return {"decisions": pipeline.stats["decisions"], "hangover_ms": hangover, "processing_ms": processing,
            "processing_cpu_ms": processing_cpu, "split_pieces": splits[0], "closes": closes, "nice": nice,
            "pace": pace}


def bare_session(bundle):
    import onnxruntime as ort

    from edge.model import session_options

    session = ort.InferenceSession(bundle.model_bytes, session_options(), providers=["CPUExecutionProvider"])
    io = bundle.manifest["io"]
    names = [io["label"], io["probabilities"], io["features"]]
    feed = io["input"]
    n = int(bundle.manifest["input_samples"])
    session.run(names, {feed: np.zeros((1, n), dtype=np.float32)})
    return session, names, feed, n


def bare_run(session, names, feed, n_input, placement: str, path: str, chunk: int, spans, mode: int) -> dict:
    """webrtcvad on every frame, the model on every utterance: nothing else."""
    import webrtcvad
    from _webrtcvad import process  # what Vad.is_speech calls; the gate calls it the same way

    from shared.gate import place

    vad = webrtcvad.Vad(mode)
    handle, step = vad._vad, 2 * FRAME
    spans = sorted((b, a) for a, b in spans)
    horizon = max((b - a for b, a in spans), default=0) + chunk + FRAME  # samples to keep for the next utterance
    t0 = time.process_time()
    recent: list[tuple[int, np.ndarray]] = []  # (first sample, samples) of the last blocks
    carry, pos, frames, next_span, inference_ms = b"", 0, 0, 0, []
    with wave.open(str(path), "rb") as w:
        while True:
            data = w.readframes(chunk)
            if not data:
                break
            buf = carry + data
            n = len(buf) // step
            for i in range(0, n * step, step):
                process(handle, 16000, buf[i:i + step], FRAME)
            frames += n
            carry = buf[n * step:]
            recent.append((pos, np.frombuffer(buf[:n * step], dtype="<i2")))
            pos += n * FRAME
            while next_span < len(spans) and spans[next_span][0] <= pos:
                end, start = spans[next_span]
                keep = [(s, x) for s, x in recent if s + len(x) > start]
                pcm = np.concatenate([x for _, x in keep])[start - keep[0][0]:end - keep[0][0]]
                t1 = time.perf_counter()
                window = place(pcm.astype(np.float32) * np.float32(1 / 32768), n_input, placement)
                session.run(names, {feed: window[None, :]})
                inference_ms.append((time.perf_counter() - t1) * 1000.0)
                next_span += 1
            recent = [(s, x) for s, x in recent if s + len(x) > pos - horizon]
    return {"cpu_s": time.process_time() - t0, "frames": frames, "inferences": next_span, "inference_ms": inference_ms}


def bare_latency(session, names, feed, n_input, placement: str, path: str, closes, mode: int, pace: float) -> dict:
    """The bare loop fed like ``agent_latency``: webrtcvad on every frame; at each frame that closed one
    of the agent's utterances (``closes``: [start, end, closing sample]), the model on that utterance."""
    import webrtcvad
    from _webrtcvad import process

    from shared.gate import place

    vad = webrtcvad.Vad(mode)
    handle = vad._vad
    at = {close: (start, end) for start, end, close in closes}
    horizon = max((close - start for start, _, close in closes), default=0) // FRAME + 1
    recent: list[np.ndarray] = []  # the last frames, enough to hold any utterance when it closes
    wall, cpu, pos = [], [], 0
    with device_priority() as nice:
        for frame in paced_frames(path, pace):
            t_wall, t_cpu = time.perf_counter_ns(), time.thread_time_ns()
            if len(frame) == FRAME:
                process(handle, 16000, frame.tobytes(), FRAME)
            recent.append(frame)
            del recent[:-horizon]
            pos += len(frame)
            span = at.get(pos)
            if span is not None:
                first = pos - FRAME * len(recent)
                pcm = np.concatenate(recent)[span[0] - first:span[1] - first]
                window = place(pcm.astype(np.float32) * np.float32(1 / 32768), n_input, placement)
                session.run(names, {feed: window[None, :]})
                wall.append((time.perf_counter_ns() - t_wall) / 1e6)
                cpu.append((time.thread_time_ns() - t_cpu) / 1e6)
    return {"processing_ms": wall, "processing_cpu_ms": cpu, "inferences": len(wall), "nice": nice, "pace": pace}
