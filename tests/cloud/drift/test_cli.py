"""`harken drift` on a real SQLite store and a real registry holding a signed bundle."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cloud.cli.drift import group, parse_duration, parse_time
from cloud.drift.engine import DriftConfig, DriftEngine
from cloud.drift.source import StoreSource, registry_profiles
from cloud.registry import Registry
from cloud.store import open_store
from shared import keys
from shared.cli import main
from tests.cloud.api.bundles import make_bundle
from tests.cloud.drift.population import LABELS, Population, window

STEP = 60.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
TAGS = {"d0": ["hall"], "d1": ["hall"], "d2": ["kitchen"], "d3": ["kitchen"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory, profile):
    """A store with 30 steps of 4 devices (hall noisy from step 20), a registry with the bundle,
    and the alerts of one engine evaluation saved in the store."""
    root = tmp_path_factory.mktemp("drift-cli")
    priv, pub = keys.generate_keypair(root / "keys")
    bundle = root / "kws.hkb"
    sha = make_bundle(bundle, keys.load_private_key(priv), name="kws", version="1", seed=0, labels=list(LABELS),
                      profile=profile, accuracy=0.9)
    url = f"sqlite:///{root / 'harken.db'}"
    store = open_store(url)
    registry = Registry(store, root / "registry", [keys.load_public_key(pub)])
    registry.register(bundle)
    for device, tags in TAGS.items():
        store.tag(device, tags)
    rng = np.random.default_rng(41)
    windows = []
    for step in range(30):
        for device, tags in TAGS.items():
            pop = Population(noise_db=6.0) if "hall" in tags and step >= 20 else Population()
            windows.append(window(profile, pop.sample(rng, 150), device=device, seq=step,
                                  t_start=T0 + step * STEP + 1.0, model=sha, rng=rng))
    store.insert_windows(windows, received_t=T0 + 1800.0)
    source = StoreSource(store, registry_profiles(registry))
    engine = DriftEngine(source, DriftConfig(step_s=STEP, concept_step_s=STEP))
    changes = engine.evaluate(T0 + 30 * STEP, [])
    for change in changes:
        store.save_alert(change.alert.to_row())
    store.close()
    return {"url": url, "registry": str(root / "registry"), "sha": sha, "changes": changes}


def invoke(*args):
    result = CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    return result


def test_the_engine_over_the_real_store_found_the_hall(world):
    opened = {(c.alert.cohort, c.alert.kind) for c in world["changes"] if c.change == "opened"}
    assert {("fleet", "input"), ("tag:hall", "input"), ("device:d0", "input"), ("device:d1", "input")} <= opened
    assert not any(c.startswith(("device:d2", "device:d3", "tag:kitchen")) for c, _ in opened)


def test_status_lists_the_open_alerts(world):
    out = invoke("status", "--db", world["url"], "--json")
    assert out.exit_code == 0
    rows = json.loads(out.output)
    fleet = next(r for r in rows if r["cohort"] == "fleet" and r["kind"] == "input")
    assert fleet["status"] == "open" and fleet["pattern"] == "sudden" and fleet["severity"] >= 1
    assert set(fleet["driving_devices"]) == {"d0", "d1"} and fleet["driving_tags"] == ["hall"]
    assert fleet["top_signal"] == "snr_db" and fleet["onset_t"] == T0 + 20 * STEP
    text = invoke("status", "--db", world["url"]).output
    assert text.splitlines()[0].split()[:4] == ["ID", "STATUS", "COHORT", "KIND"]
    assert "tag:hall" in text and "snr_db" in text


def test_show_and_ack_an_alert(world):
    rows = json.loads(invoke("status", "--db", world["url"], "--json").output)
    alert_id = next(r["id"] for r in rows if r["cohort"] == "tag:hall" and r["kind"] == "input")
    page = invoke("show", alert_id, "--db", world["url"]).output
    assert f"alert {alert_id}: input drift on tag:hall (open)" in page
    assert "snr_db: score" in page and "d0 *" in page and "pattern sudden" in page
    as_json = json.loads(invoke("show", alert_id, "--db", world["url"], "--json").output)
    assert as_json["id"] == alert_id and as_json["evidence"]["top"][0]["signal"] == "snr_db"
    acked = invoke("ack", alert_id, "--db", world["url"], "--by", "tester")
    assert acked.exit_code == 0 and f"acknowledged {alert_id}" in acked.output
    store = open_store(world["url"])
    with store:
        row = store.alert(alert_id)
    assert row["status"] == "acked" and row["acked_t"] is not None and row["evidence"]["acked_by"] == "tester"
    assert "acknowledged" in invoke("show", alert_id, "--db", world["url"]).output


def test_report_reads_profiles_from_the_registry(world):
    out = invoke("report", "--cohort", "tag:hall", "--since", T0, "--until", T0 + 30 * STEP, "--step", "1m",
                 "--db", world["url"], "--registry", world["registry"], "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["rows"]
    assert len(rows) == 30
    assert all(r["input_severity"] < 1 for r in rows[:20]) and all(r["input_severity"] >= 1 for r in rows[20:])
    assert rows[21]["input_flag"] == "sudden" and rows[10]["input_n"] == 300
    text = invoke("report", "--cohort", f"model:{world['sha'][:8]}", "--since", T0, "--until", T0 + 600,
                  "--step", "5m", "--db", world["url"], "--registry", world["registry"]).output
    assert "INP SEV" in text and len(text.strip().splitlines()) == 4


def test_errors_exit_1_and_usage_mistakes_exit_2(world, capsys):
    assert main(["drift", "show", "nope", "--db", world["url"]]) == 1
    assert "no alert 'nope'" in capsys.readouterr().err
    assert main(["drift", "report", "--cohort", "fleet", "--since", "yesterday", "--db", world["url"]]) == 2
    assert main(["drift", "report", "--cohort", "region:eu", "--since", "1h", "--db", world["url"]]) == 2


def test_time_and_duration_parsing():
    assert parse_duration("300") == 300 and parse_duration("5m") == 300 and parse_duration("1.5h") == 5400
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("1767225600", now=0.0) == T0
    assert parse_time("2026-01-01T00:00:00+00:00", now=0.0) == T0
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
