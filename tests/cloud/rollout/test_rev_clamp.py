"""One device reporting an absurd desired_rev must not stall the rollouts it belongs to
(real store, real mosquitto): its rev is clamped and every other device gets its desired state."""
from __future__ import annotations

from cloud.delivery import MAX_REV
from cloud.rollout.controller import Controller
from cloud.rollout.service import RolloutService
from tests.cloud.rollout.mqtt_helpers import Collecting
from tests.cloud.rollout.test_controller import DEVICES, T, T0, published_desired, rig, state  # noqa: F401

HUGE = 2 ** 63 - 1  # what the device claims it applied: the largest BIGINT


def test_a_device_claiming_rev_2_63_does_not_block_the_stage(rig, mosquitto):  # noqa: F811
    store, registry, delivery, old, new = rig
    store.upsert_device_state(state("dev-0", old, T0 - 5, rev=HUGE), received_t=T0 - 5)
    service = RolloutService(store, registry)
    r = service.start("kws:2", "fleet", "blue-green", bake="10m", now=T0)
    ctl = Controller(store, delivery, registry, holder="c1")
    sub = Collecting(mosquitto.port, [T.filter("desired")])
    try:
        report = ctl.tick(now=T0 + 1)
        assert report.errors == 0
        desired = published_desired(sub, DEVICES)
        assert all(m["active"] == new for m in desired.values())
        assert desired["dev-0"]["rev"] == MAX_REV  # clamped: above nothing it could have applied from us
        assert all(desired[d]["rev"] == 1 for d in DEVICES[1:])
        assert service.get(r.id).status == "running"
        ctl.tick(now=T0 + 2)  # and again: the next write for that device still fits
        assert store.device("dev-1") is not None
    finally:
        sub.close()
