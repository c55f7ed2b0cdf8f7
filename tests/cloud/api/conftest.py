"""The API tests share one world (built once) and make a fresh app per test."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from tests.cloud.api.world import TOKEN, build


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    w = build(tmp_path_factory.mktemp("api-world"))
    yield w
    w.store.close()


@pytest.fixture
def fresh_world(tmp_path):
    """A world of its own, for tests that change it (acks, rollout commands)."""
    w = build(tmp_path / "world")
    yield w
    w.store.close()


def client_for(services) -> TestClient:
    c = TestClient(create_app(services))
    c.headers["Authorization"] = f"Bearer {TOKEN}"
    return c


@pytest.fixture
def api(world) -> TestClient:
    return client_for(world.services())
