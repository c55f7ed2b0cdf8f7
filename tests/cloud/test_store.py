"""The store contract, run against both real engines (SQLite file, PostgreSQL schema)."""
from __future__ import annotations

import random
import threading

import pytest

from cloud.store import FLEET, Batch, Received, Reject, StoreDataError, open_store
from cloud.store.migrations import MIGRATIONS, Migration
from shared.errors import StoreError
from shared.window import merge_windows
from tests.cloud.conftest import MODEL_A, MODEL_B, T0, random_window, state_message


def _windows(n: int, device="dev-1", seed=0, **kw) -> list[dict]:
    rng = random.Random(seed)
    return [random_window(rng, device, 1, i, **kw) for i in range(n)]


def _strip(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("kind", "v")}


def _insert_received_at_end(store, ws: list[dict]) -> None:
    """Store windows as received when they end (t_start + 10 s, by the collector's clock)."""
    batch = Batch(windows=[Received(w, w["t_start"] + 10.0) for w in ws])
    store.write(batch)


def test_migrations_are_named_recorded_and_applied_once(store, store_url):
    assert store.applied_migrations() == [m.name for m in MIGRATIONS]
    store.close()
    again = open_store(store_url)  # reopening applies nothing twice
    assert again.applied_migrations() == [m.name for m in MIGRATIONS]
    extra = Migration("0099_test_extension", "CREATE TABLE ext (id {pk}, name TEXT NOT NULL)")
    assert again.apply_migrations([extra]) == ["0099_test_extension"]
    assert again.apply_migrations([extra]) == []
    with again.transaction() as cur:
        cur.execute("INSERT INTO ext (name) VALUES (?)", ("x",))
        assert cur.execute("SELECT id, name FROM ext").fetchall() == [(1, "x")]
    again.close()


def test_a_failing_migration_leaves_nothing_behind(store):
    bad = Migration("0098_broken", "CREATE TABLE half (a INTEGER); CREATE TABLE half (a INTEGER)")
    with pytest.raises(StoreError):
        store.apply_migrations([bad])
    assert "0098_broken" not in store.applied_migrations()
    good = Migration("0098_broken", "CREATE TABLE half (a INTEGER)")
    assert store.apply_migrations([good]) == ["0098_broken"]  # the first table was rolled back


def test_windows_are_stored_exactly_once(store):
    ws = _windows(20)
    assert store.insert_windows(ws) == 20
    assert store.insert_windows(ws) == 0
    assert store.insert_windows(ws[:5] + ws[:5] + _windows(22)[20:]) == 2  # in-batch duplicates too
    stored = list(store.windows())
    assert len(stored) == 22
    assert {(w["device"], w["boot"], w["seq"]) for w in stored} == {("dev-1", 1, i) for i in range(22)}
    # same seq on another boot or device is another window
    assert store.insert_windows([random_window(random.Random(1), "dev-1", 2, 0),
                                 random_window(random.Random(1), "dev-2", 1, 0)]) == 2


def test_out_of_order_windows_land_in_place(store):
    ws = _windows(10)
    order = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]
    for i in order:
        store.insert_windows([ws[i]])
    assert [w["seq"] for w in store.windows()] == list(range(10))
    assert [w["seq"] for w in store.windows(since=T0 + 30, until=T0 + 60)] == [3, 4, 5]


def test_window_queries_filter_by_device_model_and_time(store):
    store.insert_windows(_windows(5, "dev-1") + _windows(5, "dev-2", seed=1)
                         + _windows(5, "dev-3", seed=2, model=MODEL_B))
    assert len(list(store.windows(device="dev-2"))) == 5
    assert {w["device"] for w in store.windows(devices=["dev-1", "dev-3"])} == {"dev-1", "dev-3"}
    assert list(store.windows(devices=[])) == []
    assert {w["device"] for w in store.windows(model="bbbb")} == {"dev-3"}
    assert store.models() == [MODEL_A, MODEL_B]
    assert store.models("bb") == [MODEL_B]
    rows = list(store.window_rows(device="dev-1", since=T0 + 10))
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["model"] == MODEL_A and rows[0]["rolled"] == 0 and rows[0]["body"]["seq"] == 1


