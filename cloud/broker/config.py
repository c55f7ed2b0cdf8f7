"""The files of a broker directory: mosquitto.conf, password files, ACL, credentials, settings.

A broker directory (``harken broker init DIR``) holds::

    ca.crt  ca.key            the private CA; ca.crt goes to every client, ca.key stays here
    server.crt  server.key    the broker's TLS certificate (localhost, 127.0.0.1, --host)
    mosquitto.conf            the broker configuration (queue sizing explained inside)
    passwd                    hashed passwords of every user (TLS listener)
    passwd-local              hashed passwords of the cloud users (plain loopback listener)
    acl                       pattern ACL: the same size for 10 devices or 100 000 (plus one
                              deny block per removed device)
    credentials.json          SECRET (mode 0600): {user: plaintext password} for the demo,
                              the simulator and tests; hand each device only its own entry
    clients/USER.crt .key     with --mtls: each user's TLS client certificate (CN = user name)
    crl.pem                   with --mtls: the client certificates of removed devices (revoked)
    broker.json               settings, the device list and the revoked serials (no secrets)
    data/                     mosquitto persistence (sessions, queued messages, retained)

Users are one per device (the device id), one per collector replica (``collector``,
``collector-2``, ...: each replica has its own identity, so no two connections share a client
id) and ``operator``.
"""
from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from shared.errors import ConfigError
from shared.mqtt import MAX_PACKET_BYTES
from shared.topics import DEFAULT_PREFIX, Topics, check_device_id

COLLECTOR = "collector"
OPERATOR = "operator"
CLOUD_USERS = (COLLECTOR, OPERATOR)  # with one collector replica
MAX_INFLIGHT_BYTES = 16 * MAX_PACKET_BYTES  # per client: sixteen bundle chunks in flight, then it waits
DEFAULT_PORT = 8883
DEFAULT_HOST = "127.0.0.1"
DEFAULT_BACKLOG_WINDOWS = 360  # one hour of 10 s windows per device
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
INSTALL_HINT = "install it with `apt-get install mosquitto` (Debian/Ubuntu) or `brew install mosquitto`"


@dataclass(frozen=True)
class BrokerSettings:
    """What ``broker.json`` remembers between runs of ``init`` (no secrets)."""

    prefix: str = DEFAULT_PREFIX
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    plain_port: int = 0
    backlog_windows: int = DEFAULT_BACKLOG_WINDOWS
    mtls: bool = False
    collectors: int = 1
    devices: tuple[str, ...] = field(default_factory=tuple)
    revoked: tuple[str, ...] = field(default_factory=tuple)  # removed devices: denied everything in the ACL
    revoked_serials: tuple[str, ...] = field(default_factory=tuple)  # their client certificates (hex), in the CRL

    def check(self) -> "BrokerSettings":
        try:
            Topics(self.prefix)
            for device in self.devices:
                check_device_id(device)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        reserved = set(self.cloud_users) & set(self.devices)
        if reserved:
            raise ConfigError(f"device id {sorted(reserved)[0]!r} is reserved for a cloud user; pick another id")
        if not 1 <= self.collectors <= 1000:
            raise ConfigError(f"--collectors {self.collectors} must be 1..1000")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a TCP port (1-65535)")
        if not 0 <= self.plain_port <= 65535 or self.plain_port == self.port:
            raise ConfigError(f"--plain-port {self.plain_port} must be 0 (off) or a port other than --port")
        if self.backlog_windows < 1:
            raise ConfigError("--backlog-windows must be at least 1")
        return self

    @property
    def collector_users(self) -> list[str]:
        """One user per collector replica: ``collector``, ``collector-2``, ..."""
        return [COLLECTOR] + [f"{COLLECTOR}-{i}" for i in range(2, self.collectors + 1)]

    @property
    def cloud_users(self) -> list[str]:
        return [*self.collector_users, OPERATOR]

    @property
    def users(self) -> list[str]:
        return [*self.cloud_users, *self.devices]

    @property
    def tls_url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    @property
    def plain_url(self) -> str | None:
        return f"mqtt://127.0.0.1:{self.plain_port}" if self.plain_port else None


def _file(name: str) -> property:
    return property(lambda self: self.root / name, doc=f"DIR/{name}")


