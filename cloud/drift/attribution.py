"""Which devices and tags drive a multi-device cohort's drift.

For each of the alert's top signals (a score of one model, judged against the devices'
baselines or the reference), every device of the cohort gets its own effect over the alert's
recent steps (its mean score minus what was expected of it, less twice its own sampling noise,
in the score's effect units) and
a contribution = ``its share of the cohort's n × |its effect|``, normalised over the cohort; a
device's contribution is the mean over the top signals. The **driving devices** are the
fewest, largest contributors that together account for ≥ 80 % (at most 10). A tag's
contribution is the sum over its devices; its **lift** is contribution / n-share, and a tag
drives the drift when its lift is ≥ 1.5 and it carries ≥ half of the contribution. In a
fleet-wide shift every device contributes about its share, so no tag stands out.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from cloud.drift.scores import mean_and_within
from cloud.drift.tables import Snapshot

COVER = 0.8
MAX_DEVICES = 10
TAG_LIFT = 1.5


def device_contributions(snap: Snapshot, kind: str, members: frozenset[str] | None, top: Sequence[dict],
                         steps: slice, expected_of: Callable[[str, str, str, str], float | None]) -> dict[str, dict]:
    """device → {share, effect, contribution} over the top rows (``model``, ``signal``, ``against``).

    ``expected_of(device, model, signal, against)`` is the device's expected mean score (its
    baseline mean, or the reference's), or None when the device has none.
    """
    acc: dict[str, dict] = {}
    used = 0
    for row in top:
        table = snap.tables.get(row["model"])
        score = next((sc for sc in table.ref.scores[kind] if sc.name == row["signal"]), None) if table else None
        if score is None:
            continue
        counts = table.counts[kind][score.signal][:, steps].sum(axis=1)
        n, mean, within = mean_and_within(counts, score.weights)
        mask = table.mask(members)
        expected = np.array([expected_of(d, row["model"], score.name, row["against"]) for d in table.devices],
                            dtype=float)
        ok = mask & (n > 0) & ~np.isnan(expected)
        if not ok.any():
            continue
        # the part of each device's effect its own sampling noise cannot explain
        noise = 2.0 * np.sqrt(np.where(n > 0, within / np.maximum(n, 1), 0.0))
        raw_effect = np.clip(np.abs(mean - expected) - noise, 0.0, None)
        effect = np.where(ok, raw_effect / score.effect_scale(np.nan_to_num(expected, nan=0.5)), 0.0)
        share = np.where(ok, n, 0.0) / n[ok].sum()
        raw = share * effect
        norm = raw / raw.sum() if raw.sum() > 0 else raw
        used += 1
        for i, device in enumerate(table.devices):
            if not ok[i]:
                continue
            r = acc.setdefault(device, {"share": 0.0, "effect": 0.0, "contribution": 0.0, "k": 0})
            r["share"] += float(share[i])
            r["effect"] += float(effect[i])
            r["contribution"] += float(norm[i])
            r["k"] += 1
    for r in acc.values():
        k = r.pop("k")
        r["effect"] /= k
        r["share"] /= max(used, 1)
        r["contribution"] /= max(used, 1)
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
