"""The device's release guard on the real lifecycle: real bundle files, real keys, onnxruntime.

Three released versions of one model name (``test-words`` 1, 2, 3) and their lab-only,
expired and re-keyed variants; the broker end-to-end tests are in test_releases_broker.py.
"""
from __future__ import annotations

import time

import pytest

from edge.lifecycle import Lifecycle, ProbationPolicy
from edge.releases import STATE_NAME, ReleaseGuard, allowed_automation, allowed_probation
from shared import keys
from shared.errors import (DowngradeError, NotReleasedError, ReleaseExpiredError, ReleaseSignatureError,
                           RevokedError)
from shared.release import make_revocations
from tests.edge import bundles as variants
from tests.edge.conftest import make_test_bundle, release_test_bundle
from tests.edge.test_lifecycle import Events

sha = variants.model_sha


@pytest.fixture(scope="module")
def versions(tmp_path_factory, bundle_paths, signing, release_signing, calibration):
    """{1: bytes, 2: bytes, 3: bytes}: three released versions of ``test-words`` (automation up to full)."""
    folder = tmp_path_factory.mktemp("versions")
    third = folder / "test-2.hkb"
    make_test_bundle(third, signing[0], calibration, seed=2)
    release_test_bundle(third, release_signing[0], version=3)
    return {1: bundle_paths[0].read_bytes(), 2: bundle_paths[1].read_bytes(), 3: third.read_bytes()}


def variant(tmp_path, data: bytes, name: str, key, **kwargs) -> bytes:
    """``data`` released again (as `harken model release` would) with ``kwargs``."""
    path = tmp_path / f"{name}.hkb"
    path.write_bytes(data)
    release_test_bundle(path, key, **kwargs)
    return path.read_bytes()


@pytest.fixture
def make(tmp_path, signing, release_signing):
    def build(*, release_keys=None, required=True, events=None, clock=time.time):
        state = tmp_path / "state"
        guard = ReleaseGuard(state, release_keys or [release_signing[1]], required=required)  # real time: expiry
        return Lifecycle(state, [signing[1]], ProbationPolicy(seconds=60), report=events or Events(), releases=guard,
                         clock=clock)
    return build


def test_an_expired_release_is_refused_at_install_and_never_stored(make, versions, release_signing, tmp_path):
    events = Events()
    lc = make(events=events)
    lc.start()
    expired = variant(tmp_path, versions[3], "expired", release_signing[0], version=3, days=-1)
    with pytest.raises(ReleaseExpiredError, match="expired at"):
        lc.install(expired, expect_sha=sha(expired))
    assert events.last("bundle_rejected")["reason"] == "release_expired" and not lc.store.has(sha(expired))


def test_a_lab_only_bundle_is_refused_unless_the_device_runs_without_releases(make, signing, calibration,
                                                                              tmp_path):
    lab_only = tmp_path / "lab.hkb"
    make_test_bundle(lab_only, signing[0], calibration, seed=0)  # signed by the lab, never released
    events = Events()
    lc = make(events=events)
    lc.start()
    with pytest.raises(NotReleasedError, match="harken model release"):
        lc.install_file(lab_only)
    assert events.last("bundle_rejected")["reason"] == "not_released"
    legacy = make(required=False)  # require_release = false: an older fleet's lab bundles still install
    legacy.start()
    legacy.activate(legacy.install_file(lab_only))
    assert legacy.active is not None and legacy.releases.floors == {}


def test_an_older_version_is_refused_whether_new_or_stored_but_previous_is_a_rollback(make, versions):
    events, now = Events(), [1000.0]
    lc = make(events=events, clock=lambda: now[0])
    lc.start()
    one, two, three = (lc.install(versions[v]) for v in (1, 2, 3))
    for model in (one, two, three):
        lc.activate(model)
        now[0] += 61
        lc.tick()  # its probation passes: it becomes the proven fallback
    assert lc.releases.floors == {"test-words": 3} and lc.slots.previous == two
    lc.activate(two)  # the one step back a rollout's rollback takes: allowed
    assert lc.slots.active == two
    with pytest.raises(DowngradeError, match="older than version 3"):
        lc.activate(one)  # stored, signed, released, unexpired: still a downgrade
    assert lc.slots.active == two and events.last("bundle_rejected")["reason"] == "downgrade"
    reopened = make()  # the floor is in releases.json, written atomically: a restart keeps it
    reopened.start()
    assert reopened.releases.floors == {"test-words": 3}
    lc.store.remove(one)
    with pytest.raises(DowngradeError):
        reopened.install(versions[1])  # fetched again: refused before it is stored
    assert not reopened.store.has(one)


