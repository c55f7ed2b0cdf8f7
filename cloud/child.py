"""A worker child process of the collector, spoken to over its stdin and stdout.

The collector's MQTT client parses every packet in Python on one thread, which needs a core of
its own; the work that can go elsewhere (the ingest writer, rollups) runs in children that
share nothing with it but pipes. A child is ``python -m cloud.child`` on the parent's import path
(not ``multiprocessing``: it would import the parent's ``__main__`` again, a benchmark or the
CLI). Nothing defined here is pickled, so running it as ``__main__`` is harmless. Its first message is a spec whose ``serve(rx, tx)``
runs the child's loop; messages are pickles both ways.

A child's heap holds only what it works on (windows, bucket bodies: no reference cycles), so
it runs without the cyclic garbage collector, which otherwise rescanned every batch it held
several times over, and collects once per ``GC_EVERY_S`` instead.
"""
from __future__ import annotations

import gc
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

log = logging.getLogger(__name__)

COMMAND = [sys.executable, "-m", "cloud.child"]  # the wheel's build rewrites the module name (harken.cloud...)
GC_EVERY_S = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ChildDied(Exception):
    """The child ended (or its pipe broke) before answering."""


def log_settings() -> tuple[int, str]:
    """The parent's level for Harken's loggers and its log format, for the child to log alike."""
    root = logging.getLogger()
    fmt = next((h.formatter._fmt for h in root.handlers if h.formatter is not None and h.formatter._fmt), LOG_FORMAT)
    return logging.getLogger("cloud").getEffectiveLevel(), fmt


class Child:
    """The parent's end: ``start(spec)``, ``send``, ``receive``, ``close``."""

    def __init__(self, name: str):
        self.name = name
        self._proc: subprocess.Popen | None = None
        self._to: Connection | None = None
        self._from: Connection | None = None
        self._send_lock = threading.Lock()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self, spec) -> None:
        env = dict(os.environ)  # the parent's path: the child imports the very modules the parent does
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._proc = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        self._to = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._from = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()
        self.starts += 1
        self.send(spec)

    def send(self, message) -> None:
        """Raises ``ChildDied`` if the child is gone."""
        if self._to is None:
            raise ChildDied("not running")
        try:
            with self._send_lock:
                self._to.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            raise ChildDied(self._exit_status() or exc.__class__.__name__) from None

    def receive(self):
        """The child's next message; raises ``ChildDied`` if it is gone."""
        if self._from is None:
            raise ChildDied("not running")
        try:
            return pickle.loads(self._from.recv_bytes())
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            raise ChildDied(self._exit_status() or exc.__class__.__name__) from None

    def _exit_status(self) -> str | None:
        try:
            return f"exit status {self._proc.wait(1.0)}"
        except subprocess.TimeoutExpired:
            return None

    def reap(self) -> None:
        """Close the pipes and make sure the process is gone."""
        for conn in (self._to, self._from):
            if conn is not None:
                conn.close()
        self._to = self._from = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the child to exit (it holds nothing the parent does not), then reap it."""
        if self._proc is None:
            return
        try:
            self.send(("exit",))
            self._proc.wait(timeout_s)
        except ChildDied:
            pass
        except subprocess.TimeoutExpired:
            log.error("the %s process did not exit in %.0f s; killing it", self.name, timeout_s)
        self.reap()


class Pipe:
    """The child's end: ``receive`` (EOFError once the parent is gone), ``send``, and ``collect``."""

    def __init__(self, rx: Connection, tx: Connection):
        self.rx, self.tx = rx, tx
        self._gc_t = time.monotonic()
        self._ahead: queue.SimpleQueue | None = None

    def read_ahead(self) -> None:
        """Read the parent's messages as they come, on a thread of their own. A parent that sends
        its next job before reading the answer to the last (``WriterProcess``) then never blocks
        on a full pipe while this child blocks writing an answer the parent is not reading yet."""
        self._ahead = queue.SimpleQueue()
        threading.Thread(target=self._read, name="harken-child-reader", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                self._ahead.put(pickle.loads(self.rx.recv_bytes()))
            except (EOFError, OSError) as exc:
                self._ahead.put(EOFError(str(exc)))
                return

    def receive(self, timeout_s: float | None = None):
        """The next message, or None when ``timeout_s`` passes without one."""
        if self._ahead is None:
            if timeout_s is not None and not self.rx.poll(timeout_s):
                return None
            return pickle.loads(self.rx.recv_bytes())
        try:
            message = self._ahead.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if isinstance(message, EOFError):
            self._ahead.put(message)  # every later receive says so too
            raise message
        return message

    def send(self, message) -> None:
        self.tx.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def settle(self) -> None:
        """Set-up is done: leave what it built out of every later collection."""
        gc.collect()
        gc.freeze()

    def collect(self) -> None:
        """The periodic garbage collection that replaces the automatic one (call between jobs)."""
        if time.monotonic() - self._gc_t >= GC_EVERY_S:
            gc.collect()
            self._gc_t = time.monotonic()


def main() -> None:
    # A Ctrl-C or a service manager's SIGTERM reaches the whole process group: the parent stops
    # and drains through its children, which end when it says so or when it is gone (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rx = Connection(os.dup(sys.stdin.fileno()), writable=False)
    tx = Connection(os.dup(sys.stdout.fileno()), readable=False)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the pipe
    pipe = Pipe(rx, tx)
    try:
        spec = pipe.receive()
    except EOFError:
        return
    level, fmt = spec.log
    logging.basicConfig(level=level, format=fmt)
    gc.disable()
    try:
        spec.serve(pipe)
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone: what we held was never acknowledged


if __name__ == "__main__":
    main()
