"""Rollout persistence and the controller lease, on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
import time

import pytest

from cloud.rollout.controller import LEASE_NAME, Controller
from cloud.rollout.core import LogEntry
from cloud.rollout.repo import RolloutRepo, SqlDesiredRevs
from cloud.store import LeaseLost
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
    build = lambda rev, previous: {"rev": rev}  # noqa: E731
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


def _lapse(store) -> None:
    """The leader's lease runs out now (as if it had died a TTL ago), on the database's clock."""
    with store.transaction() as cur:
        cur.execute(f"UPDATE leases SET expires_t = {store.DB_NOW} - 1 WHERE name = ?", (LEASE_NAME,))


def test_one_controller_holds_the_lease_whatever_the_replicas_clocks_say(store):
    # a's clock is at 1970, b's an hour ahead: neither matters, the lease runs on the database's clock
    a = Controller(store, _NoDelivery(), None, holder="collector-a", lease_ttl_s=30, clock=lambda: 0.0)
    b = Controller(store, _NoDelivery(), None, holder="collector-b", lease_ttl_s=30,
                   clock=lambda: time.time() + 3600)
    assert a.tick().leader and a.epoch == 1
    assert not b.tick().leader and not b.leader
    assert a.tick().epoch == 1  # renewed under the same epoch
    _lapse(store)
    report = b.tick()
    assert report.leader and report.epoch == 2  # a stopped renewing: b takes over, one epoch up
    assert not a.tick().leader and not a.leader
    b.release()
    assert a.tick().epoch == 3 and store.lease(LEASE_NAME) == ("collector-a", 3, True)
    assert LEASE_NAME == "rollout-controller"


def test_a_controller_that_lost_the_lease_cannot_save_a_rollout_or_write_revs(store):
    a = Controller(store, _NoDelivery(), None, holder="collector-a")
    b = Controller(store, _NoDelivery(), None, holder="collector-b")
    r = make_rollout(rid="r-fenced")
    r.status = "completed"  # nothing left for a tick to do with it
    a.tick()
    a.repo.save(r)  # the leader's fenced save
    stale = a.current_lease()
    _lapse(store)
    assert b.tick().leader
    r.reason = "written by a stale leader"
    with pytest.raises(LeaseLost, match="epoch 1"):  # a still believes it leads: the store says no
        a.repo.save(r, [LogEntry(5.0, "note", "completed", "completed", 0, "stale")])
    with pytest.raises(LeaseLost):
        SqlDesiredRevs(store).write_many({"dev-00": (lambda rev, previous: {"rev": rev}, 0)}, lease=stale)
    assert b.repo.get("r-fenced").reason != r.reason and b.repo.log("r-fenced") == []
    assert SqlDesiredRevs(store).get("dev-00") is None
    b.repo.save(r)  # the current leader's save goes through
    assert a.repo.get("r-fenced").reason == r.reason
    with pytest.raises(LeaseLost, match="does not hold the lease"):
        Controller(store, _NoDelivery(), None, holder="never-ticked").repo.save(r)


class _SlowDelivery:
    """Each desired-state write takes ``delay_s``: a step over many devices outlasts the lease's TTL."""

    def __init__(self, revs: SqlDesiredRevs, delay_s: float):
        self.revs, self.delay_s, self.epochs = revs, delay_s, []

    def publish_bundle(self, bundle) -> None:
        time.sleep(self.delay_s)

    def write_desired(self, targets, *, rollout=None, floors=None, lease=None):
        time.sleep(self.delay_s)
        self.epochs.append(lease.epoch)
        return self.revs.write_many({d: (lambda rev, previous: {"rev": rev}, 0) for d in targets}, lease=lease)


class _Registry:
    def bundle(self, model):
        return model


@pytest.mark.parametrize("renews", [True, False])
def test_a_step_longer_than_the_lease_renews_it_and_a_leader_that_does_not_is_fenced_off(
        store, monkeypatch, renews):
    """Eight devices, one desired-state write each (chunks of 1), 0.15 s per write: 1.35 s of step
    against a 0.6 s TTL while a rival ticks all along. Renewing between writes keeps the lease and
    the rival out; without renewals the rival takes over mid-step and the leader's writes are refused."""
    from cloud.rollout import controller as controller_mod
    from cloud.rollout.plan import Stage

    monkeypatch.setattr(controller_mod, "DESIRED_CHUNK", 1)
    if not renews:
        monkeypatch.setattr(controller_mod, "RENEWALS_PER_TTL", 1e-9)
    slow = _SlowDelivery(SqlDesiredRevs(store), 0.15)
    leader = Controller(store, slow, _Registry(), holder="leader", lease_ttl_s=0.6)
    rival = Controller(store, _SlowDelivery(SqlDesiredRevs(store), 0.0), _Registry(), holder="rival",
                       lease_ttl_s=0.6)
    assert leader.tick(now=0.0).leader
    RolloutRepo(store).save(make_rollout(n=8, plan=[Stage("canary", 100, 60.0)], rid="r-long"))
    stop, rival_epochs = threading.Event(), []

    def rival_ticks() -> None:
        while not stop.wait(0.05):
            report = rival.tick(now=1.0)
            if report.leader:
                rival_epochs.append(report.epoch)

    thread = threading.Thread(target=rival_ticks)
    thread.start()
    try:
        report = leader.tick(now=1.0)  # starts the rollout: eight slow writes
        if not renews:  # the lease has lapsed: the rival takes it at its next tick
            deadline = time.monotonic() + 5
            while not rival_epochs and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    saved = RolloutRepo(store).get("r-long")
    if renews:
        assert report.leader and report.errors == 0 and report.epoch == 1
        assert slow.epochs == [1] * 8 and rival_epochs == []
        assert saved.status == "running" and saved.updated_t == 1.0
    else:
        assert not report.leader and not leader.leader
        assert 1 <= len(slow.epochs) < 8  # the leader's writes stopped once its lease had lapsed
        assert set(rival_epochs) == {2}  # the rival then took over, one epoch up, and did the step
        revs = SqlDesiredRevs(store)
        assert all(revs.get(d)["rev"] <= 2 for d in saved.devices)  # one write by each controller at most
        assert saved.status == "running"  # saved by the rival; the leader's save never happened
