"""The controller shell on a real store and a real mosquitto: what it publishes and persists.

Devices are played by writing their state reports and windows into the store, exactly as
the collector's ingest would; the test reads what the controller published from the broker.
"""
from __future__ import annotations

import pytest

from cloud.delivery import Delivery, MqttPublisher
from cloud.registry import Registry
from cloud.rollout.controller import Controller
from cloud.rollout.repo import SqlDesiredRevs
from cloud.rollout.service import RolloutService
from shared.messages import decode
from shared.topics import Topics

from tests.cloud.rollout.conftest import make_bundle
from tests.cloud.rollout.mqtt_helpers import Collecting
from tests.shared.windows import make_window

T = Topics()
T0 = 1_800_000_000.0
DEVICES = [f"dev-{i}" for i in range(6)]


def state(device: str, active: str, t: float, shadow: str | None = None, rev: int = 0) -> dict:
    return {"kind": "state", "v": "1.0", "device": device, "online": True, "t": t, "automation": "full",
            "health": "ok", "desired_rev": rev, "models": {"active": active, "previous": None, "shadow": shadow}}


def windows(device: str, model: str, t: float, n: int = 3, *, errors: int = 0, seq0: int = 0) -> list[dict]:
    out = []
    for i in range(n):
        w = make_window(device, boot=1, seq=seq0 + i, model=model, t_start=t, duration_s=1.0, scale=200,
                        labels={"yes": 500, "no": 500})
        w["t_start"] = t + i
        w["software"]["errors"] = errors
        w["software"]["latency_ms"]["model"] = [0] * 8 + [1000] + [0] * 9  # every inference 5.6-10 ms
        out.append(w)
    return out


@pytest.fixture
def rig(mosquitto, tmp_path, signing):
    from cloud.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    registry = Registry(store, tmp_path / "registry", [signing[1]])
    old, _ = registry.register(make_bundle(signing[0], version="1", seed=1))
    new, _ = registry.register(make_bundle(signing[0], version="2", seed=2, pad_bytes=300_000))
    for d in DEVICES:
        store.upsert_device_state(state(d, old.sha256, T0 - 10), received_t=T0 - 10)
    pub = MqttPublisher(mosquitto.url)
    delivery = Delivery(pub, SqlDesiredRevs(store), T)
    yield store, registry, delivery, old.sha256, new.sha256
    pub.close()
    store.close()


def obey(store, devices, desired_by_device: dict, t: float) -> None:
    """Devices apply what the controller published (their reported state follows)."""
    for d in devices:
        msg = desired_by_device[d]
        store.upsert_device_state(state(d, msg["active"], t, msg.get("shadow"), msg["rev"]), received_t=t)


def published_desired(sub: Collecting, devices) -> dict:
    got = sub.wait_for(lambda m: all(T.desired(d) in m for d in devices))
    return {d: decode(got[T.desired(d)], expect="desired") for d in devices}


def test_canary_runs_end_to_end_through_store_and_broker(rig, mosquitto):
    store, registry, delivery, old, new = rig
    service = RolloutService(store, registry)
    r = service.start("kws:2", "fleet", "canary", steps="50,100", bake="30s", now=T0)
    assert r.status == "pending" and len(r.devices) == 6
    ctl = Controller(store, delivery, registry, holder="c1")
    sub = Collecting(mosquitto.port, [T.filter("model"), T.filter("desired")])
    try:
        report = ctl.tick(now=T0 + 1)
        assert report.leader and report.actions == 2  # publish the bundle, send stage 1
        first = r.devices[:3]
        desired = published_desired(sub, first)
        assert all(m["active"] == new and m["rev"] == 1 and m["rollout"] == r.id for m in desired.values())
        sub.wait_for(lambda m: T.model(new) in m and T.chunk(new, 1) in m)  # chunked: > 256 KiB
        obey(store, first, desired, T0 + 3)
        for i, d in enumerate(DEVICES):
            model = new if d in first else old
            store.insert_windows(windows(d, model, T0 + 5, n=3, seq0=100 * i), received_t=T0 + 10)
        ctl.tick(now=T0 + 10)
        v = service.get(r.id).verdicts[0]
        assert v["verdict"] == "pass", v  # baked 9 s of 30 s: hold
        ctl.tick(now=T0 + 40)
        now = service.get(r.id)
        assert now.stage == 1 and now.status == "running"
        desired = published_desired(sub, DEVICES)
        obey(store, DEVICES, desired, T0 + 42)
        # 100 %: no control group left, the cohort's windows before the stage are the control
        for i, d in enumerate(DEVICES):
            store.insert_windows(windows(d, new, T0 + 45, n=3, seq0=100 * i + 50), received_t=T0 + 50)
        ctl.tick(now=T0 + 80)
        done = service.get(r.id)
        assert done.status == "completed"
        events = [e["event"] for e in service.log(r.id)]
        assert events[:3] == ["created", "started", "stage_started"]
        assert events[-1] == "completed" and "promoted" in events
    finally:
        sub.close()


