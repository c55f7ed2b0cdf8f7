"""The ``harken`` command: a root group that imports each sub-group only when it is called.

Lazy loading is what lets ``harken agent ...`` run on a device that installed only the base
package: the cloud groups (and scikit-learn) are never imported there. Only this module turns
exceptions into a one-line message and an exit code: HarkenError → 1, usage → 2.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from shared.errors import HarkenError

# group name → (module:attribute, one-line help)
GROUPS: dict[str, tuple[str, str]] = {
    "agent": ("edge.cli:group", "Run the device agent, replay audio, send feedback."),
    "broker": ("cloud.cli.broker:group", "Write and run a secured mosquitto configuration."),
    "collector": ("cloud.cli.collector:group", "Run the fleet collector (ingest, store, drift, rollouts, API)."),
    "data": ("cloud.cli.data:group", "Synthesize, check and split speech datasets."),
    "demo": ("cloud.cli.demo:command", "Run the whole loop on this machine, end to end."),
    "drift": ("cloud.cli.drift:group", "Show drift alerts and drift reports."),
    "fleet": ("cloud.cli.fleet:group", "Show and tag the devices of the fleet."),
    "keys": ("cloud.cli.keys:group", "Generate signing and release keys; show key ids."),
    "model": ("cloud.cli.model:group", "Train, evaluate, inspect, verify, release and register model bundles."),
    "rollout": ("cloud.cli.rollout:group", "Start and steer staged model rollouts."),
    "runs": ("cloud.cli.runs:group", "List, show and compare training runs."),
    "samples": ("cloud.cli.samples:group", "List, play, label and export the field samples devices uploaded."),
    "serve": ("edge.serve.cli:command", "Serve a model over HTTP as a device (predictions, windows, shadow)."),
    "sim": ("edge.sim.cli:command", "Run a simulated fleet of real agents."),
}
# The extra each group's commands need (pyproject.toml; the agent and keys need only the base).
GROUP_EXTRA = {"broker": "collector", "collector": "collector", "data": "lab", "demo": "cloud", "drift": "collector",
               "fleet": "collector", "model": "lab", "rollout": "collector", "runs": "lab", "samples": "collector",
               "serve": "serve", "sim": "cloud"}
# The extra that provides an optional module, to name in the error when it is missing; a module
# that several extras provide (scipy, fastapi, uvicorn) is named by the group's own extra.
EXTRA_OF_MODULE = {"sklearn": "lab", "skl2onnx": "lab", "onnx": "lab", "matplotlib": "lab", "threadpoolctl": "lab",
                   "psycopg": "collector", "pydantic": "collector", "msgspec": "collector", "anyio": "serve",
                   "sounddevice": "mic"}
SHARED_BY_EXTRAS = {"scipy": ("collector", "lab"), "fastapi": ("collector", "serve"),
                    "uvicorn": ("collector", "serve"), "prometheus_client": ("collector", "serve")}


def missing_extra(exc: ModuleNotFoundError, group: str | None) -> click.ClickException | None:
    """The one-line error for a module an uninstalled extra provides (None: not an extra's module)."""
    top = (exc.name or "").split(".")[0]
    if top in EXTRA_OF_MODULE:
        extra = EXTRA_OF_MODULE[top]
    elif top in SHARED_BY_EXTRAS:
        own = GROUP_EXTRA.get(group or "")
        extra = own if own in (*SHARED_BY_EXTRAS[top], "cloud") else SHARED_BY_EXTRAS[top][0]
    else:
        return None
    return click.ClickException(f"this command needs the {extra} extra ({exc.name} is missing): "
                                f"pip install 'harken[{extra}]'")


def _load(name: str) -> click.Command:
    module_name, attr = GROUPS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        error = missing_extra(exc, name)
        if error is None:
            raise
        raise error from exc
    return getattr(module, attr)


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(GROUPS)

    def get_command(self, ctx, name):
        if name not in GROUPS:
            return None
        return _load(name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:  # a command's own lazy import of an extra's module
            error = missing_extra(exc, ctx.invoked_subcommand)
            if error is None:
                raise
            raise error from exc

    def format_commands(self, ctx, formatter):
        # Help must not import every group: use the one-line help kept here.
        rows = [(name, GROUPS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="harken")
def root(verbose: int) -> None:
    """Harken: audio models on devices, kept healthy there."""
    level = logging.WARNING - 10 * min(verbose, 2)
    if os.environ.get("HARKEN_LOG_LEVEL"):
        level = getattr(logging, os.environ["HARKEN_LOG_LEVEL"].upper(), level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def invoke(command: click.Command, argv: list[str] | None, prog_name: str) -> int:
    """Run a click command the Harken way: HarkenError → one line and exit 1, usage → 2."""
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        exc.show()
        return 2
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return 1
    except HarkenError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    return invoke(root, argv, "harken")


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
