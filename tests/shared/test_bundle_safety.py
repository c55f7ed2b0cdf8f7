"""Signature first, bounded: the loader refuses bombs, compressed, appended and overlapping members.

Each test builds the hostile file for real (``zipfile`` with deflate, an appended member, a
hand-edited end record) and measures what loading it allocates with ``tracemalloc``.
"""
from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile

import pytest
from click.testing import CliRunner

from shared import keys
from shared.bundle import MAX_MANIFEST_BYTES, build_bundle, load_bundle
from shared.bundle_zip import MAX_MEMBERS
from shared.errors import (BundleCompressedError, BundleLayoutError, BundleLimitError, SignatureError,
                           UnlistedMemberError)

MANIFEST = {"name": "kws", "version": "1", "labels": ["yes", "no"], "sample_rate": 16000, "input_samples": 16000,
            "placement": "centre", "opset": {"": 17},
            "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}}
BOMB_BYTES = 300 * 1024 * 1024


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    priv, pub = keys.generate_keypair(tmp_path_factory.mktemp("keys"))
    return keys.load_private_key(priv), keys.load_public_key(pub), pub


@pytest.fixture(scope="module")
def good(keypair):
    return build_bundle(b"\x08\x01" * 4000, MANIFEST, keypair[0], {"test_vectors.npy": b"vectors" * 100})


@pytest.fixture(scope="module")
def bomb():
    """An unsigned bundle whose model.onnx inflates from ~300 KB to 300 MB (the review's file)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr(zipfile.ZipInfo("manifest.json"), json.dumps(dict(MANIFEST, format="harken-bundle/1")))
        info = zipfile.ZipInfo("model.onnx")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as f:
            chunk = bytes(1024 * 1024)
            for _ in range(BOMB_BYTES // len(chunk)):
                f.write(chunk)
    return buf.getvalue()


def peak_bytes(fn) -> tuple[int, BaseException | None]:
    """(bytes allocated at the peak of ``fn()`` above what was allocated before, what it raised)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    error = None
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned to the test
        error = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base, error


def rezip(data: bytes, change=None, compression=zipfile.ZIP_STORED) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    if change is not None:
        members = change(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for name, body in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), body, compress_type=compression)
    return out.getvalue()


def test_the_300_mb_bomb_is_refused_without_inflating_it(bomb, keypair):
    assert len(bomb) < 400 * 1024  # ~300 KB on disk
    peak, error = peak_bytes(lambda: load_bundle(bomb, [keypair[1]]))
    assert isinstance(error, BundleCompressedError), error
    assert "model.onnx is compressed" in str(error) and "harken model train" in str(error)
    assert peak < 2 * len(bomb) + 256 * 1024, f"loading took {peak} bytes"  # was 300 MB before the fix
    peak, error = peak_bytes(lambda: load_bundle(bomb, None, require_signature=False))  # inspect too
    assert isinstance(error, BundleCompressedError) and peak < 2 * len(bomb) + 256 * 1024


def test_a_deflated_member_is_refused_even_when_everything_else_verifies(good, keypair):
    deflated = rezip(good, compression=zipfile.ZIP_DEFLATED)  # same bytes, same signature, compressed
    with pytest.raises(BundleCompressedError, match="stored zips"):
        load_bundle(deflated, [keypair[1]])
    assert load_bundle(good, [keypair[1]]).model_bytes  # the stored original is fine


def test_an_appended_member_is_refused_by_the_loader_and_by_model_verify(good, keypair, tmp_path):
    from cloud.cli.model import group

    path = tmp_path / "kws.hkb"
    path.write_bytes(good)
    with zipfile.ZipFile(path, "a") as zf:  # what an attacker does to a signed bundle
        zf.writestr("payload.bin", b"not listed anywhere")
    with pytest.raises(UnlistedMemberError, match=r"\['payload.bin'\].*does not list"):
        load_bundle(path, [keypair[1]])
    result = CliRunner().invoke(group, ["verify", str(path), "--public-key", str(keypair[2])])
    assert result.exit_code == 1 and "payload.bin" in str(result.exception)
    assert "match" not in result.output


def test_signature_is_checked_before_the_members_are_read(good, keypair, tmp_path):
    _, other = keys.generate_keypair(tmp_path)
    # a huge (stored) member in a bundle signed by someone else: refused before it is copied
    big = rezip(good, lambda ms: [*ms, ("model.onnx.pad", bytes(8 * 1024 * 1024))])
    peak, error = peak_bytes(lambda: load_bundle(big, [keys.load_public_key(other)]))
    assert isinstance(error, SignatureError) and peak < 1024 * 1024, (error, peak)


def test_member_count_and_manifest_size_are_capped(good, keypair):
    many = rezip(good, lambda ms: [*ms, *((f"x{i}", b"") for i in range(MAX_MEMBERS))])
    with pytest.raises(BundleLimitError, match=f"at most {MAX_MEMBERS}"):
        load_bundle(many, [keypair[1]])
    # an end record claiming 65 534 entries is refused before the directory is parsed
    forged = good[:-22] + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 65534, 65534,
                                      *struct.unpack_from("<2L", good, len(good) - 10), 0)
    with pytest.raises(BundleLimitError):
        load_bundle(forged, [keypair[1]])
    huge = build_bundle(b"m", dict(MANIFEST, padding="x" * MAX_MANIFEST_BYTES), keypair[0])
    with pytest.raises(BundleLimitError, match="manifest.json is"):
        load_bundle(huge, [keypair[1]])


def test_duplicate_names_trailing_bytes_and_folders_are_layout_errors(good, keypair):
    with pytest.warns(UserWarning):  # zipfile warns, then writes the duplicate anyway
        dup = rezip(good, lambda ms: [*ms, ms[2]])
    with pytest.raises(BundleLayoutError, match="appears twice"):
        load_bundle(dup, [keypair[1]])
    with pytest.raises(BundleLayoutError, match="after the end of its zip"):
        load_bundle(good + b"appended", [keypair[1]])
    with pytest.raises(BundleLayoutError, match="plain file name"):
        load_bundle(rezip(good, lambda ms: [*ms, ("../../etc/x", b"")]), [keypair[1]])


def test_overlapping_members_are_refused(good, keypair):
    """Two central-directory entries pointing at the same bytes (the 'overlapping files' bomb)."""
    data = bytearray(good)
    cd_offset = struct.unpack_from("<L", data, len(data) - 6)[0]
    second = cd_offset + 46 + struct.unpack_from("<H", data, cd_offset + 28)[0]
    third = second + 46 + struct.unpack_from("<H", data, second + 28)[0]
    struct.pack_into("<L", data, third + 42, struct.unpack_from("<L", data, second + 42)[0])
    with pytest.raises(BundleLayoutError):
        load_bundle(bytes(data), [keypair[1]])
