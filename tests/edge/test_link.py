"""The agent's MQTT link against a real mosquitto with passwords and an ACL."""
from __future__ import annotations

import getpass
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading

from edge.link import Link, LinkSettings, backoff_s
from shared.codec import encode
from shared.messages import decode
from shared.topics import Topics
from tests.brokers import Mosquitto, free_port
from tests.edge.watcher import LogWaiter, Watcher

T = Topics()
USERS = {"dev1": "pw-dev1", "watcher": "pw-watch"}
ACL = f"""user dev1
topic write {T.prefix}/dev/dev1/#
topic read {T.prefix}/dev/dev1/desired
topic read {T.prefix}/model/#

user watcher
topic readwrite #
"""

# mosquitto started as root drops to user "mosquitto", who cannot read the 0600 password file
# tests/brokers.py writes; running it as the current user keeps the file private and readable.
SECURED = {"users": USERS, "acl": ACL, "extra_conf": f"user {getpass.getuser()}\n"}


def settings(port: int, password: str = USERS["dev1"]) -> LinkSettings:
    return LinkSettings(device_id="dev1", host="127.0.0.1", port=port, username="dev1", password=password,
                        keepalive_s=5, reconnect_min_s=0.05, reconnect_max_s=0.4)


def make_link(port, inbox=None, password=USERS["dev1"]) -> Link:
    inbox = inbox if inbox is not None else []
    will = {"kind": "state", "device": "dev1", "online": False, "t": 1.0}
    return Link(settings(port, password), will_topic=T.state("dev1"), will_message=will,
                on_message=lambda t, p: inbox.append((t, p)))


def test_backoff_doubles_with_jitter_and_is_capped():
    rng = random.Random(3)
    delays = [[backoff_s(a, 0.5, 8.0, rng) for a in range(8)] for _ in range(50)]
    for attempt, ceiling in enumerate([0.5, 1, 2, 4, 8, 8, 8, 8]):
        got = [d[attempt] for d in delays]
        assert all(ceiling / 2 <= x <= ceiling for x in got)
        assert max(got) - min(got) > ceiling / 10  # jittered: a fleet does not retry in lockstep


def test_publish_acked_by_the_broker_and_acl_refusal(mosquitto_factory):
    broker = mosquitto_factory(**SECURED)
    watcher = Watcher(broker.port, [f"{T.prefix}/#"], username="watcher", password=USERS["watcher"])
    link = make_link(broker.port)
    try:
        with LogWaiter("edge.link", "connected to") as logs:
            link.start()
            assert link.wait_connected(10) and logs.seen.is_set()
        acks = []
        done = threading.Event()
        link.publish(T.stats("dev1"), b"window-1", on_ack=lambda ok, why: (acks.append((ok, why)), done.set()))
        assert done.wait(10) and acks == [(True, "")]
        watcher.wait_for(lambda m: any(p == b"window-1" for _, p, _ in m), what="the window")
        refused = threading.Event()
        link.publish(T.stats("dev2"), b"not mine", on_ack=lambda ok, why: refused.set() if not ok else None)
        assert refused.wait(10)  # the ACL keeps a device under its own dev/{id}/
        assert all(p != b"not mine" for _, p, _ in watcher.messages)
    finally:
        link.stop()
        watcher.close()


def test_wrong_password_is_logged_and_nothing_raises(mosquitto_factory):
    broker = mosquitto_factory(**SECURED)
    link = make_link(broker.port, password="wrong")
    with LogWaiter("edge.link", "refused the connection") as logs:
        link.start()
        assert logs.seen.wait(10)
    assert not link.connected.is_set()
    assert not any("connected to" in r.getMessage() for r in logs.records)  # only after a good CONNACK
    link.stop()


