"""How often a simulated household speaks: the silence between one utterance and the next.

    constant   gaps uniform in 0.3-1.5 s, around the clock: a device that never stops hearing
               commands (~45,000 utterances per audio day). The simulator's first behaviour.
    diurnal    gaps that follow the time of day, in talking sessions; a few thousand a day.

The diurnal profile. ``MEAN_GAP_S`` gives the mean gap (seconds) at each hour's half past,
interpolated linearly in log(gap) between them (a smooth day, no step at the full hour):

    hour   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15  16  17  18  19  20  21  22  23
    gap   90 120 120 120 120  60  12   4   3   6  12  10   6   8  15  15  10   5   3   3   4   8  20  45

Busy morning (08:30) and evening (18:30-19:30 at 3 s), quiet night (01:30-04:30 at 120 s).
A gap is ``0.3 s + Exp(mean - 0.3 s)`` with the mean read where the gap starts.

Sessions (``talk_fraction``): the day is cut into ``SESSION_S`` (10-minute) slots, and each
slot is a talking slot with probability ``talk_fraction`` (seeded per device and slot, so the
schedule does not depend on how the audio is read); in the other slots nobody speaks (out,
asleep, busy) and the device hears only its background: a gap that would end in one is
dropped and drawn again from the start of the next talking slot. Over a day this scales the count and
keeps the profile's shape: ``expected_utterances_per_day()`` gives ~8,500 at
``talk_fraction`` 1 and ~2,600 at the default 0.3.

Per device: its day is shifted by a phase (normal, sd 1 h, at most 2 h either way: people
get up at different times) and its gaps scaled by an activity factor (log-normal, sd 0.3,
within 0.5-2x). Local time of day is ``start_tod_s + phase + audio seconds``.

The busy/quiet factor: in the plateaus, utterances start at rate
``talk_fraction / (activity * gap + clip_s)``, so busy (3 s) against quiet (120 s) hours differ
by ``(120 a + c) / (3 a + c)`` = 30 for activity a = 1 and 1-second clips (``rate_factor``).
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from shared.errors import ConfigError

TRAFFIC_KINDS = ("constant", "diurnal")
GAP_S = (0.3, 1.5)  # constant traffic
MIN_GAP_S = 0.3  # the gate needs a pause to tell two utterances apart
MEAN_GAP_S = (90, 120, 120, 120, 120, 60, 12, 4, 3, 6, 12, 10, 6, 8, 15, 15, 10, 5, 3, 3, 4, 8, 20, 45)
BUSY_HOURS = (18.5, 19.5)  # local hours where the profile sits at its busiest (3 s) ...
QUIET_HOURS = (1.5, 4.5)  # ... and at its quietest (120 s)
SESSION_S = 600.0
TALK_FRACTION = 0.3
PHASE_SD_S, PHASE_MAX_S = 3600.0, 7200.0
ACTIVITY_SD, ACTIVITY_RANGE = 0.3, (0.5, 2.0)
DAY_S = 86400.0
CLIP_S = 1.0  # the lab's clips are one second long


class Traffic(Protocol):
    def gap_s(self, t_s: float, rng: np.random.Generator) -> float:
        """Seconds of silence before the next utterance, for a gap starting at audio second ``t_s``."""


class ConstantTraffic:
    """Gaps uniform in ``GAP_S``, whatever the time."""

    def gap_s(self, t_s: float, rng: np.random.Generator) -> float:
        return float(rng.uniform(*GAP_S))


def mean_gap_s(hour: float | np.ndarray) -> np.ndarray:
    """The profile's mean gap at local ``hour`` (0-24, wraps), log-linear between half hours."""
    h = (np.asarray(hour, dtype=np.float64) - 0.5) % 24.0
    lo = np.floor(h).astype(int)
    frac = h - lo
    logs = np.log(np.asarray(MEAN_GAP_S, dtype=np.float64))
    return np.exp(logs[lo] * (1.0 - frac) + logs[(lo + 1) % 24] * frac)


def expected_utterances_per_day(talk_fraction: float = TALK_FRACTION, activity: float = 1.0,
                                clip_s: float = CLIP_S) -> float:
    """Utterances a device with this activity factor starts in one day (integrated per minute)."""
    hours = (np.arange(24 * 60) + 0.5) / 60.0
    return float(np.sum(60.0 * talk_fraction / (activity * mean_gap_s(hours) + clip_s)))


