"""The on-device model lifecycle: install, activate, probation, rollback, restart.

Install = verify (sha256, Ed25519 signature, member hashes, opset) → smoke test on the
bundle's test vectors in a child process with memory and time limits (``edge.sandbox``) →
store (atomic) → report. Nothing that fails a check ever runs. Bringing a new model in
(install, activation, shadow start) happens under a marker file (``edge.marker``); found at
start, it names the model the agent died with: that model is refused for that desired rev
and reported (``bundle_rejected``, reason ``install_crashed``), so a crash cannot loop.
Activation names the bundle in the slots file (atomically, durably) and starts a probation:
``utterances`` inferences or ``seconds``, whichever comes first. Too many errors, latency
over budget or a crash loop (``crash_boots`` starts while the same model was on probation)
roll back to ``previous``. On start the active bundle is verified again; if it fails, the
previous one runs. Bundles are named by their model's sha256 (``Bundle.sha256``), as on the
wire, in the registry and in the windows.

The object is the pipeline's model holder: it exposes ``active`` and ``shadow`` (loaded
models, or None), which the pipeline reads at each utterance.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from shared.bundle import Bundle, load_bundle, sha256_hex
from shared.errors import (BundleError, BundleTamperedError, HarkenError, InstallCrashedError, ModelError,
                           StoreError)
from edge.marker import MARKER_NAME, InstallMarker
from edge.recovery import note_crashed_install, read_slots
from edge.sandbox import SmokeLimits, smoke_test_in_child
from edge.store import ModelStore, Probation, Slots, SlotsFile, new_boot_id

log = logging.getLogger(__name__)

Report = Callable[..., None]  # report(event, *, model=None, reason=None, detail=None)


@dataclass(frozen=True)
class ProbationPolicy:
    utterances: int = 50
    seconds: float = 600.0
    latency_budget_ms: float = 500.0
    max_error_rate: float = 0.05
    crash_boots: int = 3
    min_samples: int = 10  # judge rates only once this many inferences (or all of them) are in

    def with_overrides(self, overrides: dict | None) -> "ProbationPolicy":
        """Desired state may set ``utterances``, ``seconds``, ``latency_budget_ms``, ``max_error_rate``."""
        known = {"utterances": int, "seconds": float, "latency_budget_ms": float, "max_error_rate": float}
        picked = {k: known[k](v) for k, v in (overrides or {}).items()
                  if k in known and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0}
        return replace(self, **picked)


def _default_loader(bundle: Bundle):
    from edge.model import LoadedModel  # onnxruntime is imported only when a model loads

    return LoadedModel.from_bundle(bundle)


class Lifecycle:
    """Owns ``slots.json`` and the model store; holds the running models."""

    _unsaved = ""  # why the last slots write failed ("" once saved): retried at each tick

    def __init__(self, state_dir: str | Path, public_keys: list, policy: ProbationPolicy = ProbationPolicy(), *,
                 report: Report | None = None, loader: Callable[[Bundle], object] = _default_loader,
                 clock: Callable[[], float] = time.time,
                 smoke_limits: SmokeLimits = SmokeLimits(), releases=None):
        self.state_dir = Path(state_dir)
        self.public_keys = list(public_keys)
        self.policy = policy
        self.store = ModelStore(self.state_dir)
        self.slots_file = SlotsFile(self.state_dir / "slots.json")
        self.marker = InstallMarker(self.state_dir / MARKER_NAME)
        self.smoke_limits = smoke_limits
        self._report = report or (lambda *a, **k: None)
        self._loader = loader
        self._clock = clock
        self.releases = releases  # edge.releases.ReleaseGuard, or None: no release checks
        self._lock = threading.RLock()
        self._slots = Slots()
        self._latencies: list[float] = []
        self.active = None  # LoadedModel | None, read by the pipeline
        self.shadow = None

    # -- reading -------------------------------------------------------------------------
    @property
    def slots(self) -> Slots:
        with self._lock:
            return replace(self._slots, failed=dict(self._slots.failed))

    @property
    def boot(self) -> int:
        return self._slots.boot

    def health(self) -> str:
        with self._lock:
            s = self._slots
            if s.probation is not None:
                return "probation"
            if s.last_error or self._unsaved:
                return "error" if self.active is None else "degraded"
            return "ok"

    def state_fields(self) -> dict:
        """The lifecycle's part of the reported state."""
        with self._lock:
            s = self._slots
            out = {"models": {"active": s.active, "previous": s.previous, "shadow": s.shadow},
                   "health": self.health(), "desired_rev": s.desired_rev, "boot": s.boot}
            if s.last_error or self._unsaved:
                out["last_error"] = (s.last_error or self._unsaved)[:300]
            return out

    # -- start ---------------------------------------------------------------------------
    def start(self) -> Slots:
        """Draw this boot's id, detect a crash loop, load the active (else previous) and shadow models."""
        with self._lock:
            self._sweep_temp_files()
            s, clean = read_slots(self.slots_file, self.store, self.public_keys, self._clock(), self.policy)
            s.boot = new_boot_id()
            crash_loop = False
            if s.probation is not None and s.probation.sha256 == s.active:
                s.probation.boots += 1
                crash_loop = s.probation.boots >= self.policy.crash_boots
            self._slots = s
            crashed = note_crashed_install(self.marker, s)  # the last run died bringing this model in
            if crashed is not None:
                self._report("bundle_rejected", **crashed)
            self._write()  # the boot id is durable before any window carries it
            self.marker.end()
            if crash_loop:
                self.rollback(f"crash_loop: the agent restarted {s.probation.boots} times while "
                              f"{s.active[:12]} was on probation")
            else:
                self._load_active_at_start()
            self._load_shadow_at_start()
            if clean:  # at start nothing is mid-install: unnamed bundles are leftovers
                gone = self.prune()
                if gone:
                    log.info("removed %d stored bundle(s) no slot names", len(gone))
            else:  # slots that were recovered may not name every bundle that matters: keep them all
                log.warning("slots were recovered (%s): no stored bundle is removed at this start",
                            self.slots_file.problem)
            return self.slots

    def install_crashed(self, sha: str, rev: int) -> bool:
        """The agent died bringing ``sha`` in for desired rev ``rev`` or a newer one: do not try again."""
        with self._lock:
            crashed = self._slots.install_crashed.get(sha)
        return crashed is not None and rev <= crashed

    def _begin_new_model(self, sha: str, rev: int, stage: str) -> None:
        """Refuse a model that crashed the agent before; else mark that we are bringing it in."""
        if self.install_crashed(sha, rev):
            exc = InstallCrashedError(f"bundle {sha[:12]} crashed the agent during an earlier {stage}; it is "
                                      "refused until a newer desired state names it again")
            self._refuse(sha, exc.code, exc)
            raise exc
        self.marker.begin(sha, rev, stage)

    def _sweep_temp_files(self) -> None:
        """Remove temp files a crash left behind mid-write (never the files they were to replace)."""
        for folder in (self.state_dir, *(p for p in self.store.root.glob("*") if p.is_dir())):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def _load_active_at_start(self) -> None:
        s = self._slots
        for role in ("active", "previous"):
            sha = getattr(s, role)
            if sha is None:
                continue
            try:
                self.active = self._load_stored(sha)
            except HarkenError as exc:
                log.error("stored %s model %s cannot run: %s", role, sha[:12], exc)
                s.failed[sha] = f"{_code(exc)}: {exc}"[:300]
                s.last_error = f"{role} model {sha[:12]} failed verification at start: {_code(exc)}"
                self._report("bundle_rejected", model=sha, reason=_code(exc), detail={"role": role})
                continue
            if role == "previous":
                s.active, s.previous, s.probation = sha, None, None
                self._report("model_rolled_back", model=sha, reason="active_failed_verification")
            log.info("running model %s (%s)", sha[:12], role)
            break
        else:
            s.active = s.previous = s.probation = None
        self._write()

    def _load_shadow_at_start(self) -> None:
        s = self._slots
        if s.shadow is None:
            return
        try:
            self.shadow = self._load_stored(s.shadow)
        except HarkenError as exc:
            log.error("stored shadow model %s cannot run: %s", s.shadow[:12], exc)
            s.shadow = None
            self._write()

    # -- install -------------------------------------------------------------------------
    def install(self, data: bytes, *, expect_sha: str | None = None, rev: int = 0) -> str:
        """Verify, smoke-test (in a limited child), store; report each step. ``rev``: the desired rev
        that asked for it (0: the configured bundle). Returns the model sha256."""
        try:
            if expect_sha is not None:
                self._begin_new_model(expect_sha, rev, "install")
            return self._install(data, expect_sha, rev)
        finally:
            self.marker.end()

    def _install(self, data: bytes, expect_sha: str | None, rev: int) -> str:
        try:
            bundle = load_bundle(data, self.public_keys, name=f"bundle {(expect_sha or '')[:12]}".strip())
            if expect_sha is not None and bundle.sha256 != expect_sha:
                raise BundleTamperedError(f"the bundle sent as {expect_sha[:12]} holds model {bundle.sha256[:12]}")
            if self.releases is not None:
                self.releases.check_install(bundle)
        except BundleError as exc:
            self._refuse(expect_sha, exc.code, exc, data)
            raise
        sha = bundle.sha256
        if expect_sha is None:
            self._begin_new_model(sha, rev, "install")
        try:
            smoke_test_in_child(data, self.smoke_limits, name=f"bundle {sha[:12]}")
        except ModelError as exc:
            self._refuse(sha, getattr(exc, "code", "smoke_test_failed"), exc, data)
            raise
        self._report("bundle_verified", model=sha, detail={"name": bundle.manifest.get("name"),
                                                           "version": bundle.manifest.get("version")})
        self.store.put(data, sha)
        self._report("model_installed", model=sha)
        log.info("installed bundle %s (%s %s)", sha[:12], bundle.manifest.get("name"), bundle.manifest.get("version"))
        return sha

    def install_file(self, path: str | Path) -> str:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read bundle {path}: {exc.strerror or exc}") from exc
        return self.install(data)

    def _refuse(self, sha: str | None, code: str, exc: Exception, data: bytes | None = None) -> None:
        log.error("refused bundle %s: %s", (sha or "?")[:12], exc)
        with self._lock:
            self._slots.last_error = f"bundle {(sha or '?')[:12]} refused: {code}"
        detail = {"error": str(exc)[:300]}
        if data is not None:
            detail["bundle_sha256"] = sha256_hex(data)
        self._report("bundle_rejected", model=sha, reason=code, detail=detail)

    # -- activation, shadow, rollback ----------------------------------------------------
    def activate(self, sha: str, *, rev: int = 0) -> None:
        """Make a stored bundle the active model and put it on probation."""
        with self._lock:
            if self._slots.active == sha and self.active is not None:
                return
        release = self._release_check(sha)
        model = self._load_new(sha, rev, "activation")  # verified again from disk: what runs after a restart
        with self._lock:
            s = self._slots
            # During another probation, keep the last proven model (if any) as the fallback.
            if s.active is not None and (s.probation is None or s.previous is None):
                s.previous = s.active
            s.active = sha
            s.probation = Probation(sha256=sha, started_t=self._clock(), max_utterances=self.policy.utterances,
                                    max_s=self.policy.seconds)
            s.last_error = ""
            s.failed.pop(sha, None)
            s.install_crashed.pop(sha, None)
            self._latencies = []
            self._write()
            self.active = model
        if release is not None:
            self.releases.note_active(release)
        log.info("activated model %s (previous %s); probation %d utterances or %.0f s", sha[:12],
                 (s.previous or "none")[:12], self.policy.utterances, self.policy.seconds)
        self._report("model_activated", model=sha, detail={"previous": s.previous})

    def set_shadow(self, sha: str | None, *, rev: int = 0) -> None:
        with self._lock:
            old = self._slots.shadow
            if old == sha:
                return
        if sha is not None:
            self._release_check(sha)
        model = self._load_new(sha, rev, "shadow start") if sha is not None else None
        with self._lock:
            self._slots.shadow = sha
            self._write()
            self.shadow = model
        if old is not None:
            self._report("shadow_stopped", model=old)
        if sha is not None:
            self._report("shadow_started", model=sha)

    def rollback(self, reason: str) -> None:
        """Leave the active model for ``previous`` (or no model), record and report why."""
        with self._lock:
            s = self._slots
            failed, target = s.active, s.previous
            model = None
            if target is not None:
                try:
                    model = self._load_stored(target)
                except HarkenError as exc:
                    log.error("previous model %s cannot run either: %s", target[:12], exc)
                    target = None
            if failed is not None:
                s.failed[failed] = reason[:300]
            s.active, s.previous, s.probation = target, None, None
            s.last_error = f"rolled back {(failed or 'none')[:12]}: {reason}"[:300]
            self._write()
            self.active = model
        log.warning("rolled back model %s to %s: %s", (failed or "none")[:12], (target or "none")[:12], reason)
        self._report("model_rolled_back", model=failed or "", reason=reason.split(":")[0],
                     detail={"to": target, "why": reason[:300]})

    # -- probation -----------------------------------------------------------------------
    def record_inference(self, model_sha: str, latency_ms: float, error: bool | str | None) -> None:
        """The pipeline's ``on_inference``: count the active model's results during probation."""
        with self._lock:
            p = self._slots.probation
            if p is None or self.active is None or model_sha != getattr(self.active, "sha256", None):
                return
            p.utterances += 1
            p.errors += 1 if error else 0
            if not error:
                self._latencies.append(float(latency_ms))
            verdict = self._judge(p, self._clock())
        self._act_on(verdict)

    def tick(self) -> None:
        """Let time pass the probation (call it now and then, e.g. at each window); retry a failed save."""
        with self._lock:
            if self._unsaved:
                self._write()
            p = self._slots.probation
            verdict = self._judge(p, self._clock()) if p is not None else None
        self._act_on(verdict)

    def _judge(self, p: Probation, now: float) -> tuple[str, str] | None:
        pol = self.policy
        done = p.utterances >= p.max_utterances or now - p.started_t >= p.max_s
        if p.utterances >= min(pol.min_samples, p.max_utterances) or (done and p.utterances):
            rate = p.errors / p.utterances
            if rate > pol.max_error_rate:
                return "fail", (f"error_rate: {p.errors} errors in {p.utterances} inferences "
                                f"({rate:.0%} > {pol.max_error_rate:.0%})")
            if self._latencies:
                p90 = float(np.percentile(self._latencies, 90))
                if p90 > pol.latency_budget_ms:
                    return "fail", f"latency: p90 {p90:.1f} ms > budget {pol.latency_budget_ms:.1f} ms"
        return ("pass", f"{p.utterances} inferences, {p.errors} errors") if done else None

    def _act_on(self, verdict: tuple[str, str] | None) -> None:
        if verdict is None:
            return
        outcome, why = verdict
        if outcome == "fail":
            self.rollback(why)
            return
        with self._lock:
            p = self._slots.probation
            if p is None:
                return
            self._slots.probation = None
            self._slots.last_error = ""
            self._write()
        log.info("model %s passed probation (%s)", p.sha256[:12], why)
        self._report("probation_passed", model=p.sha256, detail={"utterances": p.utterances, "errors": p.errors})

    # -- desired-state bookkeeping ---------------------------------------------------------
    def mark_desired(self, rev: int, *, automation: str | None = None, error: str = "") -> None:
        with self._lock:
            self._slots.desired_rev = rev
            if automation is not None:
                self._slots.automation = automation
            if error:
                self._slots.last_error = error[:300]
            self._write()

    def prune(self) -> list[str]:
        """Drop stored bundles no slot names."""
        with self._lock:
            s = self._slots
            keep = {x for x in (s.active, s.previous, s.shadow) if x}
        return self.store.prune(keep)

    # -- releases (edge/releases.py) -------------------------------------------------------
    def _release_check(self, sha: str):
        """The stored bundle's verified release before it runs (None without a guard); reports a refusal."""
        if self.releases is None:
            return None
        try:
            return self.releases.check_stored(self.store.load(sha, self.public_keys), previous=self._slots.previous)
        except BundleError as exc:
            self._refuse(sha, exc.code, exc)
            raise

    def enforce_releases(self) -> None:
        """After start and after each revocation list: the floor of what runs is at least its version,
        and a revoked model stops (active rolls back, shadow stops, previous is forgotten)."""
        if self.releases is None:
            return
        from edge.releases import release_of

        guard = self.releases
        guard.note_active(release_of(self, self._slots.active, floor=False))
        with self._lock:
            if guard.is_revoked(self._slots.previous):
                self._slots.previous = None
                self._write()
            active, shadow = self._slots.active, self._slots.shadow
        if guard.is_revoked(active):
            self.rollback(f"revoked: model {active[:12]} is on the revocation list")
        if guard.is_revoked(shadow):
            self.set_shadow(None)

    # -- internals -----------------------------------------------------------------------
    def _load_stored(self, sha: str):
        bundle = self.store.load(sha, self.public_keys)
        model = self._loader(bundle)
        model.smoke_test()
        return model

    def _load_new(self, sha: str, rev: int, stage: str):
        """``_load_checked`` for a model not running yet, under the install marker."""
        self._begin_new_model(sha, rev, stage)
        try:
            return self._load_checked(sha)
        finally:
            self.marker.end()

    def _load_checked(self, sha: str):
        """``_load_stored``, reporting a refusal (a damaged or missing stored bundle)."""
        try:
            return self._load_stored(sha)
        except HarkenError as exc:
            self._refuse(sha, _code(exc), exc)
            raise

    def _write(self) -> None:
        """Save the slots; a failure (a full disk) shows in health and is retried at each tick."""
        try:
            self.slots_file.write(self._slots)
        except StoreError as exc:
            if not self._unsaved:
                log.error("%s; the agent runs on and retries", exc)
            self._unsaved = f"slots not saved: {exc}"
            return
        if self._unsaved:
            log.info("slots saved again")
            self._unsaved = ""


def _code(exc: Exception) -> str:
    if isinstance(exc, BundleError):
        return exc.code
    if isinstance(exc, ModelError):
        return "model_error"
    return type(exc).__name__
