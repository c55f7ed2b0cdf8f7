"""``bench_collector.py``'s horizon part: 24 h of real 10 s windows rolled up, then the merges
the drift report and the dashboard read over them (fleet, a tag, one device, per-device buckets)."""
from __future__ import annotations

import time
from pathlib import Path

from bench_collector_data import WINDOW_S, BenchFailed, ProfileWindows, device_name
from cloud.config import load_collector_config
from cloud.store import Batch, Received, open_store


def horizon(folder: Path, gen: ProfileWindows, devices: int) -> dict:
    """24 h of 10 s windows rolled up, then one rollup interval of windows left unrolled."""
    db_url = f"sqlite:///{folder}/horizon.db"
    cfg = load_collector_config(env={}, overrides={"db_url": db_url})
    store = open_store(db_url)
    now = time.time()
    per_device = int(86400 / WINDOW_S)
    t_fill = time.perf_counter()
    rolled = unmergeable = 0
    for k in range(0, per_device, 360):  # an hour of windows at a time, rolled up as the collector would
        ws = [gen.window(device_name(d), j, now - 86400 + j * WINDOW_S + d % 10)
              for j in range(k, min(k + 360, per_device)) for d in range(devices)]
        store.write(Batch(windows=[Received(w, now) for w in ws]))
        r = store.rollup(cfg.rollup_bucket_s, 3600.0 * 48, now=now)
        rolled, unmergeable = rolled + r.rolled, unmergeable + r.unmergeable
    fill_s = time.perf_counter() - t_fill
    tail = max(1, int(devices * cfg.rollup_interval_s / WINDOW_S))
    store.write(Batch(windows=[Received(gen.window(device_name(d), per_device + 1, now - 5), now)
                               for d in range(tail)]))
    if rolled != per_device * devices or unmergeable:
        raise BenchFailed(f"horizon: rolled up {rolled} of {per_device * devices} windows ({unmergeable} unmergeable)")
    tagged = [device_name(d) for d in range(0, devices, 10)]  # a tenth of the fleet (at least one device)
    for d in tagged:
        store.tag(d, ["tenth"])

    def timed(fn, repeat: int = 3) -> tuple[float, object]:
        best, out = float("inf"), None
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return round(best, 4), out

    since, b = now - 86400, cfg.rollup_bucket_s
    fleet_s, fleet = timed(lambda: store.merged(since=since, until=now + 1, bucket_s=b))
    tag_s, _ = timed(lambda: store.merged(devices=store.devices_with_tag("tenth"), since=since, until=now + 1,
                                          bucket_s=b))
    dev_s, _ = timed(lambda: store.merged(devices=[device_name(0)], since=since, until=now + 1, bucket_s=b))
    buckets_s, n_parts = timed(lambda: sum(1 for _ in store.device_buckets(since=since, until=now + 1, bucket_s=b)),
                               repeat=1)
    n_windows = sum(m["n_windows"] for m in fleet.values())
    store.close()
    return {"devices": devices, "hours": 24, "window_s": WINDOW_S, "windows_in_horizon": n_windows,
            "unrolled_tail": tail, "bucket_s": b, "fill_and_rollup_s": round(fill_s, 1),
            "fleet_merge_s": fleet_s, "tag_tenth_merge_s": tag_s, "one_device_merge_s": dev_s,
            "per_device_buckets_s": buckets_s, "per_device_bucket_rows": n_parts, "target_s": 1.0}
