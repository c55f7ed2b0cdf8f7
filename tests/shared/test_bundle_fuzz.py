"""Fuzz the loader: 10 000+ random and mutated bundles, each refused with a specific error.

What a device runs on every bundle it receives: ``load_bundle`` (layout, signature, manifest,
members) then ``verify_release``. Every input must end in one of the specific BundleError
subclasses (never the base class, never another exception type), or — only for mutations
that may not change anything that matters (a flipped timestamp byte) — load with exactly the
original manifest, model, files and release. The bundle cap is lowered to 1 MiB for the run
so that the memory bound is a real one: peak traced allocation per load stays under twice
the cap, including bundles over it, deflate bombs and forged entry counts.
"""
from __future__ import annotations

import json
import random
import struct
import time
import tracemalloc
import zipfile
import io
from collections import Counter

import pytest

from shared import bundle as bundle_mod
from shared import keys
from shared.bundle import MANIFEST, MODEL, RELEASE, RELEASE_SIGNATURE, SIGNATURE, build_bundle, load_bundle
from shared.bundle_zip import write_stored_zip
from shared.errors import BundleError, ReleaseError
from shared.release import canonical, release_bundle, verify_release

CASES = 10_000
CAP = 1024 * 1024
NOW = time.time()
MANIFEST_FIELDS = {"name": "kws", "version": "7", "labels": ["yes", "no", "up"], "sample_rate": 16000,
                   "input_samples": 16000, "placement": "centre", "opset": {"": 17},
                   "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "f"}}
BAD_VALUES = [None, 0, -1, 2 ** 70, 1.5, "", "x" * 300, [], {}, [1, 2], {"a": 1}, True, "../x", "ab" * 32]


@pytest.fixture(scope="module")
def world(named_keys):
    lab, release, stranger = named_keys("signing"), named_keys("release"), named_keys("stranger")
    rng = random.Random(1)
    model = rng.randbytes(3000)
    lab_only = build_bundle(model, MANIFEST_FIELDS, lab[0], {"test_vectors.npy": rng.randbytes(500)})
    loaded = load_bundle(lab_only, [lab[1]])
    released = release_bundle(lab_only, loaded, release[0], version=7, expires_t=NOW + 86400, now=NOW)
    big = build_bundle(rng.randbytes(CAP - 64 * 1024), MANIFEST_FIELDS, lab[0])  # valid, near the cap
    return {"lab": lab, "release": release, "stranger": stranger, "valid": [released, lab_only],
            "big": big, "prebuilt": _prebuilt(lab[0], released), "original": load_bundle(released, [lab[1]])}


_MEMBERS: dict[bytes, list] = {}


def _members(data: bytes) -> list[tuple[str, bytes]]:
    """The members of a (trusted, test-built) zip, in order; a fresh list each call."""
    if data not in _MEMBERS:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            _MEMBERS[data] = [(i.filename, zf.read(i)) for i in zf.infolist()]
    return list(_MEMBERS[data])


def _zip(members, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, body in members:
            zf.writestr(zipfile.ZipInfo(name), body, compress_type=compression)
    return buf.getvalue()


def _prebuilt(lab_key, released) -> dict[str, bytes]:
    """The expensive hostile files, built once: deflate bombs, an oversized bundle, a huge manifest."""
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, body in _members(released)[:2]:
            zf.writestr(zipfile.ZipInfo(name), body)
        info = zipfile.ZipInfo(MODEL)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as f:
            for _ in range(64):
                f.write(bytes(1024 * 1024))  # 64 MiB of zeros in ~64 KB
    assert len(bomb.getvalue()) < 200 * 1024
    huge = build_bundle(b"m", dict(MANIFEST_FIELDS, pad="x" * (bundle_mod.MAX_MANIFEST_BYTES + 10)), lab_key)
    return {"bomb": bomb.getvalue(), "huge_manifest": huge, "oversized": released + bytes(CAP),
            "deflated": _zip(_members(released), zipfile.ZIP_DEFLATED)}


# -- generators: each returns (bundle bytes, must it be refused) ---------------------------------

def g_truncate(rng, w):
    data = rng.choice(w["valid"])
    return data[:rng.randrange(len(data))], True


def g_bitflip(rng, w):
    data = bytearray(rng.choice(w["valid"]))
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data), False


def g_splice(rng, w):
    data = rng.choice(w["valid"])
    at = rng.randrange(len(data))
    if rng.random() < 0.5:
        return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:], False
    return data[:at] + data[at + rng.randint(1, 64):], False