class BrokerPaths:
    """Where each file of a broker directory lives (absolute paths, as mosquitto needs)."""

    ca_cert, ca_key = _file("ca.crt"), _file("ca.key")
    server_cert, server_key = _file("server.crt"), _file("server.key")
    conf, acl, crl = _file("mosquitto.conf"), _file("acl"), _file("crl.pem")
    passwd, passwd_local = _file("passwd"), _file("passwd-local")
    credentials, settings = _file("credentials.json"), _file("broker.json")
    clients = _file("clients")
    data, log, pid = _file("data"), _file("mosquitto.log"), _file("mosquitto.pid")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def client_cert(self, user: str) -> tuple[Path, Path]:
        """(key, certificate) of a user's TLS client certificate (``--mtls``)."""
        return self.clients / f"{user}.key", self.clients / f"{user}.crt"

    def __repr__(self) -> str:
        return f"BrokerPaths({str(self.root)!r})"


@dataclass(frozen=True)
class QueueLimits:
    max_queued_messages: int
    max_queued_bytes: int
    max_inflight_messages: int


def queue_limits(devices: int, backlog_windows: int, window_bytes: int = 2048) -> QueueLimits:
    """Per-client queue limits that hold a whole fleet's flushed spools for a slow collector.

    Every device may flush ``backlog_windows`` windows at once after an outage; each window comes
    with some state/event traffic (the 1.25). Never below 10 000 messages (ten times mosquitto's
    default), so a small test fleet is not the one that drops.
    """
    messages = max(10_000, int(devices * backlog_windows * 1.25))
    return QueueLimits(max_queued_messages=messages, max_queued_bytes=messages * window_bytes,
                       max_inflight_messages=1000)


def render_acl(prefix: str, collectors: list[str] | tuple[str, ...] = (COLLECTOR,),
               revoked: tuple[str, ...] = ()) -> str:
    p = Topics(prefix).prefix
    text = f"""\
# Harken broker ACL, written by `harken broker init`. Pattern based: the same size for any fleet.
# %u is the user name, which is also the client id on the TLS listener (use_username_as_clientid).
# mosquitto checks a $share/GROUP/... subscription against the topic after the group, and checks
# read access again for every message it delivers.
#
# Every user, i.e. each device: write only its own stats/state/event and field samples (a header
# and its chunks), read only its own desired state, its receipts and the model topics. (Cloud user
# names are never device ids.)
pattern write {p}/dev/%u/stats
pattern write {p}/dev/%u/state
pattern write {p}/dev/%u/event
pattern write {p}/dev/%u/sample
pattern write {p}/dev/%u/sample/+/+
pattern read {p}/dev/%u/desired
pattern read {p}/dev/%u/receipt
# mosquitto warns that this pattern has no %u or %c: it is meant for every user.
pattern read {p}/model/#
"""
    for user in collectors:
        text += f"""
# Collector replica {user}: one connection ingests and publishes. It writes stats, event and sample
# only to clear what a device left retained there (an empty retained message; cloud/retained.py),
# and receipts to tell a device what it stored (shared/receipts.py).
user {user}
topic readwrite {p}/dev/+/stats
topic read {p}/dev/+/state
topic readwrite {p}/dev/+/event
topic readwrite {p}/dev/+/sample
topic readwrite {p}/dev/+/sample/+/+
topic readwrite {p}/dev/+/desired
topic write {p}/dev/+/receipt
topic readwrite {p}/model/#
topic readwrite {p}/alert/#
"""
    text += f"""
user {OPERATOR}
topic read {p}/#
topic read $SYS/#
topic write {p}/dev/+/desired
topic write {p}/model/#
"""
    for device in revoked:
        text += f"""
# Removed with `harken broker remove-device`: whatever connection it still holds is denied everything.
user {device}
topic deny #
"""
    return text


