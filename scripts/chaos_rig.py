"""The parts a chaos run starts, kills and restarts, each a real process or a real resource.

    Broker      mosquitto on the directory `harken broker init` writes: TLS, one user per
                device and per collector, the generated ACL, persistence (autosave 60 s)
    Collector   `harken collector run` on its own PostgreSQL schema, logging to a file
    Agent       `harken agent run --source -` on its own small tmpfs (a real disk to fill),
                fed real-time speech from the simulator's world (the lab's espeak-ng clips)
    Database    the schema, a lock that stalls the collector's writer, and the read-back

Every process remembers whether its last exit was asked for (``down_expected``), so the run
can tell a fault it injected from a crash it did not.
"""
from __future__ import annotations

import abc
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from cloud import broker as brokers
from edge.sim.audio import SimSource
from edge.sim.scenarios import ScenarioParams
from edge.sim.world import Audience, World
from edge.sources import RealtimePacer
from shared.audio import to_int16
from tests.edge.hardening import SmallDisk, agent_values, start_agent_process

ROOT = Path(__file__).resolve().parents[1]
RESENT = re.compile(r"(\d+) message\(s\) the broker acknowledged never reached the collector")  # edge/flusher.py
PG = os.environ.get("HARKEN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _end(proc: subprocess.Popen, sig: int, group: bool = False, timeout_s: float = 30.0) -> int | None:
    """Send ``sig`` (to the process group with ``group``); SIGKILL after ``timeout_s``; the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
            proc.wait(timeout_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            proc.wait()
    return proc.wait()


def _log_has(path: Path, text: str, offset: int) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return text.encode() in f.read()
    except OSError:
        return False


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def listen_port(rng: random.Random = random.Random()) -> int:
    """A free loopback port below the kernel's ephemeral range, as a broker's 8883 is: while the broker
    is down, a port from that range can be taken as the source port of an outgoing connection (a
    reconnecting client may even connect to itself there), and the broker could not listen again."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = rng.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in 10000..{low - 1}")


def write_secret(path: Path, value: str) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return str(path)


class Process(abc.ABC):
    """One restartable child process; ``down_expected`` is set by ``kill`` and cleared by ``start``."""

    name = "process"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.down_expected = True
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = self._spawn()
        self.down_expected = False
        self.starts += 1

    @abc.abstractmethod
    def _spawn(self) -> subprocess.Popen:
        """Start the process (in a session of its own, so a kill reaches its children too)."""

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        self.down_expected = True
        return _end(self.proc, sig, group=True) if self.proc is not None else None


class Broker(Process):
    name = "broker"

    def __init__(self, directory: Path, devices: list[str]):
        super().__init__()
        self.directory = directory
        self.info = brokers.init_broker(directory, devices=devices, port=listen_port(),
                                        plain_port=listen_port()).broker
        secrets = directory.parent / "secrets"
        self.password_files = {user: write_secret(secrets / user, pw) for user, pw in self.info.credentials().items()}

    def _spawn(self) -> subprocess.Popen:
        return brokers.start(self.directory).proc  # its own session: a group kill reaches only it


