"""Converging on the desired state the cloud retains on ``dev/{id}/desired``.

A desired message names the ``active`` and ``shadow`` bundles (by the bundle file's sha256),
the ``automation`` level, ``probation`` overrides, ``config`` (settings the cloud may change,
e.g. the field-sample switch; absent means keep them) and a ``rev``. A rev not newer than the
one applied is ignored, so a retained message delivered again changes nothing. Bundles not
in the store are fetched from ``model/{sha}`` (whole, or a header plus chunks), installed
(verified, smoke-tested, stored) and only then activated. A bundle that fails is reported
and skipped; the rest of the desired state is still applied and the rev recorded, so a
device never loops on a bad bundle (a newer rev may name it again). A fetch that makes no
progress for ``fetch_timeout_s`` of connected time (a chunk missing from the broker) fails
the same way, as ``bundle_rejected`` with reason ``fetch_timeout``: ``tick`` checks it.

Runs on the agent's control thread only.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from shared.errors import BundleError, BundleTruncatedError, HarkenError, ProtocolError
from shared.messages import decode
from edge.fetch import BundleFetch
from edge.lifecycle import Lifecycle
from edge.releases import allowed_automation, allowed_probation, automation_cap, release_of

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 120.0


class DesiredState:
    """Applies desired-state messages and the bundles they need."""

    def __init__(self, lifecycle: Lifecycle, *, device_id: str, request_bundle: Callable[[str], None],
                 release_bundle: Callable[[str], None], set_automation: Callable[[str], None],
                 report: Callable[..., None], fetch_timeout_s: float = FETCH_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic,
                 apply_config: Callable[[dict], None] | None = None):
        self.lifecycle = lifecycle
        self.device_id = device_id
        self._request = request_bundle
        self._release = release_bundle
        self._set_automation = set_automation
        self._apply_config = apply_config  # the desired ``config`` (absent: keep what applies)
        self._report = report
        self._base_policy = lifecycle.policy  # the device's own probation settings
        self._pending: dict | None = None
        self._fetches: dict[str, BundleFetch] = {}
        self._failed: dict[str, str] = {}  # sha → error code, for the pending rev
        self.fetch_timeout_s = float(fetch_timeout_s)
        self._clock = clock
        self._progress_t: dict[str, float] = {}  # sha → when its fetch last moved

    @property
    def pending(self) -> dict | None:
        return self._pending

    @property
    def fetching(self) -> list[str]:
        return sorted(self._fetches)

    # -- messages ------------------------------------------------------------------------
    def on_desired(self, payload: bytes) -> None:
        if not payload:
            return  # the retained desired state was cleared: keep what runs
        try:
            msg = decode(payload, expect="desired")
        except ProtocolError as exc:
            log.error("ignoring a bad desired-state message (%s)", exc)
            self._report("desired_rejected", reason=exc.code, detail={"error": exc.detail[:200]})
            return
        if msg["device"] != self.device_id:
            self._report("desired_rejected", reason="wrong_device", detail={"device": msg["device"]})
            return
        applied = self.lifecycle.slots.desired_rev
        if msg["rev"] <= applied:
            log.debug("desired rev %d not newer than applied rev %d: ignored", msg["rev"], applied)
            return
        log.info("desired state rev %d: active %s, shadow %s, automation %s", msg["rev"],
                 (msg.get("active") or "-")[:12], (msg.get("shadow") or "-")[:12], msg.get("automation") or "-")
        self._pending = msg
        self._failed = {}
        self._reconcile()

    def on_model(self, sha: str, payload: bytes) -> None:
        self._feed(sha, lambda f: f.update_model(payload))

    def on_chunk(self, sha: str, index: int, payload: bytes) -> None:
        self._feed(sha, lambda f: f.update_chunk(index, payload))

    def _feed(self, sha: str, step: Callable[[BundleFetch], BundleFetch]) -> None:
        fetch = self._fetches.get(sha)
        if fetch is None:
            return  # a retained bundle we no longer want
        try:
            step(fetch)
        except BundleError as exc:
            self._drop_fetch(sha)
            self._fail(sha, exc.code, exc)
            self._reconcile()
            return
        self._progress_t[sha] = self._clock()
        if not fetch.complete:
            return
        self._drop_fetch(sha)
        self._report("bundle_received", model=sha, detail={"bytes": len(fetch.data)})
        try:
            self.lifecycle.install(fetch.data, expect_sha=sha, rev=self._pending_rev)  # reports each step
        except HarkenError as exc:
            self._failed[sha] = getattr(exc, "code", "smoke_test_failed")
        self._reconcile()

    # -- converging ----------------------------------------------------------------------
    def _reconcile(self) -> None:
        msg = self._pending
        if msg is None:
            return
        wanted = {sha for sha in (msg.get("active"), msg.get("shadow")) if sha}
        for sha in wanted:  # the agent died bringing it in for this rev: no fetch, no second try
            if self.lifecycle.install_crashed(sha, msg["rev"]):
                self._failed.setdefault(sha, "install_crashed")
        for sha in list(self._fetches):
            if sha not in wanted:
                self._drop_fetch(sha)
        missing = [sha for sha in sorted(wanted)
                   if sha not in self._failed and not self.lifecycle.store.has(sha)]
        for sha in missing:
            if sha not in self._fetches:
                log.info("fetching bundle %s", sha[:12])
                self._fetches[sha] = BundleFetch(sha)
                self._progress_t[sha] = self._clock()
                self._request(sha)
        if missing:
            return
        self._apply(msg)

    def _apply(self, msg: dict) -> None:
        lc = self.lifecycle
        errors = [f"{sha[:12]}: {code}" for sha, code in self._failed.items()]
        if msg.get("config") is not None and self._apply_config is not None:
            self._apply_config(msg["config"])
        level = self._limits(msg)
        if level and level != lc.slots.automation:
            self._set_automation(level)
            self._report("automation_changed", reason=level)
        for role, step in (("active", lc.activate), ("shadow", lc.set_shadow)):
            sha = msg.get(role)
            if role == "active" and not sha:
                continue  # no active named: keep what runs
            if sha in self._failed:
                continue
            try:
                step(sha, rev=msg["rev"])
            except HarkenError as exc:
                log.error("cannot make %s the %s model: %s", (sha or "none")[:12], role, exc)
                errors.append(f"{role} {(sha or 'none')[:12]}: {exc}")
        lc.mark_desired(msg["rev"], automation=level, error="; ".join(errors))
        self._pending = None
        self._failed = {}

    @property
    def _pending_rev(self) -> int:
        return self._pending["rev"] if self._pending is not None else 0

    def _limits(self, msg: dict) -> str | None:
        """Set the probation policy and return the automation level this desired state asks for,
        within what the release of the model that will run allows (docs/security.md, item 10)."""
        lc = self.lifecycle
        release = self._governing_release(msg)
        if lc.releases is None or (release is None and not lc.releases.required):
            lc.policy = lc.policy.with_overrides(msg.get("probation"))
            return msg.get("automation")
        model = release.model_sha256 if release is not None else lc.slots.active
        accepted, refused = allowed_probation(msg.get("probation"), self._base_policy,
                                              release.probation_floor if release is not None else None)
        lc.policy = self._base_policy.with_overrides(accepted)
        if refused:
            self._report("desired_rejected", model=model, reason="probation_not_released", detail={"refused": refused})
        wanted = msg.get("automation") or lc.slots.automation  # a level a desired state set, never the device's own
        level = allowed_automation(wanted, automation_cap(release))
        if level != wanted:
            log.warning("desired automation %s is above %s, the most the release of %s allows", wanted, level,
                        (model or "no model")[:12])
            self._report("desired_rejected", model=model, reason="automation_not_released",
                         detail={"wanted": wanted, "allowed": level})
        return level

    def _governing_release(self, msg: dict):
        """The release of the model that runs after this desired state: the named one if it may
        run, else the running one."""
        sha = msg.get("active")
        if sha and sha not in self._failed:
            release = release_of(self.lifecycle, sha)
            if release is not None:
                return release
        return release_of(self.lifecycle, self.lifecycle.slots.active, floor=False)

    def _drop_fetch(self, sha: str) -> None:
        self._progress_t.pop(sha, None)
        if self._fetches.pop(sha, None) is not None:
            self._release(sha)

    # -- deadlines -------------------------------------------------------------------------
    def tick(self) -> None:
        """Give up fetches that made no progress for ``fetch_timeout_s``; apply the rest. Call it
        only while connected (and ``restart_deadlines`` on reconnecting): offline time is no stall."""
        now = self._clock()
        stalled = [sha for sha, t in self._progress_t.items() if now - t >= self.fetch_timeout_s]
        for sha in stalled:
            got, expected = self._fetches[sha].progress
            self._drop_fetch(sha)
            self._fail(sha, "fetch_timeout", BundleTruncatedError(
                f"bundle {sha[:12]}: no progress for {self.fetch_timeout_s:.0f} s with {got} of "
                f"{expected or '?'} chunk(s) received; the broker does not hold all of it: publish the bundle "
                "again (start the rollout again) or raise fetch_timeout_s for a slow link"))
        if stalled:
            self._reconcile()

    def restart_deadlines(self) -> None:
        """The link is back: every fetch gets a full ``fetch_timeout_s`` again."""
        now = self._clock()
        for sha in self._progress_t:
            self._progress_t[sha] = now

    def _fail(self, sha: str, code: str, exc: Exception) -> None:
        log.error("bundle %s refused: %s", sha[:12], exc)
        self._failed[sha] = code
        self._report("bundle_rejected", model=sha, reason=code, detail={"error": str(exc)[:300]})
