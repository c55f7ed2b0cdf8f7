"""The secured broker: write a mosquitto directory (TLS, passwords, ACL) and run it.

    from cloud.broker import init_broker, open_broker, start, stop
    init_broker("broker", devices=["dev-0001"], port=18883, plain_port=18884)
    proc = start("broker")                 # detached; proc.pid, proc.url
    broker = open_broker("broker")         # broker.ca_path, broker.credentials()["dev-0001"]
    stop("broker")

Files and their meaning are listed in :mod:`cloud.broker.config`. ``credentials.json`` is a
secret: it holds every password in plain text (mode 0600).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from cloud.broker import certs
from cloud.broker.config import (BrokerPaths, BrokerSettings, find_program, new_password, owner_name,
                                 read_credentials, read_settings, render_acl, render_conf, write_password_file,
                                 write_private, write_settings)
from shared.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Broker", "BrokerProcess", "InitResult", "init_broker", "open_broker", "running_pid", "start",
           "stop", "write_access_files"]


@dataclass(frozen=True)
class Broker:
    """An initialised broker directory: what a client needs to connect."""

    paths: BrokerPaths
    settings: BrokerSettings

    @property
    def ca_path(self) -> Path:
        return self.paths.ca_cert

    @property
    def tls_url(self) -> str:
        return self.settings.tls_url

    @property
    def plain_url(self) -> str | None:
        return self.settings.plain_url

    def credentials(self) -> dict[str, str]:
        """{user: password} -- a secret: never log it."""
        return read_credentials(self.paths.credentials)


@dataclass(frozen=True)
class InitResult:
    broker: Broker
    added: tuple[str, ...]       # users given a new password by this run
    new_ca: bool
    new_server_cert: bool
    reloaded_pid: int | None     # a running broker that was told to re-read passwords and ACL


def open_broker(directory: str | os.PathLike) -> Broker:
    paths = BrokerPaths(directory)
    settings = read_settings(paths.settings)
    if settings is None or not paths.conf.exists():
        raise ConfigError(f"{paths.root} is not a broker directory: run `harken broker init {directory}` first")
    return Broker(paths, settings)


def _merge_settings(old: BrokerSettings | None, devices: Iterable[str], overrides: dict) -> BrokerSettings:
    base = old or BrokerSettings()
    merged = list(base.devices)
    for device in devices:
        if device not in merged:
            merged.append(device)
    given = {k: v for k, v in overrides.items() if v is not None}
    revoked = tuple(d for d in base.revoked if d not in merged)  # a device added again is welcome again
    return replace(base, devices=tuple(merged), revoked=revoked, **given).check()


def _certificates(paths: BrokerPaths, settings: BrokerSettings, force: bool) -> tuple[certs.Issued, bool, bool]:
    new_ca = force or not (paths.ca_key.exists() and paths.ca_cert.exists())
    if new_ca:
        ca = certs.make_ca()
        certs.write_issued(ca, paths.ca_key, paths.ca_cert)
    else:
        ca = certs.load_issued(paths.ca_key, paths.ca_cert)
    wanted = certs.normalize_hosts([settings.host])
    new_server = new_ca or not paths.server_cert.exists() or not paths.server_key.exists()
    if not new_server:
        current = certs.load_issued(paths.server_key, paths.server_cert)
        new_server = not set(wanted) <= set(certs.cert_hosts(current.cert))
    if new_server:
        certs.write_issued(certs.issue_server(ca, wanted), paths.server_key, paths.server_cert)
    if settings.mtls:
        paths.clients.mkdir(mode=0o700, exist_ok=True)
        for user in settings.users:
            key, cert = paths.client_cert(user)
            if new_ca or not (key.exists() and cert.exists()):
                certs.write_issued(certs.issue_client(ca, user), key, cert)
    return ca, new_ca, new_server


def init_broker(directory: str | os.PathLike, *, devices: Iterable[str] = (), prefix: str | None = None,
                host: str | None = None, port: int | None = None, plain_port: int | None = None,
                backlog_windows: int | None = None, mtls: bool | None = None, collectors: int | None = None,
                force: bool = False) -> InitResult:
    """Write (or extend) a broker directory. Unset options keep their previous value.

    Without ``force``, existing devices, passwords and the CA are kept and new devices are added;
    with ``force`` the secrets are made anew (new CA, new passwords) for only the devices given now,
    while ports, host, prefix and sizing keep their previous values unless given.
    ``mtls`` also requires a client certificate (``clients/USER.crt``, CN = user) on the TLS listener.
    ``collectors``: how many collector replicas get a user of their own (``collector``, ``collector-2``, ...).
    """
    paths = BrokerPaths(directory)
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = read_settings(paths.settings)
    if force and old is not None:  # a new CA: old certificates (revoked or not) no longer verify
        old = replace(old, devices=(), revoked=(), revoked_serials=())
    settings = _merge_settings(old, devices, {"prefix": prefix, "host": host, "port": port,
                                              "plain_port": plain_port, "backlog_windows": backlog_windows,
                                              "mtls": mtls, "collectors": collectors})
    ca, new_ca, new_server = _certificates(paths, settings, force)
    known = {} if force else read_credentials(paths.credentials)
    creds = {user: known.get(user) or new_password() for user in settings.users}
    added = tuple(user for user in settings.users if user not in known)
    write_access_files(paths, settings, creds, ca)
    paths.data.mkdir(mode=0o700, exist_ok=True)
    paths.conf.write_text(render_conf(paths, settings, owner_name(paths.root)))
    write_settings(paths.settings, settings)
    pid = running_pid(paths.root)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)  # mosquitto re-reads passwords, ACL and CRL; listeners need a restart
    log.info("broker directory %s: %d device(s), %d new credential(s)", paths.root, len(settings.devices),
             len(added))
    return InitResult(Broker(paths, settings), added, new_ca, new_server, pid)


def write_access_files(paths: BrokerPaths, settings: BrokerSettings, creds: dict[str, str],
                       ca: certs.Issued | None = None) -> None:
    """credentials.json, both password files, the ACL and (with --mtls) the revocation list."""
    write_private(paths.credentials, json.dumps(creds, indent=2) + "\n")
    write_password_file(paths.passwd, creds)
    write_password_file(paths.passwd_local, {u: creds[u] for u in settings.cloud_users})
    paths.acl.write_text(render_acl(settings.prefix, settings.collector_users, settings.revoked))
    if settings.mtls:
        ca = ca or certs.load_issued(paths.ca_key, paths.ca_cert)
        certs.write_crl(ca, settings.revoked_serials, paths.crl)


# -- running mosquitto ---------------------------------------------------------------------


@dataclass
class BrokerProcess:
    proc: subprocess.Popen
    broker: Broker

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return self.broker.tls_url


def _alive(pid: int, conf: Path) -> bool:
    """Whether ``pid`` is a live mosquitto started on ``conf`` (not a recycled pid, not a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    except ChildProcessError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if "\nState:\tZ" in status:
        return False
    return Path(cmdline[0].decode(errors="replace")).name == "mosquitto" and str(conf).encode() in cmdline


def running_pid(directory: str | os.PathLike) -> int | None:
    """The pid of the mosquitto running on this directory, or None (a stale pid file is removed)."""
    paths = BrokerPaths(directory)
    try:
        pid = int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if _alive(pid, paths.conf):
        return pid
    paths.pid.unlink(missing_ok=True)
    return None


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): stop what uses it or pick "
                              "another port with `harken broker init DIR --port N`") from exc


