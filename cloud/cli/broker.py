"""`harken broker`: write, run and stop a secured mosquitto (TLS, per-device passwords, ACL)."""
from __future__ import annotations

import json
import signal

import click

from cloud import broker as brokers
from cloud.broker.config import DEFAULT_BACKLOG_WINDOWS, DEFAULT_HOST, DEFAULT_PORT
from shared.topics import DEFAULT_PREFIX


@click.group("broker")
def group() -> None:
    """Write and run a secured mosquitto configuration."""


def _device_names(count: int, names: tuple[str, ...]) -> list[str]:
    width = max(4, len(str(count)))
    return [f"dev-{i:0{width}d}" for i in range(1, count + 1)] + list(names)


@group.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--devices", "count", type=click.IntRange(0, 1_000_000), default=0,
              help="Add N devices named dev-0001 ... (keeps existing ones).")
@click.option("--device", "names", multiple=True, metavar="ID", help="Add a device with this id (repeatable).")
@click.option("--prefix", default=None, help=f"Topic prefix [default: {DEFAULT_PREFIX}, or the previous value].")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help=f"TLS port [default: {DEFAULT_PORT}, or the previous value].")
@click.option("--plain-port", type=click.IntRange(0, 65535), default=None,
              help="Plain-TCP port on 127.0.0.1 for local cloud tools (passwords still needed); 0 = none "
                   "[default: 0, or the previous value].")
@click.option("--host", default=None,
              help=f"Address the TLS listener binds to, also named in the server certificate "
                   f"[default: {DEFAULT_HOST}, or the previous value].")
@click.option("--backlog-windows", type=click.IntRange(1, 10_000_000), default=None,
              help=f"Spooled windows per device the broker must queue for a slow collector "
                   f"[default: {DEFAULT_BACKLOG_WINDOWS}].")
@click.option("--mtls/--no-mtls", default=None,
              help="Require a client certificate (written to DIR/clients/) on the TLS listener; its common "
                   "name is the user [default: off, or the previous value].")
@click.option("--collectors", type=click.IntRange(1, 1000), default=None,
              help="Collector replicas, each with a user of its own: collector, collector-2, ... "
                   "[default: 1, or the previous value].")
@click.option("--force", is_flag=True, help="Start over: new CA, new password for every user, only the "
                                            "devices given now (other settings are kept).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(directory, count, names, prefix, port, plain_port, host, backlog_windows, mtls, collectors, force,
         as_json) -> None:
    """Write TLS certificates, passwords, ACL and mosquitto.conf."""
    result = brokers.init_broker(directory, devices=_device_names(count, names), prefix=prefix, host=host,
                                 port=port, plain_port=plain_port, backlog_windows=backlog_windows, mtls=mtls,
                                 collectors=collectors, force=force)
    b = result.broker
    summary = {
        "directory": str(b.paths.root), "url": b.tls_url, "plain_url": b.plain_url, "ca": str(b.ca_path),
        "credentials": str(b.paths.credentials), "devices": len(b.settings.devices),
        "added": list(result.added), "new_ca": result.new_ca, "new_server_cert": result.new_server_cert,
        "reloaded_pid": result.reloaded_pid, "mtls": b.settings.mtls, "collectors": b.settings.collector_users,
        "client_certs": str(b.paths.clients) if b.settings.mtls else None,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"broker directory: {b.paths.root}")
    click.echo(f"TLS listener:     {b.tls_url}" + (f"   plain (loopback): {b.plain_url}" if b.plain_url else ""))
    click.echo(f"CA certificate:   {b.ca_path}" + (" (new)" if result.new_ca else ""))
    click.echo(f"users:            {len(b.settings.users)} ({len(b.settings.devices)} device(s), "
               f"{', '.join(b.settings.collector_users)}, operator); new credentials: {len(result.added)}")
    if b.settings.mtls:
        click.echo(f"client certs:     {b.paths.clients}/USER.crt + USER.key (required on the TLS listener)")
    click.echo(f"credentials:      {b.paths.credentials} -- SECRET: every password in plain text; give each "
               "device only its own entry")
    if result.reloaded_pid:
        restart = " (restart it to use the new certificates)" if result.new_ca or result.new_server_cert else ""
        click.echo(f"running broker (pid {result.reloaded_pid}) reloaded passwords and ACL{restart}; "
                   "port or host changes need `harken broker stop` + `run`")
    else:
        click.echo(f"start it with:    harken broker run {directory}")


