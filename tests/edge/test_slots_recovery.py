"""Issue 10 item 3: a damaged ``slots.json`` must not delete the stored models.

Real files and real onnxruntime: before the fix, an unreadable slots file fell back to empty
slots and the start-up prune then removed every stored bundle.
"""
from __future__ import annotations

import json
import os

import pytest

from edge.lifecycle import Lifecycle, ProbationPolicy
from tests.edge import bundles as variants
from tests.edge.test_lifecycle import Events, _feed


@pytest.fixture
def device(tmp_path, signing, bundle_paths):
    """A device that ran model a, then b (previous a); returns (state dir, a, b)."""
    state = tmp_path / "state"
    lc = Lifecycle(state, [signing[1]], ProbationPolicy(utterances=5))
    lc.start()
    a = lc.install(bundle_paths[0].read_bytes())
    lc.activate(a)
    _feed(lc, 5)  # a passed probation
    os.utime(lc.store.path(a), ns=(1, 1))  # a was stored long before b
    b = lc.install(bundle_paths[1].read_bytes())
    lc.activate(b)
    return state, a, b


def _restart(state, signing) -> tuple[Lifecycle, Events]:
    events = Events()
    lc = Lifecycle(state, [signing[1]], ProbationPolicy(utterances=5), report=events)
    lc.start()
    return lc, events


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "bit_flip_in_a_sha"])
def test_a_damaged_slots_file_is_read_from_its_previous_version_and_nothing_is_pruned(device, signing, damage):
    state, a, b = device
    path = state / "slots.json"
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"\x00\xff not json", "truncated": raw[: len(raw) // 2], "empty": b"",
                      "bit_flip_in_a_sha": raw.replace(b.encode(), (b[:-1] + ("1" if b[-1] == "0" else "0")).encode())}[damage])
    lc, _ = _restart(state, signing)
    assert sorted(lc.store.list()) == sorted([a, b])  # every stored model is still there
    assert lc.slots_file.source == "previous"
    assert lc.slots.active == a and lc.active is not None  # the slots as they were before b's activation
    assert lc.health() == "degraded" and "slots.json damaged" in lc.slots.last_error
    again, _ = _restart(state, signing)  # a clean start later prunes what no slot names
    assert again.slots_file.source == "slots" and again.store.list() == [a]


def test_both_slots_files_lost_rebuilds_from_the_verified_store(device, signing):
    state, a, b = device
    (state / "slots.json").write_bytes(b"{")
    (state / "slots.prev.json").unlink(missing_ok=True)  # e.g. a device upgraded from a version that kept none
    path = (state / "models" / a / "bundle.hkb")
    lc, _ = _restart(state, signing)
    assert sorted(lc.store.list()) == sorted([a, b])
    assert lc.slots_file.source == "none"
    assert (lc.slots.active, lc.slots.previous) == (b, a) and lc.active.sha256 == b  # newest stored first
    assert lc.slots.probation is not None and lc.slots.probation.sha256 == b  # unknown: watched again
    assert "rebuilt from the model store" in lc.slots.last_error and path.is_file()


def test_a_damaged_stored_bundle_is_skipped_by_the_rebuild_and_kept(device, signing):
    state, a, b = device
    (state / "slots.json").unlink()
    (state / "slots.prev.json").unlink(missing_ok=True)
    damaged = state / "models" / b / "bundle.hkb"
    damaged.write_bytes(variants.tampered(damaged.read_bytes()))
    lc, _ = _restart(state, signing)
    assert lc.slots.active == a and lc.active is not None and lc.slots.previous is None
    assert damaged.is_file()  # not run, not deleted: the operator may want to look at it


def test_the_slots_file_checks_its_own_content(tmp_path, signing):
    lc = Lifecycle(tmp_path / "state", [signing[1]])
    lc.start()
    d = json.loads((tmp_path / "state" / "slots.json").read_bytes())
    assert len(d["check"]) == 64
    d["desired_rev"] = 7  # valid JSON, wrong content
    (tmp_path / "state" / "slots.json").write_text(json.dumps(d))
    lc.slots_file.read()
    assert lc.slots_file.source == "none" and "check sum" in lc.slots_file.problem
