"""`harken keys generate --name release`, `keys id`, `model release`, `verify --release-key`, `inspect`,
and the registry storing a registered model's release: the real commands on real files and keys."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cloud.cli.keys import group as keys_group
from cloud.cli.model import group as model_group
from shared import keys
from shared.bundle import load_bundle
from shared.errors import ConfigError, ReleaseExpiredError
from shared.release import read_release
from tests.cloud.rollout.conftest import make_bundle


def run(group, *args):
    result = CliRunner().invoke(group, [str(a) for a in args])
    return result


@pytest.fixture
def lab(tmp_path):
    """(bundle path, lab pub, release key, release pub) made with the real commands."""
    assert run(keys_group, "generate", tmp_path / "lab").exit_code == 0
    out = run(keys_group, "generate", tmp_path / "rel", "--name", "release")
    assert out.exit_code == 0 and "release.key" in out.output
    key_id = keys.public_key_id(keys.load_public_key(tmp_path / "rel" / "release.pub"))
    assert key_id in out.output and run(keys_group, "id", tmp_path / "rel" / "release.pub").output.startswith(key_id)
    path = tmp_path / "kws.hkb"
    path.write_bytes(make_bundle(keys.load_private_key(tmp_path / "lab" / "signing.key")))
    return path, tmp_path / "lab" / "signing.pub", tmp_path / "rel" / "release.key", tmp_path / "rel" / "release.pub"


def test_release_then_verify_and_inspect_show_it(lab, tmp_path):
    path, lab_pub, rel_key, rel_pub = lab
    before = run(model_group, "verify", path, "--public-key", lab_pub)
    assert before.exit_code == 0 and "no release" in before.output and "harken model release" in before.output
    out = run(model_group, "release", path, "--release-key", rel_key, "--version", 4, "--expires", "2d",
              "--max-automation", "partial", "--probation-floor", "utterances=5", "--public-key", lab_pub, "--json")
    assert out.exit_code == 0, out.output
    rel = json.loads(out.output)
    assert (rel["version"], rel["max_automation"], rel["probation_floor"]) == (4, "partial", {"utterances": 5})
    verified = run(model_group, "verify", path, "--public-key", lab_pub, "--release-key", rel_pub)
    assert verified.exit_code == 0 and "release verified: kws version 4" in verified.output
    shown = json.loads(run(model_group, "inspect", path, "--json").output)
    assert shown["release"]["version"] == 4 and shown["model_sha256"] == rel["model_sha256"]
    wrong = run(model_group, "verify", path, "--public-key", lab_pub, "--release-key", lab_pub)
    assert wrong.exit_code == 1 and "not signed by a trusted release key" in str(wrong.exception)
    bad = run(model_group, "release", path, "--release-key", rel_key, "--version", 5, "--probation-floor", "off=1")
    assert bad.exit_code == 2 and "utterances" in bad.output


def test_an_expired_release_fails_verify_and_the_lab_key_check_comes_first(lab, tmp_path):
    path, lab_pub, rel_key, rel_pub = lab
    assert run(model_group, "release", path, "--release-key", rel_key, "--version", 1, "--expires", "0s").exit_code == 0
    expired = run(model_group, "verify", path, "--public-key", lab_pub, "--release-key", rel_pub)
    assert isinstance(expired.exception, ReleaseExpiredError)
    _, stranger = keys.generate_keypair(tmp_path / "stranger")
    refused = run(model_group, "release", path, "--release-key", rel_key, "--version", 2, "--public-key", stranger)
    assert refused.exit_code == 1 and "unknown key" in str(refused.exception)


def test_the_registry_stores_a_new_release_of_a_registered_model(lab, tmp_path, store):
    from cloud.registry import Registry

    path, lab_pub, rel_key, rel_pub = lab
    registry = Registry(store, tmp_path / "registry", [keys.load_public_key(lab_pub)])
    first, new = registry.register(path)
    assert new and registry.bundle(first.sha256).release is None
    assert run(model_group, "release", path, "--release-key", rel_key, "--version", 1).exit_code == 0
    again, new = registry.register(path)
    assert not new and again.sha256 == first.sha256 and again.bundle_sha256 != first.bundle_sha256
    assert read_release(registry.bundle(first.sha256)).version == 1  # what a rollout publishes now
    other = make_bundle(keys.load_private_key(lab_pub.with_name("signing.key")), acc=0.5)  # same model bytes
    with pytest.raises(ConfigError, match="from other bundle bytes"):
        registry.register(other)
    assert load_bundle(registry.bundle(first.sha256).raw, None, require_signature=False).release is not None


def test_model_show_says_whether_the_registered_bundle_is_released(lab, tmp_path):
    path, lab_pub, rel_key, _ = lab
    db = f"sqlite:///{tmp_path / 'h.db'}"
    common = ["--db", db, "--registry", tmp_path / "registry"]
    assert run(model_group, "register", path, "--public-key", lab_pub, *common).exit_code == 0
    assert "none: devices that require releases refuse it" in run(model_group, "show", "kws:1", *common).output
    assert run(model_group, "release", path, "--release-key", rel_key, "--version", 3).exit_code == 0
    assert run(model_group, "register", path, "--public-key", lab_pub, *common).exit_code == 0
    assert "version 3 by key" in run(model_group, "show", "kws:1", *common).output