def rate_factor(activity: float = 1.0, clip_s: float = CLIP_S) -> float:
    """How many times more utterances start per hour in the busy plateau than in the quiet one."""
    busy, quiet = min(MEAN_GAP_S), max(MEAN_GAP_S)
    return (activity * quiet + clip_s) / (activity * busy + clip_s)


class DiurnalTraffic:
    """The diurnal profile for one device (see the module docstring)."""

    def __init__(self, seed: int, device_index: int, *, start_tod_s: float = 0.0,
                 talk_fraction: float = TALK_FRACTION):
        if not 0.0 < talk_fraction <= 1.0:
            raise ConfigError(f"talk_fraction must be in (0, 1], got {talk_fraction}; "
                              f"{TALK_FRACTION} gives ~{expected_utterances_per_day():,.0f} utterances a day")
        rng = np.random.default_rng([seed, device_index, 13])
        self.phase_s = float(np.clip(rng.normal(0.0, PHASE_SD_S), -PHASE_MAX_S, PHASE_MAX_S))
        self.activity = float(np.clip(math.exp(rng.normal(0.0, ACTIVITY_SD)), *ACTIVITY_RANGE))
        self.talk_fraction = float(talk_fraction)
        self.seed, self.device_index = seed, device_index
        self._origin_s = (float(start_tod_s) + self.phase_s) % DAY_S  # local time of day at audio 0
        self._slots: dict[int, bool] = {}

    def local_s(self, t_s: float) -> float:
        """Seconds since the local midnight before audio 0, at audio second ``t_s``."""
        return self._origin_s + t_s

    def local_hour(self, t_s: float | np.ndarray) -> float | np.ndarray:
        return ((self._origin_s + np.asarray(t_s, dtype=np.float64)) % DAY_S) / 3600.0

    def talking(self, t_s: float) -> bool:
        """Whether the session slot holding audio second ``t_s`` is a talking one."""
        return self._talking_slot(int(self.local_s(t_s) // SESSION_S))

    def _talking_slot(self, slot: int) -> bool:
        if slot not in self._slots:
            if len(self._slots) > 64:  # the schedule only moves forward: forget old slots
                self._slots = {k: v for k, v in self._slots.items() if k >= slot - 1}
            draw = np.random.default_rng([self.seed, self.device_index, 17, slot]).random()
            self._slots[slot] = bool(draw < self.talk_fraction)
        return self._slots[slot]

    def gap_s(self, t_s: float, rng: np.random.Generator) -> float:
        start = t_s
        while True:
            slot = int(self.local_s(t_s) // SESSION_S)
            if not self._talking_slot(slot):  # a silent slot: wait for the next talking one
                while not self._talking_slot(slot):
                    slot += 1
                t_s = slot * SESSION_S - self._origin_s
            mean = self.activity * float(mean_gap_s(self.local_hour(t_s)))
            end = t_s + MIN_GAP_S + float(rng.exponential(max(mean - MIN_GAP_S, 1e-3)))
            if self._talking_slot(int(self.local_s(end) // SESSION_S)):
                return end - start
            t_s = (slot + 1) * SESSION_S - self._origin_s  # it would land in a silent slot: nobody speaks there


def make_traffic(kind: str, seed: int, device_index: int, *, start_tod_s: float = 0.0,
                 talk_fraction: float = TALK_FRACTION) -> Traffic:
    if kind == "constant":
        return ConstantTraffic()
    if kind == "diurnal":
        return DiurnalTraffic(seed, device_index, start_tod_s=start_tod_s, talk_fraction=talk_fraction)
    raise ConfigError(f"traffic {kind!r} is not one of {', '.join(TRAFFIC_KINDS)}")


def check_traffic(kind: str, talk_fraction: float) -> None:
    """The plan-level checks (a worker would fail on each device otherwise)."""
    if kind not in TRAFFIC_KINDS:
        raise ConfigError(f"traffic {kind!r} is not one of {', '.join(TRAFFIC_KINDS)}")
    if not 0.0 < talk_fraction <= 1.0:
        raise ConfigError(f"talk_fraction must be in (0, 1], got {talk_fraction}")
