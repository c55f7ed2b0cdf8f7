"""The dashboard in real headless Chromium against a running app with live data.

Every page must render from the API with no console error or warning, and draw what the
data holds; each test keeps a screenshot (tmp dir and .artifacts/screenshots/).
"""
from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from tests.cloud.api.world import TOKEN

FACTS = """
const main = document.getElementById('main');
const q = (sel) => main.querySelectorAll(sel);
return {
  h1: (main.querySelector('h1') || {}).textContent || '',
  figures: q('figure.chart').length,
  nodata: q('svg .nodata').length,
  lines: q('svg polyline').length,
  rects: q('svg rect').length,
  rows: [...q('table:not(.heat) tbody')].map((t) => t.rows.length),
  heat: [...q('table.heat tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => +td.textContent)),
  badges: [...q('.badge')].map((b) => b.textContent),
  tiles: [...q('.tile .value')].map((e) => e.textContent),
  text: main.innerText,
  foreign: performance.getEntriesByType('resource').map((e) => e.name).filter((n) => !n.startsWith(location.origin)),
};
"""


def open_page(browser, served, route: str) -> dict:
    browser.get(f"{served.url}/{route}")
    browser.wait(f"const m = document.getElementById('main');"
                 f"return m.dataset.route === {route!r} && m.dataset.state !== 'loading'", what=f"{route} to render")
    state = browser.js("return document.getElementById('main').dataset.state")
    assert state == "ready", browser.js("return document.getElementById('main').innerText")
    return browser.js(FACTS)


def assert_clean_console(browser, allow: tuple[str, ...] = ()) -> None:
    bad = [e for e in browser.logs() if e["level"] in ("SEVERE", "WARNING")
           and not any(a in e["message"] for a in allow)]
    assert not bad, f"browser console: {bad}"


@pytest.fixture(scope="module")
def signed_in(browser, served):
    """The token handed over in the URL fragment, as the collector's start-up line offers."""
    browser.get(f"{served.url}/#token={TOKEN}")
    browser.wait("return document.getElementById('main').dataset.state === 'ready'", what="the fleet page")
    assert browser.js("return location.hash") == "#/"  # the token left the address bar at once
    assert browser.js("return sessionStorage.getItem('harken.token')") == TOKEN
    browser.logs()
    return browser


def _kitchen(served):
    return "r-kitchen"


def _loud(served):
    return served.world.alert_id("device:dev-03", "input")


def check_fleet(f, served):
    windows = sum(1 for w in served.world.fleet.windows if w["t_start"] >= served.world.now - 3600)
    assert f["h1"] == "Fleet" and windows == 360
    assert [f["tiles"][i] for i in (0, 1, 2, 4, 5)] == ["5 / 6", "1", "2", str(windows), "–"]
    assert f["rows"] == [2, 6]  # models in the fleet, devices
    assert f["figures"] == 3 and f["nodata"] == 0 and f["lines"] >= 6
    assert f["badges"].count("offline") == 1 and f["badges"].count("online") == 5


def check_device(f, served):
    assert f["h1"].startswith("Device dev-03") and "online" in f["badges"]
    offset = served.world.store.device("dev-03")["clock_offset_s"]
    assert offset is not None and "clock offset" in f["text"]  # its clock minus the collector's
    assert ("in step" if abs(offset) < 1 else ("ahead by" if offset > 0 else "behind by")) in f["text"]
    assert f["figures"] == 4 and f["nodata"] == 0
    assert f["rows"][1] == 2 and "level_dbfs" in f["text"]  # its input (open) and output (acked) alerts
    assert f["rows"][-1] == 6 and f["badges"][-6:] == ["model_activated", "model_installed", "bundle_verified",
                                                        "bundle_received", "model_activated", "agent_started"]


def check_cohort(f, served):
    assert f["h1"] == "Cohort fleet"
    assert f["figures"] == 14 and f["nodata"] == 0  # every chart has data, feature drift included
    assert f["rects"] > 200  # label-mix columns
    for title in ("Latency by stage", "Speech ratio", "Estimated SNR", "Label mix", "No-answer",
                  "Shadow agreement", "Feedback accuracy", "Feature PSI", "Drift severity by kind"):
        assert title in f["text"]


def check_alerts(f, served):
    assert f["rows"] == [1] and _loud(served) in f["text"] and "level_dbfs" in f["text"]


def check_alert(f, served):
    assert f["h1"].startswith(f"Alert {_loud(served)}") and "Acknowledge" in f["text"]
    hists = served.world.services().store.alert(_loud(served))["evidence"]["top"][:4]
    assert f["figures"] == len(hists) >= 2 and f["nodata"] == 0
    assert "level_dbfs" in f["text"] and "severity (effect over its floor)" in f["text"] and "baseline" in f["text"]


def check_rollouts(f, served):
    assert f["rows"] == [2] and "awaiting_approval" in f["badges"] and "running" in f["badges"]
    assert "1 / 2 stages passed" in f["text"]


