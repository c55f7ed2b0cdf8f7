"""``harken agent``: run the device agent, replay recordings, send feedback, list settings.

The flags of ``harken agent run`` are generated from ``AgentConfig`` (one per setting, so
the flags, the environment variables and the config file can never disagree).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import click

from edge.config import ENV_PREFIX, AgentConfig, load_agent_config
from shared.cli_config import config_options, overrides_from_flags, reference
from shared.config import redacted
from shared.messages import AUTOMATION_LEVELS

log = logging.getLogger(__name__)


@click.group("agent")
def group() -> None:
    """Run the device agent, replay audio, send feedback."""


@group.command("run")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="TOML config file (file < environment < flags).")
@config_options(AgentConfig, ENV_PREFIX)
def run(config_file: str | None, **flags) -> None:
    """Run the agent: listen, decide, report windows and state, follow the desired state."""
    from edge.agent import Agent  # onnxruntime and paho load only when the agent runs

    cfg = load_agent_config(config_file, overrides=overrides_from_flags(flags))
    log.debug("agent configuration: %s", redacted(cfg))
    agent = Agent(cfg)
    handlers = {sig: signal.signal(sig, lambda *_: agent.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.run()
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    if agent.reader_blocked:
        # A thread blocked reading stdin makes interpreter shutdown abort (it cannot take the
        # stream's lock); everything is flushed and closed, so leave without finalizing.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)


@group.command("replay")
@click.argument("wavs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The model bundle (.hkb) to run.")
@click.option("--trust-key", "trust_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Public key (signing.pub) the bundle must be signed with; repeatable.")
@click.option("--no-verify", is_flag=True, help="Skip the signature check (inspecting an unsigned bundle).")
@click.option("--window-s", type=click.FloatRange(1, 3600), default=10.0, show_default=True,
              help="Length of one statistics window.")
@click.option("--automation", type=click.Choice(AUTOMATION_LEVELS), default="partial", show_default=True,
              help="Automation level the decisions are taken at.")
@click.option("--chunk-samples", type=click.IntRange(16, 960000), default=160000, show_default=True,
              help="Samples read from the files and fed to the pipeline per block (the default, 10 s, keeps "
                   "per-block costs negligible; results do not depend on it).")
@click.option("--json", "as_json", is_flag=True, help="Print decisions and windows as one JSON object.")
def replay_cmd(wavs, bundle_path, trust_keys, no_verify, window_s, automation, chunk_samples, as_json) -> None:
    """Replay WAV files through the agent's pipeline offline and print its decisions."""
    from edge.replay import replay

    if not trust_keys and not no_verify:
        raise click.UsageError("give --trust-key signing.pub (or --no-verify to inspect an unsigned bundle)")
    decisions, windows = replay(list(wavs), bundle_path, public_keys=list(trust_keys), verify=not no_verify,
                                window_s=window_s, automation=automation, chunk_samples=chunk_samples)
    if as_json:
        click.echo(json.dumps({"decisions": decisions, "windows": windows}, sort_keys=True))
        return
    for d in decisions:
        where = f"{d.get('file', '')}@{d.get('file_start_s', d.get('audio_start_s', 0.0)):.2f}s"
        click.echo(f"{where:40s} {d['label']:>10s} {d['confidence']:.3f} {d['action']}")
    click.echo(f"{len(decisions)} decisions, {len(windows)} windows", err=True)


@group.command("feedback")
@click.argument("utterance")
@click.option("--label", help="The true label of the utterance (a correction or a confirmation).")
@click.option("--confirm", is_flag=True, help="The prediction was right.")
@click.option("--file", "path", envvar=f"{ENV_PREFIX}FEEDBACK_PATH", required=True,
              type=click.Path(dir_okay=False),
              help=f"The agent's feedback file or FIFO [env {ENV_PREFIX}FEEDBACK_PATH].")
def feedback(utterance: str, label: str | None, confirm: bool, path: str) -> None:
    """Tell a running agent whether its prediction for UTTERANCE was right."""
    if not label and not confirm:
        raise click.UsageError("give --label TRUE_LABEL or --confirm")
    line = {"utterance": utterance, **({"label": label} if label else {}), **({"confirm": True} if confirm else {})}
    data = (json.dumps(line, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one short write: atomic even with several writers
    finally:
        os.close(fd)


@group.command("config-reference")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as a JSON list.")
def config_reference(as_json: bool) -> None:
    """List every agent setting with its flag, environment variable, default and bounds."""
    click.echo(reference(AgentConfig, ENV_PREFIX, ("vad", "capture", "tls"), as_json=as_json))
