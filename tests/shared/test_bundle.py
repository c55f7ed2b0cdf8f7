import io
import json
import zipfile

import pytest

from shared import bundle as bundle_mod
from shared import keys
from shared.bundle import build_bundle, load_bundle, write_bundle
from shared.errors import (BundleTamperedError, BundleTruncatedError, BundleVersionError, NotABundleError,
                           OpsetUnsupportedError, SignatureError)

MANIFEST = {"name": "kws", "version": "1", "labels": ["yes", "no"], "sample_rate": 16000, "input_samples": 16000,
            "placement": "centre", "opset": {"": 17, "ai.onnx.ml": 3},
            "io": {"input": "audio", "label": "label", "probabilities": "probabilities", "features": "features"}}


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv, pub = keys.generate_keypair(d)
    return keys.load_private_key(priv), keys.load_public_key(pub)


@pytest.fixture
def good(keypair):
    return build_bundle(b"model-bytes", MANIFEST, keypair[0], {"test_vectors.npy": b"vectors"})


def _rezip(data: bytes, change) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    change(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return out.getvalue()


def test_round_trip_verifies_and_exposes_members(good, keypair):
    b = load_bundle(good, [keypair[1]])
    assert b.sha256 == bundle_mod.sha256_hex(b"model-bytes")
    assert b.model_bytes == b"model-bytes"
    assert b.files == {"test_vectors.npy": b"vectors"}
    assert b.labels == ["yes", "no"] and b.input_samples == 16000


def test_same_inputs_give_the_same_bundle_bytes_up_to_the_signature(keypair):
    a = build_bundle(b"m", MANIFEST, keypair[0])
    b = build_bundle(b"m", MANIFEST, keypair[0])
    assert a == b  # Ed25519 signatures are deterministic


def test_write_bundle_is_atomic_and_returns_the_model_sha(tmp_path, keypair):
    sha = write_bundle(tmp_path / "m.hkb", b"abc", MANIFEST, keypair[0])
    assert sha == bundle_mod.sha256_hex(b"abc")
    assert [p.name for p in tmp_path.iterdir()] == ["m.hkb"]


def test_not_a_bundle(keypair):
    with pytest.raises(NotABundleError, match="not a Harken bundle"):
        load_bundle(b"hello world", [keypair[1]])
    plain_zip = _rezip(build_bundle(b"m", MANIFEST, keypair[0]), lambda m: m.pop("manifest.json"))
    with pytest.raises(NotABundleError):
        load_bundle(plain_zip, [keypair[1]])


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated(good, keypair, cut):
    with pytest.raises(BundleTruncatedError):
        load_bundle(good[: int(len(good) * cut)], [keypair[1]])


def test_empty_file_is_truncated(tmp_path, keypair):
    p = tmp_path / "empty.hkb"
    p.write_bytes(b"")
    with pytest.raises(BundleTruncatedError, match="empty"):
        load_bundle(p, [keypair[1]])


def test_tampered_model(good, keypair):
    bad = _rezip(good, lambda m: m.__setitem__("model.onnx", b"evil-bytes"))
    with pytest.raises(BundleTamperedError, match="model.onnx"):
        load_bundle(bad, [keypair[1]])


def test_tampered_extra_file(good, keypair):
    bad = _rezip(good, lambda m: m.__setitem__("test_vectors.npy", b"other"))
    with pytest.raises(BundleTamperedError, match="test_vectors"):
        load_bundle(bad, [keypair[1]])


def test_edited_manifest_breaks_the_signature(good, keypair):
    def edit(m):
        man = json.loads(m["manifest.json"])
        man["labels"] = ["no", "yes"]
        m["manifest.json"] = json.dumps(man).encode()
    with pytest.raises(SignatureError):
        load_bundle(_rezip(good, edit), [keypair[1]])


def test_missing_signature(good, keypair):
    with pytest.raises(SignatureError, match="not signed"):
        load_bundle(_rezip(good, lambda m: m.pop("manifest.sig")), [keypair[1]])
    # inspection may still read it
    assert load_bundle(_rezip(good, lambda m: m.pop("manifest.sig")), None, require_signature=False).signature is None


def test_signed_by_an_untrusted_key(good, tmp_path):
    _, other_pub = keys.generate_keypair(tmp_path)
    with pytest.raises(SignatureError, match="unknown key"):
        load_bundle(good, [keys.load_public_key(other_pub)])
    with pytest.raises(SignatureError, match="no trusted public key"):
        load_bundle(good, [])


def test_unknown_format_version(keypair):
    data = build_bundle(b"m", MANIFEST, keypair[0])
    def bump(m):  # a newer lab's bundle: its own (trusted) signature over the new manifest
        man = json.loads(m["manifest.json"])
        man["format"] = "harken-bundle/9"
        m["manifest.json"] = json.dumps(man).encode()
        m["manifest.sig"] = keys.sign(keypair[0], m["manifest.json"])
    with pytest.raises(BundleVersionError, match="upgrade Harken"):
        load_bundle(_rezip(data, bump), [keypair[1]])


def test_opset_newer_than_onnxruntime(keypair):
    data = build_bundle(b"m", dict(MANIFEST, opset={"": 99}), keypair[0])
    with pytest.raises(OpsetUnsupportedError, match="opset 99"):
        load_bundle(data, [keypair[1]])


def test_error_codes_are_distinct():
    codes = {c.code for c in (NotABundleError, BundleTruncatedError, BundleTamperedError, SignatureError,
                              BundleVersionError, OpsetUnsupportedError)}
    assert len(codes) == 6
