"""The registry on both store engines: verify, store immutably, lineage, aliases, diff."""
from __future__ import annotations

import pytest

from cloud.registry import Registry
from cloud.registry_diff import diff_models, psi
from shared.bundle import load_bundle, sha256_hex
from shared.errors import BundleError, BundleTamperedError, ConfigError, SignatureError

from tests.cloud.rollout.conftest import files_in, make_bundle, profile_for


def test_register_verifies_stores_by_sha_and_records_lineage(registry, signing, tmp_path):
    data = make_bundle(signing[0], version="1", seed=3, parent="f" * 64)
    rec, new = registry.register(data, now=1000.0)
    bundle = load_bundle(data, [signing[1]])
    assert new and rec.sha256 == bundle.sha256 and rec.bundle_sha256 == sha256_hex(data)
    assert files_in(registry.directory) == [f"{rec.sha256}.hkb"]  # no temp files left behind
    assert (registry.directory / f"{rec.sha256}.hkb").read_bytes() == data
    assert (rec.run_id, rec.dataset_hash, rec.parent) == ("run-3", "ds-1", "f" * 64)
    assert rec.label == "kws:1" and rec.registered_t == 1000.0 and rec.size_bytes == len(data)
    assert rec.metrics["accuracy"] == 0.9 and rec.signer and len(rec.signer) == 16
    again, new_again = registry.register(data)
    assert not new_again and again == rec
    assert [m.sha256 for m in registry.list()] == [rec.sha256]


def test_a_bundle_signed_by_an_unknown_key_is_refused(registry, other_signing):
    with pytest.raises(SignatureError):
        registry.register(make_bundle(other_signing[0]))
    assert registry.list() == []
    assert not registry.directory.exists() or files_in(registry.directory) == []


def test_a_version_names_one_model_only(registry, signing):
    registry.register(make_bundle(signing[0], version="1", seed=1))
    with pytest.raises(ConfigError, match="kws:1 is already registered"):
        registry.register(make_bundle(signing[0], version="1", seed=2))


def test_resolve_by_alias_label_and_sha_prefix(registry, signing):
    a, _ = registry.register(make_bundle(signing[0], version="1", seed=1), now=1.0)
    b, _ = registry.register(make_bundle(signing[0], version="2", seed=2), now=2.0)
    assert registry.resolve("kws:2") == b
    assert registry.resolve(a.sha256[:8]).sha256 == a.sha256
    registry.set_alias("production", "kws:1")
    registry.set_alias("candidate", b.sha256[:10])
    assert registry.resolve("production").sha256 == a.sha256
    assert registry.resolve("candidate").aliases == ("candidate",)
    moved = registry.set_alias("production", "kws:2")
    assert moved.aliases == ("candidate", "production") and registry.aliases()["production"] == b.sha256
    with pytest.raises(ConfigError, match="no model 'kws:9'"):
        registry.resolve("kws:9")
    with pytest.raises(ConfigError, match="must start with a letter"):
        registry.set_alias("abcdef12", "kws:1")
    assert registry.get("nothing") is None


def test_bundle_reads_back_verified_and_notices_a_damaged_file(registry, signing):
    rec, _ = registry.register(make_bundle(signing[0]))
    assert registry.bundle("kws:1").sha256 == rec.sha256
    path = registry.directory / f"{rec.sha256}.hkb"
    data = bytearray(path.read_bytes())
    at = data.index(b"model.onnx", 100) + 40  # inside the stored model bytes
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt"):
        registry.bundle("kws:1")
    path.write_bytes(make_bundle(signing[0], version="1", seed=9))  # valid, signed, but another model
    with pytest.raises(BundleTamperedError, match="no longer matches model"):
        registry.bundle("kws:1")


def test_registry_survives_reopening_the_store(store_url, tmp_path, signing):
    from cloud.store import open_store

    with open_store(store_url) as s1:
        rec, _ = Registry(s1, tmp_path / "reg", [signing[1]]).register(make_bundle(signing[0]))
        Registry(s1, tmp_path / "reg", [signing[1]]).set_alias("production", "kws:1")
    with open_store(store_url) as s2:
        reg = Registry(s2, tmp_path / "reg", [signing[1]])
        assert reg.resolve("production").sha256 == rec.sha256
        assert "registry_0001_models_aliases" in s2.applied_migrations()


def test_diff_compares_metrics_and_reference_profiles(registry, signing):
    base = profile_for(1)
    shifted = profile_for(1, shift=0.0, label_bias=0.15)
    shifted["features"] = dict(base["features"])  # same edges and counts for f0..f2: PSI 0
    shifted["features"]["counts"] = [list(c) for c in base["features"]["counts"]]
    n_bins = len(base["features"]["counts"][1])
    shifted["features"]["counts"][1] = [200 if i in (0, n_bins - 1) else 0 for i in range(n_bins)]  # tails only
    a, _ = registry.register(make_bundle(signing[0], version="1", seed=1, acc=0.80, profile=base))
    b, _ = registry.register(make_bundle(signing[0], version="2", seed=3, acc=0.90, profile=shifted))
    d = diff_models(a, b)
    assert d["metrics"]["accuracy"] == {"a": 0.8, "b": 0.9, "delta": 0.1}
    assert d["metrics"]["macro_f1"]["delta"] == pytest.approx(0.1)
    assert d["metrics"]["per_class_f1"]["down"] == {"a": 0.77, "b": 0.87, "delta": 0.1}
    feats = {f["name"]: f for f in d["profile"]["features"]}
    assert feats["f0"]["psi"] == 0.0 and feats["f2"]["psi"] == 0.0
    assert feats["f1"]["psi"] == pytest.approx(psi(base["features"]["counts"][1], shifted["features"]["counts"][1]),
                                               abs=1e-6) and feats["f1"]["psi"] > 0.1
    assert d["profile"]["labels"]["psi"] > 0.05  # the label mix moved towards "yes"
    assert d["profile"]["labels"]["b"]["yes"] > d["profile"]["labels"]["a"]["yes"]
    assert d["same_dataset"]  # seeds 1 and 3 are both trained on dataset ds-1
    other = profile_for(2, shift=3.0)  # different data: different decile edges
    c, _ = registry.register(make_bundle(signing[0], version="3", seed=5, profile=other))
    d2 = diff_models(a, c)
    assert all(not f["comparable"] and f["why"] == "bin edges differ" for f in d2["profile"]["features"])
    assert set(d2["profile"]["scalars"]) == {"utterance_ms", "level_dbfs", "snr_db", "confidence"}
