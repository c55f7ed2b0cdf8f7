"""What a device accepts beyond a valid lab signature: released, unexpired, unrevoked, never older.

``ReleaseGuard`` holds the trusted release keys and the device's release state, written
atomically to ``state_dir/releases.json``:

    floors          {model name: the newest release version this device activated}
    revoked_models  model sha256s on any revocation list it accepted (merged, never shrunk)
    revoked_keys    release key ids likewise
    revocations_seq the highest list number seen (for the operator; merging needs no order)

The rules (docs/security.md, item 10):

- install (a bundle new to the device): a release signed by a trusted, unrevoked release key,
  for this model and manifest, not expired, not revoked, version >= the floor of its name;
- activate or shadow a stored bundle: the same except expiry (a model already on the device
  keeps working when the calendar moves on); going back to the ``previous`` slot, the one
  model the device ran just before, is the one exception to the floor (rollbacks);
- activating raises the floor of the model's name to its version;
- a desired state may set automation at most to the running model's ``max_automation``, and
  probation no looser than its ``probation_floor`` (else the device's own settings).

With ``required=False`` (``require_release = false``) bundles without a release are
accepted as before; those with one are still judged, if release keys are configured.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from shared.bundle import Bundle
from shared.errors import DowngradeError, HarkenError, StoreError
from shared.messages import AUTOMATION_LEVELS
from shared.release import PROBATION_KEYS, Release, Revocations, parse_revocations, verify_release
from edge.store import durable_write

log = logging.getLogger(__name__)

STATE_NAME = "releases.json"
STATE_VERSION = 1
NO_RELEASE_CAP = "shadow"  # with no released model running, nothing a desired state sets may act


class ReleaseGuard:
    """Release checks and the persisted minimum versions and revocations of one device."""

    def __init__(self, state_dir: str | Path, release_keys: list, *, required: bool = True,
                 clock: Callable[[], float] = time.time):
        self.path = Path(state_dir) / STATE_NAME
        self.release_keys = list(release_keys)
        self.required = required
        self.clock = clock
        self._lock = threading.Lock()
        self.floors, self.revocations = self._read()

    # -- judging bundles -----------------------------------------------------------------
    def judges(self, bundle: Bundle) -> bool:
        """Whether this bundle's release is checked here (always when releases are required)."""
        return self.required or (bundle.release is not None and bool(self.release_keys))

    def check_install(self, bundle: Bundle) -> Release | None:
        """A bundle new to the device; raises the specific ReleaseError."""
        if not self.judges(bundle):
            return None
        release = verify_release(bundle, self.release_keys, now=self.clock(), revoked=self.revocations)
        self._check_floor(release)
        return release

    def check_stored(self, bundle: Bundle, *, previous: str | None = None, floor: bool = True) -> Release | None:
        """A stored bundle about to run: as ``check_install`` without expiry; ``previous`` is exempt
        from the floor (going back one step is a rollback, not a downgrade)."""
        if not self.judges(bundle):
            return None
        release = verify_release(bundle, self.release_keys, revoked=self.revocations)
        if floor and bundle.sha256 != previous:
            self._check_floor(release)
        return release

    def _check_floor(self, release: Release) -> None:
        floor = self.floors.get(release.name, 0)
        if release.version < floor:
            raise DowngradeError(f"{release.label} is older than version {floor}, the newest this device activated "
                                 f"for {release.name!r}; devices never go back: to roll back, release the old model "
                                 "again with a higher --version")

    def is_revoked(self, sha: str | None) -> bool:
        return sha is not None and sha in self.revocations.models

    # -- state changes ---------------------------------------------------------------------
    def note_active(self, release: Release | None) -> None:
        """Raise the floor of the running model's name to its version (durably)."""
        if release is None:
            return
        with self._lock:
            if release.version <= self.floors.get(release.name, 0):
                return
            self.floors[release.name] = release.version
            self._write()
        log.info("minimum version of %s is now %d", release.name, release.version)

    def accept_revocations(self, payload: bytes) -> Revocations:
        """Verify a revocation list, merge it in and persist; returns what is revoked now."""
        incoming = parse_revocations(payload, self.release_keys)
        with self._lock:
            merged = self.revocations.merged(incoming)
            if merged != self.revocations:
                self.revocations = merged
                self._write()
        log.info("revocation list %d accepted: %d models, %d keys revoked", incoming.seq,
                 len(merged.models), len(merged.keys))
        return merged

    # -- persistence -------------------------------------------------------------------------
    def _read(self) -> tuple[dict[str, int], Revocations]:
        try:
            d = json.loads(self.path.read_bytes())
            if d.get("version") != STATE_VERSION:
                raise ValueError(f"version {d.get('version')!r}")
            floors = {str(k): int(v) for k, v in d["floors"].items()}
            revs = Revocations(frozenset(map(str, d["revoked_models"])), frozenset(map(str, d["revoked_keys"])),
                               int(d.get("revocations_seq", 0)))
            return floors, revs
        except FileNotFoundError:  # a new device, or one upgraded from an agent without releases
            return {}, Revocations()
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}; check permissions") from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # writes are atomic, so only a disk fault gets here: the floors are rebuilt from the
            # stored models (Lifecycle.enforce_releases) and revocations come back with the
            # retained list
            log.error("release state %s is unreadable (%s); rebuilding it from the stored models", self.path, exc)
            return {}, Revocations()

    def _write(self) -> None:
        state = {"version": STATE_VERSION, "floors": self.floors, "revoked_models": sorted(self.revocations.models),
                 "revoked_keys": sorted(self.revocations.keys), "revocations_seq": self.revocations.seq}
        durable_write(self.path, json.dumps(state, sort_keys=True, indent=1).encode())


def release_of(lifecycle, sha: str | None, *, floor: bool = True) -> Release | None:
    """The verified release of a bundle in ``lifecycle``'s store, or None (no guard, none, or refused)."""
    guard = lifecycle.releases
    if guard is None or sha is None or not lifecycle.store.has(sha):
        return None
    try:
        return guard.check_stored(lifecycle.store.load(sha, lifecycle.public_keys),
                                  previous=lifecycle.slots.previous, floor=floor)
    except HarkenError:
        return None


# -- what a desired state may change ---------------------------------------------------------

def _rank(level: str) -> int:
    return AUTOMATION_LEVELS.index(level)


def automation_cap(release: Release | None) -> str:
    return release.max_automation if release is not None else NO_RELEASE_CAP


def allowed_automation(wanted: str | None, cap: str) -> str | None:
    """``wanted`` capped at ``cap`` (the running model's ``max_automation``)."""
    if wanted is None or _rank(wanted) <= _rank(cap):
        return wanted
    return cap


def allowed_probation(overrides: dict | None, base, floor: dict | None) -> tuple[dict, dict]:
    """(accepted, refused) probation overrides.

    A value at least as strict as the device's own (``base``, a ProbationPolicy) is always
    accepted; a looser one only as far as the release's ``probation_floor`` allows.
    """
    accepted, refused = {}, {}
    floor = floor or {}
    for key, value in (overrides or {}).items():
        if key not in PROBATION_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            continue  # ProbationPolicy.with_overrides ignores these too
        own = getattr(base, key)
        if key in ("utterances", "seconds"):  # fewer or shorter is looser
            limit = min(own, floor.get(key, own))
            ok = value >= limit
        else:  # a higher error rate or latency budget is looser
            limit = max(own, floor.get(key, own))
            ok = value <= limit
        (accepted if ok else refused)[key] = value if ok else {"wanted": value, "limit": limit}
    return accepted, refused
