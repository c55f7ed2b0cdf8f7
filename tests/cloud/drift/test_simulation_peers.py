"""The calibration counts the device-against-peers test the engine runs, with the engine's figures."""
from __future__ import annotations

import numpy as np

from cloud.drift.engine import DriftConfig
from cloud.drift.peers import SIGNAL, peer_check
from cloud.drift.reference import build_reference
from cloud.drift.simulation import _peer_flags
from cloud.drift.tables import ModelTable, Snapshot
from shared.histogram import NOISE_DBFS_EDGES


def noise_table(profile: dict, dead: int, dead_from: int, dead_until: int, steps: int = 12) -> ModelTable:
    """Eight devices' noise floors, each step 500 frames around its own room's level; device
    ``dead`` is digitally silent (all frames in the lowest bin) in steps ``[dead_from, dead_until)``."""
    rng = np.random.default_rng(3)
    ref = build_reference(profile, "m")
    bins = len(NOISE_DBFS_EDGES) + 1
    counts = np.zeros((8, steps, bins), dtype=np.int64)
    for d, floor in enumerate(rng.uniform(-68.0, -55.0, 8)):
        for t in range(steps):
            frames = rng.normal(floor, 3.0, 500)
            counts[d, t] = np.bincount(np.searchsorted(NOISE_DBFS_EDGES, frames, side="right"), minlength=bins)
    counts[dead, dead_from:dead_until] = 0
    counts[dead, dead_from:dead_until, 0] = 500
    return ModelTable(ref=ref, devices=[f"dev-{i}" for i in range(8)], counts={"input": {SIGNAL: counts}})


def test_the_calibrations_peer_flags_are_the_engines_peer_test_at_every_evaluation(profile):
    cfg = DriftConfig()
    table = noise_table(profile, dead=5, dead_from=7, dead_until=10)
    alpha, warm = 1e-6, 4
    flags = _peer_flags(table, warm, cfg, alpha)
    assert flags.shape == (8, 12 - warm)
    for t in range(warm, 12):  # the engine at the evaluation whose last step is t
        snap = Snapshot(t0=0.0, step_s=cfg.step_s, n_steps=t + 1,
                        tables={"m": ModelTable(table.ref, table.devices,
                                                {"input": {SIGNAL: table.counts["input"][SIGNAL][:, :t + 1]}})})
        for d, device in enumerate(table.devices):
            check = peer_check(snap, device, cfg.short_steps, cfg.min_peers, alpha, cfg.peer_floor)
            assert bool(check and check["alarm"]) == flags[d, t - warm], (device, t)
    # the dead microphone, and only it, while its recent steps (short_steps = 3) are all silent:
    # steps 7-9, read at 9; one or two silent steps among three leave its mean within the rooms'
    # spread (a look-back one step longer or shorter flags 10 or 8 too)
    assert flags[5].tolist() == [False] * 5 + [True] + [False] * 2
    assert not np.delete(flags, 5, axis=0).any()