def check_rollout(f, served):
    assert f["h1"].startswith(f"Rollout {_kitchen(served)}")
    assert f["rows"][0] == 10 and f["badges"].count("pass") == 10  # gates of both stages
    assert f["rows"][1] >= 8 and "promoted" in f["badges"]  # the transition log
    assert "passed" in f["badges"] and "1. canary 34%" in f["text"]


def check_models(f, served):
    assert f["rows"] == [2] and "production" in f["badges"] and "candidate" in f["badges"]


def check_model(f, served):
    manifest = served.world.registry.resolve("candidate").manifest
    assert f["heat"] == manifest["metrics"]["confusion"]
    assert f["rows"][-2:] == [4, len(manifest["metrics"]["slices"])]  # per class, slices
    assert "dataset_hash" in f["text"] and "stream_accuracy" in f["text"]


PAGES = [
    ("fleet", "#/", check_fleet),
    ("device", "#/device/dev-03", check_device),
    ("cohort", "#/cohort/fleet", check_cohort),
    ("alerts", "#/alerts", check_alerts),
    ("alert", "#/alert/LOUD", check_alert),
    ("rollouts", "#/rollouts", check_rollouts),
    ("rollout", "#/rollout/KITCHEN", check_rollout),
    ("models", "#/models", check_models),
    ("model", "#/model/CANDIDATE", check_model),
]


@pytest.mark.parametrize("name, route, check", PAGES, ids=[p[0] for p in PAGES])
def test_page_renders_live_data_without_console_errors(signed_in, served, shots, name, route, check):
    route = route.replace("KITCHEN", _kitchen(served)).replace("CANDIDATE", served.world.fleet.models["B"]) \
        .replace("LOUD", _loud(served))
    facts = open_page(signed_in, served, route)
    shots(signed_in, f"{name}")
    assert facts["foreign"] == []  # nothing loaded from anywhere but the collector
    check(facts, served)
    assert_clean_console(signed_in)


def test_cohort_picker_and_range_navigate(signed_in, served, shots):
    open_page(signed_in, served, "#/cohort/fleet")
    signed_in.js("const i = document.querySelector('input[name=cohort]'); i.value = 'tag:lab';"
                 "i.form.requestSubmit();")
    route = f"#/cohort/{quote('tag:lab', safe='')}?range=1h"
    signed_in.wait(f"return document.getElementById('main').dataset.route === {route!r}", what="tag:lab")
    signed_in.js("[...document.querySelectorAll('.ranges a')].find((a) => a.textContent === '6h').click()")
    route6 = route.replace("1h", "6h")
    signed_in.wait(f"const m = document.getElementById('main'); return m.dataset.route === {route6!r}"
                   " && m.dataset.state === 'ready'", what="6 h range")
    facts = signed_in.js(FACTS)
    assert facts["h1"] == "Cohort tag:lab"
    # 3 devices x 60 windows; an hour on the 600 s grid spans 6 or 7 buckets depending on the clock
    assert re.search(r"180 windows in [67] buckets of 600 s", facts["text"])
    shots(signed_in, "cohort-lab-6h")
    assert_clean_console(signed_in)


def test_acknowledge_and_approve_from_the_pages(signed_in, served, shots):
    open_page(signed_in, served, f"#/alert/{_loud(served)}")
    signed_in.js("document.querySelector('input[name=note]').value = 'new mic';"
                 "[...document.querySelectorAll('button')].find((b) => b.textContent === 'Acknowledge').click()")
    signed_in.wait("return [...document.querySelectorAll('#main .badge')].some((b) => b.textContent === 'acked')",
                   what="the alert to show as acked")
    # the name of the token that acknowledged, not a name the page claims
    assert "by operator — new mic" in signed_in.js("return document.getElementById('main').innerText")
    assert served.world.store.alert(_loud(served))["status"] == "acked"
    rid = "r-shadow"
    open_page(signed_in, served, f"#/rollout/{rid}")
    signed_in.js("[...document.querySelectorAll('button')].find((b) => b.textContent === 'approve').click()")
    signed_in.wait("return document.getElementById('main').innerText.includes('queued for the controller: approve')",
                   what="the queued approval")
    shots(signed_in, "rollout-approve-queued")
    assert_clean_console(signed_in)


def test_the_token_is_asked_for_once_and_a_wrong_one_is_refused(browser, served, shots):
    browser.get(f"{served.url}/#/models")
    browser.js("sessionStorage.clear(); location.reload();")
    browser.wait("return document.getElementById('main').dataset.state === 'login'", what="the token form")
    shots(browser, "login")
    browser.js("const i = document.querySelector('input[name=token]'); i.value = 'not-the-token';"
               "i.form.requestSubmit();")
    browser.wait("const m = document.getElementById('main');"
                 "return m.dataset.state === 'login' && m.innerText.includes('invalid token')", what="the refusal")
    assert browser.js("return sessionStorage.getItem('harken.token')") is None
    assert_clean_console(browser, allow=("status of 401",))  # the refused request itself
    browser.js(f"const i = document.querySelector('input[name=token]'); i.value = {TOKEN!r};"
               "i.form.requestSubmit();")
    browser.wait("const m = document.getElementById('main'); return m.dataset.state === 'ready'"
                 " && m.dataset.page === 'models'", what="the models page")
    assert_clean_console(browser)