@group.command("remove-device")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("devices", nargs=-1, required=True, metavar="ID...")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def remove_device(directory, devices, as_json) -> None:
    """Revoke devices: password, ACL and client certificate; the running broker drops them."""
    from cloud.broker.revoke import remove_devices

    result = remove_devices(directory, devices)
    if as_json:
        click.echo(json.dumps({"removed": list(result.removed), "revoked_serials": list(result.revoked_serials),
                               "reloaded_pid": result.reloaded_pid,
                               "sessions_ended": list(result.sessions_ended)}, indent=2))
        return
    click.echo(f"removed: {', '.join(result.removed)} (password, ACL"
               + (f", {len(result.revoked_serials)} client certificate(s) revoked" if result.revoked_serials else "")
               + "); every other credential is unchanged")
    if result.reloaded_pid:
        ended = f"; connection and session ended: {', '.join(result.sessions_ended)}" if result.sessions_ended else ""
        click.echo(f"running broker (pid {result.reloaded_pid}) reloaded passwords, ACL and CRL{ended}")


@group.command("run")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--foreground", is_flag=True, help="Stay attached and log to stderr until Ctrl-C.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.5, 600), default=10.0, show_default=True,
              help="Seconds to wait for the listeners to accept connections.")
def run(directory, foreground, timeout_s) -> None:
    """Start mosquitto on a directory written by `harken broker init`."""
    if not foreground:
        proc = brokers.start(directory, timeout_s=timeout_s)
        _announce(proc)
        click.echo(f"log: {proc.broker.paths.log}   stop it with: harken broker stop {directory}")
        return
    code = _run_attached(directory, timeout_s)
    if code != 0:
        raise click.ClickException(f"mosquitto exited with code {code}; see the log lines above")


def _announce(proc: brokers.BrokerProcess) -> None:
    b = proc.broker
    click.echo(f"broker running: {b.tls_url} (pid {proc.pid})")
    if b.plain_url:
        click.echo(f"plain loopback: {b.plain_url}")
    click.echo(f"CA: {b.ca_path}   credentials: {b.paths.credentials}")


def _run_attached(directory, timeout_s: float) -> int:
    """Run an attached broker: Ctrl-C or SIGTERM stops it, SIGHUP makes it reload passwords and ACL."""
    state: dict = {"proc": None, "stop": False}

    def forward(signum, frame):
        if signum != signal.SIGHUP:
            state["stop"] = True
        if state["proc"] is not None:
            state["proc"].proc.send_signal(signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)

    # handlers first: a signal that arrives while the broker starts must still stop it
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        proc = brokers.start(directory, detach=False, timeout_s=timeout_s)
        try:
            state["proc"] = proc
            if state["stop"]:
                proc.proc.terminate()
            _announce(proc)
            code = proc.proc.wait()
        finally:
            proc.broker.paths.pid.unlink(missing_ok=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    click.echo("broker stopped", err=True)
    return 0 if state["stop"] and code in (0, -signal.SIGTERM, -signal.SIGINT) else code


@group.command("stop")
@click.argument("directory", type=click.Path(file_okay=False))
def stop(directory) -> None:
    """Stop the broker started by `harken broker run` on DIRECTORY."""
    pid = brokers.stop(directory)
    click.echo(f"broker stopped (pid {pid})" if pid else f"no broker runs on {directory}")


@group.command("status")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(directory, as_json) -> None:
    """Say whether the broker of DIRECTORY runs, and where."""
    b = brokers.open_broker(directory)
    pid = brokers.running_pid(directory)
    info = {"running": pid is not None, "pid": pid, "url": b.tls_url, "plain_url": b.plain_url,
            "ca": str(b.ca_path), "devices": len(b.settings.devices), "prefix": b.settings.prefix}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        state = f"running (pid {pid})" if pid else "stopped"
        click.echo(f"{state}: {b.tls_url}" + (f", {b.plain_url}" if b.plain_url else "")
                   + f"; {info['devices']} device(s), prefix {info['prefix']}")
