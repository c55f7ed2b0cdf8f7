"""The collector on the secured broker that `harken broker init` writes, with the real mosquitto.

One identity per collector replica (no second connection can take its session over), a
collector on mutual TLS that publishes, the broker's packet limit, retained stats/events
cleared, and one device removed without touching the others.
"""
from __future__ import annotations

import json
import random
import time

import pytest

from cloud import broker as brokers
from cloud.collector import Collector
from shared.codec import encode
from shared.topics import Topics
from tests.brokers import free_port
from tests.cloud.conftest import collector_config, random_window, state_message, wait_until
from tests.cloud.test_broker import WAIT_S, Client, cli, token

T = Topics()


@pytest.fixture
def secured(tmp_path):
    """A factory: secured(**init options) -> a running broker from `harken broker init`."""
    started = []

    def make(**options):
        d = tmp_path / f"broker{len(started)}"
        options.setdefault("devices", ["dev-A", "dev-B"])
        brokers.init_broker(d, port=free_port(), plain_port=free_port(), **options)
        started.append(d)
        return brokers.start(d).broker

    yield make
    for d in started:
        brokers.stop(d)


@pytest.fixture
def clients():
    made: list = []
    yield made
    for c in made:
        c.close()


def device(broker, user: str, clients: list, **kw) -> Client:
    """A device (or any user) on the TLS listener, with its password or (mTLS) its certificate."""
    cert = broker.paths.client_cert(user) if broker.settings.mtls else None
    c = Client(broker.settings.port, user, broker.credentials().get(user), ca=broker.ca_path, cert=cert,
               client_id=user, **kw)
    clients.append(c)
    return c


def observer(broker, clients: list) -> Client:
    c = Client(broker.settings.plain_port, "operator", broker.credentials()["operator"], ca=None,
               client_id=f"observer-{token().decode()[:6]}")
    clients.append(c)
    assert not c.connect().is_failure
    return c


@pytest.fixture
def collectors(tmp_path):
    started: list[Collector] = []

    def start(broker, user: str = "collector", **overrides) -> Collector:
        values = {"username": user, "password": broker.credentials()[user], "tls_ca": str(broker.ca_path),
                  "client_id": f"{user}-replica", "registry_dir": str(tmp_path / "registry"), **overrides}
        if broker.settings.mtls:
            key, cert = broker.paths.client_cert(user)
            values.update(tls_cert=str(cert), tls_key=str(key))
        c = Collector(collector_config(broker.tls_url, f"sqlite:///{tmp_path / 'c.db'}", **values))
        c.start()
        started.append(c)
        assert c.ingest.wait_connected(15), "the collector never subscribed"
        return c

    yield start
    for c in started:
        if c.ingest.connected.is_set() or c.ingest._writer.is_alive():
            c.stop()


def window(seq: int, device_id: str = "dev-A") -> bytes:
    return encode(random_window(random.Random(seq), device_id, 1, seq, t_start=time.time()))


def stored(c: Collector, device_id: str = "dev-A") -> list[int]:
    return sorted(w["seq"] for w in c.store.windows(device=device_id))


# -- one identity per replica (item 1) ----------------------------------------------------------
def test_a_stopped_collector_keeps_its_queued_windows_on_the_secured_broker(secured, collectors, clients):
    broker = secured()
    # rollouts on: before the fix the controller's publisher logged in as "collector" too, and its
    # clean start threw away the ingest session the broker kept while the collector was down
    c = collectors(broker, rollouts_enabled=True, rollout_tick_s=0.05)
    assert wait_until(lambda: c.controller is not None, 10)
    dev = device(broker, "dev-A", clients)
    assert not dev.connect().is_failure
    assert not dev.publish(T.stats("dev-A"), window(0)).is_failure
    assert wait_until(lambda: stored(c) == [0], 10)
    c.stop()
    for seq in range(1, 6):  # the broker queues these in the stopped collector's session
        assert not dev.publish(T.stats("dev-A"), window(seq)).is_failure
    again = collectors(broker, rollouts_enabled=True, rollout_tick_s=0.05)
    assert wait_until(lambda: stored(again) == [0, 1, 2, 3, 4, 5], 20), f"stored {stored(again)}"
    assert wait_until(lambda: again.controller is not None, 10)
    # it publishes over the same connection: one session, never kicked off by itself
    probe = observer(broker, clients)
    probe.subscribe(T.alert("probe"))
    again.publisher().publish_all([(T.alert("probe"), b"probe", False)])
    probe.wait_for(b"probe")
    assert again.ingest.stats.connects == 1
    assert "Client collector already connected" not in broker.paths.log.read_text()


def test_replicas_with_their_own_users_split_the_windows_once(secured, collectors, clients):
    broker = secured(collectors=2)
    assert broker.settings.collector_users == ["collector", "collector-2"]
    first = collectors(broker, "collector", group="replicas")
    second = collectors(broker, "collector-2", group="replicas")
    dev = device(broker, "dev-A", clients)
    assert not dev.connect().is_failure
    for seq in range(40):
        assert not dev.publish(T.stats("dev-A"), window(seq)).is_failure
    assert wait_until(lambda: first.ingest.stats.windows_new + second.ingest.stats.windows_new == 40, 20)
    assert first.ingest.stats.windows_new > 0 and second.ingest.stats.windows_new > 0  # the group split them
    assert stored(first) == list(range(40))  # one store, each window once
    assert first.ingest.stats.connects == second.ingest.stats.connects == 1


