"""Delivery on a real mosquitto: bundles whole or chunked (retained), desired states with revs."""
from __future__ import annotations

import hashlib

import pytest

from cloud.delivery import (Delivery, DeliveryError, DesiredTarget, MqttPublisher, bundle_messages,
                            desired_message)
from cloud.rollout.repo import SqlDesiredRevs
from shared.bundle import load_bundle
from shared.messages import decode
from shared.topics import Topics

from tests.brokers import free_port
from tests.cloud.rollout.conftest import make_bundle
from tests.cloud.rollout.mqtt_helpers import Collecting

T = Topics()


@pytest.fixture
def sqlite_store(tmp_path):
    from cloud.store import open_store

    s = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    yield s
    s.close()


@pytest.fixture
def delivery(mosquitto, sqlite_store):
    pub = MqttPublisher(mosquitto.url)
    yield Delivery(pub, SqlDesiredRevs(sqlite_store), T, chunk_bytes=256 * 1024)
    pub.close()


def reassemble(messages: dict[str, bytes], sha: str) -> bytes:
    """What a device does: the header names the chunks and their hashes."""
    head = messages[T.model(sha)]
    if head[:4] == b"PK\x03\x04":
        return head
    header = decode(head, expect="bundle")
    chunks = [messages[T.chunk(sha, i)] for i in range(header["chunks"])]
    assert [hashlib.sha256(c).hexdigest() for c in chunks] == header["chunk_sha256"]
    data = b"".join(chunks)
    assert len(data) == header["size"] and hashlib.sha256(data).hexdigest() == header["bundle_sha256"]
    return data


def test_a_small_bundle_travels_whole_and_retained(mosquitto, delivery, signing):
    data = make_bundle(signing[0], pad_bytes=10_000)
    bundle = load_bundle(data, [signing[1]])
    assert delivery.publish_bundle(bundle) == 1
    sub = Collecting(mosquitto.port, [T.filter("model")])  # subscribes after the publish: retained
    try:
        got = sub.wait_for(lambda m: T.model(bundle.sha256) in m)
        assert got[T.model(bundle.sha256)] == data and T.model(bundle.sha256) in sub.retained
        assert load_bundle(reassemble(got, bundle.sha256), [signing[1]]).sha256 == bundle.sha256
    finally:
        sub.close()


def test_a_large_bundle_is_chunked_and_a_late_subscriber_reassembles_and_verifies_it(mosquitto, delivery, signing):
    data = make_bundle(signing[0], seed=4, pad_bytes=600_000)
    bundle = load_bundle(data, [signing[1]])
    assert delivery.publish_bundle(bundle) == 4  # 3 chunks of <= 256 KiB + the header
    sub = Collecting(mosquitto.port, [T.model(bundle.sha256), T.model(bundle.sha256) + "/+"])
    try:
        got = sub.wait_for(lambda m: len(m) == 4)
        header = decode(got[T.model(bundle.sha256)], expect="bundle")
        assert (header["sha256"], header["size"], header["chunks"], header["chunk_size"]) == \
            (bundle.sha256, len(data), 3, 256 * 1024)
        assert set(sub.retained) == set(got)
        verified = load_bundle(reassemble(got, bundle.sha256), [signing[1]])
        assert verified.sha256 == bundle.sha256 and verified.raw == data
    finally:
        sub.close()


def test_chunking_threshold_is_inclusive():
    data = b"PK\x03\x04" + b"x" * 96
    assert len(bundle_messages(T, "a" * 64, data, chunk_bytes=100)) == 1
    msgs = bundle_messages(T, "a" * 64, data + b"y", chunk_bytes=100)
    assert [t for t, _, _ in msgs] == [T.chunk("a" * 64, 0), T.chunk("a" * 64, 1), T.model("a" * 64)]
    assert all(retained for _, _, retained in msgs)


