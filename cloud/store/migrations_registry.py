"""Named migrations for the registry and rollout tables, applied on top of the store's own.

Same rules as ``cloud.store.migrations``: one transaction per migration, names recorded in
the ``migrations`` table, never edit a migration that has shipped (append a new one).

    models            one row per registered bundle, keyed by the model's sha256
    aliases           name → model (production, candidate, ...)
    rollouts          the persisted rollout state machine (``doc``: its JSON)
    rollout_log       every transition with its reason and figures
    rollout_commands  operator commands (pause, approve, ...) waiting for the controller
    desired           the last desired state written per device and its rev
"""
from __future__ import annotations

from cloud.store.migrations import Migration

_MODELS = """
CREATE TABLE models (
    sha256 TEXT PRIMARY KEY,
    bundle_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    path TEXT NOT NULL,
    run_id TEXT,
    dataset_hash TEXT,
    parent TEXT,
    created TEXT,
    signer TEXT,
    registered_t DOUBLE PRECISION NOT NULL,
    manifest TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX models_run ON models (run_id);
CREATE TABLE aliases (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    previous TEXT,
    updated_t DOUBLE PRECISION NOT NULL
)
"""

_ROLLOUTS = """
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    settled SMALLINT NOT NULL,
    created_t DOUBLE PRECISION NOT NULL,
    updated_t DOUBLE PRECISION NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX rollouts_status ON rollouts (status, created_t);
CREATE TABLE rollout_log (
    rollout TEXT NOT NULL,
    seq BIGINT NOT NULL,
    t DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    stage INTEGER NOT NULL,
    reason TEXT NOT NULL,
    figures TEXT NOT NULL,
    PRIMARY KEY (rollout, seq)
);
CREATE TABLE rollout_commands (
    id TEXT PRIMARY KEY,
    rollout TEXT NOT NULL,
    action TEXT NOT NULL,
    t DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NOT NULL,
    done_t DOUBLE PRECISION
);
CREATE INDEX rollout_commands_open ON rollout_commands (rollout, done_t);
CREATE TABLE desired (
    device TEXT PRIMARY KEY,
    rev BIGINT NOT NULL,
    t DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL
)
"""

REGISTRY_MIGRATIONS: list[Migration] = [
    Migration("registry_0001_models_aliases", _MODELS),
    Migration("registry_0002_rollouts_desired", _ROLLOUTS),
]


def transaction(store, write: bool = True):
    """A cursor (``?`` placeholders) inside one store transaction."""
    return store.transaction(write)


def ensure_schema(store) -> list[str]:
    """Apply the registry migrations the store lacks; returns the names applied now."""
    return store.apply_migrations(REGISTRY_MIGRATIONS)
