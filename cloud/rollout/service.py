"""Operator-facing rollout operations, shared by the CLI and the HTTP API.

Starting a rollout and queueing commands only write the store; the controller (ticked by
the collector, or ``harken rollout run``) carries them out at its next tick.
"""
from __future__ import annotations

import dataclasses

from cloud.rollout.gates import Gates
from cloud.rollout.plan import build_plan
from cloud.rollout.repo import RolloutRepo
from cloud.rollout.start import start_rollout
from cloud.rollout.state import Policy, Rollout
from shared.config import load_config
from shared.errors import ConfigError


def load_gates(source=None) -> Gates:
    """Gates from a TOML file path, a dict of overrides, or the defaults."""
    if source is None or isinstance(source, Gates):
        return source or Gates()
    if isinstance(source, dict):
        return load_config(Gates, env={}, overrides=source)
    return load_config(Gates, file=source, env={})


def load_policy(overrides: dict | None = None) -> Policy:
    return load_config(Policy, env={}, overrides={k: v for k, v in (overrides or {}).items() if v is not None})


class RolloutService:
    def __init__(self, store, registry):
        self.store = store
        self.registry = registry
        self.repo = RolloutRepo(store)

    def list(self) -> list[Rollout]:
        return self.repo.list()

    def get(self, ref: str) -> Rollout | None:
        try:
            return self.repo.get(ref)
        except ConfigError:
            return None

    def log(self, rollout_id: str) -> list[dict]:
        return self.repo.log(rollout_id)

    def start(self, model: str, cohort: str = "fleet", strategy: str = "canary", steps: str | None = None,
              bake: str | float | None = None, approval: str = "auto", gates=None, actor: str = "",
              policy: dict | None = None, now: float | None = None) -> Rollout:
        plan = build_plan(strategy, steps=steps, bake=bake)
        return start_rollout(self.store, self.registry, model, cohort, plan, gates=load_gates(gates),
                             policy=load_policy(policy), approval=approval, now=now)

    def act(self, ref: str, action: str, actor: str = "", reason: str = "", now: float | None = None) -> Rollout:
        """Queue ``action`` for the controller; returns the rollout as it is now."""
        r = self.repo.get(ref)
        self.repo.add_command(r.id, action, actor=actor, note=reason, now=now)
        return r


def policy_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Policy)]
