"""Remove devices from a broker directory without re-keying the fleet.

``remove_devices(DIR, ids)`` takes each device out of ``credentials.json`` and the password
files, gives it a deny-everything block in the ACL, and (with ``--mtls``) revokes its client
certificate in ``crl.pem`` and deletes the key pair. A running broker is told to re-read
them (SIGHUP): a removed device connected with a password is disconnected by mosquitto at
once; one connected with a certificate keeps its socket but may neither publish nor receive,
so when the broker has a loopback listener, the operator user also takes over the device's
client id there (which closes the old connection) and ends that session for good (clean
start, no expiry), dropping what was queued for it. No other device notices anything.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, replace
from typing import Iterable

from cloud.broker import Broker, certs, open_broker, running_pid, write_access_files
from cloud.broker.config import OPERATOR, read_credentials, write_settings
from shared.errors import ConfigError
from shared.mqtt import MqttSettings, build_client

log = logging.getLogger(__name__)

KICK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RemoveResult:
    removed: tuple[str, ...]
    revoked_serials: tuple[str, ...]  # client certificates put on the revocation list
    reloaded_pid: int | None  # the running broker told to re-read passwords, ACL and CRL
    sessions_ended: tuple[str, ...]  # devices whose connection and session were ended over loopback


def remove_devices(directory, devices: Iterable[str]) -> RemoveResult:
    broker = open_broker(directory)
    paths, settings = broker.paths, broker.settings
    devices = list(dict.fromkeys(devices))
    unknown = [d for d in devices if d not in settings.devices]
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} is not a device of {paths.root}; `harken broker status "
                          f"{directory}` counts them and broker.json lists them")
    serials = []
    for device in devices if settings.mtls else ():
        key, cert = paths.client_cert(device)
        if cert.exists():
            serials.append(certs.serial_hex(cert))
        for path in (key, cert):
            path.unlink(missing_ok=True)
    settings = replace(settings, devices=tuple(d for d in settings.devices if d not in devices),
                       revoked=tuple(sorted({*settings.revoked, *devices})),
                       revoked_serials=tuple(dict.fromkeys([*settings.revoked_serials, *serials]))).check()
    creds = {u: p for u, p in read_credentials(paths.credentials).items() if u not in devices}
    write_access_files(paths, settings, creds)
    write_settings(paths.settings, settings)
    pid = running_pid(paths.root)
    ended: tuple[str, ...] = ()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        if settings.plain_port:
            ended = tuple(d for d in devices if _end_session(Broker(paths, settings), d, creds[OPERATOR]))
    log.info("removed %d device(s) from %s: %s", len(devices), paths.root, ", ".join(devices))
    return RemoveResult(tuple(devices), tuple(serials), pid, ended)


def _end_session(broker: Broker, device: str, operator_password: str) -> bool:
    """Connect as the operator with the device's client id over loopback: the broker closes the
    device's connection (a client id is unique) and, with a clean start and no expiry, ends its session."""
    settings = MqttSettings.from_url(broker.plain_url, device, username=OPERATOR, password=operator_password)
    client = build_client(settings)
    answered, ok = threading.Event(), []

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        ok.append(not reason_code.is_failure)
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(*settings.address, **settings.connect_kwargs())
    except OSError as exc:
        log.warning("cannot reach the loopback listener to end %s's session: %s", device, exc)
        return False
    client.loop_start()
    try:
        answered.wait(KICK_TIMEOUT_S)
        return bool(ok and ok[0])
    finally:
        client.disconnect()
        client.loop_stop()
