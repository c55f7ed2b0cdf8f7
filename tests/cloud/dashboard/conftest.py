"""A running collector app (uvicorn on a free loopback port, the API tests' world) and one
headless Chromium, shared by the dashboard tests."""
from __future__ import annotations

import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from cloud.api.app import create_app
from tests.brokers import free_port, wait_port
from tests.cloud.api.world import World, build
from tests.cloud.dashboard.webdriver import Browser

ARTIFACTS = Path(__file__).resolve().parents[3] / ".artifacts" / "screenshots"


@dataclass
class Served:
    url: str
    world: World


@contextmanager
def serving(app):
    """``app`` served by uvicorn on a free loopback port in a thread; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_port(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    world = build(tmp_path_factory.mktemp("dashboard-world"))
    with serving(create_app(world.services())) as url:
        yield Served(url, world)
    world.store.close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    b = Browser.start(tmp_path_factory.mktemp("chromium"))
    yield b
    b.quit()


@pytest.fixture(scope="session")
def shots(tmp_path_factory):
    """Save a screenshot under the test's tmp dir and copy it to .artifacts/screenshots/."""
    folder = tmp_path_factory.mktemp("screenshots")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def save(browser: Browser, name: str) -> Path:
        path = browser.screenshot(folder / f"{name}.png")
        shutil.copy(path, ARTIFACTS / path.name)
        return path

    return save