class Collector(Process):
    name = "collector"

    def __init__(self, broker: Broker, db_url: str, workdir: Path):
        super().__init__()
        self.log = workdir / "collector.log"
        self.cmd = [sys.executable, "-m", "shared.cli", "-v", "collector", "run", "--broker", broker.info.tls_url,
                    "--tls-ca", str(broker.info.ca_path), "--username", "collector",
                    "--password-file", broker.password_files["collector"], "--client-id", "collector",
                    "--group", "chaos", "--db", db_url, "--http-port", "0"]
        self._log_offset = 0

    def _spawn(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("HARKEN_DB", None)
        self._log_offset = _size(self.log)
        return subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env,
                                cwd=ROOT, start_new_session=True)

    def wait_connected(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not _log_has(self.log, "connected to", self._log_offset):
            if not self.alive or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace").splitlines()[-5:]
                raise RuntimeError("the collector did not connect: " + " | ".join(tail))
            time.sleep(0.1)


class Agent(Process):
    """A device: ``harken agent run`` on its own tmpfs, and a feeder playing its microphone in real time.

    The feeder keeps the device's audio clock running while the agent is down (that audio is
    lost, as a microphone's would be) and writes to whichever agent process is current.
    """

    def __init__(self, device: str, source: SimSource, broker: Broker, lab: tuple[str, str, str, str],
                 workdir: Path, *, window_s: float, disk_size: str, resend_s: float):
        super().__init__()
        self.name = self.device = device
        self.disk = SmallDisk(workdir / "disks" / device, size=disk_size)
        self.log = workdir / "agents" / f"{device}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        data, model, trust_key, release_key = lab
        self.values = agent_values(None, self.disk.path / "state", trust_key, release_key=release_key,
                                   device_id=device, broker_url=broker.info.tls_url, username=device,
                                   password_file=broker.password_files[device], tls_ca=str(broker.info.ca_path),
                                   bundle=model, window_s=window_s, reconnect_max_s=1.0,
                                   resend_unconfirmed_s=resend_s)
        self.source = source
        self.mounted = False
        self._feeder = threading.Thread(target=self._feed, name=f"feed-{device}", daemon=True)

    @property
    def spool_path(self) -> Path:
        return self.disk.path / "state" / "spool.db"

    def mount(self) -> None:
        self.disk.__enter__()
        self.mounted = True

    def unmount(self) -> None:
        if self.mounted:
            self.disk.__exit__(None, None, None)
            self.mounted = False

    def _spawn(self) -> subprocess.Popen:
        return start_agent_process(self.values, self.log)

    def play(self) -> None:
        self._feeder.start()

    def mute(self) -> None:
        self.source.close()

    def _feed(self) -> None:
        for chunk in RealtimePacer(self.source).chunks():
            proc = self.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                proc.stdin.write(to_int16(chunk).astype("<i2").tobytes())
                proc.stdin.flush()
            except (OSError, ValueError):  # the agent was killed meanwhile: its successor gets the next chunk
                continue

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_count(self, text: str) -> int:
        return self.log_text().count(text)

    def resent(self) -> int:
        """Messages this agent sent again because the broker lost them (its log says how many)."""
        return sum(int(n) for n in RESENT.findall(self.log_text()))


def device_sources(data_dir: str, model: str, devices: int, seed: int, chunk_samples: int = 4000) -> list[SimSource]:
    """Each device's endless healthy stream: its household's speech over background (edge.sim.world)."""
    world = World.load(data_dir, params=ScenarioParams(), devices=devices, seed=seed, audience=Audience(),
                       bundle=model)
    return [SimSource(*world.device(i), chunk_samples=chunk_samples, name=f"sim:{i}") for i in range(devices)]


class Database:
    """A PostgreSQL schema of this run's own (the collector's store), dropped by ``drop``."""

    def __init__(self, base_url: str = PG):
        import psycopg

        self.schema = f"harken_chaos_{uuid.uuid4().hex[:8]}"
        self._connect = lambda url=base_url: psycopg.connect(url, autocommit=True)
        with self._connect() as con:
            con.execute(f"CREATE SCHEMA {self.schema}")
        self.url = f"{base_url}?options=-csearch_path%3D{self.schema}"

    def stall(self, seconds: float, stop: threading.Event) -> bool:
        """Hold the windows table locked for ``seconds`` (or until ``stop``), as a competing
        transaction would; True if the collector's writer was seen waiting for the lock."""
        import psycopg

        seen = False
        with psycopg.connect(self.url) as holder, self._connect() as watcher:
            holder.execute("LOCK TABLE windows IN ACCESS EXCLUSIVE MODE")
            deadline = time.monotonic() + seconds
            while not stop.wait(0.2) and time.monotonic() < deadline:
                seen = seen or bool(watcher.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'windows' AND NOT l.granted",
                    (self.schema,)).fetchone()[0])
            holder.rollback()
        return seen

    def windows(self) -> list[tuple[str, int, int]]:
        with self._connect() as con:
            return [(d, int(b), int(s)) for d, b, s in
                    con.execute(f"SELECT device, boot, seq FROM {self.schema}.windows")]

    def online(self) -> dict[str, bool]:
        with self._connect() as con:
            return {d: bool(o) for d, o in con.execute(f"SELECT device, online FROM {self.schema}.devices")}

    def drop(self) -> None:
        with self._connect() as con:
            con.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