def test_broker_down_at_start_then_up_subscriptions_and_retained_desired(tmp_path):
    port = free_port()
    inbox = []
    link = make_link(port, inbox)
    link.subscribe(T.desired("dev1"))
    link.start()  # nothing listens yet: no exception, keeps retrying
    assert not link.wait_connected(0.5)
    broker = Mosquitto(tmp_path / "b", port=port, **SECURED).start()
    try:
        assert link.wait_connected(10)
        watcher = Watcher(port, [f"{T.prefix}/#"], username="watcher", password=USERS["watcher"])
        desired = encode({"kind": "desired", "device": "dev1", "rev": 1, "t": 1.0})
        watcher.publish(T.desired("dev1"), desired, retain=True)
        chunk = T.model("a" * 64) + "/+"
        link.subscribe(T.model("a" * 64), chunk)
        watcher.publish(T.chunk("a" * 64, 0), b"chunk-0", retain=True)
        _wait(lambda: (T.chunk("a" * 64, 0), b"chunk-0") in inbox and (T.desired("dev1"), desired) in inbox)
        inbox.clear()
        connects = link.connects
        broker.restart()
        assert _wait(lambda: link.connects > connects)
        # resubscribed after the restart: the retained messages arrive again
        _wait(lambda: (T.desired("dev1"), desired) in inbox and (T.chunk("a" * 64, 0), b"chunk-0") in inbox)
        link.unsubscribe(T.model("a" * 64), chunk)
        watcher.close()
    finally:
        link.stop()
        broker.stop()


def _wait(predicate, timeout=15.0) -> bool:
    done = threading.Event()
    while not done.wait(0.02):
        if predicate():
            return True
        timeout -= 0.02
        assert timeout > 0, "timed out"
    return True


WILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    sys.path.insert(0, ROOT)
    from edge.link import Link, LinkSettings
    from shared.topics import Topics
    port = int(sys.argv[1])
    s = LinkSettings(device_id="dev1", host="127.0.0.1", port=port, username="dev1", password="pw-dev1",
                     keepalive_s=5)
    will = {"kind": "state", "device": "dev1", "online": False, "t": 1.0}
    link = Link(s, will_topic=Topics().state("dev1"), will_message=will, on_message=lambda t, p: None)
    link.start()
    assert link.wait_connected(10)
    done = threading.Event()
    link.publish(Topics().state("dev1"), b'{"kind":"state","v":"1.0","device":"dev1","online":true,"t":2.0}',
                 retain=True, on_ack=lambda ok, why: done.set())
    done.wait(10)
    print("up", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""").replace("ROOT", repr(os.getcwd()))


def test_last_will_is_a_retained_offline_state(mosquitto_factory):
    broker = mosquitto_factory(**SECURED)
    proc = subprocess.run([sys.executable, "-c", WILL_SCRIPT, str(broker.port)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL and proc.stdout == "up\n", proc.stderr[-1500:]
    watcher = Watcher(broker.port, [T.state("dev1")], username="watcher", password=USERS["watcher"])
    try:
        watcher.wait_for(lambda m: any(decode(p)["online"] is False for _, p, _ in m), what="the last will")
        topic, payload, retained = watcher.messages[-1]
        state = decode(payload, expect="state")
        assert retained and state["device"] == "dev1" and state["online"] is False
    finally:
        watcher.close()


def test_tls_with_the_brokers_ca_and_refusal_of_another_ca(mosquitto_factory, tmp_path):
    from cloud.broker import certs  # test-side only: the device never imports cloud

    ca, other = certs.make_ca(), certs.make_ca("someone else")
    server = certs.issue_server(ca, ["127.0.0.1"])
    certs.write_issued(ca, tmp_path / "ca.key", tmp_path / "ca.pem")
    certs.write_issued(other, tmp_path / "other.key", tmp_path / "other.pem")
    certs.write_issued(server, tmp_path / "server.key", tmp_path / "server.pem")
    tls = f"cafile {tmp_path / 'ca.pem'}\ncertfile {tmp_path / 'server.pem'}\nkeyfile {tmp_path / 'server.key'}\n"
    broker = mosquitto_factory(users=USERS, acl=ACL, extra_conf=SECURED["extra_conf"] + tls)
    will = {"kind": "state", "device": "dev1", "online": False, "t": 1.0}

    def tls_link(ca_file):
        s = LinkSettings(**{**settings(broker.port).__dict__, "tls": True, "tls_ca": str(ca_file)})
        return Link(s, will_topic=T.state("dev1"), will_message=will, on_message=lambda t, p: None)

    good = tls_link(tmp_path / "ca.pem")
    good.start()
    try:
        assert good.wait_connected(10)
    finally:
        good.stop()
    with LogWaiter("edge.link", "cannot reach broker") as logs:
        bad = tls_link(tmp_path / "other.pem")
        bad.start()  # the server's certificate is not signed by the CA the device trusts
        assert logs.seen.wait(10)
        assert not bad.wait_connected(0.3)
        bad.stop()
