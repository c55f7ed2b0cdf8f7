"""Which devices and tags drive a multi-device cohort's drift.

For each of the alert's top signals, every device of the cohort gets its own divergence from
the reference (PSI / JS of its counts; for concept signals its accuracy drop) and a
contribution = ``share of the cohort's n × own divergence``, normalised over the cohort; a
device's contribution is the mean over the top signals. The **driving devices** are the
fewest, largest contributors that together account for ≥ 80 % (at most 10). A tag's
contribution is the sum over its devices; its **lift** is contribution / n-share, and a tag
drives the drift when its lift is ≥ 1.5 and it carries ≥ half of the contribution. In a
fleet-wide shift every device contributes about its share, so no tag stands out.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cloud.drift.stats import STATISTICS
from cloud.drift.tables import Snapshot

COVER = 0.8
MAX_DEVICES = 10
TAG_LIFT = 1.5


def _effect(kind: str, statistic: str, ref: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Each row's divergence from the reference ([D, k] → [D])."""
    if kind == "concept":
        ref_acc = ref[0] / ref.sum() if ref.sum() else 0.0
        n = obs.sum(axis=1)
        acc = np.where(n > 0, obs[:, 0] / np.where(n > 0, n, 1), ref_acc)
        return np.clip(ref_acc - acc, 0.0, None)
    return np.asarray(STATISTICS[statistic](ref[None, :], obs), dtype=float)


def device_contributions(snap: Snapshot, kind: str, statistic: str, members: frozenset[str] | None,
                         top: Sequence[tuple[str | None, str]], steps: slice,
                         concept_refs: dict | None = None) -> dict[str, dict]:
    """device → {share, effect, contribution} over the top (model, signal) pairs."""
    acc: dict[str, dict] = {}
    used = 0
    for model, signal in top:
        table = snap.tables.get(model)
        if table is None:
            continue
        obs = table.per_device(kind, steps)[signal]
        ref = (concept_refs or {}).get((model, signal))
        if ref is None:
            ref = table.ref.signals[kind].get(signal)
        if ref is None:  # a peer-referenced signal: the devices' own divergences have no reference
            continue
        mask = table.mask(members)
        n = obs.sum(axis=1) * mask
        if n.sum() == 0:
            continue
        effect = _effect(kind, statistic, np.asarray(ref), obs)
        raw = n / n.sum() * np.clip(effect, 0.0, None)
        norm = raw / raw.sum() if raw.sum() > 0 else raw
        used += 1
        for i, device in enumerate(table.devices):
            if n[i] == 0:
                continue
            row = acc.setdefault(device, {"share": 0.0, "effect": 0.0, "contribution": 0.0, "k": 0})
            row["share"] += float(n[i] / n.sum())
            row["effect"] += float(effect[i])
            row["contribution"] += float(norm[i])
            row["k"] += 1
    for row in acc.values():
        k = row.pop("k")
        row["effect"] /= k
        row["share"] /= max(used, 1)
        row["contribution"] /= max(used, 1)
    return acc


def attribute(contributions: dict[str, dict], device_tags: dict[str, set[str]], alarming: frozenset[str],
              skip_tag: str | None = None) -> tuple[list[dict], list[dict]]:
    """(devices, tags) evidence lists, most contributing first."""
    ranked = sorted(contributions.items(), key=lambda kv: -kv[1]["contribution"])
    devices, covered = [], 0.0
    for device, row in ranked[:MAX_DEVICES]:
        driving = covered < COVER and row["contribution"] > 0
        covered += row["contribution"] if driving else 0.0
        devices.append({"device": device, "share": round(row["share"], 4), "effect": round(row["effect"], 4),
                        "contribution": round(row["contribution"], 4), "driving": driving,
                        "alarm": device in alarming})
    per_tag: dict[str, dict] = {}
    for device, row in contributions.items():
        for tag in device_tags.get(device, ()):
            if tag == skip_tag:
                continue
            t = per_tag.setdefault(tag, {"share": 0.0, "contribution": 0.0, "devices": 0})
            t["share"] += row["share"]
            t["contribution"] += row["contribution"]
            t["devices"] += 1
    tags = []
    for tag, t in per_tag.items():
        lift = t["contribution"] / t["share"] if t["share"] > 0 else 0.0
        tags.append({"tag": tag, "devices": t["devices"], "share": round(t["share"], 4),
                     "contribution": round(t["contribution"], 4), "lift": round(lift, 3),
                     "driving": lift >= TAG_LIFT and t["contribution"] >= 0.5})
    tags.sort(key=lambda t: (-t["lift"], t["tag"]))
    return devices, tags[:MAX_DEVICES]