def test_a_collector_on_mutual_tls_publishes_with_its_certificate(secured, collectors, clients):
    broker = secured(mtls=True)
    c = collectors(broker)
    watch = observer(broker, clients)
    watch.subscribe(T.alert("mtls"))
    payload = token()
    c.publisher().publish_all([(T.alert("mtls"), payload, False)])
    watch.wait_for(payload)


# -- broker limits (item 11) --------------------------------------------------------------------
def test_the_generated_config_limits_packets_and_inflight_bytes(secured):
    from shared.mqtt import CHUNK_BYTES, MAX_PACKET_BYTES

    broker = secured(mtls=True)
    conf = broker.paths.conf.read_text()
    assert f"\nmax_packet_size {MAX_PACKET_BYTES}\n" in conf and CHUNK_BYTES < MAX_PACKET_BYTES < CHUNK_BYTES + 8192
    assert "\nmax_inflight_bytes " in conf and f"\ncrlfile {broker.paths.crl}\n" in conf


def test_an_oversized_retained_message_is_refused_and_never_replayed(secured, clients):
    broker = secured()
    dev = device(broker, "dev-A", clients)
    assert not dev.connect().is_failure
    small = encode(state_message("dev-A", True))
    info = dev.mqtt.publish(T.state("dev-A"), small, qos=1, retain=True)
    info.wait_for_publish(WAIT_S)
    big = dev.mqtt.publish(T.state("dev-A"), b"x" * (8 * 1024 * 1024), qos=1, retain=True)
    assert dev.disconnected.wait(WAIT_S), "the broker kept a client that sent 8 MiB"
    assert not big.is_published()
    later = observer(broker, clients)
    later.subscribe(T.state("dev-A"))
    later.wait_for(small)  # the retained state is still the small one
    assert all(len(p) < 1024 for p in later.payloads())


def test_retained_stats_and_events_are_cleared_and_stored_once(secured, collectors, clients):
    broker = secured()
    c = collectors(broker, retained_sweep_s=0.2, rollup_interval_s=0.1)
    dev = device(broker, "dev-A", clients)
    assert not dev.connect().is_failure
    w = window(7)
    event = encode({"kind": "event", "v": "1.0", "device": "dev-A", "boot": 1, "seq": 1, "t": time.time(),
                    "event": "agent_started"})
    for topic, payload in ((T.stats("dev-A"), w), (T.event("dev-A"), event)):
        info = dev.mqtt.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(WAIT_S)
    assert wait_until(lambda: stored(c) == [7] and c.ingest.stats.events_new == 1, 10)
    assert wait_until(lambda: c.ingest.sweep.cleared == 2, 10), f"cleared {c.ingest.sweep.cleared}"
    assert c.ingest.sweep.cleared_by_device == {"dev-A": 2}
    later = observer(broker, clients)
    later.subscribe(f"{T.prefix}/dev/dev-A/#")  # the broker would send any retained copy right now
    control = window(8)
    assert not dev.publish(T.stats("dev-A"), control).is_failure
    later.wait_for(control)  # a live message, queued after whatever was retained
    assert w not in later.payloads() and event not in later.payloads()
    assert wait_until(lambda: stored(c) == [7, 8], 10)
    assert c.store.reject_counts() == {}  # the empty clearing messages are not mistaken for bad input


# -- removing one device (item 13) ----------------------------------------------------------------
@pytest.mark.parametrize("mtls", [False, True], ids=["password", "certificate"])
def test_a_removed_device_is_cut_off_and_the_others_stay(secured, clients, tmp_path, mtls):
    broker = secured(mtls=mtls)
    before = broker.credentials()
    if mtls:  # what a stolen device would still hold
        key, cert = broker.paths.client_cert("dev-A")
        kept = (tmp_path / "stolen.key", tmp_path / "stolen.crt")
        kept[0].write_bytes(key.read_bytes())
        kept[1].write_bytes(cert.read_bytes())
    a, b = device(broker, "dev-A", clients), device(broker, "dev-B", clients)
    assert not a.connect().is_failure and not b.connect().is_failure
    done = cli("broker", "remove-device", str(broker.paths.root), "dev-A", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["removed"] == ["dev-A"] and result["reloaded_pid"]
    assert a.disconnected.wait(WAIT_S), "the removed device is still connected"
    assert not b.disconnected.is_set() and not b.publish(T.stats("dev-B"), window(1, "dev-B")).is_failure
    if mtls:  # its certificate is revoked: the TLS handshake fails (or the broker hangs up right after)
        retry = Client(broker.settings.port, None, None, ca=broker.ca_path, cert=kept, client_id="dev-A")
        assert len(result["revoked_serials"]) == 1
    else:  # its password is gone
        retry = Client(broker.settings.port, "dev-A", before["dev-A"], ca=broker.ca_path, client_id="dev-A")
    clients.append(retry)
    answer = retry.connect()
    assert answer is None or answer.is_failure or retry.disconnected.wait(WAIT_S)
    assert retry.connack is None or retry.connack.is_failure
    after = broker.credentials()
    assert "dev-A" not in after and {u: p for u, p in before.items() if u != "dev-A"} == after
    settings = json.loads(broker.paths.settings.read_text())
    assert settings["devices"] == ["dev-B"] and settings["revoked"] == ["dev-A"]
    assert "user dev-A\ntopic deny #" in broker.paths.acl.read_text()
    assert not b.disconnected.is_set()
