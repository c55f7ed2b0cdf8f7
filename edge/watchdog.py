"""A watchdog thread: checks that something is alive and restarts it when it is not.

The agent's MQTT link uses it for paho's network thread: if that thread ever ends while
the agent runs (an exception escaped into paho), the device would stay up and silent for
good. The check runs every ``interval_s``; a restart that raises is logged and tried again
at the next check.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Watchdog:
    """``Watchdog(name, alive, restart).start()``; ``stop()`` ends the checks."""

    def __init__(self, name: str, alive: Callable[[], bool], restart: Callable[[], None], interval_s: float = 5.0):
        self.name = name
        self.interval_s = float(interval_s)
        self._alive = alive
        self._restart = restart
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> "Watchdog":
        self._thread = threading.Thread(target=self._run, name=f"watchdog-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self._alive():
                    continue
                self.restarts += 1
                log.error("%s is dead; restarting it (restart %d)", self.name, self.restarts)
                self._restart()
            except Exception:  # the watchdog itself must outlive whatever it watches
                log.exception("restarting %s failed; trying again in %.0f s", self.name, self.interval_s)
