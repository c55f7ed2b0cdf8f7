"""Two collectors rolling up into the same buckets at the same time, on PostgreSQL.

Under READ COMMITTED two rollups can hold disjoint windows of one bucket: the windows table's ids
become visible out of order when two replicas ingest at once. Both then merge onto the same
stored bucket; the second write must not replace the first (a lost merge under-counts). The
deterministic test below builds exactly that interleaving; the stress test runs two writers and
two rollups freely against each other (it found the old code's under-count in about a third of
its runs). Both compare every bucket with the exact merge of the windows it holds.
"""
from __future__ import annotations

import random
import threading
import time
from contextlib import contextmanager

from cloud.store import FLEET, Received, open_store
from tests.cloud.conftest import T0, random_window
from tests.cloud.rollup_checks import assert_exact, stored_buckets

BUCKET_S = 300
KEEP_S = 1e9  # retention: nothing is deleted, so every bucket can be checked against its windows


def _assert_exact(store) -> None:
    assert_exact(store, BUCKET_S)


class _Hook:
    """Wraps a store's transactions: calls ``on(sql)`` before each statement it runs."""

    def __init__(self, store, on):
        self.store, self.on, self.original = store, on, store._tx
        store._tx = self._tx

    @contextmanager
    def _tx(self, write: bool = True):
        with self.original(write) as cur:
            yield _HookedCursor(cur, self.on)


class _HookedCursor:
    def __init__(self, cur, on):
        self._cur, self._on = cur, on

    def execute(self, sql, params=()):
        self._on(sql)
        result = self._cur.execute(sql, params)
        self._on("after " + sql)
        return result

    def executemany(self, sql, rows):
        self._on(sql)
        return self._cur.executemany(sql, rows)

    @property
    def rowcount(self):
        return self._cur.rowcount


def test_two_rollups_merging_disjoint_windows_into_one_bucket_keep_both(pg_schemas):
    url = pg_schemas()
    main, held, a, b = (open_store(url) for _ in range(4))
    rng = random.Random(3)
    x = random_window(rng, "dev-1", 1, 0, t_start=T0)  # both in one device bucket and one fleet bucket
    y = random_window(rng, "dev-1", 1, 1, t_start=T0 + 10)
    inserted, release_x, a_read = threading.Event(), threading.Event(), threading.Event()
    at_write = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def ingest_x_slowly() -> None:  # replica 1: its batch (window x, the lower id) commits late
        with held.transaction() as cur:
            held._write_windows(cur, [Received(x, T0 + 10)])
            inserted.set()
            release_x.wait(10)

    def hooks(store, name: str):
        state = {"waited": False}

        def on(sql: str) -> None:
            if name == "a" and sql.startswith("after SELECT id, device") and not a_read.is_set():
                a_read.set()
            if sql.startswith(("UPDATE rollups", "INSERT INTO rollups")) and not state["waited"]:
                state["waited"] = True
                at_write.wait()  # both rollups have read, merged and claimed: now both write the bucket

        _Hook(store, on)

    def roll(store, chunk: int) -> None:
        try:
            store.rollup(BUCKET_S, KEEP_S, now=T0 + 1000, chunk=chunk)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    try:
        ingest = threading.Thread(target=ingest_x_slowly)
        ingest.start()
        assert inserted.wait(10)
        main.insert_windows([y], received_t=T0 + 20)  # replica 2: window y (the higher id) commits first
        hooks(a, "a")
        hooks(b, "b")
        first = threading.Thread(target=roll, args=(a, 1000))
        first.start()  # rollup A sees y only
        assert a_read.wait(10)
        release_x.set()
        ingest.join(10)
        second = threading.Thread(target=roll, args=(b, 1))
        second.start()  # rollup B sees x and y (A's claim is not committed) and takes the first: x only
        first.join(30)
        second.join(30)
        assert not errors, errors
        assert {row["seq"]: row["rolled"] for row in main.window_rows()} == {0: 1, 1: 1}
        stored = stored_buckets(main)
        assert stored[("dev-1", x["model"], "", T0 - T0 % BUCKET_S)][0] == 2
        _assert_exact(main)
    finally:
        for s in (main, held, a, b):
            s.close()