def test_window_pages_cover_everything_in_order(store, monkeypatch):
    import cloud.store.sql as sql

    monkeypatch.setattr(sql, "PAGE", 7)
    rng = random.Random(3)
    ws = [random_window(rng, f"dev-{i % 4}", 1, i, t_start=T0 + (i // 4) * 10) for i in range(40)]
    store.insert_windows(ws)
    got = [(w["t_start"], w["device"]) for w in store.windows()]
    assert len(got) == 40 and got == sorted(got)


def test_events_are_stored_once_and_listed_newest_first(store):
    ev = [{"kind": "event", "v": "1.0", "device": "dev-1", "boot": 1, "seq": i, "t": T0 + i,
           "event": "model_activated", "model": MODEL_A, "reason": f"r{i}", "detail": {"i": i}} for i in range(3)]
    assert store.insert_events(ev) == 3
    assert store.insert_events(ev) == 0
    got = store.events(device="dev-1")
    assert [e["seq"] for e in got] == [2, 1, 0]
    assert got[0]["detail"] == {"i": 2} and got[0]["reason"] == "r2"


def test_device_state_online_offline_and_last_seen(store):
    full = state_message("dev-1", True, t=100.0, agent_version="0.1.0", automation="shadow",
                         models={"active": MODEL_A, "previous": None}, health="ok")
    store.upsert_device_state(full, received_t=1000.0)
    d = store.device("dev-1")
    assert d["online"] is True and d["state"]["agent_version"] == "0.1.0" and d["last_seen_t"] == 1000.0
    # the last will is minimal: it turns the device offline and keeps what it ran
    store.upsert_device_state(state_message("dev-1", False, t=100.0), received_t=1010.0)
    d = store.device("dev-1")
    assert d["online"] is False and d["state"]["models"]["active"] == MODEL_A
    # states are ordered by when the collector received them, not by the device's clock:
    # one received before the stored one is ignored, whatever time it claims
    store.upsert_device_state(state_message("dev-1", True, t=5000.0), received_t=1005.0)
    assert store.device("dev-1")["online"] is False
    store.upsert_device_state(state_message("dev-1", True, t=200.0, agent_version="0.2.0"), received_t=1030.0)
    d = store.device("dev-1")
    assert d["online"] is True and d["state"]["agent_version"] == "0.2.0" and "models" not in d["state"]
    # windows count as being seen, but never move last_seen back
    store.insert_windows(_windows(1), received_t=1025.0)
    assert store.device("dev-1")["last_seen_t"] == 1030.0
    store.insert_windows(_windows(2)[1:], received_t=1040.0)
    assert store.device("dev-1")["last_seen_t"] == 1040.0
    assert store.device("nope") is None
    assert [d["device"] for d in store.devices()] == ["dev-1"]


def test_tags(store):
    store.insert_windows(_windows(1, "dev-1") + _windows(1, "dev-2"))
    store.tag("dev-1", ["lab", "eu"])
    store.tag("dev-2", ["eu", "eu"])
    store.tag("dev-9", ["future"])  # not seen yet
    assert store.devices_with_tag("eu") == ["dev-1", "dev-2"]
    assert store.tags("dev-9") == ["future"]
    store.untag("dev-1", ["eu", "absent"])
    assert store.devices_with_tag("eu") == ["dev-2"]
    assert {d["device"]: d["tags"] for d in store.devices()} == {"dev-1": ["lab"], "dev-2": ["eu"]}


def test_rejects_are_kept_counted_and_pruned(store):
    store.insert_rejected([Reject.of(T0 + i, "harken/v1/dev/x/stats", "not_json" if i % 3 else "bad_zlib",
                                     "detail", bytes(range(256)) * 2) for i in range(9)])
    assert store.reject_counts() == {"bad_zlib": 3, "not_json": 6}
    latest = store.rejected(limit=2)
    assert [r["t"] for r in latest] == [T0 + 8, T0 + 7]
    assert latest[0]["head_hex"] == bytes(range(256)).hex() and latest[0]["size_bytes"] == 512
    assert len(store.rejected(code="bad_zlib")) == 3
    assert store.prune_rejected(4) == 5
    assert len(store.rejected(limit=100)) == 4
    assert store.reject_counts()["not_json"] == 6  # counts outlive the pruned rows


def test_alerts_crud(store):
    a = {"id": "a1", "status": "open", "cohort": "fleet", "signal": "input", "pattern": "step",
         "opened_t": T0, "evidence": {"top": [["snr_db", 0.4]]}}
    store.save_alert(a)
    assert store.alert("a1")["evidence"] == {"top": [["snr_db", 0.4]]}
    assert store.alert("a1")["updated_t"] == T0
    store.save_alert({**a, "status": "resolved", "updated_t": T0 + 60, "resolved_t": T0 + 60})
    store.save_alert({**a, "id": "a2", "cohort": "tag:eu", "opened_t": T0 + 5})
    assert store.alert("a1")["status"] == "resolved"
    assert [x["id"] for x in store.alerts()] == ["a1", "a2"]
    assert [x["id"] for x in store.alerts(status="open")] == ["a2"]
    assert store.alerts(cohort="tag:eu")[0]["id"] == "a2"
    assert store.alert("zzz") is None
    with pytest.raises(StoreError, match="signal"):
        store.save_alert({"id": "x", "status": "open", "cohort": "fleet", "pattern": "p", "opened_t": 1.0})


def test_kv(store):
    assert store.kv_get("k") is None
    store.kv_set("k", {"a": [1, 2]})
    store.kv_set("k", {"a": [3]})
    assert store.kv_get("k") == {"a": [3]}


def _by_device_model(ws):
    out = {}
    for w in ws:
        out.setdefault((w["device"], w["model"] or "", w.get("shadow_model") or ""), []).append(w)
    return out


def test_rollup_is_exact_and_deletes_only_past_retention(store):
    rng = random.Random(7)
    ws = [random_window(rng, f"dev-{d}", 1, s, t_start=T0 + 60.0 * s, shadow=bool(s % 2))
          for d in range(3) for s in range(40)]  # 40 min per device, 15-min buckets
    ws += [random_window(rng, "dev-0", 2, s, t_start=T0 + 60.0 * s, model=MODEL_B) for s in range(10)]
    _insert_received_at_end(store, ws)
    before = store.merged()
    now = T0 + 60.0 * 40 + 600  # retention 20 min: windows received before T0+1800 go
    res = store.rollup(900, 1200.0, now=now)
    assert res.rolled == len(ws) and res.unmergeable == 0
    assert res.deleted == sum(1 for w in ws if w["t_start"] + 10 < now - 1200)
    assert len(list(store.windows())) == len(ws) - res.deleted
    # each stored bucket is exactly merge_windows of its original windows
    with store.transaction(write=False) as cur:
        rows = cur.execute("SELECT device, model, shadow_model, bucket_start, n_windows, body FROM rollups").fetchall()
    import json

    got = {(d, m, sh, b): (n, json.loads(body)) for d, m, sh, b, n, body in rows}
    for (device, model, shadow), group in _by_device_model(ws).items():
        for start in (T0 - T0 % 900 + 900 * k for k in range(4)):
            originals = [_strip(w) for w in group if start <= w["t_start"] < start + 900]
            if originals:
                assert got[(device, model, shadow, start)] == (len(originals), merge_windows(originals))
    fleet_a = [_strip(w) for w in ws if w["model"] == MODEL_A]
    fleet_rows = [body for (d, m, _, _), (_, body) in got.items() if d == FLEET and m == MODEL_A]
    assert merge_windows(fleet_rows) == merge_windows(fleet_a)
    # the horizon read (rollups + what is left) is the same exact merge as before
    after = store.merged()
    assert after == before
    assert after[MODEL_A]["n_windows"] == 120 and after[MODEL_B]["n_windows"] == 10
    assert after[MODEL_A]["software"]["utterances"] == sum(w["software"]["utterances"] for w in fleet_a)
    # nothing is rolled twice
    assert store.rollup(900, 1200.0, now=now).rolled == 0
    assert store.merged() == before


def test_a_too_late_window_stays_in_its_batch_for_a_retry_and_the_receipt(store):
    """The store refuses a window whose boot's full windows were deleted up to its seq, but leaves
    the caller's batch whole: a commit that is retried refuses it again (rather than dropping it
    unrecorded), and the collector confirms it to its device with the rest of the batch."""
    old = _windows(2, seed=4, t_start=T0)
    store.write(Batch(windows=[Received(w, 1000.0) for w in old]))
    assert store.rollup(300, 100.0, now=2000.0).deleted == 2
    again = Batch(windows=[Received(old[1], 2500.0)])
    assert [store.write(again).rejects for _ in range(2)] == [1, 1]
    assert [r.message["seq"] for r in again.windows] == [1]
    assert store.reject_counts() == {"too_late": 2}


def test_windows_shadowing_different_candidates_get_their_own_buckets(store):
    rng = random.Random(3)
    start = T0 - T0 % 900
    ws = [random_window(rng, "dev-1", 1, s, t_start=start + 60.0 * s, shadow=True) for s in range(6)]
    for w in ws[3:]:
        w["shadow_model"] = "c" * 64  # a second candidate in the same bucket
    for w in ws:
        w["shadow"]["errors"] = 2
    store.insert_windows(ws)
    store.rollup(900, 86400.0, now=T0 + 600)
    with store.transaction(write=False) as cur:
        rows = cur.execute("SELECT device, shadow_model, body FROM rollups WHERE device <> ?", (FLEET,)).fetchall()
    import json

    by_shadow = {sh: json.loads(body) for _, sh, body in rows}
    assert set(by_shadow) == {MODEL_B, "c" * 64}
    for sh, group in ((MODEL_B, ws[:3]), ("c" * 64, ws[3:])):
        shadow = by_shadow[sh]["shadow"]
        assert by_shadow[sh]["shadow_model"] == sh
        assert shadow["compared"] == sum(w["shadow"]["compared"] for w in group) and shadow["errors"] == 6
    # a merge over both candidates keeps no shadow section: it would mean nothing
    merged = store.merged()[MODEL_A]
    assert merged["shadow_model"] == "*" and merged["shadow"] is None
    assert merged["software"]["inferences"] == sum(w["software"]["inferences"] for w in ws)


def test_rollups_written_before_the_shadow_model_key_are_still_read(store_url, monkeypatch):
    import json

    import cloud.store.sql as sql

    monkeypatch.setattr(sql, "MIGRATIONS", MIGRATIONS[:2])  # a store as it was before 0003
    old = open_store(store_url)
    body = merge_windows([_strip(w) for w in _windows(3, shadow=True)])
    del body["shadow_model"]  # merges did not keep it then
    with old.transaction() as cur:
        cur.execute("INSERT INTO rollups (device, model, bucket_start, bucket_s, n_windows, body, updated_t)"
                    " VALUES (?,?,?,?,?,?,?)", ("dev-1", MODEL_A, T0 - T0 % 900, 900, 3, json.dumps(body), T0))
    old.close()
    monkeypatch.undo()
    store = open_store(store_url)
    try:
        assert "0003_rollups_shadow_model" in store.applied_migrations()  # later ones may follow
        parts = list(store.device_buckets())
        assert len(parts) == 1 and parts[0]["software"] == body["software"] and parts[0]["shadow"] == body["shadow"]
        later = [_strip(w) for w in _windows(2, seed=9, shadow=True, t_start=T0 + 50)]
        store.insert_windows(later)
        store.rollup(900, 86400.0, now=T0 + 100)
        merged = store.merged(devices=["dev-1"])[MODEL_A]  # the old row adds to the new rows' candidate
        assert merged["shadow"]["compared"] == body["shadow"]["compared"] + sum(w["shadow"]["compared"] for w in later)
    finally:
        store.close()


def test_late_windows_merge_into_their_bucket(store):
    ws = _windows(6, t_start=None)
    store.insert_windows(ws[:4])
    store.rollup(900, 86400.0, now=T0 + 100)
    store.insert_windows(ws[4:])
    assert store.merged() == {MODEL_A: merge_windows([_strip(w) for w in ws])}  # rolled + unrolled
    store.rollup(900, 86400.0, now=T0 + 200)
    merged = store.merged()
    assert merged[MODEL_A] == merge_windows([_strip(w) for w in ws]) and merged[MODEL_A]["n_windows"] == 6
    assert store.merged(devices=["dev-1"]) == merged
    assert store.merged(devices=["dev-2"]) == {}


def test_horizon_reads_start_at_a_bucket(store):
    rng = random.Random(11)
    ws = [random_window(rng, "dev-1", 1, s, t_start=T0 + 300.0 * s) for s in range(12)]  # one hour
    store.insert_windows(ws)
    store.rollup(900, 86400.0, now=T0 + 3600)
    start = T0 - T0 % 900
    in_horizon = [_strip(w) for w in ws if w["t_start"] >= start + 900]
    got = store.merged(since=start + 1000, until=T0 + 7200, bucket_s=900)  # since floors to start + 900
    assert got[MODEL_A] == merge_windows(in_horizon)
    assert store.merged(since=T0 + 3600 * 5, bucket_s=900) == {}


def test_unmergeable_windows_are_left_out_and_reported(store):
    ws = _windows(4)
    bad = random_window(random.Random(5), "dev-1", 1, 4, n_features=3)  # wrong feature count for MODEL_A
    store.insert_windows(ws + [bad])
    res = store.rollup(900, 86400.0, now=T0 + 100)
    assert (res.rolled, res.unmergeable) == (4, 1)
    assert store.merged()[MODEL_A] == merge_windows([_strip(w) for w in ws])
    assert store.reject_counts() == {"unmergeable": 1}
    assert len(list(store.windows())) == 5  # kept in full until the retention


def test_a_window_that_disagrees_with_the_stored_fleet_bucket_is_left_out_of_both_buckets(store):
    ws = _windows(4)
    store.insert_windows(ws)
    store.rollup(900, 86400.0, now=T0 + 100)  # the fleet bucket now holds these four
    bad = random_window(random.Random(6), "dev-9", 1, 0, t_start=ws[0]["t_start"], n_features=3)
    store.insert_windows([bad])  # alone it would make a fine bucket of its own device
    res = store.rollup(900, 86400.0, now=T0 + 200)
    assert (res.rolled, res.unmergeable) == (0, 1)
    assert store.merged()[MODEL_A] == merge_windows([_strip(w) for w in ws])
    with store.transaction(write=False) as cur:
        assert cur.execute("SELECT COUNT(*) FROM rollups WHERE device = 'dev-9'").fetchone()[0] == 0


def test_concurrent_rollups_never_double_count(store_url, store):
    ws = _windows(300)
    store.insert_windows(ws)
    others = [open_store(store_url) for _ in range(2)]
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.rollup(900, 86400.0, now=T0, chunk=50)))
               for s in [store] + others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in others:
        s.close()
    assert sum(r.rolled for r in results) == 300
    assert store.merged()[MODEL_A] == merge_windows([_strip(w) for w in ws])


def test_data_the_database_refuses_raises_store_data_error(store):
    w = random_window(random.Random(1), seq=2**63)
    with pytest.raises(StoreDataError):
        store.write(Batch(windows=[Received(w, T0)]))
    assert list(store.windows()) == []  # the transaction left nothing


def test_bad_locations_raise_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open the SQLite store"):
        open_store(f"sqlite:///{blocker}/sub/x.db")
    with pytest.raises(StoreError, match="unknown scheme"):
        open_store("mysql://x")
    with pytest.raises(StoreError, match=r"cannot connect.*\*\*\*"):
        open_store("postgresql://postgres:secret@127.0.0.1:1/test")


def test_device_buckets_give_each_window_once_with_device_and_time(store):
    rng = random.Random(13)
    ws = [random_window(rng, f"dev-{d}", 1, s, t_start=T0 + 120.0 * s) for d in range(3) for s in range(20)]
    store.insert_windows(ws[:45])
    store.rollup(900, 86400.0, now=T0 + 3600)
    store.insert_windows(ws[45:])  # not rolled up yet
    parts = list(store.device_buckets())
    assert sum(p.get("n_windows", 1) for p in parts) == 60
    for device in ("dev-0", "dev-1", "dev-2"):
        mine = [p for p in parts if p["device"] == device]
        originals = [_strip(w) for w in ws if w["device"] == device]
        assert merge_windows(mine) == merge_windows(originals)
        assert all(p["t_start"] % 900 == 0 for p in mine if "bucket_s" in p)
    assert {p["device"] for p in store.device_buckets(devices=["dev-1"])} == {"dev-1"}
    late = list(store.device_buckets(since=T0 - T0 % 900 + 1800))
    assert all(p["t_start"] >= T0 - T0 % 900 + 1800 for p in late) and late


def test_device_tags_map_every_known_device(store):
    store.insert_windows(_windows(1, "dev-1") + _windows(1, "dev-2"))
    store.tag("dev-2", ["eu"])
    store.tag("dev-9", ["future"])
    assert store.device_tags() == {"dev-1": [], "dev-2": ["eu"], "dev-9": ["future"]}


def test_windows_of_many_devices_come_in_time_order(store, monkeypatch):
    import cloud.store.sql as sql

    monkeypatch.setattr(sql, "IN_CHUNK", 3)  # several device groups, merged back into one order
    rng = random.Random(17)
    store.insert_windows([random_window(rng, f"dev-{d}", 1, s, t_start=T0 + 10 * s + d) for d in range(8)
                          for s in range(5)])
    got = list(store.window_rows(devices=[f"dev-{d}" for d in range(8)]))
    assert len(got) == 40 and [r["t_start"] for r in got] == sorted(r["t_start"] for r in got)
