"""Schema-valid windows for tests (not from the agent: these exercise the contract alone)."""
from __future__ import annotations

from shared.histogram import CONFIDENCE_EDGES, LATENCY_MS_EDGES, LEVEL_DBFS_EDGES, SNR_DB_EDGES, UTTERANCE_MS_EDGES


def make_window(device: str = "dev-1", boot: int = 1, seq: int = 0, *, n_features: int = 10, bins: int = 11,
                labels: dict | None = None, model: str = "a" * 64, t_start: float = 1.7e9, duration_s: float = 10.0,
                scale: int = 1) -> dict:
    labels = {"yes": 3 * scale, "no": 2 * scale} if labels is None else labels
    n = sum(labels.values())

    def spread(edges) -> list[int]:
        counts = [0] * (len(edges) + 1)
        for i in range(n):
            counts[(i * 3) % len(counts)] += 1
        return counts

    return {
        "kind": "window", "v": "1.0", "device": device, "boot": boot, "seq": seq,
        "t_start": t_start + seq * duration_s, "duration_s": duration_s, "audio_start_s": seq * duration_s,
        "agent_version": "0.1.0", "model": model, "automation": "full",
        "software": {"frames": 333 * scale, "voiced_frames": 120 * scale, "dropped_frames": 0, "invalid_frames": 0,
                     "utterances": n, "inferences": n, "errors": 0, "cpu_s": 0.05, "rss_mb": 80.0,
                     "latency_ms": {"model": spread(LATENCY_MS_EDGES), "vad": spread(LATENCY_MS_EDGES)}},
        "input": {"utterance_ms": spread(UTTERANCE_MS_EDGES), "level_dbfs": spread(LEVEL_DBFS_EDGES),
                  "snr_db": spread(SNR_DB_EDGES), "clipped_utterances": 0,
                  "features": [[(i + j) % 3 * scale for i in range(bins)] for j in range(n_features)]},
        "output": {"labels": dict(labels), "confidence": spread(CONFIDENCE_EDGES), "no_answer": 1 * scale,
                   "deferred": 0, "acted": n - 1 * scale, "suggested": 0},
        "feedback": {"pairs": [["yes", "yes", 1 * scale], ["no", "yes", 1]]},
        "shadow": None,
    }


def make_window_v11(device: str = "dev-1", seq: int = 0, *, model: str = "a" * 64, other: str = "b" * 64,
                    scale: int = 1, **kwargs) -> dict:
    """A schema 1.1 window: ``make_window`` plus confidence by label, the audit sample and
    feedback credited to ``other`` (the model active before a swap)."""
    w = make_window(device, seq=seq, model=model, scale=scale, **kwargs)
    w["v"] = "1.1"
    conf = w["output"]["confidence"]
    first = next(i for i, c in enumerate(conf) if c)
    yes = [0] * len(conf)
    yes[first] = conf[first]  # one bin to "yes", the rest to "no"
    w["output"]["confidence_by_label"] = {"yes": yes, "no": [c - y for c, y in zip(conf, yes)]}
    w["output"]["audit_requested"] = scale
    w["feedback"].update(audit=[["yes", "yes", scale]], by_model={other: [["no", "no", seq + 1], ["yes", "no", 1]]},
                         audit_by_model={other: [["no", "no", 1]]})
    return w
