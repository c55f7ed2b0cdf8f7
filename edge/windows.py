"""One window of statistics, accumulated on the device (see ``shared.messages`` for the schema).

``WindowAccumulator`` counts into fixed-edge histograms: latency over
``LATENCY_MS_EDGES``; utterance length, level, SNR, confidence and each watched feature
over the edges of the active bundle's reference profile (the fixed grids of
``shared.histogram`` when a bundle has no profile). Every ``update_*`` returns the
accumulator; ``to_message`` builds the validated ``window`` dict. No I/O inside: the
pipeline reads the process CPU time and RSS (``process_cpu_s``, ``process_rss_mb``) and
passes them in.

Feedback is credited to the model that made the prediction: ``update_feedback`` names that
model, and feedback on another model's prediction (the previous active model, after a swap)
goes to ``feedback.by_model`` instead of ``feedback.pairs``; audited predictions also count in
``feedback.audit`` / ``audit_by_model``.
"""
from __future__ import annotations

import bisect
import os
import resource
import time
from typing import NamedTuple, Sequence

from shared.histogram import (CONFIDENCE_EDGES, LATENCY_MS_EDGES, LEVEL_DBFS_EDGES, NOISE_DBFS_EDGES, SNR_DB_EDGES,
                              UTTERANCE_MS_EDGES)
from shared.messages import LATENCY_STAGES, WINDOW_VERSION, validate

CLIPPED_FRACTION = 0.001  # an utterance with >= 0.1 % of its samples at full scale is clipped


def process_cpu_s() -> float:
    """CPU seconds used by this process so far (all threads)."""
    return time.process_time()


def process_rss_mb() -> float:
    """Current resident memory of this process in MiB (peak RSS where /proc is missing)."""
    return ResidentMemory().mb()


