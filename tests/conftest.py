"""Fixtures shared by every test package."""
from __future__ import annotations

import pytest

from tests.brokers import Mosquitto


@pytest.fixture
def mosquitto(tmp_path):
    """A private anonymous mosquitto on a free loopback port (stopped after the test)."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path):
    """Build brokers with passwords / ACL / extra config: ``mosquitto_factory(users=..., acl=...)``."""
    started: list[Mosquitto] = []

    def make(**kwargs) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto{len(started)}", **kwargs).start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()
