"""`harken demo`: the whole loop on this machine, end to end."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import click


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), default="harken-demo", show_default=True,
              help="Where the demo keeps its broker, data, models, database and logs (data and models are reused).")
@click.option("--duration", type=click.FloatRange(min=0), default=0.0,
              help="Stop after this many seconds in all, wherever the story is (default: run until Ctrl-C once "
                   "the story is told).")
@click.option("--devices", type=click.IntRange(1, 500), default=8, show_default=True, help="Simulated devices.")
@click.option("--per-word", type=click.IntRange(5, 5000), default=120, show_default=True,
              help="Clips per label when the dataset has to be synthesized.")
@click.option("--speed", type=click.FloatRange(0.5, 100), default=20.0, show_default=True,
              help="Audio seconds per wall second on each simulated device.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="Port of the dashboard and HTTP API.")
@click.option("--scenario", default="sudden-noise", show_default=True,
              help="The drift the fleet meets (see `harken sim --help`).")
@click.option("--exit-after-story", is_flag=True, help="Stop as soon as the story is told (tests, CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object at the end.")
def command(workdir, duration, devices, per_word, speed, http_port, scenario, exit_after_story, as_json) -> None:
    """Run the whole loop on this machine, end to end."""
    from cloud.demo.story import Demo, DemoSettings

    settings = DemoSettings(workdir=Path(workdir), devices=devices, per_word=per_word, speed=speed,
                            http_port=http_port, scenario=scenario)
    demo = Demo(settings, say=lambda line: click.echo(line, err=as_json))
    signal.signal(signal.SIGTERM, _interrupt)
    if duration:  # a hard deadline: it ends the story wherever it is, not only once it is told
        signal.signal(signal.SIGALRM, _deadline)
        signal.setitimer(signal.ITIMER_REAL, duration)
    outcome = {}
    try:
        demo.prepare()
        demo.start_collector()
        demo.start_fleet()
        alert = demo.await_alert()
        if alert is not None:
            demo.collect_field_samples(alert)
            demo.canary(demo.retrain_with_field_samples())
        outcome = demo.summary()
        if not duration and not exit_after_story:
            demo.step("the fleet keeps running; open the dashboard, Ctrl-C ends the demo")
        while not exit_after_story:
            demo.procs.check_alive()
            time.sleep(1.0)
    except DeadlineReached:
        demo.step(f"--duration {duration:g} s is up")
    except KeyboardInterrupt:
        demo.step("interrupted")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        demo.stop()
    if as_json:
        click.echo(json.dumps(outcome or {"dashboard": None, **demo.outcome}, default=str))


class DeadlineReached(KeyboardInterrupt):
    """--duration ran out (a KeyboardInterrupt, so that every wait of the story gives way to it)."""


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the demo the way Ctrl-C does: cleanly


def _deadline(signum, frame) -> None:
    raise DeadlineReached
