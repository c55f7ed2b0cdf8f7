"""What the rig's real agents hear: test-split households, as the fleet simulator plays them.

A room is ``edge.sim``'s own device stream — a household of 1-3 voices drawn from the test
split the bundle records (``lineage.split.speaker_names``: voices neither training nor the
reference profile heard), with the pool's share of background clips, over the device's own hiss
— through its scenario channel, as an ``edge.sources.AudioSource`` a real agent reads as fast as
it can. Traffic is constant (an utterance every ~2 s), so a one-minute drift step holds ~30.
"""
from __future__ import annotations

import numpy as np

from edge.sim.audio import SimSource
from edge.sim.scenarios import ScenarioParams
from edge.sim.world import Audience, World

AUDIENCE = Audience(speakers_per_device=(1, 3), speaker_split="test", traffic="constant")
CHUNK_SAMPLES = 4096


def world(lab, devices: int, scenario: ScenarioParams = ScenarioParams(), seed: int = 0) -> World:
    """Who the rig's devices hear and what happens to them (``edge.sim.world``)."""
    return World.load(str(lab.data_dir), params=scenario.check(), devices=devices, seed=seed, audience=AUDIENCE,
                      bundle=str(lab.bundle_path))


def rooms(w: World, ids: list[str], duration_s: float, channel_of=None) -> dict[str, SimSource]:
    """device id → its source; ``channel_of(index, channel)`` may wrap a device's channel."""
    out = {}
    for i, device in enumerate(ids):
        stream, channel = w.device(i)
        if channel_of is not None:
            channel = channel_of(i, channel)
        out[device] = SimSource(stream, channel, chunk_samples=CHUNK_SAMPLES, duration_s=duration_s, name=device)
    return out


class Until:
    """``channel`` up to audio sample ``end_sample``, the untouched stream after it (an episode)."""

    def __init__(self, channel, end_sample: int):
        self.channel, self.end_sample = channel, int(end_sample)
        self.position = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        start, self.position = self.position, self.position + len(x)
        out = self.channel.process(x)
        k = max(0, self.end_sample - start)
        if k < len(x):
            out[k:] = np.asarray(x, dtype=np.float32)[k:]
        return out
