"""One device on simulated time, and the devices of one offline worker.

``OfflineDevice`` is the agent's own pipeline (``edge.pipeline.Pipeline`` with the real VAD
gate and the verified, smoke-tested model) fed by the device's stream and channel
(world.py), with ``clock = epoch + audio seconds``. A simulated person answers its decisions
through ``Pipeline.feedback`` at the audio sample each answer falls due (a chunk ends there),
so the windows are the same for any chunk size. At the end of its audio the device stops like
one that keeps listening: an utterance in progress is not cut short into an extra, empty
window; only a last partial window (``hours`` not a multiple of ``window_s``) is flushed.

``OfflineWorker`` loads the bundle the way a device does (signature against the trust keys,
one onnxruntime session per process through ``SharedModels``, smoke test on the manifest's
test vectors, gate settings from the manifest under the agent config's checks) and advances
its devices in lockstep: ``steps()`` yields, per step of audio, the windows they emitted,
sorted by ``(t_start, device, seq)``.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Iterator

import numpy as np

from edge.agent import agent_version
from edge.config import load_agent_config
from edge.pipeline import Pipeline, StaticModels
from edge.sim.audio import Timeline
from edge.sim.device import SharedModels, device_ids
from edge.sim.person import Person, PipelineFeedback
from edge.sim.world import World
from shared import keys as keyring
from shared.audio import SAMPLE_RATE
from shared.bundle import load_bundle
from shared.gate import GateConfig

if TYPE_CHECKING:
    from edge.model import LoadedModel
    from edge.sim.offline import OfflinePlan

BOOT = 1


def window_order(window: dict) -> tuple[float, str, int]:
    """The order windows leave the harness in: simulated time, then device, then seq."""
    return window["t_start"], window["device"], window["seq"]


class OfflineDevice:
    def __init__(self, plan: "OfflinePlan", index: int, device_id: str, *, world: World, model: "LoadedModel",
                 gate: GateConfig, version: str):
        self.index, self.device_id, self.epoch = index, device_id, float(plan.epoch)
        self.chunk_samples = plan.chunk_samples
        self.total = int(round(plan.hours * 3600.0 * SAMPLE_RATE))
        self.window_samples = int(round(plan.window_s * SAMPLE_RATE))
        self.targeted = index in world.targets
        self.speakers = world.speakers(index)
        self.timeline = Timeline()
        self.stream, self.channel = world.device(index, self.timeline)
        self._windows: list[dict] = []
        self.pipeline = Pipeline(device=device_id, boot=BOOT, agent_version=version, gate_config=gate,
                                 window_s=plan.window_s, automation=plan.automation, models=StaticModels(model),
                                 sink=None, on_window=self._windows.append, clock=self._clock)
        self.person: Person | None = None
        self.feedback: PipelineFeedback | None = None
        if plan.feedback_rate > 0 or plan.audit_answer_rate > 0:
            self.feedback = PipelineFeedback(self.pipeline)
            self.person = Person(self.timeline, self.feedback, plan.feedback_rate,
                                 np.random.default_rng([plan.seed, index, 2]), labels=world.pool.labels,
                                 audit_rate=plan.audit_answer_rate)
            self.pipeline.sink = self.person
        self.finished = False

    def _clock(self) -> float:
        return self.epoch + self.pipeline.position_s

    def advance(self, until_sample: int) -> list[dict]:
        """Play audio up to ``until_sample`` (the stream's end at most); returns the windows emitted.

        A chunk ends where the person's next answer falls due, so each answer reaches the
        pipeline at the same audio sample whatever ``chunk_samples`` is.
        """
        until = min(until_sample, self.total)
        stream, pipeline = self.stream, self.pipeline
        while stream.position < until:
            n = min(self.chunk_samples, until - stream.position, self._deliver_answers())
            pipeline.feed(self.channel.process(stream.take(n)))
        if until == self.total and not self.finished:
            self.finished = True
            if self.total % self.window_samples:  # the last window is partial: emit it
                pipeline.flush()
        out, self._windows[:] = list(self._windows), []
        return out

    def _deliver_answers(self) -> int:
        """Hand over the answers due by now; returns the samples until the next one falls due."""
        person, position = self.person, self.stream.position
        while person is not None and person.next_due_s is not None:
            due = math.ceil(person.next_due_s * SAMPLE_RATE)
            if due > position:
                return due - position
            person.deliver_next()
        return self.total

    def result(self) -> dict:
        stats = self.pipeline.stats
        out = {"device": self.device_id, "index": self.index, "targeted": self.targeted, "speakers": self.speakers,
               "audio_s": round(self.pipeline.position_s, 3), "clips": self.stream.clips_played,
               "utterances": stats["utterances"], "decisions": stats["decisions"], "windows": stats["windows"],
               "feedback_accepted": stats["feedback_accepted"]}
        if self.person is not None:
            out.update(feedback_sent=self.person.answered, audited=self.person.audited,
                       feedback_pending=self.person.waiting)
        return out


def load_device_model(plan: "OfflinePlan", loader: SharedModels) -> tuple["LoadedModel", GateConfig]:
    """The plan's bundle as a device loads it; the gate its manifest sets, under the agent's checks."""
    config = load_agent_config(None, env={}, overrides={
        "device_id": device_ids(1)[0], "trust_keys": list(plan.trust_keys), "bundle": plan.bundle,
        "require_release": False,  # no install, no desired state here: releases are judged by devices
        "window_s": plan.window_s, "automation": plan.automation})
    bundle = load_bundle(plan.bundle, [keyring.load_public_key(p) for p in config.trust_keys])
    model = loader(bundle)
    model.smoke_test()
    return model, config.gate_config(bundle.manifest.get("gate"))


class OfflineWorker:
    """The devices ``indices`` of a plan, advanced together ``step_samples`` at a time."""

    def __init__(self, plan: "OfflinePlan", indices: list[int]):
        t0 = time.process_time()
        self.plan = plan
        self.world = plan.world()
        model, gate = load_device_model(plan, SharedModels())
        ids, version = plan.ids, agent_version()
        self.devices = [OfflineDevice(plan, i, ids[i], world=self.world, model=model, gate=gate, version=version)
                        for i in indices]
        self.cpu_s = time.process_time() - t0

    def steps(self) -> Iterator[list[dict]]:
        step = self.plan.step_samples
        total = self.devices[0].total if self.devices else 0
        position = 0
        while position < total:
            t0 = time.process_time()
            position = min(total, position + step)
            batch = [w for d in self.devices for w in d.advance(position)]
            batch.sort(key=window_order)
            self.cpu_s += time.process_time() - t0
            yield batch

    def results(self) -> list[dict]:
        return [d.result() for d in self.devices]
