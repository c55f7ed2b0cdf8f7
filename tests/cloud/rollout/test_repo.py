"""Rollout persistence and the controller lease, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from cloud.rollout.controller import LEASE_NAME, Controller
from cloud.rollout.core import LogEntry
from cloud.rollout.repo import RolloutRepo, SqlDesiredRevs
from shared.errors import ConfigError

from tests.cloud.rollout.fakes import make_rollout


def test_save_get_and_log_round_trip(store):
    repo = RolloutRepo(store)
    r = make_rollout(rid="r-abc123")
    repo.save(r, [LogEntry(1.0, "created", "", "pending", 0, "created", {"n": 20})], now=1.0)
    r.status, r.stage = "running", 1
    repo.save(r, [LogEntry(2.0, "started", "pending", "running", 0, "go"),
                  LogEntry(2.0, "promoted", "running", "running", 1, "up", {"gate": {"x": 0.5}})], now=2.0)
    got = repo.get("r-abc")  # a unique prefix
    assert got.to_dict() == r.to_dict()
    log = repo.log("r-abc123")
    assert [(e["seq"], e["event"]) for e in log] == [(1, "created"), (2, "started"), (3, "promoted")]
    assert log[2]["figures"] == {"gate": {"x": 0.5}} and log[0]["to_status"] == "pending"
    with pytest.raises(ConfigError, match="no rollout 'zzz'"):
        repo.get("zzz")
    repo.save(make_rollout(rid="r-abd999"))
    with pytest.raises(ConfigError, match="ambiguous"):
        repo.get("r-ab")


def test_commands_wait_for_the_controller_and_are_marked_done(store):
    repo = RolloutRepo(store)
    r = make_rollout()
    repo.save(r)
    c1 = repo.add_command(r.id, "pause", actor="ana", note="lunch", now=5.0)
    repo.add_command(r.id, "resume", actor="ana", now=6.0)
    cmds = repo.open_commands(r.id)
    assert [(c.action, c.actor, c.note) for c in cmds] == [("pause", "ana", "lunch"), ("resume", "ana", "")]
    repo.save(r, handled=[c1])
    assert [c.action for c in repo.open_commands(r.id)] == ["resume"]
    with pytest.raises(ConfigError, match="unknown rollout command"):
        repo.add_command(r.id, "explode")


def test_workable_and_busy_devices(store):
    repo = RolloutRepo(store)
    running, done, settling = make_rollout(rid="r-1"), make_rollout(rid="r-2", n=3), make_rollout(rid="r-3", n=2)
    running.status = "running"
    done.status = "completed"
    settling.status, settling.settled = "rolled_back", False
    for r in (running, done, settling):
        repo.save(r)
    assert sorted(r.id for r in repo.workable()) == ["r-1", "r-3"]
    assert repo.busy_devices()["dev-00"] in ("r-1", "r-3") and len(repo.busy_devices()) == 20
    assert [r.id for r in repo.list(["completed"])] == ["r-2"]


def test_desired_revs_are_per_device_and_never_go_back(store):
    revs = SqlDesiredRevs(store)
    build = lambda rev: {"rev": rev}  # noqa: E731
    assert revs.write_many({"a": (build, 0), "b": (build, 0)}) == {"a": {"rev": 1}, "b": {"rev": 1}}
    assert revs.write("a", build) == {"rev": 2}
    assert revs.write("b", build, floor=10) == {"rev": 11}
    assert revs.write("b", build, floor=3) == {"rev": 12}
    assert revs.get("b") == {"rev": 12} and revs.get("zz") is None


class _NoDelivery:
    def publish_bundle(self, bundle):  # pragma: no cover - nothing to deliver in these tests
        raise AssertionError("no delivery expected")

    def write_desired(self, *a, **k):  # pragma: no cover
        raise AssertionError("no delivery expected")


def test_one_controller_holds_the_lease_and_another_takes_over_when_it_expires(store):
    a = Controller(store, _NoDelivery(), None, holder="collector-a", lease_ttl_s=30)
    b = Controller(store, _NoDelivery(), None, holder="collector-b", lease_ttl_s=30)
    assert a.tick(now=1000.0).leader and not b.tick(now=1001.0).leader
    assert a.tick(now=1020.0).leader  # renewed: now valid until 1050
    assert not b.tick(now=1049.0).leader
    assert b.tick(now=1051.0).leader and b.leader  # a stopped renewing: b takes over
    assert not a.tick(now=1052.0).leader and not a.leader
    b.release()
    assert a.tick(now=1053.0).leader
    assert LEASE_NAME == "rollout-controller"