def _wait_listening(proc: subprocess.Popen, endpoints: list[tuple[str, int]], paths: BrokerPaths,
                    timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(endpoints)
    while pending:
        if proc.poll() is not None:
            tail = paths.log.read_text(errors="replace").strip().splitlines()[-5:] if paths.log.exists() else []
            raise ConfigError(f"mosquitto exited with code {proc.returncode} at start: "
                              f"{' | '.join(tail) or 'see its output'}; fix the cause and run again")
        try:
            with socket.create_connection(pending[0], timeout=0.2):
                pending.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                raise ConfigError(f"mosquitto did not listen on {pending[0][0]}:{pending[0][1]} within "
                                  f"{timeout_s:g}s; see {paths.log}") from None
            time.sleep(0.02)


def start(directory: str | os.PathLike, *, detach: bool = True, timeout_s: float = 10.0) -> BrokerProcess:
    """Start mosquitto on an initialised directory and return once every listener accepts.

    Detached, the broker gets its own session, logs to ``mosquitto.log`` and outlives the caller;
    attached, it logs to this process's stderr. Either way ``mosquitto.pid`` names it.
    """
    broker = open_broker(directory)
    paths, settings = broker.paths, broker.settings
    program = find_program("mosquitto")
    pid = running_pid(paths.root)
    if pid is not None:
        raise ConfigError(f"a broker already runs on {paths.root} (pid {pid}); "
                          f"stop it with `harken broker stop {directory}`")
    endpoints = [(settings.host, settings.port)]
    if settings.plain_port:
        endpoints.append(("127.0.0.1", settings.plain_port))
    for host, port in endpoints:
        _check_port_free(host, port)
    out = open(paths.log, "ab") if detach else None
    try:
        proc = subprocess.Popen([program, "-c", str(paths.conf)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if detach else None, start_new_session=detach)
    finally:
        if out is not None:
            out.close()
    write_private(paths.pid, f"{proc.pid}\n")
    try:
        _wait_listening(proc, endpoints, paths, timeout_s)
    except BaseException:
        _terminate(proc.pid, paths.conf, 5.0)
        paths.pid.unlink(missing_ok=True)
        raise
    log.info("broker started: %s (pid %d)", settings.tls_url, proc.pid)
    return BrokerProcess(proc, broker)


def _terminate(pid: int, conf: Path, timeout_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while _alive(pid, conf):
        if time.monotonic() > deadline:
            log.warning("mosquitto (pid %d) ignored SIGTERM for %gs: killing it", pid, timeout_s)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout_s
        time.sleep(0.02)


def stop(directory: str | os.PathLike, timeout_s: float = 10.0) -> int | None:
    """Stop the broker running on this directory; returns its pid, or None if none ran."""
    paths = BrokerPaths(directory)
    pid = running_pid(paths.root)
    if pid is None:
        return None
    _terminate(pid, paths.conf, timeout_s)
    paths.pid.unlink(missing_ok=True)
    log.info("broker stopped (pid %d)", pid)
    return pid
