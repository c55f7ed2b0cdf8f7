"""Starting after something went wrong: damaged slots, a crash while bringing a model in.

``read_slots``: slots.json, else its previous version, else slots rebuilt from the model
store. The bundles are the device's real assets; the slots file only names them. When it is lost
(and its previous version too), every stored bundle is verified again (sha256 and
signature), nothing is removed, and the newest verified bundle becomes the active one, on
probation (it may have been a candidate), with the next newest as its fallback. The retained
desired state then says which model the fleet wants; the device applies it without a
download, because the bundles are still there.

``note_crashed_install``: the install marker left by a run that died bringing a model in
(``edge.marker``) marks that model failed for that desired rev; the caller reports it.
"""
from __future__ import annotations

import logging

from edge.marker import InstallMarker
from edge.store import ModelStore, Probation, Slots, SlotsFile
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


def read_slots(slots_file: SlotsFile, store: ModelStore, public_keys: list, now: float, policy) -> tuple[Slots, bool]:
    """slots.json, else its previous version, else slots rebuilt from the verified store.

    The flag is True when slots.json itself was read (or a new device has neither file nor
    bundles): only then may unnamed bundles be pruned.
    """
    s = slots_file.read()
    if slots_file.source == "slots" or (slots_file.source == "new" and not store.list()):
        return s, True
    if slots_file.source == "previous":
        s.last_error = slots_file.problem[:300]
        return s, False
    problem = slots_file.problem or f"{slots_file.path.name} missing"
    return rebuild_slots(store, public_keys, problem, now, probation_utterances=policy.utterances,
                         probation_s=policy.seconds), False


def note_crashed_install(marker: InstallMarker, slots: Slots) -> dict | None:
    """Mark the model the last run died bringing in as failed for its desired rev (in ``slots``);
    returns the ``bundle_rejected`` event's fields, or None if the last run did not die so."""
    found = marker.found()
    if found is None:
        return None
    sha, rev, stage = found["sha256"], found["rev"], found["stage"]
    why = f"install_crashed: the agent stopped during the {stage} of {sha[:12]} (a crash, a kill or a power cut)"
    log.error("%s; refusing it for desired rev %d and older", why, rev)
    slots.failed[sha] = why
    slots.install_crashed[sha] = rev
    slots.last_error = why
    return {"model": sha, "reason": "install_crashed", "detail": {"stage": stage, "rev": rev}}
