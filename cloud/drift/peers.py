"""A device against its peers: the noise floor of a microphone that died, whenever it died.

A dead or unplugged microphone (digital silence), a DC offset or a clipping front end makes the
gate pass nothing, so the device's speech signals go quiet rather than wrong; its noise floor
(``noise_dbfs``: the level of the frames the gate did not pass) moves far from every other
device's. Over the last ``short_steps`` steps the device's mean noise-floor ridit is compared
with its peers' (the other devices on its model): a robust z against the peers' median and
scaled MAD, at the budget's per-look alpha, and an effect floor (``peer_floor``, in ridits) wide
enough that a noisy kitchen among quiet bedrooms is not a broken device.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from cloud.drift.scores import mean_and_within
from cloud.drift.tables import Snapshot

SIGNAL = "noise_dbfs"
MAD_SCALE = 1.4826


def peer_check(snap: Snapshot, device: str, short_steps: int, min_peers: int, alpha: float,
               floor: float) -> dict | None:
    """The check's figures ({alarm, severity, z, p_value, effect, top, t_start}) or None."""
    steps = slice(max(0, snap.n_steps - short_steps), None)
    for model, table in snap.tables.items():
        if device not in table.devices:
            continue
        score = next(s for s in table.ref.scores["input"] if s.signal == SIGNAL)
        counts = table.counts["input"][SIGNAL][:, steps].sum(axis=1)
        n, mean, within = mean_and_within(counts, score.weights)
        i = table.devices.index(device)
        peers = [j for j in range(len(table.devices)) if j != i and n[j] > 0]
        if n[i] <= 0 or len(peers) < min_peers:
            return None
        med, effect, z, p = (float(x) for x in against_peers(mean[i], within[i], n[i], mean[peers]))
        alarm = p <= alpha and abs(effect) >= floor
        top = {"model": model, "signal": SIGNAL, "against": "peers", "n": int(n[i]), "mean": round(float(mean[i]), 6),
               "expected": round(med, 6), "effect": round(effect, 6), "floor": floor,
               "severity": round(abs(effect) / floor, 6), "z": round(float(z), 3), "p_value": p,
               "t_start": snap.step_t(steps.start), "t_end": snap.step_t(snap.n_steps)}
        return {"alarm": bool(alarm), "severity": abs(effect) / floor, "z": z, "p_value": p, "effect": effect,
                "peers": len(peers), "alpha": alpha, "top": top, "t_start": snap.step_t(steps.start)}
    return None


def against_peers(mean, within, n, peer_means):
    """(peers' median, effect, robust z, two-sided p) of devices against their peers' means (last
    axis; NaN where a peer has no data): the peers' median and scaled MAD, plus the device's own
    sampling noise. Broadcasts, so the calibration (``simulation``) judges a fleet's every step."""
    with np.errstate(invalid="ignore", divide="ignore"):
        med = np.nanmedian(peer_means, axis=-1)
        mad = MAD_SCALE * np.nanmedian(np.abs(peer_means - np.expand_dims(med, -1)), axis=-1)
        se = np.sqrt(mad ** 2 + within / n)
        effect = mean - med
        z = np.where(se > 0, effect / se, np.where(effect != 0, np.inf, 0.0))
    return med, effect, z, 2.0 * special.ndtr(-np.abs(z))
