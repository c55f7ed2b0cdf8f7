"""``harken serve``: serve a bundle over HTTP as a device (needs the ``serve`` extra)."""
from __future__ import annotations

import logging
import signal
import threading

import click
import uvicorn  # the serve extra; a missing one is reported by the CLI root with the pip command

from edge.serve.app import create_app
from edge.serve.config import ENV_PREFIX, UNUSED_AGENT_SETTINGS, ServeConfig, load_serve_config
from shared.cli_config import config_options, overrides_from_flags
from shared.config import redacted

log = logging.getLogger(__name__)


@click.command("serve")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="TOML config file (file < environment < flags); [http] holds the http_* keys.")
@config_options(ServeConfig, ENV_PREFIX, skip=UNUSED_AGENT_SETTINGS)
def command(config_file: str | None, **flags) -> None:
    """Serve a model over HTTP as a device: POST /v1/predict, windows to the collector, shadow."""
    from edge.serve.service import Service  # onnxruntime and paho load only when it runs

    cfg = load_serve_config(config_file, overrides=overrides_from_flags(flags))
    log.debug("serve configuration: %s", redacted(cfg))
    service = Service(cfg).start()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host=cfg.http_host, port=cfg.http_port,
                                           log_level="warning", access_log=False, lifespan="off"))
    # uvicorn in a thread: it then leaves signals alone (in the main thread it re-raises them after its
    # own shutdown, which would end the process before the last window is flushed)
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    stop = lambda *_: setattr(server, "should_exit", True)  # noqa: E731
    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
        service.stop()
    if not server.started:
        raise click.ClickException(f"could not listen on {cfg.http_host}:{cfg.http_port} (in use, or not an "
                                   "address of this machine); choose another --http-port / --http-host")
