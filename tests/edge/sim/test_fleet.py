"""The simulator end to end: real agents, a real bundle and a real broker; reboots; the CLI."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from edge.sim.cli import command
from edge.sim.fleet import FleetPlan, run_fleet
from edge.sim.scenarios import ScenarioParams
from shared.codec import encode
from shared.errors import ConfigError
from shared.histogram import SNR_DB_EDGES, quantile
from shared.messages import decode
from tests.edge.watcher import Watcher


def _plan(tiny_lab, tmp_path, **kw) -> FleetPlan:
    base = dict(devices=2, data_dir=str(tiny_lab.data_dir), state_root=str(tmp_path / "state"),
                model=str(tiny_lab.released_bundle_path), trust_keys=(str(tiny_lab.public_key_path),),
                release_keys=(str(tiny_lab.release_public_key_path),), speed=40.0,
                duration_s=20.0, window_s=10.0, processes=1)
    base.update(kw)
    return FleetPlan(**base)


def _median_snr(windows: list[dict]) -> float:
    counts = [sum(w["input"]["snr_db"][i] for w in windows) for i in range(len(SNR_DB_EDGES) + 1)]
    return quantile(SNR_DB_EDGES, counts, 0.5)


def test_five_devices_send_windows_and_state_through_a_real_broker(mosquitto, tiny_lab, tmp_path):
    watcher = Watcher(mosquitto.port, ["harken/v1/dev/+/stats", "harken/v1/dev/+/state"])
    # the cloud wants dev-0003 at full automation: a real agent obeys its retained desired state
    watcher.publish("harken/v1/dev/dev-0003/desired", encode(
        {"kind": "desired", "device": "dev-0003", "rev": 1, "t": time.time(), "automation": "full"}), retain=True)
    plan = _plan(tiny_lab, tmp_path, devices=5, broker_url=mosquitto.url, duration_s=40.0, processes=2,
                 speed=20.0, feedback_rate=0.5, scenario=ScenarioParams(name="sudden-noise", onset_s=20.0))
    result = run_fleet(plan)
    ids = [f"dev-000{i}" for i in range(1, 6)]
    assert result["failures"] == {} and result["device_errors"] == {}
    assert result["targets"] == ids and result["processes"] == 2

    def states(device: str) -> list[dict]:
        return [decode(p, "state") for p in watcher.on(f"/dev/{device}/state")]

    watcher.wait_for(lambda _: all(states(d) and not states(d)[-1]["online"] for d in ids), timeout=20,
                     what="every device to say offline")
    windows = [decode(p, "window") for p in watcher.on("/stats")]
    assert len(windows) == result["windows"] and result["windows_unsent"] == 0
    for row in result["per_device"]:
        mine = [w for w in windows if w["device"] == row["device"]]
        assert [w["seq"] for w in mine] == list(range(row["first_seq"], row["next_seq"]))  # consecutive, once each
        assert {w["boot"] for w in mine} == {row["boot"]}
        assert sum(w["duration_s"] for w in mine) == pytest.approx(40.0)
        assert sum(sum(w["output"]["labels"].values()) for w in mine) == row["utterances"] > 0
        first = states(row["device"])[0]
        assert first["online"] and first["models"]["active"] == row["model"]
        # the scenario reached the device: utterances after the onset are noisier
        before = [w for w in mine if w["audio_start_s"] + w["duration_s"] <= 20.0]
        after = [w for w in mine if w["audio_start_s"] >= 20.0]
        assert _median_snr(after) < _median_snr(before) - 5
    automation = {w["device"]: {x["automation"] for x in windows if x["device"] == w["device"]} for w in windows}
    assert automation["dev-0003"] >= {"full"} and automation["dev-0001"] == {"shadow"}
    assert any(st.get("automation") == "full" and st["online"] for st in states("dev-0003"))
    # lines the person writes during the very last flush are never read: at most a couple
    assert 0 < result["feedback_accepted"] <= result["feedback_sent"] <= result["feedback_accepted"] + 3
    pairs = sum(n for w in windows for _, _, n in w["feedback"]["pairs"])
    assert pairs == result["feedback_accepted"]
    watcher.close()


def test_a_second_run_is_a_reboot_that_keeps_the_model_and_continues_the_seqs(tiny_lab, tmp_path):
    first = run_fleet(_plan(tiny_lab, tmp_path))
    second = run_fleet(_plan(tiny_lab, tmp_path, model=""))  # no bundle given: the stored one runs
    for a, b in zip(first["per_device"], second["per_device"]):
        assert a["boot"] != b["boot"]  # each start draws a new random boot id
        assert b["first_seq"] == a["next_seq"] and b["next_seq"] > b["first_seq"]
        assert b["model"] == a["model"] is not None
        assert b["utterances"] == a["utterances"]  # the same seeded audio, the same model


def test_cli_prints_one_json_result_and_refuses_bad_input(tiny_lab, tmp_path):
    runner = CliRunner()
    args = ["--devices", "2", "--data", str(tiny_lab.data_dir), "--model", str(tiny_lab.released_bundle_path),
            "--trust-key", str(tiny_lab.public_key_path), "--release-key", str(tiny_lab.release_public_key_path),
            "--state-root", str(tmp_path / "s"), "--duration", "12",
            "--speed", "50", "--processes", "1", "--scenario", "broken-device", "--onset", "0",
            "--fault", "silence", "--status-interval", "0.2", "--tags", "site-a,lab"]
    res = runner.invoke(command, args)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["scenario"] == "broken-device" and len(result["targets"]) == 1
    assert re.search(r"devices \d/2 up .* windows \d+", res.stderr)
    broken = next(d for d in result["per_device"] if d["device"] in result["targets"])
    healthy = next(d for d in result["per_device"] if d["device"] not in result["targets"])
    assert broken["utterances"] == 0 < healthy["utterances"]  # its microphone died at second 0
    fleet = json.loads((tmp_path / "s" / "fleet.json").read_text())
    assert [d["tags"] for d in fleet["devices"]] == [["site-a", "lab"]] * 2
    assert [d["device"] for d in fleet["devices"] if d["targeted"]] == result["targets"]
    bad = runner.invoke(command, args + ["--credentials", str(_write(tmp_path / "c.json", {"dev-0001": "x"}))])
    assert isinstance(bad.exception, ConfigError) and "dev-0002" in str(bad.exception)


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_devices_log_in_with_their_own_credentials_over_tls(tiny_lab, tmp_path):
    from cloud import broker as brokers  # test-side only: the simulator never imports cloud
    from tests.brokers import free_port

    directory = tmp_path / "broker"
    b = brokers.init_broker(directory, devices=["dev-0001", "dev-0002"], port=free_port(),
                            plain_port=free_port()).broker
    brokers.start(directory)
    try:
        watcher = Watcher(b.settings.plain_port, ["harken/v1/dev/+/stats"], username="operator",
                          password=b.credentials()["operator"])
        res = CliRunner().invoke(command, [
            "--devices", "2", "--data", str(tiny_lab.data_dir), "--model", str(tiny_lab.released_bundle_path),
            "--trust-key", str(tiny_lab.public_key_path), "--release-key", str(tiny_lab.release_public_key_path),
            "--state-root", str(tmp_path / "s"), "--duration", "20",
            "--speed", "40", "--processes", "1", "--window-s", "10", "--broker", b.tls_url,
            "--credentials", str(b.paths.credentials), "--tls-ca", str(b.ca_path)])
        assert res.exit_code == 0, res.output
        result = json.loads(res.stdout.strip().splitlines()[-1])
        assert result["windows"] >= 4 and result["windows_unsent"] == 0
        watcher.wait_for(lambda msgs: len(msgs) == result["windows"], timeout=15, what="every window")
        assert {decode(p, "window")["device"] for p in watcher.on("/stats")} == {"dev-0001", "dev-0002"}
        watcher.close()
    finally:
        brokers.stop(directory)


def test_the_simulator_is_edge_code_it_never_imports_cloud_or_training_packages():
    code = ("import sys, edge.sim.cli, edge.sim.fleet, edge.sim.device, edge.sim.offline; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cloud', 'sklearn', 'skl2onnx', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_households_come_from_the_bundles_test_split_and_bad_ranges_are_usage_errors(split_lab, tmp_path):
    lab = split_lab.lab
    args = ["--devices", "3", "--data", str(lab.data_dir), "--model", str(split_lab.bundle_path),
            "--trust-key", str(lab.public_key_path), "--release-key", str(lab.release_public_key_path),
            "--state-root", str(tmp_path / "s"), "--duration", "12",
            "--speed", "50", "--processes", "1", "--speakers-per-device", "1-2", "--speaker-split", "test",
            "--traffic", "diurnal", "--talk-fraction", "1", "--day-start-h", "18.5", "--status-interval", "0.5"]
    res = CliRunner().invoke(command, args)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["failures"] == {} and result["device_errors"] == {}
    for row in result["per_device"]:
        assert 1 <= len(row["speakers"]["household"]) <= 2
        assert set(row["speakers"]["household"]) <= set(split_lab.names["test"])
    assert result["utterances"] > 0  # the evening is busy and this household always talks
    bad = CliRunner().invoke(command, args + ["--speakers-per-device", "3-1"])
    assert bad.exit_code == 2 and "1 <= LO <= HI" in bad.output
