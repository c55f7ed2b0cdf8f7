"""The offline harness: real pipelines and a real bundle on simulated time, no broker."""
from __future__ import annotations

import copy
import multiprocessing

import pytest

from edge.sim.offline import OfflinePlan, run_offline
from edge.sim.scenarios import SCENARIOS, ScenarioParams
from shared.errors import ConfigError, SignatureError
from shared.histogram import SNR_DB_EDGES, quantile

EPOCH = 1_700_000_000.0
TIMING = ("cpu_s", "rss_mb", "latency_ms")  # wall-clock fields: the only ones that may differ between runs


def _plan(split_lab, **kw) -> OfflinePlan:
    lab = split_lab.lab
    base = dict(devices=2, data_dir=str(lab.data_dir), bundle=str(split_lab.bundle_path),
                trust_keys=(str(lab.public_key_path),), hours=240 / 3600, window_s=10.0, epoch=EPOCH, seed=0,
                speakers_per_device=(1, 3), speaker_split="test", traffic="constant", feedback_rate=0.5,
                processes=1)
    base.update(kw)
    return OfflinePlan(**base)


def _content(window: dict) -> dict:
    """A window without its wall-clock fields."""
    w = copy.deepcopy(window)
    for key in TIMING:
        w["software"].pop(key, None)
    return w


def _run(plan: OfflinePlan) -> tuple[list[dict], dict]:
    run = run_offline(plan)
    windows = list(run)
    return windows, run.summary


def _median_snr(windows: list[dict]) -> float:
    counts = [sum(w["input"]["snr_db"][i] for w in windows) for i in range(len(SNR_DB_EDGES) + 1)]
    return quantile(SNR_DB_EDGES, counts, 0.5)


@pytest.fixture(scope="module")
def two_devices(split_lab):
    return _run(_plan(split_lab))


def test_windows_start_at_epoch_plus_audio_time_in_order(two_devices, split_lab):
    windows, summary = two_devices
    assert [(w["t_start"], w["device"]) for w in windows] == sorted((w["t_start"], w["device"]) for w in windows)
    for device in ("dev-0001", "dev-0002"):
        mine = [w for w in windows if w["device"] == device]
        assert [w["seq"] for w in mine] == list(range(24)) and {w["boot"] for w in mine} == {1}
        assert [w["t_start"] for w in mine] == [EPOCH + 10.0 * k for k in range(24)]
        assert all(w["t_start"] == EPOCH + w["audio_start_s"] and w["duration_s"] == 10.0 for w in mine)
    assert summary["windows_per_device"] == {"dev-0001": 24, "dev-0002": 24}
    assert summary["audio_s"] == 480.0 and summary["audio_hours"] == pytest.approx(480 / 3600, abs=1e-6)
    # the devices really listened: utterances, decisions of the real model, the person's answers
    assert summary["utterances"] == sum(w["software"]["utterances"] for w in windows) > 40
    assert summary["decisions"] == sum(sum(w["output"]["labels"].values()) for w in windows)
    pairs = sum(n for w in windows for _, _, n in w["feedback"]["pairs"])
    assert 0 < pairs == summary["feedback_accepted"] <= summary["feedback_sent"]
    # households from the test split, never the reference's (dev) or training voices
    assert summary["speaker_split"] == "test"
    for row in summary["per_device"]:
        assert 1 <= len(row["speakers"]["household"]) <= 3
        assert set(row["speakers"]["household"]) <= set(split_lab.names["test"])
    assert summary["audio_s_per_cpu_s"] > 0 and summary["cpu_s"] > 0


def test_two_processes_give_the_same_windows_as_one(two_devices, split_lab):
    windows, summary = two_devices
    windows2, summary2 = _run(_plan(split_lab, processes=2))
    assert summary2["processes"] == 2
    assert [_content(w) for w in windows2] == [_content(w) for w in windows]
    assert summary2["per_device"] == summary["per_device"]


def test_the_windows_do_not_depend_on_the_chunk_size(two_devices, split_lab):
    windows, _ = two_devices
    small, _ = _run(_plan(split_lab, chunk_samples=3333))
    assert [_content(w) for w in small] == [_content(w) for w in windows]  # feedback included


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "healthy"])
def test_a_scenario_changes_the_windows_only_after_its_onset(two_devices, split_lab, scenario):
    healthy, _ = two_devices
    params = ScenarioParams(name=scenario, onset_s=120.0, snr_db=0.0, fault="silence")
    drifted, summary = _run(_plan(split_lab, scenario=params))
    targets = set(summary["targets"])
    assert targets and len(drifted) == len(healthy)
    for h, d in zip(healthy, drifted):
        if h["audio_start_s"] + h["duration_s"] <= 120.0 or d["device"] not in targets:
            assert _content(d) == _content(h)
    after = [(h, d) for h, d in zip(healthy, drifted) if h["audio_start_s"] >= 120.0 and d["device"] in targets]
    assert sum(_content(h) != _content(d) for h, d in after) >= len(after) // 2
    if scenario == "sudden-noise":
        assert _median_snr([d for _, d in after]) < _median_snr([h for h, _ in after]) - 10
    if scenario == "broken-device":
        assert sum(d["software"]["utterances"] for _, d in after[2:]) == 0  # a dead microphone hears nothing
    if scenario == "new-speakers":
        row = next(r for r in summary["per_device"] if r["device"] in targets)
        assert not set(row["speakers"]["after_onset"]) & set(split_lab.names["test"] + split_lab.names["dev"])


def test_a_bundle_signed_by_another_key_is_refused_by_the_workers(split_lab, signing, tmp_path):
    _, _, other_pub = signing
    run = run_offline(_plan(split_lab, trust_keys=(str(other_pub),), processes=2))
    with pytest.raises(SignatureError, match="not by a trusted key|trusted"):
        list(run)


def test_bad_plans_are_refused_before_any_worker_starts(split_lab, tmp_path):
    from shared import keys
    from tests.edge.bundles import resigned

    old = tmp_path / "no-split.hkb"  # a bundle from before the lab recorded its split's speakers
    old.write_bytes(resigned(split_lab.bundle_path.read_bytes(), keys.load_private_key(split_lab.lab.private_key_path),
                             lambda m: m["lineage"]["split"].pop("speaker_names")))
    with pytest.raises(ConfigError, match="retrain it with the current `harken model train`"):
        run_offline(_plan(split_lab, bundle=str(old), speaker_split="test"))
    assert run_offline(_plan(split_lab, bundle=str(old), speaker_split="auto")).plan.speaker_split == "auto"
    with pytest.raises(ConfigError, match="hours must be positive"):
        run_offline(_plan(split_lab, hours=0))
    with pytest.raises(ConfigError, match="automation"):
        run_offline(_plan(split_lab, automation="sometimes"))
    with pytest.raises(ConfigError, match="not a file"):
        run_offline(_plan(split_lab, bundle="nope.hkb"))


def test_a_partial_last_window_is_flushed_and_closing_early_stops_the_workers(split_lab):
    windows, _ = _run(_plan(split_lab, devices=1, hours=245 / 3600))
    assert len(windows) == 25 and windows[-1]["duration_s"] == 5.0 and windows[-1]["t_start"] == EPOCH + 240.0
    run = run_offline(_plan(split_lab, hours=1.0, processes=2))
    first = next(run)
    assert _workers()
    run.close()
    assert first["t_start"] == EPOCH and run.summary is None
    assert _workers() == []


def _workers() -> list:
    """This run's worker processes (other tests' session-wide pools may be alive too)."""
    return [p for p in multiprocessing.active_children() if p.name.startswith("sim-offline-")]
