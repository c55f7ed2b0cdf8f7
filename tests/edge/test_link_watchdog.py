"""Issue 10 item 2: no exception escapes a paho callback, and a watchdog restarts a dead
network thread. Real mosquitto with passwords and an ACL."""
from __future__ import annotations

import threading

import pytest

from edge.link import Link
from tests.edge.hardening import until
from tests.edge.test_link import SECURED, T, settings


def _link(port: int, on_connected=None) -> Link:
    will = {"kind": "state", "device": "dev1", "online": False, "t": 1.0}
    return Link(settings(port), will_topic=T.state("dev1"), will_message=will, on_message=lambda t, p: None,
                on_connected=on_connected)


def _acked(link: Link, payload: bytes, timeout_s: float = 10.0) -> bool:
    done = threading.Event()
    link.publish(T.stats("dev1"), payload, on_ack=lambda ok, why: done.set() if ok else None)
    return done.wait(timeout_s)


def test_a_callback_that_raises_does_not_end_the_network_thread(mosquitto_factory):
    broker = mosquitto_factory(**SECURED)
    calls = []

    def on_connected(session_present):
        calls.append(session_present)
        raise RuntimeError("injected: a receiver bug")

    link = _link(broker.port, on_connected)
    link.start()
    try:
        assert link.wait_connected(10)
        until(lambda: link.callback_errors == 1, what="the caught callback error")
        assert _acked(link, b"after the error")  # the network thread still runs
        assert link.network_alive() and link.restarts == 0 and calls == [False]
    finally:
        link.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the injected death
def test_the_watchdog_restarts_a_dead_network_thread(mosquitto_factory):
    broker = mosquitto_factory(**SECURED)
    link = _link(broker.port)
    link.watchdog_s = 0.1
    link.start()
    try:
        assert link.wait_connected(10) and _acked(link, b"before")
        connects = link.connects

        def boom(*args):
            link._client.on_subscribe = None  # once
            raise RuntimeError("injected: an exception inside paho's thread")

        link._client.on_subscribe = boom  # a callback the link does not guard: paho's thread ends
        link.subscribe(T.desired("dev1"))
        until(lambda: link.restarts >= 1, what="the watchdog to restart the network thread")
        until(lambda: link.connects > connects, what="a new connection after the restart")
        assert link.network_alive() and _acked(link, b"after the restart")
    finally:
        link.stop()
