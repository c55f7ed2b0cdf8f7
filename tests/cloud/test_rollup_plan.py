"""``cloud.store.rollup.plan`` merges each fleet bucket from its devices' merges of the chunk; it
must write what merging every window again wrote: the same buckets, the same claimed and
refused windows (floats are multiples of 1/64 here, so any order of addition gives equal sums)."""
from __future__ import annotations

import random

from cloud.store import FLEET
from cloud.store.rollup import bucket_start, merge_checked, plan
from shared.window import merge_windows
from tests.cloud.conftest import MODEL_A, MODEL_B, T0, random_window

BUCKET_S = 300


def reference(rows, existing) -> tuple[dict, list, list]:
    """(merges, good ids, bad ids) with every fleet bucket merged window by window."""
    groups: dict = {}
    for wid, device, model, shadow, t, body in rows:
        groups.setdefault((device, model, shadow, bucket_start(t, BUCKET_S)), []).append((wid, body))
    merges, bad = {}, []
    ok = {}
    for key, items in groups.items():
        _, refused = merge_checked(items, existing.get(key, (0, None))[1])
        bad += refused
        ok[key] = [(i, b) for i, b in items if i not in refused]
    fleet: dict = {}
    for (_, model, shadow, start), items in ok.items():
        fleet.setdefault((FLEET, model, shadow, start), []).extend(items)
    for fkey, items in fleet.items():
        merged, refused = merge_checked(items, existing.get(fkey, (0, None))[1])
        bad += refused
        for key in ok:
            ok[key] = [(i, b) for i, b in ok[key] if i not in refused]
        if merged is not None and len(refused) < len(items):
            merges[fkey] = merged
    for key, items in ok.items():
        if items:
            base = existing.get(key, (0, None))[1]
            merges[key] = merge_windows(([base] if base else []) + [b for _, b in items])
    return merges, sorted(i for items in ok.values() for i, _ in items), sorted(bad)


def chunk(rng: random.Random, n_devices: int, bad_share: float) -> list:
    rows, wid = [], 0
    for d in range(n_devices):
        for seq in range(rng.randrange(1, 8)):
            odd = rng.random() < bad_share
            w = random_window(rng, f"dev-{d}", 1, seq, t_start=T0 + 10.0 * seq + d,
                              model=MODEL_A if rng.random() < 0.8 else MODEL_B, shadow=rng.random() < 0.3,
                              n_features=3 if odd else 10)
            body = {k: v for k, v in w.items() if k not in ("kind", "v")}
            rows.append((wid, w["device"], w["model"], w.get("shadow_model") or "", w["t_start"], body))
            wid += 1
    rows.sort(key=lambda r: (r[1], r[4], r[0]))
    return rows


def test_fleet_buckets_from_device_merges_equal_merging_every_window():
    rng = random.Random(11)
    fits = misfits = 0
    for trial in range(60):
        rows = chunk(rng, rng.randrange(1, 12), bad_share=0.0 if trial % 3 else 0.1)
        existing = {}
        if trial % 2:  # buckets stored by an earlier pass: a few devices' and every fleet one
            earlier, _, _ = reference(chunk(random.Random(trial), 4, 0.0), {})
            existing = {k: (v["n_windows"], v) for k, v in earlier.items()}
        got = plan(rows, BUCKET_S, existing, FLEET)
        merges, good, bad = reference(rows, existing)
        assert (sorted(got.good), sorted(got.bad)) == (good, bad)
        assert got.merges == merges
        fits += not bad
        misfits += bool(bad)
    assert fits >= 20 and misfits >= 5  # both the devices' merges and the window-by-window path ran