def test_two_replicas_ingesting_and_rolling_up_at_once_keep_every_bucket_exact(pg_schemas):
    """Two ingest writers (batches commit out of id order) and two rollups in loops, free-running."""
    url = pg_schemas()
    stores = [open_store(url) for _ in range(5)]
    main, writers, rollers = stores[0], stores[1:3], stores[3:5]
    devices = [f"dev-{i}" for i in range(12)]
    done, errors = threading.Event(), []

    def ingest(k: int) -> None:
        rng = random.Random(k)
        try:
            for seq in range(40):  # each writer sends its own boot of every device: no duplicates
                rows = [Received(random_window(rng, d, k + 1, seq, t_start=T0 + 7.0 * seq), T0 + 7.0 * seq + 10)
                        for d in rng.sample(devices, 6)]
                with writers[k].transaction() as cur:  # a batch takes its time to commit: ids show out of order
                    writers[k]._write_windows(cur, rows)
                    time.sleep(rng.uniform(0.0, 0.01))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def roll(k: int) -> None:
        try:
            while not done.is_set():
                rollers[k].rollup(BUCKET_S, KEEP_S, now=T0 + 1000, chunk=(3, 5)[k])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        threads = [threading.Thread(target=roll, args=(k,)) for k in range(2)]
        ingesting = [threading.Thread(target=ingest, args=(k,)) for k in range(2)]
        for t in threads + ingesting:
            t.start()
        for t in ingesting:
            t.join(60)
        done.set()
        for t in threads:
            t.join(60)
        assert not errors, errors
        main.rollup(BUCKET_S, KEEP_S, now=T0 + 1000)
        assert all(row["rolled"] == 1 for row in main.window_rows())
        _assert_exact(main)
        assert stored_buckets(main)[(FLEET, "a" * 64, "", T0 - T0 % BUCKET_S)][0] > 0
    finally:
        for s in stores:
            s.close()


def test_a_rollup_waits_for_a_bucket_another_is_merging_into_and_takes_other_windows(pg_schemas):
    """PostgreSQL locks what a rollup works on: a second rollup skips the windows the first holds
    (no chunk is merged twice) and waits for the bucket the first is merging into, then merges onto
    the result."""
    url = pg_schemas()
    main, a, b = (open_store(url) for _ in range(3))
    rng = random.Random(5)
    main.insert_windows([random_window(rng, "dev-1", 1, 0, t_start=T0)], received_t=T0 + 10)
    main.rollup(BUCKET_S, KEEP_S, now=T0 + 1000)  # the bucket exists
    main.insert_windows([random_window(rng, "dev-1", 1, s, t_start=T0 + 10 * s) for s in (1, 2)], received_t=T0 + 30)
    a_merging, a_go, b_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def on_a(sql: str) -> None:
        if sql.startswith("after SELECT device, model, shadow_model, n_windows, body") and not a_merging.is_set():
            a_merging.set()  # A holds window 1 and its buckets: it merges now
            a_go.wait(10)

    _Hook(a, on_a)

    def roll(store, done=None) -> None:
        try:
            store.rollup(BUCKET_S, KEEP_S, now=T0 + 1000, chunk=1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        if done is not None:
            done.set()

    try:
        first = threading.Thread(target=roll, args=(a,))
        first.start()
        assert a_merging.wait(10)
        second = threading.Thread(target=roll, args=(b, b_done))
        second.start()
        assert not b_done.wait(0.5)  # B took window 2 and waits for the bucket A is merging into
        a_go.set()
        first.join(30)
        second.join(30)
        assert not errors, errors
        assert all(row["rolled"] == 1 for row in main.window_rows())
        assert stored_buckets(main)[("dev-1", "a" * 64, "", T0 - T0 % BUCKET_S)][0] == 3
        _assert_exact(main)
    finally:
        for s in (main, a, b):
            s.close()
