"""``installing.json``: the model the agent is bringing in right now.

Written (durably) before a new model is installed, activated or started as shadow, and
removed when that step ends, however it ends. Found at start, it means the agent died
during that step (a crash, a kill, the OOM killer, a power cut): the lifecycle marks the
model failed and reports it, so the retained desired state cannot make the device fetch,
install and die again in a loop.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from edge.store import durable_write, fsync_dir

log = logging.getLogger(__name__)

MARKER_NAME = "installing.json"


class InstallMarker:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def begin(self, sha256: str, rev: int, stage: str) -> None:
        durable_write(self.path, json.dumps({"sha256": sha256, "rev": int(rev), "stage": stage}).encode())

    def end(self) -> None:
        try:
            self.path.unlink()
            fsync_dir(self.path.parent)
        except FileNotFoundError:
            pass
        except OSError as exc:  # a stale marker would refuse a good model at the next start: say so
            log.error("cannot remove %s: %s", self.path, exc)

    def found(self) -> dict | None:
        """What the last run was doing when it died: {"sha256", "rev", "stage"}, or None."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read %s: %s; ignoring it", self.path, exc)
            return None
        try:
            d = json.loads(raw)
            return {"sha256": str(d["sha256"]), "rev": int(d["rev"]), "stage": str(d["stage"])}
        except (ValueError, TypeError, KeyError) as exc:  # torn by the crash it records
            log.error("%s is damaged (%s); the model it named cannot be told", self.path, exc)
            return None
