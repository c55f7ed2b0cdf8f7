"""``harken sim``: run a simulated fleet of real agents on synthesized speech.

Status goes to stderr every few seconds; the result is one JSON line on stdout. Runs until
every device has played ``--duration`` audio seconds, or Ctrl-C / SIGTERM (clean shutdown).
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

import click

from edge.sim.fleet import FleetPlan, run_fleet, status_line
from edge.sim.households import SPEAKER_SPLITS
from edge.sim.scenarios import FAULTS, NOISE_KINDS, SCENARIOS, ScenarioParams
from edge.sim.traffic import TALK_FRACTION, TRAFFIC_KINDS
from shared.errors import ConfigError
from shared.topics import DEFAULT_PREFIX


def _credentials(path: str | None) -> dict:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read credentials {path}: {exc}; it is the credentials.json "
                          "`harken broker init` writes") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path} is not a {{device: password}} object; use the credentials.json of "
                          "`harken broker init`")
    return data


def _tags(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t.strip() for v in values for t in v.split(",") if t.strip())


def _speakers_per_device(ctx, param, value: str) -> tuple[int, int] | None:
    """``all`` (None), ``N`` or ``LO-HI``."""
    if value == "all":
        return None
    try:
        lo, _, hi = value.partition("-")
        out = (int(lo), int(hi or lo))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not 'all', N or LO-HI (e.g. 1-3)") from None
    if not 1 <= out[0] <= out[1]:
        raise click.BadParameter(f"{value!r}: need 1 <= LO <= HI (e.g. 1-3)")
    return out


@click.command("sim")
@click.option("--devices", type=click.IntRange(1, 100000), default=5, show_default=True, help="Devices to simulate.")
@click.option("--scenario", type=click.Choice(list(SCENARIOS)), default="healthy", show_default=True,
              help="What happens to the devices' audio from --onset: " + "; ".join(
                  f"{k}: {v}" for k, v in SCENARIOS.items()))
@click.option("--duration", "duration_s", type=click.FloatRange(min=1.0), default=None,
              help="Audio seconds each device plays, then stops (default: until Ctrl-C).")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset directory made by `harken data synth` (its manifest.json lists the clips).")
@click.option("--broker", "broker_url", default="", help="mqtt://host:port or mqtts://host:port (empty: offline).")
@click.option("--model", default="", type=click.Path(dir_okay=False),
              help="Bundle installed on a device's first boot (later boots keep what rollouts installed).")
@click.option("--state-root", default="sim-state", show_default=True, type=click.Path(file_okay=False),
              help="Devices' state directories (STATE_ROOT/dev-0001 ...): kept across runs, so a rerun is a reboot.")
@click.option("--trust-key", "trust_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Public key (signing.pub) whose bundles the devices run; repeatable.")
@click.option("--release-key", "release_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Release public key (release.pub): devices run only bundles it released; repeatable.")
@click.option("--speed", type=click.FloatRange(min=0.01), default=10.0, show_default=True,
              help="Audio seconds per wall second (windows are cut on audio time: same statistics at any speed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same audio on every device.")
@click.option("--credentials", type=click.Path(exists=True, dir_okay=False),
              help="credentials.json from `harken broker init` (device id = user name = client id).")
@click.option("--tls-ca", default="", type=click.Path(dir_okay=False), help="CA certificate of an mqtts:// broker.")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Topic prefix.")
@click.option("--tags", multiple=True, help="Tags of the simulated devices (comma-separated; written to "
                                             "STATE_ROOT/fleet.json for `harken fleet tag`).")
@click.option("--feedback-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of decisions a simulated person confirms or corrects with the clip's true label.")
@click.option("--audit-answer-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Fraction of the decisions the agent flags for audit that the person answers.")
@click.option("--speakers-per-device", default="all", show_default=True, callback=_speakers_per_device,
              help="Speakers in each device's household: LO-HI (e.g. 1-3, seeded per device) or 'all'.")
@click.option("--speaker-split", type=click.Choice(SPEAKER_SPLITS), default="all", show_default=True,
              help="Where households come from: 'test' = the test split recorded in --model (voices the "
                   "reference never heard), 'all' = every speaker, 'auto' = test when the bundle records it.")
@click.option("--traffic", type=click.Choice(TRAFFIC_KINDS), default="constant", show_default=True,
              help="Gaps between utterances: constant 0.3-1.5 s, or diurnal (busy morning and evening, quiet "
                   "night, in talking sessions).")
@click.option("--talk-fraction", type=click.FloatRange(0, 1, min_open=True), default=TALK_FRACTION,
              show_default=True, help="diurnal: share of 10-minute slots in which the household talks.")
@click.option("--day-start-h", type=click.FloatRange(0, 24, max_open=True), default=8.0, show_default=True,
              help="diurnal: local hour of day at audio second 0.")
@click.option("--onset", "onset_s", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Audio second at which the scenario starts.")
@click.option("--snr-db", type=float, default=5.0, show_default=True,
              help="Noise scenarios: SNR against the speech level (gradual-noise: the final SNR).")
@click.option("--start-snr-db", type=float, default=30.0, show_default=True, help="gradual-noise: SNR at the onset.")
@click.option("--ramp", "ramp_s", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="gradual-noise: audio seconds from --start-snr-db to --snr-db.")
@click.option("--noise", type=click.Choice(NOISE_KINDS), default="white", show_default=True, help="Noise kind.")
@click.option("--gain-db", type=float, default=-20.0, show_default=True, help="level-drop: gain change.")
@click.option("--shift", type=click.FloatRange(0.5, 2.0), default=1.2, show_default=True,
              help="new-speakers: pitch/tempo factor of the held-out voices (1 = held-out speakers only).")
@click.option("--fault", type=click.Choice(FAULTS), default="silence", show_default=True,
              help="broken-device: how the microphone dies.")
@click.option("--affected", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Fraction of devices the scenario targets (default: all; broken-device: one).")
@click.option("--processes", type=click.IntRange(1, 64), default=None,
              help="Worker processes (default: min(2, devices)).")
@click.option("--chunk-samples", type=click.IntRange(160, 160000), default=16000, show_default=True,
              help="Samples per chunk the agents read (their results do not depend on it; bigger costs less CPU).")
@click.option("--window-s", type=click.FloatRange(1, 3600), default=None, help="Agents' statistics window.")
@click.option("--agent-config", type=click.Path(exists=True, dir_okay=False),
              help="TOML agent config applied to every device (device id, broker and state dir are the sim's).")
@click.option("--status-interval", type=click.FloatRange(0.2, 600), default=5.0, show_default=True,
              help="Seconds between status lines.")
@click.option("--truth-log", is_flag=True, help="Each device writes what was really said, per decision, to "
              "truth.jsonl in its state directory (a simulated labeller reads it).")
@click.option("--json-status", is_flag=True, help="Status lines as JSON objects (for scripts).")
def command(devices, scenario, duration_s, data_dir, broker_url, model, state_root, trust_keys, release_keys, speed,
            seed, credentials, tls_ca, prefix, tags, feedback_rate, audit_answer_rate, speakers_per_device,
            speaker_split, traffic, talk_fraction, day_start_h, onset_s, snr_db, start_snr_db, ramp_s, noise, gain_db,
            shift, fault, affected, processes, chunk_samples, window_s, agent_config, status_interval,
            truth_log, json_status) -> None:
    """Run a simulated fleet of real agents on synthesized speech."""
    params = ScenarioParams(name=scenario, onset_s=onset_s, snr_db=snr_db, start_snr_db=start_snr_db,
                            ramp_s=ramp_s, noise=noise, gain_db=gain_db, shift=shift, fault=fault,
                            affected=affected)
    plan = FleetPlan(devices=devices, data_dir=data_dir, state_root=state_root, scenario=params,
                     broker_url=broker_url, model=model, trust_keys=tuple(trust_keys),
                     release_keys=tuple(release_keys),
                     credentials=_credentials(credentials), tls_ca=tls_ca, prefix=prefix, speed=speed, seed=seed,
                     duration_s=duration_s, feedback_rate=feedback_rate, audit_answer_rate=audit_answer_rate,
                     tags=_tags(tags), window_s=window_s, chunk_samples=chunk_samples,
                     agent_config=agent_config or "", processes=processes, speakers_per_device=speakers_per_device,
                     speaker_split=speaker_split, traffic=traffic, talk_fraction=talk_fraction,
                     day_start_h=day_start_h, truth_log=truth_log)
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def show(status: dict) -> None:
        click.echo(json.dumps(status, sort_keys=True) if json_status else status_line(status), err=True)

    try:
        result = run_fleet(plan, stop=stop, on_status=show, status_interval_s=status_interval)
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    click.echo(json.dumps(result, sort_keys=True))
    if result["failures"]:
        raise ConfigError("; ".join(result["failures"].values()))


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.sim.cli ...``: the command with the root CLI's error handling."""
    from shared.cli import invoke

    return invoke(command, argv, "harken sim")


if __name__ == "__main__":  # until the root CLI maps `harken sim` here
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
