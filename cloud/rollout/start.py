"""Creating a rollout: resolve the model and the cohort, snapshot the baseline, persist.

The new rollout is ``pending``; the controller's next tick publishes the bundle and sends
the first stage's desired states. The baseline is what each device reported running when
the rollout was created — the state a rollback returns it to.
"""
from __future__ import annotations

import time
import uuid

from cloud.delivery import DesiredTarget
from cloud.rollout import cohort as cohort_mod
from cloud.rollout.core import LogEntry
from cloud.rollout.gates import Gates
from cloud.rollout.plan import Stage, assignment_order
from cloud.rollout.repo import RolloutRepo
from cloud.rollout.state import APPROVALS, Policy, Rollout
from shared.errors import ConfigError


def baseline_of(device_row: dict) -> DesiredTarget:
    state = device_row.get("state") or {}
    models = state.get("models") or {}
    return DesiredTarget(active=models.get("active"), shadow=models.get("shadow"), automation=state.get("automation"))


def start_rollout(store, registry, model_ref: str, cohort: str, plan: list[Stage], *, gates: Gates | None = None,
                  policy: Policy | None = None, approval: str = "auto", now: float | None = None,
                  rollout_id: str | None = None) -> Rollout:
    """Create and persist a pending rollout; ConfigError says why it cannot start."""
    if approval not in APPROVALS:
        raise ConfigError(f"--approval {approval!r} must be auto or manual")
    policy = policy or Policy()
    longest = max(s.bake_s for s in plan)
    if policy.stage_timeout_s <= longest:
        raise ConfigError(f"the stage timeout ({policy.stage_timeout_s:.0f} s) must be longer than the longest bake "
                          f"({longest:.0f} s): a stage cannot pass before its bake ends; raise it with "
                          "--stage-timeout or shorten --bake")
    now = time.time() if now is None else now
    repo = RolloutRepo(store)
    rec = registry.resolve(model_ref)
    rows = {d["device"]: d for d in store.devices()}
    devices = cohort_mod.select(cohort, list(rows.values()))
    if not devices:
        raise ConfigError(f"cohort {cohort!r} matches no device that has reported its state; "
                          "`harken fleet list` shows the devices and their tags")
    busy = {d: rid for d, rid in repo.busy_devices().items() if d in devices}
    if busy:
        ids = sorted(set(busy.values()))
        raise ConfigError(f"{len(busy)} device(s) of this cohort are in rollout {', '.join(ids)}; "
                          "let it finish, or abort it with `harken rollout abort ID`")
    baseline = {d: baseline_of(rows[d]) for d in devices}
    if all(b.active == rec.sha256 for b in baseline.values()) and all(s.kind != "shadow" for s in plan):
        raise ConfigError(f"every device of cohort {cohort!r} already runs {rec.label}; nothing to roll out")
    rid = rollout_id or f"r-{uuid.uuid4().hex[:8]}"
    r = Rollout(id=rid, model=rec.sha256, model_label=rec.label, cohort=cohort, plan=list(plan),
                devices=assignment_order(rid, devices), baseline=baseline, gates=gates or Gates(),
                policy=policy, approval=approval, created_t=now, updated_t=now)
    repo.save(r, [LogEntry(now, "created", "", "pending", 0,
                           f"created: {rec.label} ({rec.sha256[:12]}) to {len(devices)} devices of {cohort}, "
                           f"plan {' → '.join(s.label for s in plan)}, approval {approval}")], now=now)
    return r
