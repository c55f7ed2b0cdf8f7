"""The Samples page in real headless Chromium: it plays a sample fetched with the token (a blob:
URL under the page's CSP) and labels it with one key press, then moves to the next sample."""
from __future__ import annotations

import pytest

from cloud.api.app import create_app
from tests.cloud.dashboard.conftest import serving
from tests.cloud.dashboard.test_dashboard import assert_clean_console
from tests.cloud.samples_world import LABELS, OPERATE_TOKEN, READ_TOKEN, SENT, build


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    world = build(tmp_path_factory.mktemp("samples-world"))
    with serving(create_app(world.services())) as url:
        yield url, world
    world.store.close()


def sign_in(browser, url: str, token: str) -> None:
    browser.get(f"{url}/#token={token}")
    browser.wait("return ['ready', 'error'].includes(document.getElementById('main').dataset.state)",
                 what="the first page")
    browser.js("document.getElementById('auto').checked = false")  # no 30 s re-render in the middle of a test


def open_samples(browser, route: str = "#/samples") -> dict:
    browser.js(f"location.hash = {route!r}")
    browser.wait("const m = document.getElementById('main'); return m.dataset.page === 'samples' &&"
                 " m.dataset.state === 'ready' && !!document.querySelector('audio[data-loaded=true]') &&"
                 " document.querySelector('audio').readyState >= 1", what="the samples page and its audio")
    return browser.js("""
        const a = document.querySelector('audio');
        return {sample: document.querySelector('[data-sample]').dataset.sample, src: a.src, duration: a.duration,
                keys: [...document.querySelectorAll('.labeller button')].map((b) => b.textContent),
                route: location.hash, rows: document.querySelectorAll('#main tbody tr').length,
                tiles: [...document.querySelectorAll('.tile .value')].map((e) => e.textContent)};""")


def press(browser, key: str) -> None:
    """A real key press through WebDriver's input actions (not a synthetic DOM event)."""
    browser._cmd("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": [
        {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]})


def test_play_and_label_with_one_key(browser, site, shots):
    url, world = site
    sign_in(browser, url, OPERATE_TOKEN)
    browser.logs()
    first = open_samples(browser)
    newest = world.ids[-1]
    assert first["sample"] == newest and first["rows"] == 5 and first["tiles"] == ["5", "0", "5", "0"]
    assert first["src"].startswith("blob:")  # fetched with the token, played from memory
    expected_s = world.store.sample(newest)["duration_ms"] / 1000
    assert first["duration"] == pytest.approx(expected_s, abs=0.01)  # Chromium decoded the WAV
    assert first["keys"] == [f"{i + 1} {label}" for i, label in enumerate(LABELS)]  # the model's labels
    shots(browser, "samples-before")
    press(browser, "2")  # "no"
    browser.wait(f"return location.hash.includes('&id=') && !location.hash.includes({newest!r})"
                 " && document.getElementById('main').dataset.state === 'ready'", what="the next sample")
    second = open_samples(browser, browser.js("return location.hash"))
    assert second["sample"] == world.ids[-2] and second["rows"] == 4 and second["tiles"][1] == "1"
    press(browser, "3")  # "up"
    browser.wait(f"return !location.hash.includes({world.ids[-2]!r}) &&"
                 " document.getElementById('main').dataset.state === 'ready'", what="the third sample")
    labelled = {s["id"]: s for s in world.store.samples() if s["label"]}
    assert {k: v["label"] for k, v in labelled.items()} == {world.ids[-1]: "no", world.ids[-2]: "up"}
    assert {h["by"] for sid in labelled for h in world.store.sample(sid)["labels"]} == {"ana"}  # the token's name
    shots(browser, "samples-labelled")
    assert_clean_console(browser)


def test_a_read_token_plays_but_cannot_label(browser, site, shots):
    url, world = site
    browser.js(f"sessionStorage.setItem('harken.token', {READ_TOKEN!r}); location.hash = '#/'; location.reload()")
    browser.wait("return document.getElementById('main').dataset.state === 'ready'", what="the fleet page")
    browser.js("document.getElementById('auto').checked = false")
    browser.logs()
    page = open_samples(browser, "#/samples?filter=all")
    before = world.store.sample(page["sample"])["labels"]
    press(browser, "1")
    browser.wait("return document.querySelector('[data-role=status]').textContent.includes('403')",
                 what="the refusal on the page")
    assert "may only read" in browser.js("return document.querySelector('[data-role=status]').textContent")
    assert world.store.sample(page["sample"])["labels"] == before and len(SENT) == 5
    shots(browser, "samples-read-only")
    assert_clean_console(browser, allow=("status of 403",))  # the refused request itself