def test_desired_states_are_retained_with_a_growing_rev_per_device(mosquitto, delivery, sqlite_store):
    targets = {"dev-1": DesiredTarget("a" * 64, None, "full"), "dev-2": DesiredTarget("a" * 64, "b" * 64, "shadow")}
    first = delivery.write_desired(targets, rollout="r-1")
    assert {d: m["rev"] for d, m in first.items()} == {"dev-1": 1, "dev-2": 1}
    second = delivery.write_desired({"dev-1": DesiredTarget("b" * 64)}, floors={"dev-1": 0})
    assert second["dev-1"]["rev"] == 2
    # a device that reports a higher applied rev (e.g. the store was rebuilt) gets a rev above it
    third = delivery.write_desired({"dev-2": DesiredTarget("b" * 64)}, floors={"dev-2": 41})
    assert third["dev-2"]["rev"] == 42
    # a fresh delivery on the same store continues the revs
    pub = MqttPublisher(mosquitto.url)
    try:
        again = Delivery(pub, SqlDesiredRevs(sqlite_store), T).write_desired({"dev-1": DesiredTarget("a" * 64)})
        assert again["dev-1"]["rev"] == 3
    finally:
        pub.close()
    sub = Collecting(mosquitto.port, [T.filter("desired")])
    try:
        got = sub.wait_for(lambda m: len(m) == 2)
        d1, d2 = (decode(got[T.desired(d)], expect="desired") for d in ("dev-1", "dev-2"))
        assert (d1["rev"], d1["active"], d1.get("shadow")) == (3, "a" * 64, None)
        assert (d2["rev"], d2["active"], "shadow" not in d2) == (42, "b" * 64, True)
        assert SqlDesiredRevs(sqlite_store).get("dev-2") == d2
    finally:
        sub.close()


def test_desired_message_checks_what_it_builds():
    m = desired_message("dev-1", 5, active="a" * 64, automation="assist", probation={"utterances": 10}, t=1.0)
    assert m == {"kind": "desired", "v": "1.0", "device": "dev-1", "rev": 5, "t": 1.0, "active": "a" * 64,
                 "automation": "assist", "probation": {"utterances": 10}}
    with pytest.raises(Exception, match="automation"):
        desired_message("dev-1", 1, active=None, automation="everything")


def test_unpublish_clears_the_retained_bundle(mosquitto, delivery, signing):
    bundle = load_bundle(make_bundle(signing[0], seed=2), [signing[1]])
    delivery.publish_bundle(bundle)
    delivery.unpublish_bundle(bundle.sha256)
    sub = Collecting(mosquitto.port, [T.filter("model"), T.filter("desired")])
    try:
        delivery.write_desired({"dev-9": DesiredTarget("a" * 64)})  # something that does arrive
        got = sub.wait_for(lambda m: T.desired("dev-9") in m)
        assert T.model(bundle.sha256) not in got
    finally:
        sub.close()


def test_an_unreachable_broker_is_a_clear_error():
    with pytest.raises(DeliveryError, match="cannot reach the broker"):
        MqttPublisher(f"mqtt://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(Exception, match="must look like mqtt://"):
        MqttPublisher("http://127.0.0.1:1883")


class _StepLandsFirst:
    """Desired revs where a rollout step lands between a writer's decision and its write."""

    def __init__(self, revs, step):
        self.revs, self.step = revs, step

    def get(self, device):
        return self.revs.get(device)

    def write_many(self, builds, lease=None):
        step, self.step = self.step, None
        if step is not None:
            step()
        return self.revs.write_many(builds, lease=lease)


def test_a_sample_switch_keeps_the_model_a_rollout_step_wrote_meanwhile(mosquitto, delivery, sqlite_store):
    from cloud.samples import control

    delivery.write_desired({"dev-1": DesiredTarget("a" * 64, None, "full")}, rollout="r-1")
    control.switch(sqlite_store, ["dev-1"], True, actor="test")
    step = lambda: delivery.write_desired({"dev-1": DesiredTarget("b" * 64, None, "full")}, rollout="r-2")  # noqa: E731
    racing = Delivery(delivery.publisher, _StepLandsFirst(delivery.revs, step), T)
    assert control.publish_pending(sqlite_store, racing) == 1
    last = delivery.revs.get("dev-1")
    assert (last["rev"], last["active"], last["rollout"], last["config"]) == (3, "b" * 64, "r-2", {"samples": True})


def test_a_rollout_step_keeps_the_config_a_sample_switch_wrote_meanwhile(mosquitto, delivery):
    delivery.write_desired({"dev-1": DesiredTarget("a" * 64, None, "full")}, rollout="r-1")
    switch = lambda: delivery.reconfigure("dev-1", {"samples": True})  # noqa: E731
    racing = Delivery(delivery.publisher, _StepLandsFirst(delivery.revs, switch), T)
    racing.write_desired({"dev-1": DesiredTarget("b" * 64, None, "full")}, rollout="r-2")
    last = delivery.revs.get("dev-1")
    assert (last["rev"], last["active"], last["rollout"], last["config"]) == (3, "b" * 64, "r-2", {"samples": True})
