"""Slots rebuilt from the model store when neither slots file can be read.

The bundles are the device's real assets; the slots file only names them. When it is lost
(and its previous version too), every stored bundle is verified again (sha256 and
signature), nothing is removed, and the newest verified bundle becomes the active one, on
probation (it may have been a candidate), with the next newest as its fallback. The retained
desired state then says which model the fleet wants; the device applies it without a
download, because the bundles are still there.
"""
from __future__ import annotations

import logging

from edge.store import ModelStore, Probation, Slots
from shared.errors import HarkenError

log = logging.getLogger(__name__)


def verified_by_age(store: ModelStore, public_keys: list) -> list[str]:
    """Stored bundles that verify, newest stored first; damaged ones are logged and left in place."""
    dated = []
    for sha in store.list():
        try:
            store.load(sha, public_keys)
        except HarkenError as exc:
            log.error("stored bundle %s does not verify (%s); it is not used", sha[:12], exc)
            continue
        dated.append((store.path(sha).stat().st_mtime_ns, sha))
    return [sha for _, sha in sorted(dated, reverse=True)]


def rebuild_slots(store: ModelStore, public_keys: list, problem: str, now: float, *,
                  probation_utterances: int, probation_s: float) -> Slots:
    """Slots that name the newest verified bundles (active on probation, previous); removes nothing."""
    shas = verified_by_age(store, public_keys)
    active = shas[0] if shas else None
    previous = shas[1] if len(shas) > 1 else None
    probation = (Probation(sha256=active, started_t=now, max_utterances=probation_utterances, max_s=probation_s)
                 if active else None)
    why = f"{problem}; rebuilt from the model store ({len(shas)} verified bundle(s), active " \
          f"{(active or 'none')[:12]})"
    log.error("slots: %s", why)
    return Slots(active=active, previous=previous, probation=probation, last_error=why[:300])
