"""Device clocks are not trusted: states are ordered by receive time, windows are deduplicated by
(device, boot, seq) alone, and each device's clock offset is shown in the fleet view.

Against the real mosquitto and both real stores (SQLite, PostgreSQL), the real `harken fleet`
commands and the HTTP API in process.
"""
from __future__ import annotations

import json
import random
import time

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.api.backend import Services
from cloud.collector import Collector
from cloud.fleet import format_offset
from cloud.store import Batch, Received
from shared.cli import root as harken
from tests.cloud.conftest import collector_config, random_window, state_message, wait_until

YEAR, DAY = 365 * 86400.0, 86400.0


def _rev(store, device: str):
    return ((store.device(device) or {}).get("state") or {}).get("desired_rev")


def test_a_state_stamped_a_year_ahead_does_not_freeze_the_device(mosquitto, store_url, publisher_factory):
    c = Collector(collector_config(mosquitto.url, store_url, retention_full_s=2 * DAY))
    c.start()
    try:
        assert c.ingest.wait_connected(10)
        pub = publisher_factory()
        now = time.time()
        pub.state(state_message("dev-fast", t=now + YEAR, desired_rev=3))  # its clock jumped a year ahead
        assert wait_until(lambda: _rev(c.store, "dev-fast") == 3, 10)
        pub.state(state_message("dev-fast", t=now + 1, desired_rev=4))  # fixed again: earlier by its clock
        assert wait_until(lambda: _rev(c.store, "dev-fast") == 4, 10), f"desired_rev {_rev(c.store, 'dev-fast')}"
        # a device whose clock is three days slow: its windows are stored, not refused as too late
        slow = [random_window(random.Random(i), "dev-slow", 1, i, t_start=now - 3 * DAY + 10 * i) for i in range(5)]
        for w in slow:
            pub.window(w)
        assert wait_until(lambda: len(list(c.store.windows(device="dev-slow"))) == 5, 10), c.store.reject_counts()
        assert c.store.reject_counts() == {}
        # the fleet view says by how much each clock is off
        fast, slow_row = c.store.device("dev-fast"), c.store.device("dev-slow")
        assert fast["clock_offset_s"] > 364 * DAY
        assert -3 * DAY - 60 < slow_row["clock_offset_s"] < -3 * DAY + 120
        _check_fleet_commands(store_url)
        _check_api(c.store)
    finally:
        c.stop()


def _check_fleet_commands(store_url: str) -> None:
    runner = CliRunner()
    r = runner.invoke(harken, ["fleet", "status", "--json", "--db", store_url])
    assert r.exit_code == 0, r.output
    offsets = {d["device"]: d["clock_offset_s"] for d in json.loads(r.output)["devices"]}
    assert offsets["dev-fast"] > 364 * DAY and offsets["dev-slow"] < -2.9 * DAY
    table = runner.invoke(harken, ["fleet", "status", "--db", store_url]).output
    assert "CLOCK" in table and "+1.0y" in table and "-3.0d" in table
    shown = runner.invoke(harken, ["fleet", "show", "dev-slow", "--db", store_url]).output
    assert "clock_offset    -3.0d" in shown


def _check_api(store) -> None:
    api = TestClient(create_app(Services(store=store, token="t" * 20)))
    api.headers["Authorization"] = "Bearer " + "t" * 20
    devices = {d["device"]: d for d in api.get("/api/devices").json()}
    assert devices["dev-fast"]["clock_offset_s"] > 364 * DAY
    assert api.get("/api/devices/dev-slow").json()["clock_offset_s"] < -2.9 * DAY


def _received(ws: list[dict], at: float) -> list[Received]:
    return [Received(w, at) for w in ws]


def test_a_window_redelivered_after_its_deletion_is_refused_not_stored_twice(store):
    rng = random.Random(3)
    old = [random_window(rng, "dev-1", 7, s, t_start=1e9 + 10 * s) for s in range(3)]
    recent = [random_window(rng, "dev-1", 7, s, t_start=1e9 + 10 * s) for s in range(3, 5)]
    store.write(Batch(windows=_received(old, 1000.0) + _received(recent, 5000.0)))
    res = store.rollup(300, 2000.0, now=4000.0)  # deleted: what was received before 2000 (our clock)
    assert res.deleted == 3
    before = store.merged()
    # seq 1 comes again (a redelivery after the deletion), seq 5 is new, and so is another boot's seq 0
    again = Batch(windows=_received([old[1], random_window(rng, "dev-1", 7, 5, t_start=1e9 + 50),
                                     random_window(rng, "dev-1", 8, 0, t_start=1e9)], 4500.0))
    result = store.write(again)
    assert (result.windows_new, result.rejects) == (2, 1)
    assert store.reject_counts() == {"too_late": 1}
    assert "boot 7 seq 1" in store.rejected()[0]["detail"]
    total = sum(m["n_windows"] for m in store.merged().values())
    assert total == sum(m["n_windows"] for m in before.values()) + 2  # every window counted exactly once


@pytest.mark.parametrize("offset_s", [-3 * DAY, 0.0, YEAR])
def test_the_offset_is_the_largest_recent_sample(store, offset_s):
    """Transit only makes a sample smaller: a window that waited 50 s in a queue does not move it."""
    rng = random.Random(5)
    at = 10_000.0
    live = random_window(rng, "dev-1", 1, 0, t_start=at + offset_s - 10.0)  # sent when it ended: now
    queued = random_window(rng, "dev-1", 1, 1, t_start=at + offset_s - 60.0)  # ended 50 s before it came
    store.write(Batch(windows=[Received(queued, at), Received(live, at)], seen={"dev-1": at}))
    store.write(Batch(windows=[Received(random_window(rng, "dev-1", 1, 2, t_start=at + offset_s - 80.0),
                                        at + 10.0)], seen={"dev-1": at + 10.0}))
    assert store.device("dev-1")["clock_offset_s"] == pytest.approx(offset_s, abs=1e-6)


@pytest.mark.parametrize("seconds, shown", [(YEAR - 1, "+1.0y"), (YEAR + 1, "+1.0y"), (-3 * DAY + 30, "-3.0d"),
                                            (2 * DAY - 60, "+2.0d"), (119.6, "+2m"), (0.4, "0s"), (None, "-")])
def test_an_offset_is_shown_in_the_unit_its_rounded_value_reaches(seconds, shown):
    assert format_offset(seconds) == shown
