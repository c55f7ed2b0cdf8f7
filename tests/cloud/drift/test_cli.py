"""`harken drift` on a real SQLite store and a real registry holding a signed bundle."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cloud.cli.drift import group, parse_duration, parse_time
from cloud.drift.alerts import Alert
from cloud.drift.engine import DriftConfig, DriftEngine
from cloud.drift.source import StoreSource, registry_profiles
from cloud.registry import Registry
from cloud.store import open_store
from shared import keys
from shared.cli import main
from tests.cloud.api.bundles import make_bundle
from tests.cloud.drift.population import LABELS, stored_world

STEP = 60.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
TAGS = {"d0": ["hall"], "d1": ["hall"], "d2": ["hall"], "d3": ["kitchen"], "d4": ["kitchen"], "d5": ["kitchen"]}
CONFIG = DriftConfig(step_s=STEP, concept_step_s=STEP, warmup_s=20 * STEP, settle_s=0.0)
ONSET = 40


@pytest.fixture(scope="module")
def world(tmp_path_factory, profile):
    """A store with 50 steps of 6 households (the hall noisy from step 40), rolled up, a registry
    with the bundle, and the alerts of the engine evaluated after every step saved in the store."""
    root = tmp_path_factory.mktemp("drift-cli")
    priv, pub = keys.generate_keypair(root / "keys")
    bundle = root / "kws.hkb"
    sha = make_bundle(bundle, keys.load_private_key(priv), name="kws", version="1", seed=0, labels=list(LABELS),
                      profile=profile, accuracy=0.9)
    url = f"sqlite:///{root / 'harken.db'}"
    store = open_store(url)
    registry = Registry(store, root / "registry", [keys.load_public_key(pub)])
    registry.register(bundle)
    stored_world(store, profile, sha, steps=50, step_s=STEP, t0=T0, seed=41, noisy=("d0", "d1", "d2"),
                 onset=ONSET, tags=TAGS)
    engine = DriftEngine(StoreSource(store, registry_profiles(registry), bucket_s=int(STEP)), CONFIG)
    changes = []
    for k in range(20, 50):
        open_alerts = [Alert.from_row(r) for r in store.alerts() if r["status"] != "resolved"]
        for change in engine.evaluate(T0 + (k + 1) * STEP, open_alerts):
            store.save_alert(change.alert.to_row())
            changes.append(change)
    store.close()
    return {"url": url, "registry": str(root / "registry"), "sha": sha, "changes": changes}


def invoke(*args):
    result = CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    return result


def test_the_engine_over_the_real_store_found_the_hall(world):
    opened = {(c.alert.cohort, c.alert.kind) for c in world["changes"] if c.change == "opened"}
    assert {("fleet", "input"), ("tag:hall", "input"), ("device:d0", "input"), ("device:d1", "input")} <= opened
    assert not any(c.startswith(("device:d3", "device:d4", "device:d5", "tag:kitchen")) for c, _ in opened)
    first = min(c.alert.opened_t for c in world["changes"] if c.alert.cohort == "device:d0")
    assert T0 + (ONSET + 1) * STEP <= first <= T0 + (ONSET + 3) * STEP


def test_status_lists_the_open_alerts(world):
    out = invoke("status", "--db", world["url"], "--json")
    assert out.exit_code == 0
    rows = json.loads(out.output)
    hall = next(r for r in rows if r["cohort"] == "tag:hall" and r["kind"] == "input")
    assert hall["status"] == "open" and hall["pattern"] == "sudden" and hall["severity"] >= 1
    assert set(hall["driving_devices"]) <= {"d0", "d1", "d2"} and hall["onset_t"] >= T0 + ONSET * STEP
    assert hall["top_signal"] in ("snr_db", "feature:logmel_band0_mean", "feature:logmel_band1_mean",
                                  "feature:logmel_band2_mean", "feature:logmel_mean")
    text = invoke("status", "--db", world["url"]).output
    assert text.splitlines()[0].split()[:4] == ["ID", "STATUS", "COHORT", "KIND"]
    assert "tag:hall" in text


def test_show_and_ack_an_alert(world):
    rows = json.loads(invoke("status", "--db", world["url"], "--json").output)
    alert_id = next(r["id"] for r in rows if r["cohort"] == "tag:hall" and r["kind"] == "input")
    page = invoke("show", alert_id, "--db", world["url"]).output
    assert f"alert {alert_id}: input drift on tag:hall (open)" in page
    assert "(baseline), effect" in page and "held to: cusum_h" in page and "pattern sudden" in page
    as_json = json.loads(invoke("show", alert_id, "--db", world["url"], "--json").output)
    assert as_json["id"] == alert_id and as_json["evidence"]["top"][0]["against"] in ("baseline", "reference")
    acked = invoke("ack", alert_id, "--db", world["url"], "--by", "tester")
    assert acked.exit_code == 0 and f"acknowledged {alert_id}" in acked.output
    store = open_store(world["url"])
    with store:
        row = store.alert(alert_id)
    assert row["status"] == "acked" and row["acked_t"] is not None and row["evidence"]["acked_by"] == "tester"
    assert "acknowledged" in invoke("show", alert_id, "--db", world["url"]).output


def test_report_reads_profiles_from_the_registry(world):
    out = invoke("report", "--cohort", "tag:hall", "--since", T0, "--until", T0 + 50 * STEP, "--step", "1m",
                 "--db", world["url"], "--registry", world["registry"], "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["rows"]
    assert len(rows) == 50 and rows[10]["input_n"] > 0
    assert not any(r["input_flag"] for r in rows[:ONSET])
    assert all(r["input_flag"] == "drift" for r in rows[ONSET + 2:] if r["input_cusum"] is not None)
    text = invoke("report", "--cohort", f"model:{world['sha'][:8]}", "--since", T0, "--until", T0 + 600,
                  "--step", "5m", "--db", world["url"], "--registry", world["registry"]).output
    assert "INP SEV" in text and "INP CUSUM" in text and len(text.strip().splitlines()) == 4


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