def g_header_field(rng, w):
    """Overwrite a field of the end record, a central-directory entry or a local header."""
    data = bytearray(rng.choice(w["valid"]))
    starts = [i for i in range(len(data) - 4) if data[i:i + 2] == b"PK" and data[i + 2] in (1, 3, 5)]
    at = rng.choice(starts) + rng.randrange(4, 30)
    value = rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, rng.getrandbits(32)])
    width = rng.choice([1, 2, 4])
    data[at:at + width] = value.to_bytes(8, "little")[:width]
    return bytes(data[:len(data)]), False


def g_prebuilt(rng, w):
    return w["prebuilt"][rng.choice(sorted(w["prebuilt"]))], True


def g_extra_member(rng, w):
    members = _members(rng.choice(w["valid"]))
    name = rng.choice(["payload.bin", "x", "model.onnx.bak", "a" * 128, "evil.sh", "manifest.json2"])
    members.insert(rng.randrange(len(members) + 1), (name, rng.randbytes(rng.randint(0, 300))))
    return write_stored_zip(members), True


def g_bad_name(rng, w):
    members = _members(rng.choice(w["valid"]))
    members.append((rng.choice(["../x", "a/b", "/abs", "é.bin", "a\\b", "", ".hidden", "a" * 200]), b"x"))
    return _zip(members), True


def g_duplicate(rng, w):
    members = _members(rng.choice(w["valid"]))
    members.append(rng.choice(members))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _zip(members), True


def g_deflate_one(rng, w):
    members = _members(rng.choice(w["valid"]))
    buf = io.BytesIO()
    victim = rng.randrange(len(members))
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, body) in enumerate(members):
            method = zipfile.ZIP_DEFLATED if i == victim else zipfile.ZIP_STORED
            zf.writestr(zipfile.ZipInfo(name), body, compress_type=method)
    return buf.getvalue(), True


def g_count_bomb(rng, w):
    data = rng.choice(w["valid"])
    if rng.random() < 0.5:  # forge the end record's entry counts
        count = rng.randint(17, 65535)
        return data[:-12] + struct.pack("<2H", count, count) + data[-8:], True
    members = _members(data) + [(f"f{i}", b"") for i in range(rng.randint(11, 40))]
    return write_stored_zip(members), True


def _resigned(w, manifest_raw: bytes, key=None) -> bytes:
    members = dict(_members(w["valid"][1]))
    members[MANIFEST] = manifest_raw
    members[SIGNATURE] = keys.sign(key or w["lab"][0], manifest_raw)
    return write_stored_zip(list(members.items()))


def g_wrong_version(rng, w):
    m = json.loads(dict(_members(w["valid"][1]))[MANIFEST])
    m["format"] = rng.choice(["harken-bundle/2", "harken-bundle/0", "", None, 1, "x" * 500, ["harken-bundle/1"]])
    return _resigned(w, json.dumps(m).encode()), True


def g_manifest(rng, w):
    """A manifest the lab's key signed that is malformed (wrong types, missing fields, not JSON)."""
    m = json.loads(dict(_members(w["valid"][1]))[MANIFEST])
    kind = rng.randrange(5)
    if kind == 0:
        m[rng.choice(bundle_mod.REQUIRED[1:])] = rng.choice(BAD_VALUES[:10])
    elif kind == 1:
        del m[rng.choice(bundle_mod.REQUIRED[1:])]
    elif kind == 2:
        m["files"] = rng.choice([[], "x", {"test_vectors.npy": "00"}, {"../x": "ab" * 32}, {"gone.bin": "ab" * 32}])
    elif kind == 3:
        m["model_sha256"] = rng.choice(["ab" * 32, "AB" * 32, "x", 5])
    else:
        return _resigned(w, rng.choice([b"[" * 100_000, b"\xff\xfe", b"[]", b'"s"', b"{", b"null"])), True
    return _resigned(w, json.dumps(m).encode()), True


def g_signature(rng, w):
    members = dict(_members(rng.choice(w["valid"])))
    kind = rng.randrange(4)
    if kind == 0:
        del members[SIGNATURE]
    elif kind == 1:
        members[SIGNATURE] = rng.randbytes(rng.choice([0, 1, 63, 64, 65, 1000, 2000]))
    elif kind == 2:
        members[SIGNATURE] = keys.sign(w["stranger"][0], members[MANIFEST])
    else:
        members[MANIFEST] = members[MANIFEST].replace(b'"kws"', b'"kwz"')
    return write_stored_zip(list(members.items())), True


