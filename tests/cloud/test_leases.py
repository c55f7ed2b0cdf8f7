"""Leases on the database's clock with an epoch (fencing token), on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
import time

import pytest

from cloud.store import LeaseLost, open_store


def _db_now(store) -> float:
    with store.transaction(write=False) as cur:
        return float(cur.execute(f"SELECT {store.DB_NOW}").fetchone()[0])


def _lapse(store, name: str) -> None:
    """Let a lease run out now, as if its holder had died TTL seconds ago."""
    with store.transaction() as cur:
        cur.execute(f"UPDATE leases SET expires_t = {store.DB_NOW} - 1 WHERE name = ?", (name,))


def test_a_lease_is_renewed_under_one_epoch_and_each_new_holding_raises_it(store):
    a = store.acquire_lease("leader", "c1", 30)
    assert a is not None and a.epoch == 1 and a.holder == "c1"
    assert abs(a.expires_t - (_db_now(store) + 30)) < 2  # expiry on the database's clock
    renewed = store.acquire_lease("leader", "c1", 30)
    assert renewed.epoch == 1 and renewed.expires_t >= a.expires_t
    assert store.acquire_lease("leader", "c2", 30) is None  # c1's lease is live
    assert store.lease("leader") == ("c1", 1, True)
    _lapse(store, "leader")
    b = store.acquire_lease("leader", "c2", 30)
    assert b.epoch == 2 and store.lease("leader") == ("c2", 2, True)
    assert store.acquire_lease("leader", "c1", 30) is None
    store.release_lease("leader", "c1")  # not the holder: no effect
    assert store.lease("leader") == ("c2", 2, True)
    store.release_lease("leader", "c2")  # lapses now, keeps its epoch: epochs never go back
    assert store.lease("leader") == ("c2", 2, False)
    assert store.acquire_lease("leader", "c1", 30).epoch == 3
    _lapse(store, "leader")
    assert store.acquire_lease("leader", "c1", 30).epoch == 4  # taken again after it lapsed: a new epoch
    assert store.acquire_lease("other", "c1", 30).epoch == 1  # leases are independent


def test_a_write_under_a_stale_epoch_or_a_lapsed_lease_is_refused(store):
    a = store.acquire_lease("leader", "c1", 30)
    with store.transaction() as cur:
        store.hold_lease(cur, a)  # current: passes
        cur.execute("INSERT INTO kv (key, value, updated_t) VALUES ('k', '1', 0)")
    _lapse(store, "leader")
    with pytest.raises(LeaseLost, match="lapsed"):  # nobody took it yet, but it ran out
        with store.transaction() as cur:
            store.hold_lease(cur, a)
    b = store.acquire_lease("leader", "c2", 30)
    with pytest.raises(LeaseLost, match=r"held by c2 \(epoch 2\)"):
        with store.transaction() as cur:
            store.hold_lease(cur, a)
            cur.execute("UPDATE kv SET value = '2' WHERE key = 'k'")
    assert store.kv_get("k") == 1  # the refused transaction wrote nothing
    with store.transaction() as cur:
        store.hold_lease(cur, b)
    with pytest.raises(LeaseLost, match="held by nobody"):
        with store.transaction() as cur:
            store.hold_lease(cur, type(b)("never-taken", "c2", 1, b.expires_t))


def test_a_takeover_waits_for_a_write_that_passed_the_fence(pg_schemas):
    """PostgreSQL: the fence check locks the lease row, so a lease that runs out while the leader's
    fenced transaction is still open changes hands only after that transaction committed."""
    url = pg_schemas()
    leader, rival = open_store(url), open_store(url)
    try:
        lease = leader.acquire_lease("leader", "c1", 0.3)
        checked, events = threading.Event(), []

        def leader_write() -> None:
            with leader.transaction() as cur:
                leader.hold_lease(cur, lease)
                checked.set()
                time.sleep(0.8)  # the lease runs out meanwhile
                cur.execute("INSERT INTO kv (key, value, updated_t) VALUES ('by', '\"c1\"', 0)")
            events.append("leader committed")

        thread = threading.Thread(target=leader_write)
        thread.start()
        assert checked.wait(10)
        deadline = time.monotonic() + 5
        while rival.lease("leader")[2] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rival.lease("leader") == ("c1", 1, False)  # lapsed on the database's clock
        taken = rival.acquire_lease("leader", "c2", 30)  # blocks until the leader's write is in
        events.append("rival took the lease")
        thread.join(10)
        assert taken.epoch == 2 and events == ["leader committed", "rival took the lease"]
        assert rival.kv_get("by") == "c1"
    finally:
        leader.close()
        rival.close()