def render_conf(paths: BrokerPaths, settings: BrokerSettings, run_as: str) -> str:
    limits = queue_limits(len(settings.devices), settings.backlog_windows)
    n, backlog, m = len(settings.devices), settings.backlog_windows, limits.max_queued_messages
    text = f"""\
# Harken broker configuration, written by `harken broker init`; re-running init rewrites it.
# Secrets next to this file: credentials.json (plaintext passwords, mode 0600), ca.key, server.key.
# Start it with `harken broker run {paths.root}` (or `mosquitto -c {paths.conf}`).

# Run as root, mosquitto drops to this user: the owner of this directory, who can read the keys.
user {run_as}
per_listener_settings true

# Sessions, queued QoS 1 messages and retained state survive a broker restart.
persistence true
persistence_location {paths.data}/
autosave_interval 60
persistent_client_expiration 30d

# Queue sizing. Past max_queued_messages (default 1000) mosquitto silently drops a subscriber's
# QoS 1 messages. After an outage each of the {n} device(s) flushes up to {backlog} spooled windows
# (--backlog-windows; 360 = one hour of 10 s windows) faster than a collector ingests them, so the
# collector's session must hold the fleet's whole backlog:
#   {n} devices x {backlog} windows x 1.25 (state and event messages) = {int(n * backlog * 1.25)},
#   never below 10000  ->  {m} messages;
#   bytes: {m} x 2 KiB (a window is ~1 KB)  ->  {limits.max_queued_bytes} ({limits.max_queued_bytes / 2**30:.2f} GiB,
#   worst-case broker memory per slow collector group). Longer outages: raise --backlog-windows; device spools keep the rest.
max_queued_messages {m}
max_queued_bytes {limits.max_queued_bytes}
# QoS 1 messages in flight per client: a collector catching up needs more than the default 20.
max_inflight_messages {limits.max_inflight_messages}
# ... and their bytes: a device fetching a bundle holds at most this much of the broker's memory.
max_inflight_bytes {MAX_INFLIGHT_BYTES}
# The largest packet anyone may send: a bundle chunk (256 KiB) with its topic and headers. A client
# sending more is disconnected, so nobody can park megabytes in a retained message.
max_packet_size {MAX_PACKET_BYTES}

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information

# TLS listener: devices and remote cloud clients.
listener {settings.port} {settings.host}
cafile {paths.ca_cert}
certfile {paths.server_cert}
keyfile {paths.server_key}
tls_version tlsv1.2
# Client id := user name, so one device cannot take over another device's persistent session.
use_username_as_clientid true
allow_anonymous false
password_file {paths.passwd}
acl_file {paths.acl}
"""
    if settings.mtls:
        text += f"""# Mutual TLS: a client must present a certificate from this CA; its common name is the user
# name (passwords are not used here). Certificates of removed devices are in the revocation list
# (`harken broker remove-device`; the broker re-reads it on SIGHUP).
require_certificate true
use_identity_as_username true
crlfile {paths.crl}
"""
    if settings.plain_port:
        text += f"""
# Plain listener on loopback only, for local cloud tools; device users are not in its password file.
listener {settings.plain_port} 127.0.0.1
allow_anonymous false
password_file {paths.passwd_local}
acl_file {paths.acl}
"""
    return text


def find_program(name: str, search_path: str | None = None) -> str:
    """The path of a mosquitto program (Debian puts the broker in /usr/sbin, off a user's PATH)."""
    path = os.environ.get("PATH", "") if search_path is None else search_path
    if search_path is None:
        path = os.pathsep.join([path, *SBIN_DIRS])
    found = shutil.which(name, path=path)
    if not found:
        raise ConfigError(f"{name} is not installed: {INSTALL_HINT}")
    return found


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read, atomically (temp, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_password_file(path: Path, users: Mapping[str, str], search_path: str | None = None) -> None:
    """Write a mosquitto password file (PBKDF2-SHA512 hashes) for ``users``.

    One ``mosquitto_passwd -U`` run hashes the whole file (``-b`` per user would start one
    process per device); the plaintext copy exists only briefly, mode 0600, next to
    credentials.json.
    """
    tool = find_program("mosquitto_passwd", search_path)
    plain = path.with_name(f".{path.name}.plain")
    write_private(plain, "".join(f"{user}:{password}\n" for user, password in users.items()))
    try:
        result = subprocess.run([tool, "-U", str(plain)], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ConfigError(f"mosquitto_passwd failed on {path.name}: {result.stderr.strip()[:200]}; "
                              "check that mosquitto is installed and the directory is writable")
        os.chmod(plain, 0o600)
        os.replace(plain, path)
    finally:
        plain.unlink(missing_ok=True)


def new_password() -> str:
    return secrets.token_urlsafe(24)  # 192 random bits, no ':' (the password-file separator)


def read_credentials(path: Path) -> dict[str, str]:
    """credentials.json as {user: password}; empty when the file does not exist."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; re-run `harken broker init --force` to rotate "
                          "every credential") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path} is not a {{user: password}} object; re-run `harken broker init --force`")
    return data


def read_settings(path: Path) -> BrokerSettings | None:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; re-run `harken broker init --force`") from exc
    try:
        for key in ("devices", "revoked", "revoked_serials"):
            data[key] = tuple(data.get(key, ()))
        return BrokerSettings(**data).check()
    except TypeError as exc:
        raise ConfigError(f"{path} has unknown or missing keys ({exc}); re-run `harken broker init`") from exc


def write_settings(path: Path, settings: BrokerSettings) -> None:
    data = asdict(settings)
    for key in ("devices", "revoked", "revoked_serials"):
        data[key] = list(data[key])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def owner_name(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