def test_a_failing_gate_rolls_everyone_back_and_a_restarted_controller_finishes_the_job(rig, mosquitto):
    store, registry, delivery, old, new = rig
    service = RolloutService(store, registry)
    r = service.start("kws:2", "fleet", "blue-green", bake="10m", now=T0)
    first = Controller(store, delivery, registry, holder="c1", lease_ttl_s=20)
    sub = Collecting(mosquitto.port, [T.filter("desired")])
    try:
        first.tick(now=T0 + 1)
        obey(store, DEVICES, published_desired(sub, DEVICES), T0 + 2)
        for i, d in enumerate(DEVICES):
            store.insert_windows(windows(d, old, T0 - 100, n=3, seq0=100 * i), received_t=T0)
            store.insert_windows(windows(d, new, T0 + 5, n=3, errors=30, seq0=100 * i + 50), received_t=T0 + 8)
        # collector 1 dies here; collector 2 takes the lease once it expired and carries on
        second = Controller(store, delivery, registry, holder="c2", lease_ttl_s=20)
        assert not second.tick(now=T0 + 10).leader
        with store.transaction() as cur:  # 20 s later on the database's clock: collector 1's lease lapsed
            cur.execute(f"UPDATE leases SET expires_t = {store.DB_NOW} - 1")
        assert second.tick(now=T0 + 30).leader
        r = service.get(r.id)
        assert r.status == "rolled_back" and not r.settled
        assert r.reason.startswith("gate error_rate failed in blue-green 100%")
        back = sub.wait_for(lambda m: all(decode(m[T.desired(d)])["rev"] == 2 for d in DEVICES))
        assert all(decode(back[T.desired(d)])["active"] == old for d in DEVICES)
        obey(store, DEVICES, {d: decode(back[T.desired(d)]) for d in DEVICES}, T0 + 32)
        second.tick(now=T0 + 35)
        r = service.get(r.id)
        assert r.settled
        log = service.log(r.id)
        rb = next(e for e in log if e["event"] == "rolled_back")
        assert rb["figures"]["error_rate"]["verdict"] == "fail"
        assert log[-1]["event"] == "settled" and log[-1]["reason"].startswith("6/6 devices")
    finally:
        sub.close()


def test_operator_commands_reach_the_controller_through_the_store(rig):
    store, registry, delivery, old, new = rig
    service = RolloutService(store, registry)
    r = service.start("kws:2", "tag:none,device:dev-1,device:dev-2", "canary", approval="manual", now=T0)
    assert sorted(r.devices) == ["dev-1", "dev-2"]
    with pytest.raises(Exception, match="are in rollout"):
        service.start("kws:2", "device:dev-1", "canary", now=T0)
    ctl = Controller(store, delivery, registry, holder="c1")
    ctl.tick(now=T0 + 1)
    service.act(r.id, "pause", actor="ana", reason="checking", now=T0 + 2)
    ctl.tick(now=T0 + 3)
    assert service.get(r.id).status == "paused"
    service.act(r.id, "abort", actor="ana", now=T0 + 4)
    ctl.tick(now=T0 + 5)
    assert service.get(r.id).status == "aborted"
    assert service.repo.open_commands(r.id) == []
