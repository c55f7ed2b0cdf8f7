"""A small, seeded fleet written into a real store: schema-valid windows, states, events
and rejects, for the API and dashboard tests.

Six devices report one 60 s window a minute for the last hour, drawn from the models'
reference profile. ``dev-03`` gets 12 dB louder in the last 20 minutes (level, feature, confidence and
label drift), ``dev-04`` and ``dev-05`` run model
B in shadow, ``dev-06`` runs model B, ``dev-05`` is offline. Every window passes
``shared.messages.validate``. ``fill`` writes it all; ``begin`` / ``write_windows`` /
``finish`` let a test run the rollout controller in between (see ``world.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cloud.store import Batch, Received, Reject, Store
from shared.histogram import (CONFIDENCE_EDGES, LATENCY_MS_EDGES, LEVEL_DBFS_EDGES, SNR_DB_EDGES,
                              UTTERANCE_MS_EDGES, counts_of)
from shared.messages import validate
from shared.profile import build_profile

LABELS = ["yes", "no", "stop", "go"]
FEATURES = [f"mel_{i:02d}" for i in range(8)]
A, B = "A", "B"  # placeholders for the two models' shas, given to ``fill``
DEVICES = {  # device: (tags, active, shadow, online)
    "dev-01": (["kitchen"], A, None, True),
    "dev-02": (["kitchen"], A, None, True),
    "dev-03": (["kitchen", "loud"], A, None, True),
    "dev-04": (["lab", "shadow"], A, B, True),
    "dev-05": (["lab", "shadow"], A, B, False),
    "dev-06": (["lab", "canary"], B, None, True),
}
WINDOW_S = 60.0
N_WINDOWS = 60
DRIFT_AFTER = 40  # dev-03's windows from this index on are louder


def reference_profile(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    n = 2000
    feats = rng.normal(0.0, 1.0, size=(n, len(FEATURES)))
    return build_profile(feats, FEATURES, utterance_ms=rng.normal(600, 150, n), level_dbfs=rng.normal(-30, 5, n),
                         snr_db=rng.normal(22, 6, n), confidence=rng.beta(8, 2, n),
                         labels=rng.integers(0, len(LABELS), n), label_names=LABELS)


def _exact(x: float) -> float:
    """A multiple of 1/64: sums of these are exact in any order, so merges compare equal."""
    return round(float(x) * 64) / 64


def make_window(rng, profile: dict, device: str, seq: int, t_start: float, model: str, *, shadow: str | None = None,
                loud_db: float = 0.0, candidate: bool = False) -> dict:
    n = int(rng.integers(8, 16))
    feats = rng.normal(loud_db / 6.0, 1.0, size=(n, len(FEATURES)))
    conf = rng.beta(8, 2, n)
    if loud_db:  # a loud room makes the model less sure, though never unsure enough for "no answer"
        conf = 0.5 + 0.4 * np.random.default_rng([seq, 3]).beta(2, 3, n)  # its own draws: others unchanged
    labels = rng.multinomial(n, [0.25] * 4 if not loud_db else [0.04, 0.04, 0.46, 0.46])
    no_answer = int((conf < 0.5).sum())
    frames = int(WINDOW_S * 100)
    w = {
        "kind": "window", "v": "1.0", "device": device, "boot": 1, "seq": seq, "t_start": t_start,
        "duration_s": WINDOW_S, "audio_start_s": seq * WINDOW_S, "agent_version": "0.1.0", "model": model,
        "automation": "partial",
        "software": {"frames": frames, "voiced_frames": int(frames * rng.uniform(0.15, 0.3)), "dropped_frames": 0,
                     "invalid_frames": 0, "utterances": n, "inferences": n, "errors": int(rng.random() < 0.05),
                     "cpu_s": _exact(rng.uniform(0.8, 1.4)), "rss_mb": _exact(rng.uniform(70, 90)),
                     "latency_ms": {"vad": counts_of(LATENCY_MS_EDGES, rng.lognormal(-1.5, 0.3, n * 20)),
                                    "model": counts_of(LATENCY_MS_EDGES, rng.lognormal(1.6, 0.35, n))}},
        "input": {"utterance_ms": counts_of(UTTERANCE_MS_EDGES, rng.normal(600, 150, n)),
                  "level_dbfs": counts_of(LEVEL_DBFS_EDGES, rng.normal(-30 + loud_db, 5, n)),
                  "snr_db": counts_of(SNR_DB_EDGES, rng.normal(22 - loud_db / 2, 6, n)), "clipped_utterances": 0,
                  "features": [counts_of(e, feats[:, j]) for j, e in enumerate(profile["features"]["edges"])]},
        "output": {"labels": {k: int(v) for k, v in zip(LABELS, labels) if v}, "no_answer": no_answer,
                   "confidence": counts_of(CONFIDENCE_EDGES, conf), "deferred": no_answer // 2,
                   "acted": n - no_answer, "suggested": 0},
        "feedback": {"pairs": [["yes", "yes", int(rng.integers(1, 4))], ["no", "yes", int(rng.random() < 0.3)]]},
        "shadow": None,
    }
    if shadow:
        compared = n
        w["shadow_model"] = shadow
        w["shadow"] = {"compared": compared, "agree": int(rng.binomial(compared, 0.9)),
                       "confidence": counts_of(CONFIDENCE_EDGES, rng.beta(6, 2, n)),
                       "labels": {k: int(v) for k, v in zip(LABELS, rng.multinomial(n, [0.4, 0.3, 0.2, 0.1])) if v}}
        w["software"]["latency_ms"]["shadow"] = counts_of(LATENCY_MS_EDGES, rng.lognormal(1.8, 0.35, n))
    return validate(w)


@dataclass
class Fleet:
    """What was written, for the tests to check the API's answers against."""

    now: float
    profile: dict
    models: dict[str, str]  # "A" (production) and "B" (candidate) → sha256
    windows: list[dict] = field(default_factory=list)

    @property
    def t0(self) -> float:
        return self.now - N_WINDOWS * WINDOW_S

    def sha(self, placeholder: str | None) -> str | None:
        return self.models.get(placeholder) if placeholder else None


