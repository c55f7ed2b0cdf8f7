"""The registry and rollout commands, run with click's CliRunner on a real store and broker."""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from cloud.cli.registry import add_registry_commands
from cloud.cli.rollout import group as rollout_group
from shared.errors import SignatureError
from shared.messages import decode
from shared.topics import Topics

from tests.cloud.rollout.conftest import make_bundle
from tests.cloud.rollout.mqtt_helpers import Collecting


@pytest.fixture
def env(tmp_path, signing):
    db = f"sqlite:///{tmp_path / 'h.db'}"
    paths = []
    for version, seed, acc in (("1", 1, 0.8), ("2", 2, 0.9)):
        p = tmp_path / f"kws-{version}.hkb"
        p.write_bytes(make_bundle(signing[0], version=version, seed=seed, acc=acc))
        paths.append(p)
    return {"HARKEN_DB": db, "HARKEN_REGISTRY": str(tmp_path / "registry"),
            "HARKEN_PUBLIC_KEY": str(signing[2])}, paths


@pytest.fixture
def model_group():
    @click.group("model")
    def model() -> None:
        """The lab's group (stand-in)."""

    return add_registry_commands(model)


def invoke(group, args, env):
    return CliRunner().invoke(group, args, env=env, catch_exceptions=True)


def test_register_list_show_alias_diff(env, model_group, other_signing, tmp_path):
    e, (b1, b2) = env
    r = invoke(model_group, ["register", str(b1)], e)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("registered kws:1 ")
    assert invoke(model_group, ["register", str(b1)], e).output.startswith("already registered kws:1")
    r = invoke(model_group, ["register", str(b2), "--alias", "candidate", "--json"], e)
    rec = json.loads(r.output)
    assert rec["new"] and rec["label"] == "kws:2" and rec["aliases"] == ["candidate"] and rec["run_id"] == "run-2"
    assert (tmp_path / "registry" / f"{rec['sha256']}.hkb").is_file()

    bad = tmp_path / "foreign.hkb"
    bad.write_bytes(make_bundle(other_signing[0], version="3"))
    r = invoke(model_group, ["register", str(bad)], e)
    assert r.exit_code != 0 and isinstance(r.exception, SignatureError)

    listed = json.loads(invoke(model_group, ["list", "--json"], e).output)
    assert [m["label"] for m in listed] == ["kws:1", "kws:2"] and listed[1]["metrics"]["accuracy"] == 0.9
    table = invoke(model_group, ["list"], e).output.splitlines()
    assert table[0].split()[:3] == ["SHA", "NAME:VERSION", "ACC"] and "candidate" in table[2]

    assert invoke(model_group, ["alias", "production", "kws:1"], e).output.startswith("production → kws:1")
    shown = invoke(model_group, ["show", "production"], e).output
    assert "run_id         run-1" in shown and "accuracy       0.800" in shown
    d = json.loads(invoke(model_group, ["diff", "production", "candidate", "--json"], e).output)
    assert d["metrics"]["accuracy"]["delta"] == pytest.approx(0.1)
    text = invoke(model_group, ["diff", "kws:1", rec["sha256"][:10]], e).output
    assert "accuracy" in text and "+0.1000" in text and "label mix PSI" in text


def test_rollout_commands_from_start_to_status(env, model_group, mosquitto):
    from cloud.store import open_store

    e, (b1, b2) = env
    invoke(model_group, ["register", str(b1)], e)
    rec = json.loads(invoke(model_group, ["register", str(b2), "--json"], e).output)
    old = json.loads(invoke(model_group, ["show", "kws:1", "--json"], e).output)["sha256"]
    with open_store(e["HARKEN_DB"]) as store:
        for i in range(4):
            store.upsert_device_state({"kind": "state", "v": "1.0", "device": f"dev-{i}", "online": True, "t": 1.0,
                                       "automation": "full", "models": {"active": old}})
    r = invoke(rollout_group, ["start", "kws:2", "--strategy", "shadow,canary", "--steps", "50", "--bake", "1m",
                               "--approval", "manual", "--deadline", "30s"], e)
    assert r.exit_code == 0, r.output
    rid = r.output.split(":")[0]
    assert "shadow 100% → canary 50% → canary 100%" in r.output
    r = invoke(rollout_group, ["start", "kws:2", "--cohort", "device:dev-1"], e)
    assert r.exit_code != 0 and "are in rollout" in str(r.exception)
    r = invoke(rollout_group, ["start", "kws:2", "--bake", "30m", "--stage-timeout", "20m"], e)
    assert r.exit_code != 0 and "the stage timeout (1200 s) must be longer than the longest bake (1800 s)" \
        in str(r.exception)

    listed = json.loads(invoke(rollout_group, ["list", "--json"], e).output)
    assert [(x["id"], x["status"], x["stages"]) for x in listed] == [(rid, "pending", 3)]

    sub = Collecting(mosquitto.port, [Topics().filter("desired")])
    try:
        r = invoke(rollout_group, ["run", "--once", "--broker", mosquitto.url], e)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["leader"] is True
        got = sub.wait_for(lambda m: len(m) == 4)
        assert {decode(p)["shadow"] for p in got.values()} == {rec["sha256"]}
    finally:
        sub.close()
    out = invoke(rollout_group, ["pause", rid[:6], "--reason", "lunch"], {**e, "USER": "ana"}).output
    assert out.startswith(f"pause queued for {rid}")
    invoke(rollout_group, ["run", "--once", "--broker", mosquitto.url], e)
    status = invoke(rollout_group, ["status", rid], e).output
    assert "status  paused — paused by ana: lunch" in status
    assert "stage   1/3 shadow 100%" in status and "devices 4 in cohort, 4 in this stage: 0 converged, 4 pending" \
        in status
    full = json.loads(invoke(rollout_group, ["status", rid, "--json"], e).output)
    assert [x["event"] for x in full["log"]] == ["created", "started", "stage_started", "verdict", "paused"]
    assert full["rollout"]["policy"]["deadline_s"] == 30.0
    assert full["rollout"]["policy"]["stage_timeout_s"] == 4 * 3600.0  # finite by default
    r = invoke(rollout_group, ["approve", "nope"], e)
    assert r.exit_code != 0 and "no rollout 'nope'" in str(r.exception)
