"""What the devices of one worker hear: the clip pool, who speaks where, how often, and the scenario.

``World.load`` reads the dataset once per worker (process) and casts the fleet
(households.py); ``World.device(i)`` builds device i's stream (its household and traffic)
and channel (the scenario's transform). The MQTT fleet (fleet.py) and the offline harness
(offline.py) build their devices from it, so both play exactly the same audio for the same
settings and seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.sim.audio import BabbleNoise, ClipPool, DeviceStream, Timeline, device_stream
from edge.sim.households import Casting, cast, resolve_split_names
from edge.sim.scenarios import ScenarioParams, Transform, build_transform
from edge.sim.traffic import check_traffic, make_traffic

DAY_S = 86400.0


@dataclass(frozen=True)
class Audience:
    """The plan-level settings of who speaks and how often (picklable; part of both plans)."""

    speakers_per_device: tuple[int, int] | None = None
    speaker_split: str = "all"
    traffic: str = "constant"
    talk_fraction: float = 0.3
    start_tod_s: float = 0.0  # local time of day at audio second 0 (diurnal traffic)


@dataclass
class World:
    pool: ClipPool
    ref_level_dbfs: float
    casting: Casting
    targets: frozenset[int]
    params: ScenarioParams
    audience: Audience
    seed: int

    @classmethod
    def load(cls, data_dir: str, *, params: ScenarioParams, devices: int, seed: int, audience: Audience,
             bundle: str = "") -> "World":
        params.check()
        check_traffic(audience.traffic, audience.talk_fraction)
        pool = ClipPool.from_dataset(data_dir)
        casting = cast(pool.speakers, speaker_split=audience.speaker_split,
                       split_names=resolve_split_names(audience.speaker_split, bundle),
                       speakers_per_device=audience.speakers_per_device, params=params, seed=seed, bundle=bundle)
        return cls(pool, pool.reference_level_dbfs(seed), casting, frozenset(params.targets(devices, seed)),
                   params, audience, seed)

    def device(self, index: int, timeline: Timeline | None = None) -> tuple[DeviceStream, Transform]:
        """Device ``index``'s stream and channel (each seeded by ``(seed, index)``)."""
        a, pool = self.audience, self.pool
        traffic = make_traffic(a.traffic, self.seed, index, start_tod_s=a.start_tod_s % DAY_S,
                               talk_fraction=a.talk_fraction)
        targeted = index in self.targets
        stream = device_stream(pool, self.params, self.casting, seed=self.seed, device_index=index,
                               targeted=targeted, traffic=traffic, timeline=timeline)
        channel = build_transform(self.params, targeted, ref_level_dbfs=self.ref_level_dbfs,
                                  rng=np.random.default_rng([self.seed, index, 1]),
                                  babble=lambda rng: BabbleNoise(pool, rng))
        return stream, channel

    def speakers(self, index: int) -> dict:
        """Who device ``index`` hears: its household, and after a new-speakers onset its new one."""
        out = {"household": list(self.casting.household(index))}
        if index in self.targets and self.params.name == "new-speakers":
            out["after_onset"] = list(self.casting.new_household(index))
        return out