class ResidentMemory:
    """Reads this process's resident memory; keeps ``/proc/self/statm`` open between reads,
    because opening it costs more than reading it (the pipeline reads it at every window)."""

    _PATH = "/proc/self/statm"

    def __init__(self):
        self._fd: int | None = None
        self._pid = 0

    def mb(self) -> float:
        """Current RSS in MiB (peak RSS where /proc is missing)."""
        try:
            if self._fd is None or self._pid != os.getpid():  # /proc/self named the parent before a fork
                self.close()
                self._fd, self._pid = os.open(self._PATH, os.O_RDONLY | os.O_CLOEXEC), os.getpid()
            pages = int(os.pread(self._fd, 128, 0).split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        except (OSError, ValueError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class _Hist:
    """Counts over fixed edges (bin of x = bisect_right(edges, x); NaN → last bin)."""

    __slots__ = ("edges", "counts")

    def __init__(self, edges: Sequence[float]):
        self.edges = list(map(float, edges))
        self.counts = [0] * (len(self.edges) + 1)

    def add(self, x: float) -> None:
        self.counts[len(self.edges) if x != x else bisect.bisect_right(self.edges, x)] += 1


def _profile_edges(profile: dict | None, signal: str, default: Sequence[float]) -> Sequence[float]:
    if profile and signal in profile:
        return profile[signal]["edges"]
    return default


class FeedbackKey(NamedTuple):
    model: str | None  # the model that made the prediction
    true_label: str
    predicted: str
    audit: bool  # the prediction was flagged for the audit sample


def _pairs(counts: dict[tuple[str, str], int]) -> list[list]:
    return [[t, p, n] for (t, p), n in sorted(counts.items())]


class WindowAccumulator:
    """The statistics of one window; one accumulator per window, for one (active, shadow) pair.

    ``profile`` is the active bundle's reference profile (or None); ``model`` / ``shadow_model``
    are model sha256s or None. ``audio_start_sample`` and ``t_start`` place the window.
    """

    def __init__(self, *, device: str, boot: int, seq: int, agent_version: str, automation: str,
                 audio_start_sample: int, t_start: float, model: str | None = None,
                 profile: dict | None = None, shadow_model: str | None = None,
                 shadow_profile: dict | None = None, sample_rate: int = 16000):
        self.device, self.boot, self.seq = device, boot, seq
        self.agent_version, self.automation = agent_version, automation
        self.audio_start_sample, self.t_start = audio_start_sample, t_start
        self.model, self.profile, self.shadow_model = model, profile, shadow_model
        self.sample_rate = sample_rate
        self.counters = dict.fromkeys(("frames", "voiced_frames", "dropped_frames", "invalid_frames",
                                       "utterances", "inferences", "errors"), 0)
        self.outputs = dict.fromkeys(("no_answer", "deferred", "acted", "suggested", "capture",
                                      "audit_requested"), 0)
        self.clipped_utterances = 0
        self.noise_dbfs = [0] * (len(NOISE_DBFS_EDGES) + 1)
        self.latency = {stage: _Hist(LATENCY_MS_EDGES) for stage in LATENCY_STAGES}
        self.utterance_ms = _Hist(_profile_edges(profile, "utterance_ms", UTTERANCE_MS_EDGES))
        self.level_dbfs = _Hist(_profile_edges(profile, "level_dbfs", LEVEL_DBFS_EDGES))
        self.snr_db = _Hist(_profile_edges(profile, "snr_db", SNR_DB_EDGES))
        self.confidence = _Hist(_profile_edges(profile, "confidence", CONFIDENCE_EDGES))
        self.confidence_by_label: dict[str, _Hist] = {}
        self.features = [_Hist(e) for e in (profile["features"]["edges"] if profile else [])]
        self.labels: dict[str, int] = {}
        self.feedback: dict[FeedbackKey, int] = {}
        self.shadow_compared = self.shadow_agree = self.shadow_errors = 0
        self.shadow_confidence = _Hist(_profile_edges(shadow_profile, "confidence", CONFIDENCE_EDGES))
        self.shadow_labels: dict[str, int] = {}

    # -- updates (each returns self) -------------------------------------------------------
    def update_frames(self, frames: int, voiced: int, invalid: int, dropped: int = 0) -> "WindowAccumulator":
        c = self.counters
        c["frames"] += frames
        c["voiced_frames"] += voiced
        c["invalid_frames"] += invalid
        c["dropped_frames"] += dropped
        return self

    def update_noise(self, counts) -> "WindowAccumulator":
        """Add the gate's counts of unvoiced frame levels (over ``NOISE_DBFS_EDGES``)."""
        self.noise_dbfs = [a + int(b) for a, b in zip(self.noise_dbfs, counts)]
        return self

    def update_latency(self, stage: str, ms: float) -> "WindowAccumulator":
        self.latency[stage].add(ms)
        return self

    def update_utterance(self, duration_ms: float, level_dbfs: float, snr_db: float,
                         clipped_fraction: float) -> "WindowAccumulator":
        self.counters["utterances"] += 1
        self.utterance_ms.add(duration_ms)
        self.level_dbfs.add(level_dbfs)
        self.snr_db.add(snr_db)
        self.clipped_utterances += int(clipped_fraction >= CLIPPED_FRACTION)
        return self

    def update_prediction(self, label: str, confidence: float, no_answer: bool,
                          features: Sequence[float]) -> "WindowAccumulator":
        self.counters["inferences"] += 1
        self.labels[label] = self.labels.get(label, 0) + 1
        self.confidence.add(confidence)
        by_label = self.confidence_by_label.get(label)
        if by_label is None:
            by_label = self.confidence_by_label[label] = _Hist(self.confidence.edges)
        by_label.add(confidence)
        self.outputs["no_answer"] += int(bool(no_answer))
        for hist, x in zip(self.features, features):
            hist.add(x)
        return self

    def update_error(self) -> "WindowAccumulator":
        self.counters["errors"] += 1
        return self

    def update_action(self, action: str) -> "WindowAccumulator":
        key = {"act": "acted", "suggest": "suggested", "defer": "deferred"}.get(action)
        if key:
            self.outputs[key] += 1
        return self

    def update_shadow(self, active_label: str, label: str | None, confidence: float | None) -> "WindowAccumulator":
        """A shadow comparison; ``label`` None means the candidate failed on this utterance."""
        if label is None:
            self.shadow_errors += 1
            return self
        self.shadow_compared += 1
        self.shadow_agree += int(label == active_label)
        self.shadow_confidence.add(confidence)
        self.shadow_labels[label] = self.shadow_labels.get(label, 0) + 1
        return self

    def update_audit_request(self) -> "WindowAccumulator":
        """A decision was flagged for a person to label (the audit sample)."""
        self.outputs["audit_requested"] += 1
        return self

    def update_feedback(self, true_label: str, predicted: str, model: str | None = None,
                        audit: bool = False) -> "WindowAccumulator":
        """A person's label for a prediction ``model`` made (None: this window's model)."""
        key = FeedbackKey(self.model if model is None else model, true_label, predicted, bool(audit))
        self.feedback[key] = self.feedback.get(key, 0) + 1
        return self

    @property
    def has_feedback(self) -> bool:
        return bool(self.feedback)

    def feedback_items(self) -> list["FeedbackKey"]:
        """Every feedback counted here, one item per count (to carry it into another window)."""
        return [key for key, n in self.feedback.items() for _ in range(n)]

    def update_capture(self) -> "WindowAccumulator":
        self.outputs["capture"] += 1
        return self

    # -- results ---------------------------------------------------------------------------
    def to_message(self, *, end_sample: int, cpu_s: float, rss_mb: float, automation: str | None = None,
                   extra_software: dict | None = None) -> dict:
        """The validated ``window`` message for audio ``[audio_start_sample, end_sample)``."""
        software = dict(self.counters, cpu_s=round(cpu_s, 4), rss_mb=round(rss_mb, 1),
                        latency_ms={s: h.counts for s, h in self.latency.items() if any(h.counts)},
                        **(extra_software or {}))
        out = {
            "kind": "window", "v": WINDOW_VERSION, "device": self.device, "boot": self.boot, "seq": self.seq,
            "t_start": round(self.t_start, 3),
            "duration_s": (end_sample - self.audio_start_sample) / self.sample_rate,
            "audio_start_s": self.audio_start_sample / self.sample_rate,
            "agent_version": self.agent_version, "model": self.model,
            "automation": automation or self.automation,
            "software": software,
            "input": {"utterance_ms": self.utterance_ms.counts, "level_dbfs": self.level_dbfs.counts,
                      "snr_db": self.snr_db.counts, "clipped_utterances": self.clipped_utterances,
                      "noise_dbfs": self.noise_dbfs, "features": [h.counts for h in self.features]},
            "output": dict(self.outputs, labels=dict(self.labels), confidence=self.confidence.counts,
                           confidence_by_label={k: h.counts for k, h in self.confidence_by_label.items()}),
            "feedback": self._feedback_section(),
        }
        if self.shadow_model is not None:
            out["shadow_model"] = self.shadow_model
            out["shadow"] = {"compared": self.shadow_compared, "agree": self.shadow_agree,
                             "errors": self.shadow_errors, "confidence": self.shadow_confidence.counts,
                             "labels": dict(self.shadow_labels)}
        return validate(out, "window")

    def _feedback_section(self) -> dict:
        """pairs / audit for this window's model; by_model / audit_by_model for the others'.

        Empty 1.1 sections are left out (readers take absent as empty) to keep windows small."""
        own: dict[str, dict] = {"pairs": {}, "audit": {}}
        other: dict[str, dict] = {"by_model": {}, "audit_by_model": {}}
        for key, n in self.feedback.items():
            pair = (key.true_label, key.predicted)
            targets = [("pairs", "by_model")] + ([("audit", "audit_by_model")] if key.audit else [])
            for own_name, other_name in targets:
                counts = own[own_name] if key.model == self.model else \
                    other[other_name].setdefault(key.model, {})
                counts[pair] = counts.get(pair, 0) + n
        section = {name: _pairs(c) for name, c in own.items() if c or name == "pairs"}
        section.update({name: {m: _pairs(c) for m, c in sorted(by.items())} for name, by in other.items() if by})
        return section
