"""Child processes of the demo: started in their own session, logged to files, all stopped at the end."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


def harken_argv(*args: str) -> list[str]:
    """The `harken` command as this interpreter runs it (no reliance on PATH)."""
    return [sys.executable, "-m", "shared.cli", *args]


@dataclass
class Processes:
    """Processes started by the demo; ``stop_all`` ends them newest first (TERM, then KILL)."""

    log_dir: Path
    running: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        out.close()
        self.running.append((name, proc))
        return proc

    def run(self, name: str, argv: list[str], env: dict | None = None, timeout_s: float = 1800) -> None:
        """Run a step to completion; its output goes to the log; a failure names the log."""
        proc = self.start(name, argv, env)
        try:
            code = proc.wait(timeout_s)
        except BaseException:  # interrupted (Ctrl-C, --duration) or too slow: the step must not outlive us
            self._end(name, proc, 20.0)
            raise
        finally:
            self.running.remove((name, proc))
        if code != 0:
            raise RuntimeError(f"step '{name}' failed (exit {code}); see {self.log_dir / (name + '.log')}")

    def check_alive(self) -> None:
        for name, proc in self.running:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.log_dir / (name + '.log')}")

    def stop(self, name: str, timeout_s: float = 20.0) -> None:
        for entry in [e for e in self.running if e[0] == name]:
            self._end(*entry, timeout_s)
            self.running.remove(entry)

    def stop_all(self, timeout_s: float = 20.0) -> None:
        while self.running:
            self._end(*self.running.pop(), timeout_s)

    @staticmethod
    def _end(name: str, proc: subprocess.Popen, timeout_s: float) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", name, timeout_s)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
