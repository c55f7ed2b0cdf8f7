"""The engine's ``DriftSource`` over the collector's store and the model registry.

This is the one place that knows the store's and the registry's method names
(``cloud.store.Store.device_buckets/device_tags/model_starts``, ``cloud.registry.Registry.get``);
the engine and the report only see the four ``DriftSource`` calls. Drift reads rollups
(``Store.device_buckets``: one exact merge per device, model and bucket, plus the windows not
rolled up yet), so an evaluation costs devices × buckets, not windows; its steps must be whole
multiples of the rollup bucket (``CollectorConfig`` checks it).
"""
from __future__ import annotations

from typing import Callable, Iterable

from cloud.store.base import DEFAULT_BUCKET_S


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
    """``DriftSource`` over a ``cloud.store.Store``; profiles from ``profile_of(model_sha)``."""

    def __init__(self, store, profile_of: Callable[[str], dict | None], bucket_s: int = DEFAULT_BUCKET_S):
        self.store = store
        self.profile_of = profile_of
        self.bucket_s = bucket_s

    def bodies(self, devices: list[str] | None, since_t: float, until_t: float) -> Iterable[dict]:
        return self.store.device_buckets(devices=devices, since=since_t, until=until_t, bucket_s=self.bucket_s)

    def device_tags(self) -> dict[str, set[str]]:
        return {d: set(tags) for d, tags in self.store.device_tags().items()}

    def profile(self, model_sha: str) -> dict | None:
        return self.profile_of(model_sha)

    def first_seen(self) -> dict[tuple[str, str], float]:
        return self.store.model_starts()