def test_a_bundle_released_by_a_rotated_in_key_installs_and_a_retired_key_is_refused(make, versions, tmp_path,
                                                                                      release_signing):
    new_priv, new_pub = keys.generate_keypair(tmp_path / "new-key", name="release")
    new_key = keys.load_private_key(new_priv)
    by_new = variant(tmp_path, versions[3], "new-key", new_key, version=3)
    during = make(release_keys=[release_signing[1], keys.load_public_key(new_pub)])
    during.start()
    during.activate(during.install(versions[2]))  # released by the old key
    during.activate(during.install(by_new))  # released by the new one
    assert during.slots.active == sha(by_new)
    after = make(release_keys=[keys.load_public_key(new_pub)])  # the old key retired from release_keys
    after.start()
    assert after.active is not None  # what runs keeps running (stored bundles are not re-released)
    after.store.remove(sha(versions[1]))
    with pytest.raises(ReleaseSignatureError, match="not signed by a trusted release key"):
        after.install(variant(tmp_path, versions[1], "old-key", release_signing[0], version=4))


def test_a_revoked_model_stops_running_and_cannot_come_back(make, versions, release_signing, tmp_path):
    events = Events()
    lc = make(events=events)
    lc.start()
    one, two = lc.install(versions[1]), lc.install(versions[2])
    lc.activate(one)
    lc.activate(two)
    lc.releases.accept_revocations(make_revocations(release_signing[0], models=[two], seq=1))
    lc.enforce_releases()
    assert lc.slots.active == one and events.last("model_rolled_back")["reason"] == "revoked"
    with pytest.raises(RevokedError, match="revoked"):
        lc.activate(two)
    again = make()
    again.start()
    assert again.releases.is_revoked(two)  # persisted: a restart does not forget it
    again.store.remove(two)
    with pytest.raises(RevokedError):
        again.install(versions[2])


def test_an_unreadable_release_state_is_rebuilt_from_the_running_model(make, versions, tmp_path):
    lc = make()
    lc.start()
    lc.activate(lc.install(versions[2]))
    (tmp_path / "state" / STATE_NAME).write_bytes(b"\x00garbage")
    after = make()
    assert after.releases.floors == {}
    after.start()
    after.enforce_releases()
    assert after.releases.floors == {"test-words": 2}
    with pytest.raises(DowngradeError):
        after.install(versions[1])


def test_allowed_automation_caps_at_the_release_and_probation_stays_within_its_floor():
    assert allowed_automation("full", "assist") == "assist"
    assert allowed_automation("shadow", "assist") == "shadow"
    assert allowed_automation(None, "assist") is None
    base = ProbationPolicy(utterances=50, seconds=600, max_error_rate=0.05, latency_budget_ms=500)
    off = {"utterances": 0, "seconds": 0, "max_error_rate": 1.0, "latency_budget_ms": 1e9}
    accepted, refused = allowed_probation(off, base, None)
    assert accepted == {} and set(refused) == set(off)  # no release floor: nothing looser than the device's own
    stricter = {"utterances": 100, "seconds": 900, "max_error_rate": 0.01, "latency_budget_ms": 200}
    assert allowed_probation(stricter, base, None) == (stricter, {})
    floor = {"utterances": 5, "seconds": 30}
    accepted, refused = allowed_probation({"utterances": 5, "seconds": 10}, base, floor)
    assert accepted == {"utterances": 5} and refused == {"seconds": {"wanted": 10, "limit": 30}}



def test_a_device_with_a_broker_needs_release_keys_unless_it_opts_out(signing, release_signing):
    from edge.config import load_agent_config
    from shared.errors import ConfigError

    base = {"device_id": "d1", "broker_url": "mqtt://127.0.0.1:1", "trust_keys": [str(signing[2])]}
    with pytest.raises(ConfigError, match="release_keys is empty.*require_release = false"):
        load_agent_config(None, env={}, overrides=base)
    assert load_agent_config(None, env={}, overrides={**base, "require_release": False}).release_keys == []
    assert load_agent_config(None, env={"HARKEN_AGENT_RELEASE_KEYS": str(release_signing[2])},
                             overrides=base).require_release is True
