"""Release metadata and revocation lists: real Ed25519 keys, real bundles, the real loader."""
from __future__ import annotations

import json
import time

import pytest

from shared import keys
from shared.bundle import build_bundle, load_bundle, with_release
from shared.errors import (NotReleasedError, ProtocolError, ReleaseExpiredError, ReleaseMismatchError,
                           ReleaseSignatureError, RevocationListError, RevokedError)
from shared.messages import decode
from shared.codec import encode
from shared.release import (Revocations, make_release, make_revocations, parse_revocations, read_release,
                            release_bundle, verify_release)

MANIFEST = {"name": "kws", "version": "1", "labels": ["yes", "no"], "sample_rate": 16000, "input_samples": 16000,
            "placement": "centre", "opset": {"": 17},
            "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}}
NOW = 1_800_000_000.0
DAY = 86400.0


@pytest.fixture(scope="module")
def k(named_keys):
    return {"lab": named_keys("signing"), "release": named_keys("release"), "rotated": named_keys("release-2026")}


@pytest.fixture(scope="module")
def lab_bundle(k):
    return build_bundle(b"model-bytes", MANIFEST, k["lab"][0], {"test_vectors.npy": b"v"})


def released(data, key, **kw):
    kw.setdefault("version", 3)
    kw.setdefault("expires_t", NOW + 30 * DAY)
    return release_bundle(data, load_bundle(data, None, require_signature=False), key, now=NOW, **kw)


def test_a_release_verifies_and_names_model_version_expiry_and_key(k, lab_bundle):
    data = released(lab_bundle, k["release"][0], max_automation="partial", probation_floor={"utterances": 5})
    b = load_bundle(data, [k["lab"][1]])
    rel = verify_release(b, [k["release"][1]], now=NOW)
    assert (rel.name, rel.version, rel.max_automation, rel.probation_floor) == ("kws", 3, "partial", {"utterances": 5})
    assert rel.model_sha256 == b.sha256 and rel.key_id == keys.public_key_id(k["release"][1])
    assert rel.expires_t == NOW + 30 * DAY and rel.issued_t == NOW
    assert b.sha256 == load_bundle(lab_bundle, [k["lab"][1]]).sha256  # the release does not rename the model
    assert b.files == {"test_vectors.npy": b"v"}  # release members are not manifest files
    again = released(data, k["release"][0], version=4)  # a new release replaces the old one
    assert read_release(load_bundle(again, [k["lab"][1]])).version == 4


def test_a_bundle_signed_only_by_the_lab_key_is_not_released(k, lab_bundle):
    b = load_bundle(lab_bundle, [k["lab"][1]])
    with pytest.raises(NotReleasedError, match="harken model release"):
        verify_release(b, [k["release"][1]], now=NOW)
    # "released" with the lab key: a device that trusts only the release key refuses it
    by_lab = load_bundle(released(lab_bundle, k["lab"][0]), [k["lab"][1]])
    with pytest.raises(ReleaseSignatureError, match="not signed by a trusted release key"):
        verify_release(by_lab, [k["release"][1]], now=NOW)


def test_expired_and_revoked_releases_are_refused(k, lab_bundle):
    b = load_bundle(released(lab_bundle, k["release"][0], expires_t=NOW + DAY), [k["lab"][1]])
    assert verify_release(b, [k["release"][1]], now=NOW + DAY - 1)
    with pytest.raises(ReleaseExpiredError, match="expired at .* release it again"):
        verify_release(b, [k["release"][1]], now=NOW + DAY)
    assert verify_release(b, [k["release"][1]])  # without a clock (a stored model): expiry not judged
    with pytest.raises(RevokedError, match="is revoked"):
        verify_release(b, [k["release"][1]], now=NOW, revoked=Revocations(models=frozenset({b.sha256})))
    key_id = keys.public_key_id(k["release"][1])
    with pytest.raises(RevokedError, match=f"release key {key_id} is revoked"):
        verify_release(b, [k["release"][1]], now=NOW, revoked=Revocations(keys=frozenset({key_id})))


def test_a_release_copied_onto_another_bundle_or_edited_is_refused(k, lab_bundle):
    other = build_bundle(b"other-model", MANIFEST, k["lab"][0])
    rel_json, rel_sig = make_release(load_bundle(lab_bundle, [k["lab"][1]]), k["release"][0], version=3,
                                     expires_t=NOW + DAY, now=NOW)
    with pytest.raises(ReleaseMismatchError, match="another model"):
        verify_release(load_bundle(with_release(other, rel_json, rel_sig), [k["lab"][1]]), [k["release"][1]], now=NOW)
    edited = rel_json.replace(b'"version":3', b'"version":9')
    with pytest.raises(ReleaseSignatureError):
        verify_release(load_bundle(with_release(lab_bundle, edited, rel_sig), [k["lab"][1]]), [k["release"][1]],
                       now=NOW)


def test_a_rotated_in_key_is_accepted_and_a_retired_one_refused(k, lab_bundle):
    old, new = k["release"], k["rotated"]
    by_new = load_bundle(released(lab_bundle, new[0], version=5), [k["lab"][1]])
    by_old = load_bundle(released(lab_bundle, old[0], version=4), [k["lab"][1]])
    during = [old[1], new[1]]  # devices trust both while the fleet moves to the new key
    assert verify_release(by_new, during, now=NOW).key_id == keys.public_key_id(new[1])
    assert verify_release(by_old, during, now=NOW).version == 4
    with pytest.raises(ReleaseSignatureError):  # the old key retired from the device's release_keys
        verify_release(by_old, [new[1]], now=NOW)


def test_revocation_lists_verify_merge_and_refuse_forgeries(k):
    sha_a, sha_b = "a" * 64, "b" * 64
    first = make_revocations(k["release"][0], models=[sha_a], seq=1, now=NOW)
    second = make_revocations(k["release"][0], models=[sha_b], keys=["0123456789abcdef"], seq=2, now=NOW)
    a = parse_revocations(first, [k["release"][1]])
    merged = a.merged(parse_revocations(second, [k["release"][1]]))
    assert merged.models == {sha_a, sha_b} and merged.keys == {"0123456789abcdef"} and merged.seq == 2
    # a later (or stolen-key) list that leaves sha_a out never un-revokes it
    assert sha_a in merged.merged(parse_revocations(make_revocations(k["release"][0], seq=9), None)).models
    with pytest.raises(RevocationListError, match="not signed by a trusted release key"):
        parse_revocations(make_revocations(k["lab"][0], models=[sha_a], seq=3), [k["release"][1]])
    forged = json.loads(first)
    forged["document"] = forged["document"].replace(sha_a, sha_b)
    with pytest.raises(RevocationListError):
        parse_revocations(json.dumps(forged).encode(), [k["release"][1]])
    for junk in (b"", b"{", b'{"format": "harken-revocations/1"}', b"[1]", b"x" * 600_000):
        with pytest.raises(RevocationListError):
            parse_revocations(junk, [k["release"][1]])


def test_a_desired_state_naming_a_model_by_anything_but_a_hex_sha256_is_a_protocol_error():
    ok = {"kind": "desired", "v": "1.0", "device": "d1", "rev": 1, "t": 1.0, "active": "ab" * 32}
    assert decode(encode(ok))["active"] == "ab" * 32
    for bad in ("../../x", "AB" * 32, "ab" * 31, "ab" * 32 + "#", "ab" * 32 + "\n", "+", "g" * 64, ""):
        for role in ("active", "shadow"):
            with pytest.raises(ProtocolError) as err:
                decode(encode(dict(ok, **{role: bad})))
            assert err.value.code == "bad_field" and role in err.value.detail


def test_release_times_are_checked_against_the_clock_given(k, lab_bundle):
    b = load_bundle(released(lab_bundle, k["release"][0], expires_t=time.time() + 60), [k["lab"][1]])
    assert verify_release(b, [k["release"][1]], now=time.time()).version == 3