def state(device: str, t: float, active: str | None, shadow: str | None, previous: str | None = None,
          health: str = "ok") -> dict:
    return validate({"kind": "state", "v": "1.0", "device": device, "online": True, "t": t, "agent_version": "0.1.0",
                     "boot": 1, "automation": "partial", "health": health,
                     "models": {"active": active, "previous": previous, "shadow": shadow}})


def begin(store: Store, now: float, model_a: str, model_b: str) -> Fleet:
    """Tags, first states and start-up events an hour ago (what a rollout needs to start)."""
    fleet = Fleet(now=now, profile=reference_profile(), models={A: model_a, B: model_b})
    t0 = fleet.t0
    batch = Batch()
    for device, (tags, active, shadow, _online) in DEVICES.items():
        batch.states.append(Received(state(device, t0, fleet.sha(active), fleet.sha(shadow)), t0))
        for seq, (event, model) in enumerate((("agent_started", None), ("model_activated", fleet.sha(active)))):
            e = {"kind": "event", "v": "1.0", "device": device, "boot": 1, "seq": seq, "t": t0 + seq,
                 "event": event}
            batch.events.append(Received(validate({**e, "model": model} if model else e), t0 + seq))
        batch.see(device, t0)
    store.write(batch)
    for device, (tags, *_rest) in DEVICES.items():
        store.tag(device, tags)
    return fleet


def write_windows(store: Store, fleet: Fleet, switch: dict[str, float] | None = None, seed: int = 7) -> None:
    """An hour of windows; a device in ``switch`` runs model B from that time on."""
    rng = np.random.default_rng(seed)
    switch = switch or {}
    batch = Batch()
    for device, (_tags, active, shadow, _online) in DEVICES.items():
        for seq in range(N_WINDOWS):
            t = fleet.t0 + seq * WINDOW_S
            model = B if t >= switch.get(device, float("inf")) else active
            loud = 12.0 if device == "dev-03" and seq >= DRIFT_AFTER else 0.0
            w = make_window(rng, fleet.profile, device, seq, t, fleet.sha(model), shadow=fleet.sha(shadow),
                            loud_db=loud, candidate=model == B)
            fleet.windows.append(w)
            batch.windows.append(Received(w, t + WINDOW_S + 0.5))
            batch.see(device, t + WINDOW_S + 0.5)
    store.write(batch)


def finish(store: Store, fleet: Fleet, switch: dict[str, float] | None = None) -> None:
    """Current states (dev-05 went offline) and rejected messages."""
    now, switch = fleet.now, switch or {}
    batch = Batch()
    for device, (_tags, active, shadow, online) in DEVICES.items():
        moved = device in switch
        model = fleet.sha(B if moved else active)
        previous = fleet.sha(A) if moved or active == B else None
        batch.states.append(Received(state(device, now - 30, model, fleet.sha(shadow), previous,
                                           "probation" if device == "dev-06" else "ok"), now - 30))
        batch.see(device, now - 30 if online else now - 900)
    batch.states.append(Received({"kind": "state", "v": "1.0", "device": "dev-05", "online": False, "t": now - 20},
                                 now - 20))
    batch.rejects += [Reject.of(now - 100, "harken/v1/dev/dev-09/stats", "not_json", "payload is not UTF-8 JSON",
                                b"\xff\xfe garbage"),
                      Reject.of(now - 90, "harken/v1/dev/dev-09/stats", "unsupported_major", "schema 2.0", b"{}"),
                      Reject.of(now - 80, "harken/v1/dev/dev-09/stats", "not_json", "again", b"\x00")]
    store.write(batch)


def fill(store: Store, now: float, model_a: str, model_b: str) -> Fleet:
    """The whole fleet without rollouts."""
    fleet = begin(store, now, model_a, model_b)
    write_windows(store, fleet)
    finish(store, fleet)
    return fleet
