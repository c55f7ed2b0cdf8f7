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


@pytest.fixture(scope="session")
def tiny_lab(tmp_path_factory):
    """The model lab's tiny real dataset (espeak-ng, 12 labels x 4, 6 speakers), a trained, signed and
    released bundle and its keys: one build per session for every test package that needs it."""
    from cloud.lab.fixtures import tiny_dataset_and_bundle

    return tiny_dataset_and_bundle(tmp_path_factory.mktemp("lab"), per_word=4)
