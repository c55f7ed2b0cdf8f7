"""The agent's core: audio chunks → VAD gate → model (+ shadow) → decision → window statistics.

``Pipeline.feed(chunk)`` takes audio of any length. Windows are cut on audio time: window
k covers samples ``[k·W, (k+1)·W)``, so the same audio in any chunking gives the same
decisions and the same windows (wall-clock, CPU, RSS and latency fields aside). The models
are read from a ``ModelProvider`` at each utterance, so a swap takes effect at the next
utterance; when the (active, shadow) pair changes, the window is closed early at that point
so a window never mixes two models' feature bins.

Feedback is credited to the model that made the prediction (the memory keeps its sha256):
after a swap, a late label for the old model's prediction goes to the open window's
``feedback.by_model``, never to the new model's ``pairs``. A seeded share ``audit_rate`` of the
emitted decisions, drawn independently of confidence, carries ``audit=True`` (a request for a
person to label it); feedback on those also counts in ``feedback.audit``.

Thread safety: ``feed``/``flush`` run on the audio thread; ``feedback`` and
``set_automation`` may be called from any thread (one lock guards the state).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

import numpy as np

from edge.capture import Capture, CaptureConfig
from edge.decisions import DEFAULT_AUDIT_RATE, AuditSampler, Decision, DecisionSink, action_for, check_level
from edge.feedback import DEFAULT_MEMORY, PredictionMemory
from edge.model import LoadedModel
from edge.windows import FeedbackKey, ResidentMemory, WindowAccumulator, process_cpu_s
from shared.audio import SAMPLE_RATE
from shared.errors import ConfigError
from shared.gate import GateConfig, Utterance, VadGate, as_audio

log = logging.getLogger(__name__)

OnInference = Callable[[str, float, "Exception | None"], None]


class ModelProvider(Protocol):
    """What the pipeline reads at each utterance (the model lifecycle implements it)."""

    active: LoadedModel | None
    shadow: LoadedModel | None


class StaticModels:
    """A ModelProvider that never changes on its own (replay, tests, benchmarks)."""

    def __init__(self, active: LoadedModel | None = None, shadow: LoadedModel | None = None):
        self.active = active
        self.shadow = shadow


def _sha(model: LoadedModel | None) -> str | None:
    return None if model is None else model.sha256


STAT_NAMES = ("utterances", "inferences", "errors", "shadow_errors", "decisions", "acted", "suggested",
              "deferred", "no_answer", "captured", "sink_errors", "windows", "feedback_accepted",
              "feedback_unknown_utterance", "feedback_unknown_label", "audit_requested", "feedback_audit")


class Pipeline:
    """One audio stream through gate, model and decision, into windows of statistics."""

    def __init__(self, *, device: str, boot: int, agent_version: str, gate_config: GateConfig,
                 window_s: float = 10.0, automation: str, models: ModelProvider, sink: DecisionSink | None,
                 on_window: Callable[[dict], None], on_inference: OnInference | None = None,
                 start_seq: int = 0, clock: Callable[[], float] = time.time,
                 capture: CaptureConfig | None = None, on_feedback: Callable[[dict], None] | None = None,
                 memory_size: int = DEFAULT_MEMORY, audit_rate: float = DEFAULT_AUDIT_RATE,
                 audit_seed: str | None = None, sampler=None):
        if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not 1.0 <= window_s <= 3600.0:
            raise ConfigError(f"window_s must be a number of seconds in [1, 3600], got {window_s!r}; 10 is the default")
        self.device, self.boot, self.agent_version = device, boot, agent_version
        self.gate_config, self.window_s = gate_config, window_s
        self.models, self.sink = models, sink
        self.on_window, self.on_inference, self.on_feedback = on_window, on_inference, on_feedback
        self.clock = clock
        self.gate = VadGate(gate_config, SAMPLE_RATE)
        self._window_samples = int(round(window_s * SAMPLE_RATE))
        self._level = check_level(automation)
        self._capture = Capture(capture, clock) if capture is not None else None
        self._sampler = sampler  # edge.samples.SampleUploader: opt-in field samples
        self._memory = PredictionMemory(memory_size)
        self._audit = AuditSampler(audit_rate, device if audit_seed is None else audit_seed)
        self._lock = threading.RLock()
        self._seq = start_seq
        self._pos = 0  # samples fed since the pipeline started
        self._n = 0  # utterances since the pipeline started (ids are {boot}-{n})
        self._acc: WindowAccumulator | None = None
        self._acc_models: tuple = (None, None)  # the active and shadow models the open window counts
        self._pending_feedback: list[FeedbackKey] = []
        self._dropped = 0
        self._gate_base = (0, 0, 0)
        self._noise_base = self.gate.noise_counts
        self._cpu_base = process_cpu_s()
        self._rss = ResidentMemory()
        self._stats = dict.fromkeys(STAT_NAMES, 0)

    # -- properties ------------------------------------------------------------------------
    automation = property(lambda self: self._level, doc="Current automation level.")
    seq = property(lambda self: self._seq, doc="Sequence number the next window will carry.")
    position_s = property(lambda self: self._pos / SAMPLE_RATE, doc="Audio seconds fed so far.")
    decisions = property(lambda self: self._stats["decisions"], doc="Decisions emitted so far.")

    @property
    def stats(self) -> dict:
        """Counters since start (utterances, inferences, errors, actions, feedback, windows)."""
        with self._lock:
            return dict(self._stats)

    # -- control ---------------------------------------------------------------------------
    def set_automation(self, level: str) -> None:
        """Change the automation level; it applies from the next utterance."""
        check_level(level)
        with self._lock:
            if level != self._level:
                log.info("automation level %s -> %s", self._level, level)
            self._level = level

    def note_dropped_frames(self, frames: int) -> None:
        """Count frames the source lost (e.g. microphone overruns) into the current window."""
        with self._lock:
            self._dropped += int(frames)

    # -- streaming -------------------------------------------------------------------------
    def feed(self, chunk: np.ndarray) -> None:
        """Take mono 16 kHz audio of any length: int16 PCM, or float in [-1, 1]."""
        chunk = as_audio(chunk)
        W = self._window_samples
        with self._lock:
            i = 0
            while i < len(chunk):
                self._check_models()
                boundary = (self._pos // W + 1) * W
                take = min(len(chunk) - i, boundary - self._pos)
                self._feed_piece(chunk[i:i + take])
                i += take
                if self._pos == boundary:
                    self._close_window()

    def flush(self, close_window: bool = True) -> None:
        """End of stream: end the utterance in progress; emit the partial window if it holds anything.

        ``close_window=False`` only ends the utterance (e.g. between files played back to back).
        """
        with self._lock:
            self._check_models()
            utterances = self.gate.flush()
            t1 = time.perf_counter()
            for u in utterances:
                self._on_utterance(u, t1)
            acc = self._acc
            if close_window and acc is not None and (self._pos > acc.audio_start_sample or acc.has_feedback
                                                     or acc.counters["utterances"]):
                self._close_window()

    def new_stream(self) -> None:
        """End the utterance in progress and start a fresh gate: what is fed next is a new recording
        whose utterances (and their ``audio_start_s``, counted from it) depend on nothing fed before.
        The open window keeps counting (``harken serve``: one request, one stream, shared windows)."""
        with self._lock:
            self.flush(close_window=False)
            old, base = self.gate, self._gate_base
            self.gate = VadGate(self.gate_config, SAMPLE_RATE)
            self._gate_base = (base[0] - old.frames, base[1] - old.voiced_frames, base[2] - old.invalid_frames)
            self._noise_base = self._noise_base - old.noise_counts  # the old gate's floor stays in the window

    def _feed_piece(self, piece: np.ndarray) -> None:
        frames_before = self.gate.frames
        t0 = time.perf_counter()
        utterances = self.gate.feed(piece)
        t1 = time.perf_counter()
        self._pos += len(piece)
        if self.gate.frames != frames_before:
            self._acc.update_latency("vad", (t1 - t0) * 1000.0)
        for u in utterances:
            self._on_utterance(u, t1)

    # -- windows ---------------------------------------------------------------------------
    def _check_models(self) -> None:
        """Open a window if none is open; cut it early if the active/shadow pair changed."""
        active, shadow = self.models.active, self.models.shadow
        if self._acc is not None and active is self._acc_models[0] and shadow is self._acc_models[1]:
            return  # the same objects: the same pair (checked per chunk, so kept cheap)
        key = (_sha(active), _sha(shadow))
        if self._acc is not None and key == (_sha(self._acc_models[0]), _sha(self._acc_models[1])):
            self._acc_models = (active, shadow)  # other objects, the same models
            return
        if self._acc is not None:
            if self._pos > self._acc.audio_start_sample or self._acc.counters["utterances"]:
                self._close_window()
            else:  # nothing counted yet: just relabel, keeping any feedback already landed
                self._pending_feedback.extend(self._acc.feedback_items())
                self._acc = None
        if self._acc is None:
            self._open_window(active, shadow, key)

    def _open_window(self, active: LoadedModel | None, shadow: LoadedModel | None, key) -> None:
        self._acc = WindowAccumulator(
            device=self.device, boot=self.boot, seq=self._seq, agent_version=self.agent_version,
            automation=self._level, audio_start_sample=self._pos, t_start=self.clock(),
            model=key[0], profile=None if active is None else active.profile,
            shadow_model=key[1], shadow_profile=None if shadow is None else shadow.profile)
        self._acc_models = (active, shadow)
        for item in self._pending_feedback:
            self._acc.update_feedback(item.true_label, item.predicted, item.model, item.audit)
        self._pending_feedback.clear()

    def _close_window(self) -> None:
        acc, self._acc = self._acc, None
        gate = self.gate
        base = self._gate_base
        acc.update_frames(gate.frames - base[0], gate.voiced_frames - base[1], gate.invalid_frames - base[2],
                          self._dropped)
        self._gate_base = (gate.frames, gate.voiced_frames, gate.invalid_frames)
        noise = gate.noise_counts
        acc.update_noise(noise - self._noise_base)
        self._noise_base = noise
        self._dropped = 0
        cpu = process_cpu_s()
        message = acc.to_message(end_sample=self._pos, cpu_s=cpu - self._cpu_base, rss_mb=self._rss.mb(),
                                 automation=self._level)
        self._cpu_base = cpu
        self._seq += 1
        self._stats["windows"] += 1
        self.on_window(message)

    # -- one utterance -----------------------------------------------------------------------
    def _on_utterance(self, u: Utterance, t_ready: float) -> None:
        self._n += 1
        self._stats["utterances"] += 1
        uid = f"{self.boot}-{self._n}"
        x = u.audio  # int16 PCM from a 16-bit source: the model converts it as it places it
        self._check_models()  # a swap may land in the middle of a chunk
        acc = self._acc
        active, shadow, level = self.models.active, self.models.shadow, self._level
        pred = self._infer(active, x, acc) if active is not None else None
        audit = False
        if pred is not None:
            audit = self._decide(uid, u, pred, active, shadow, level, acc)
            acc.update_latency("decision", (time.perf_counter() - t_ready) * 1000.0)
        # input statistics and capture come after the decision: they are not on its latency path
        acc.update_utterance(u.duration_ms, *u.levels())
        if pred is not None and self._capture is not None and self._capture.offer(
                uid, u.samples, label=pred.label, confidence=pred.confidence, threshold=active.threshold,
                model=active.sha256, audio_start_s=u.start_sample / SAMPLE_RATE):
            acc.update_capture()
            self._stats["captured"] += 1
        if pred is not None and self._sampler is not None:
            self._sampler.offer(uid, x, label=pred.label, confidence=pred.confidence, threshold=active.threshold,
                                model=active.sha256, audit=audit)

    def _decide(self, uid: str, u: Utterance, pred, active: LoadedModel, shadow: LoadedModel | None, level: str,
                acc: WindowAccumulator) -> bool:
        """Count, emit and remember one prediction; returns whether it was flagged for audit."""
        acc.update_latency("model", pred.latency_ms)
        acc.update_prediction(pred.label, pred.confidence, pred.no_answer, pred.features.tolist())
        self._stats["inferences"] += 1
        self._stats["no_answer"] += pred.no_answer
        spred = self._infer_shadow(shadow, u.audio, pred.label, acc) if shadow is not None else None
        action = action_for(level, pred.no_answer)
        acc.update_action(action)
        self._count_action(action)
        # an audit request exists only where a decision reaches the sink (never at human_only)
        audit = level != "human_only" and self._audit.flag(uid)
        if audit:
            acc.update_audit_request()
            self._stats["audit_requested"] += 1
        self._memory.update(uid, pred.label, active.labels, active.sha256, audit)
        if level != "human_only":
            self._emit(Decision(
                utterance=uid, audio_start_s=u.start_sample / SAMPLE_RATE, audio_end_s=u.end_sample / SAMPLE_RATE,
                label=pred.label, confidence=pred.confidence, action=action, automation=level,
                model=active.sha256, shadow_label=None if spred is None else spred.label,
                shadow_confidence=None if spred is None else spred.confidence, t=self.clock(), audit=audit))
        return audit

    def _infer(self, model: LoadedModel, x: np.ndarray, acc: WindowAccumulator):
        t0 = time.perf_counter()
        try:
            pred = model.predict(x)
        except Exception as exc:  # one bad inference must not stop the stream; probation decides
            ms = (time.perf_counter() - t0) * 1000.0
            acc.update_error()
            self._stats["errors"] += 1
            log.debug("inference failed on model %s: %s", model.sha256[:12], exc)
            if self.on_inference is not None:
                self.on_inference(model.sha256, ms, exc)
            return None
        if self.on_inference is not None:
            self.on_inference(model.sha256, pred.latency_ms, None)
        return pred

    def _infer_shadow(self, shadow: LoadedModel, x: np.ndarray, active_label: str, acc: WindowAccumulator):
        """Run the candidate; its failures count in the shadow section, not in the active's errors."""
        t0 = time.perf_counter()
        try:
            spred = shadow.predict(x)
        except Exception as exc:
            self._stats["shadow_errors"] += 1
            acc.update_shadow(active_label, None, None)
            if self.on_inference is not None:
                self.on_inference(shadow.sha256, (time.perf_counter() - t0) * 1000.0, exc)
            return None
        acc.update_latency("shadow", spred.latency_ms)
        acc.update_shadow(active_label, spred.label, spred.confidence)
        if self.on_inference is not None:
            self.on_inference(shadow.sha256, spred.latency_ms, None)
        return spred

    def _count_action(self, action: str) -> None:
        key = {"act": "acted", "suggest": "suggested", "defer": "deferred"}.get(action)
        if key:
            self._stats[key] += 1

    def _emit(self, decision: Decision) -> None:
        self._stats["decisions"] += 1
        if self.sink is None:
            return
        try:
            self.sink.emit(decision)
        except Exception as exc:  # a broken sink must not stop listening
            self._stats["sink_errors"] += 1
            log.warning("decision sink failed: %s", exc)

    # -- feedback --------------------------------------------------------------------------
    def feedback(self, utterance_id: str, true_label: str | None = None, confirm: bool = False) -> bool:
        """A person's verdict on a past prediction; False (and counted) when it cannot be used."""
        with self._lock:
            seen = self._memory.get(utterance_id)
            if seen is None:
                self._stats["feedback_unknown_utterance"] += 1
                return False
            label = seen.label if (confirm and true_label is None) else true_label
            if label not in seen.labels:
                self._stats["feedback_unknown_label"] += 1
                return False
            # credited to the model that made the prediction, whichever window is open now
            if self._acc is not None:
                self._acc.update_feedback(label, seen.label, seen.model, seen.audit)
            else:  # between windows: the next window counts it
                self._pending_feedback.append(FeedbackKey(seen.model, label, seen.label, seen.audit))
            self._stats["feedback_accepted"] += 1
            self._stats["feedback_audit"] += int(seen.audit)
            if self.on_feedback is not None:
                self.on_feedback({"utterance": utterance_id, "label": label, "predicted": seen.label,
                                  "model": seen.model, "confirm": bool(confirm), "audit": seen.audit})
            return True
