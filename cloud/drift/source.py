"""The engine's ``WindowSource`` over the collector's store and the model registry.

This is the one place that knows the store's and the registry's method names
(``cloud.store.Store.windows/device_tags``, ``cloud.registry.Registry.get``); the engine and
the report only see the three ``WindowSource`` calls. Drift reads full windows, for their time
resolution: the engine's look-backs (``long_steps × step_s``, ``× concept_step_s``) must stay
within the store's ``retention_full_s`` (defaults: 2.5 h and 30 h within 48 h). Older time is
only in rollups (``Store.device_buckets``: one merge per device, model and 15-minute bucket),
which a longer report could read at that resolution.
"""
from __future__ import annotations

from typing import Callable, Iterable


def profile_from_manifest(manifest: dict) -> dict | None:
    """The bundle's reference profile, plus the agent's no-answer threshold from the manifest."""
    profile = manifest.get("profile")
    if not profile:
        return None
    out = dict(profile)
    if "confidence_threshold" in manifest:
        out.setdefault("no_answer_confidence", float(manifest["confidence_threshold"]))
    return out


def registry_profiles(registry) -> Callable[[str], dict | None]:
    """``profile(model_sha)`` read from a ``cloud.registry.Registry`` (None for unknown models)."""
    def profile_of(sha: str) -> dict | None:
        record = registry.get(sha)
        return profile_from_manifest(record.manifest) if record is not None else None

    return profile_of


class StoreSource:
    """``WindowSource`` over a ``cloud.store.Store``; profiles from ``profile_of(model_sha)``."""

    def __init__(self, store, profile_of: Callable[[str], dict | None]):
        self.store = store
        self.profile_of = profile_of

    def windows(self, devices: list[str] | None, since_t: float, until_t: float) -> Iterable[dict]:
        return self.store.windows(devices=devices, since=since_t, until=until_t)

    def device_tags(self) -> dict[str, set[str]]:
        return {d: set(tags) for d, tags in self.store.device_tags().items()}

    def profile(self, model_sha: str) -> dict | None:
        return self.profile_of(model_sha)
