"""The local experiment store: one JSON file per training run under a runs directory.

The directory is ``--runs-dir``, else ``$HARKEN_RUNS_DIR``, else ``~/.harken/runs``. A run
record holds id, time, code revision, dataset hash, split, hyperparameters, metrics and
artifact paths; files are written atomically, so a crashed run leaves no half record.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from shared.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "HARKEN_RUNS_DIR"


def runs_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path.home() / ".harken" / "runs"


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def code_revision(path: str | os.PathLike | None = None) -> str:
    """``git rev-parse HEAD`` of the checkout holding this code (``+dirty`` if modified)."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}+dirty" if dirty else (rev or "unknown")


class RunStore:
    """Read and write run records in one directory."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = runs_dir(directory)

    def save(self, record: dict) -> Path:
        if "id" not in record:
            raise ConfigError("a run record needs an 'id'")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{record['id']}.json"
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".run-", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ConfigError(f"cannot write to runs directory {self.directory}: {exc}; "
                              f"pass --runs-dir or set {ENV}") from exc
        return path

    def list(self) -> list[dict]:
        """All runs, newest first (unreadable files are skipped with a warning)."""
        if not self.directory.is_dir():
            return []
        runs = []
        for path in self.directory.glob("*.json"):
            try:
                runs.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable run file %s: %s", path, exc)
        return sorted(runs, key=lambda r: (r.get("created", ""), r.get("id", "")), reverse=True)

    def get(self, run_id: str) -> dict:
        """The run with this id, or the only run whose id starts with it."""
        exact = self.directory / f"{run_id}.json"
        if exact.is_file():
            return json.loads(exact.read_text())
        matches = [r for r in self.list() if str(r.get("id", "")).startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ConfigError(f"no run {run_id!r} in {self.directory}; list them with `harken runs list`")
        raise ConfigError(f"{run_id!r} matches {len(matches)} runs; give more of the id")


def flat_metrics(record: dict) -> dict[str, float]:
    """Scalar metrics of a run, flattened to dotted names (for comparisons)."""
    out: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    walk("", {k: v for k, v in record.get("metrics", {}).items() if k not in ("confusion", "slices")})
    return out


def compare(a: dict, b: dict) -> dict:
    """What differs between two runs: settings side by side, metrics with their deltas."""
    fields = ("code_revision", "dataset_hash", "seed")
    settings = {k: {"a": a.get(k), "b": b.get(k)} for k in fields}
    hp_a, hp_b = a.get("hyperparameters", {}), b.get("hyperparameters", {})
    hyper = {k: {"a": hp_a.get(k), "b": hp_b.get(k)} for k in sorted(set(hp_a) | set(hp_b))
             if hp_a.get(k) != hp_b.get(k)}
    ma, mb = flat_metrics(a), flat_metrics(b)
    metrics = {k: {"a": ma.get(k), "b": mb.get(k),
                   "delta": (mb[k] - ma[k]) if k in ma and k in mb else None}
               for k in sorted(set(ma) | set(mb))}
    return {"a": a.get("id"), "b": b.get("id"), "settings": settings,
            "hyperparameters_changed": hyper, "metrics": metrics}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