def g_release(rng, w):
    """The release members damaged, forged, expired or copied."""
    members = dict(_members(w["valid"][0]))
    doc = json.loads(members[RELEASE])
    kind = rng.randrange(6)
    key = w["release"][0]
    if kind == 0:  # issued_t is informational: any number is a valid one
        doc[rng.choice(sorted(set(doc) - {"issued_t"}))] = rng.choice(BAD_VALUES)
    elif kind == 1:
        doc["expires_t"] = NOW - rng.randint(1, 10 ** 6)
    elif kind == 2:
        key = rng.choice([w["stranger"][0], w["lab"][0]])
    elif kind == 3:
        doc["model_sha256"] = "cd" * 32
    elif kind == 4:
        del members[rng.choice([RELEASE, RELEASE_SIGNATURE])]
        return write_stored_zip(list(members.items())), True
    else:
        members[RELEASE_SIGNATURE] = rng.randbytes(64)
        return write_stored_zip(list(members.items())), True
    members[RELEASE] = canonical(doc) if kind != 0 or rng.random() < 0.5 else json.dumps(doc).encode()
    members[RELEASE_SIGNATURE] = keys.sign(key, members[RELEASE])
    return write_stored_zip(list(members.items())), True


def g_big(rng, w):
    """A near-cap bundle damaged after its members are copied (the costliest refusals), or oversized."""
    data = bytearray(w["big"])
    kind = rng.randrange(3)
    if kind == 0:  # a byte of the model: found only by its sha256, after the copy
        data[rng.randrange(2000, len(data) - 2000)] ^= 0x55
        return bytes(data), True
    if kind == 1:
        return bytes(data) + rng.randbytes(rng.randint(1, 200_000)), True
    return bytes(data[:rng.randrange(len(data))]), True


def g_garbage(rng, w):
    body = rng.randbytes(rng.randint(0, 4000))
    return (b"PK\x03\x04" + body) if rng.random() < 0.7 else body, True


GENERATORS = [g_truncate, g_bitflip, g_splice, g_header_field, g_prebuilt, g_extra_member, g_bad_name, g_duplicate,
              g_deflate_one, g_count_bomb, g_wrong_version, g_manifest, g_signature, g_release, g_big, g_garbage]


def device_load(data: bytes, w) -> object:
    """What a device does with bundle bytes: the loader, then the release."""
    b = load_bundle(data, [w["lab"][1]])
    verify_release(b, [w["release"][1]], now=NOW)
    return b


def _same_as_an_original(b, w) -> bool:
    original = w["original"]
    return (b.manifest_raw, b.model_bytes, b.files, b.release, b.release_signature) == (
        original.manifest_raw, original.model_bytes, original.files, original.release, original.release_signature)


def test_ten_thousand_hostile_bundles_are_each_refused_specifically_within_twice_the_cap(world, monkeypatch):
    monkeypatch.setattr(bundle_mod, "MAX_BUNDLE_BYTES", CAP)
    rng = random.Random(20260101)
    outcomes, peaks, accepted = Counter(), [], Counter()
    started = time.perf_counter()
    tracemalloc.start()
    try:
        assert device_load(world["valid"][0], world).sha256  # the unmutated bundle loads
        load_bundle(world["big"], [world["lab"][1]])  # so does one near the cap
        for i in range(CASES):
            gen = GENERATORS[i % len(GENERATORS)]
            data, must_refuse = gen(rng, world)
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            try:
                b = device_load(data, world)
            except BundleError as exc:
                assert type(exc) not in (BundleError, ReleaseError), f"{gen.__name__}: unspecific {exc!r}"
                assert exc.code not in ("bundle_invalid", "release_invalid") and str(exc), gen.__name__
                outcomes[type(exc).__name__] += 1
            except Exception as exc:  # noqa: BLE001 - the failure the test exists to find
                pytest.fail(f"{gen.__name__} case {i} raised {type(exc).__name__}: {exc}")
            else:
                assert not must_refuse, f"{gen.__name__} case {i} was accepted"
                assert _same_as_an_original(b, world), f"{gen.__name__} case {i} accepted altered content"
                accepted[gen.__name__] += 1
            peaks.append(len(data) + tracemalloc.get_traced_memory()[1] - base)  # the input and all a load added
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    print(f"\n{CASES} bundles in {elapsed:.1f} s; peak (input + loader) {max(peaks) / 2 ** 20:.2f} MiB "
          f"(cap {CAP / 2 ** 20:.0f} MiB); "
          f"refusals {dict(outcomes.most_common())}; harmless mutations accepted {dict(accepted)}")
    assert max(peaks) < 2 * CAP and max(peaks) > CAP // 2  # near-cap inputs were among them
    assert sum(outcomes.values()) >= 0.95 * CASES and len(outcomes) >= 12  # the hostile inputs reach every check
