"""The wheel as a user installs it: its contents, each role alone in a clean venv, a smoke test per role.

The roles chain as the README's story does: the lab venv synthesizes a tiny dataset and trains a
signed bundle, the device venv replays speech through that bundle, the collector venv serves the
dashboard and its API on a private broker. Each venv holds one role's extra only, so a module a role
needs but does not declare fails here (``test_extras.py`` checks the same statically).
"""
from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import tarfile
import time
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.brokers import Mosquitto, free_port, wait_port
from tests.packaging import roles, wheels

SMOKE_ROLES = ("base", "collector", "lab", "serve")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="module")
def dist(workdir) -> wheels.Dist:
    return wheels.build(workdir)


@pytest.fixture(scope="module")
def role_envs(workdir, dist) -> dict[str, wheels.RoleEnv]:
    with ThreadPoolExecutor(2) as pool:  # pip waits on unpacking and on the index: two at a time
        made = pool.map(lambda role: wheels.role_env(workdir, dist, role), SMOKE_ROLES)
        return dict(zip(SMOKE_ROLES, made))


def _wheel_names(dist) -> list[str]:
    with zipfile.ZipFile(dist.wheel) as zf:
        return zf.namelist()


def test_the_wheel_installs_one_import_root_with_every_file_of_the_tree(dist):
    names = _wheel_names(dist)
    tops = {n.split("/")[0] for n in names}
    assert tops == {"harken", "harken-0.1.0.dist-info", "harken_legacy_names.pth"}, tops
    tracked = [f for f in wheels.tracked_files() if f.split("/")[0] in roles.PACKAGES]
    missing = [f for f in tracked if f"harken/{f}" not in names]
    assert not missing, f"files of the tree not in the wheel: {missing}"
    assert {f"harken/cloud/dashboard/{f}" for f in ("index.html", "app.js", "style.css")} <= set(names)


def test_the_wheels_code_imports_only_through_harken(dist):
    """The build moved every absolute import (and module-naming string) under `harken.`."""
    old = []
    with zipfile.ZipFile(dist.wheel) as zf:
        for name in (n for n in zf.namelist() if n.endswith(".py")):
            tree = ast.parse(zf.read(name))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and not node.level:
                    modules = [node.module]
                elif isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" not in node.value:
                    modules = [node.value] if roles.PACKAGES_RE.fullmatch(node.value) else []
                else:
                    continue
                old += [f"{name}:{node.lineno} {m}" for m in modules if m.split(".")[0] in roles.PACKAGES]
    assert not old, old[:20]


def test_the_metadata_names_the_license_and_every_role(dist):
    with zipfile.ZipFile(dist.wheel) as zf:
        meta = zf.read("harken-0.1.0.dist-info/METADATA").decode()
        entry_points = zf.read("harken-0.1.0.dist-info/entry_points.txt").decode()
    assert "License-Expression: Apache-2.0" in meta
    assert {line.split(": ")[1] for line in meta.splitlines() if line.startswith("Provides-Extra")} == \
        {"mic", "serve", "collector", "lab", "cloud", "dev"}
    assert "harken = harken.shared.cli:run" in entry_points
    with tarfile.open(dist.sdist) as tf:
        sdist = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"setup.py", "build_support/wheel_build.py", "build_support/harken_legacy_names.pth", "LICENSE",
            "cloud/dashboard/index.html"} <= sdist


@pytest.mark.parametrize("role", SMOKE_ROLES)
def test_each_role_imports_its_modules_with_only_its_extra(role, role_envs, tmp_path):
    env = role_envs[role]
    known = roles.modules()
    reach = {role} | roles.INCLUDES[role]
    mine = sorted(n for n in known if roles.owner(n) in reach)
    others = {n for m in known.values() if roles.owner(m.name) not in reach for n in roles.third_party(m.eager)}
    foreign = sorted(others - {n for m in mine for n in roles.third_party(known[m].eager | known[m].lazy)})
    job = {"modules": [f"harken.{m}" for m in mine], "foreign": foreign,
           "declared": sorted(roles.declared()[role])}
    done = env.run(env.python, Path(__file__).with_name("probe.py"), json.dumps(job), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["isolated"], "the venv sees the system's site-packages"
    assert foreign and answer["foreign"] == [], f"{role} has other roles' modules: {answer['foreign']}"


@pytest.fixture(scope="module")
def trained(role_envs, workdir) -> dict[str, Path]:
    """The lab's smoke test: keys, a tiny espeak-ng dataset and a trained, signed bundle."""
    lab, here = role_envs["lab"], workdir / "lab"
    here.mkdir()
    steps = [("keys", "generate", "keys"),
             ("data", "synth", "data", "--per-word", "6", "--seed", "0", "--engines", "espeak-ng",
              "--accents", "en-us,en-gb,en-sc", "--variants", "m3,f2"),
             ("model", "train", "data", "--out", "kws.hkb", "--key", "keys/signing.key", "--name", "kws",
              "--version", "1", "--runs-dir", "runs"),
             ("model", "verify", "kws.hkb", "--public-key", "keys/signing.pub")]
    for step in steps:
        done = lab.run(lab.harken, *step, cwd=here)
        assert done.returncode == 0, f"harken {' '.join(step)}: {done.stderr[-3000:]}"
    return {"bundle": here / "kws.hkb", "public_key": here / "keys" / "signing.pub", "data": here / "data"}


def test_lab_trains_a_bundle_on_a_tiny_dataset(trained):
    assert trained["bundle"].stat().st_size > 10_000


def test_base_replays_speech_through_the_labs_bundle(role_envs, trained, tmp_path):
    base = role_envs["base"]
    wavs = sorted(trained["data"].rglob("*.wav"))[:8]
    assert len(wavs) == 8
    done = base.run(base.harken, "agent", "replay", *wavs, "--bundle", trained["bundle"], "--trust-key",
                    trained["public_key"], "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    decisions = json.loads(done.stdout)["decisions"]
    assert decisions and all(d["label"] for d in decisions)
    # the lab's commands in a device install: one line naming the extra, exit 1
    refused = base.run(base.harken, "model", "train", trained["data"], "--out", "x.hkb", cwd=tmp_path)
    assert refused.returncode == 1 and "pip install 'harken[lab]'" in refused.stderr, refused.stderr[-2000:]


def test_base_keeps_the_old_import_names_for_one_release(role_envs, tmp_path):
    base = role_envs["base"]
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import shared.keys\nexcept DeprecationWarning as w: print('warned:', w)\n"
            "warnings.simplefilter('ignore')\n"
            "import shared.keys, harken.shared.keys, edge.agent, harken.edge.agent\n"
            "assert shared.keys is harken.shared.keys and edge.agent is harken.edge.agent\n"
            "assert harken.shared.keys.__spec__.name == 'harken.shared.keys'\n")
    done = base.run(base.python, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warned: importing 'shared' is deprecated" in done.stdout


def test_an_editable_install_finds_the_checkouts_names_without_harken_first(workdir, dist, tmp_path):
    """The source imports `shared`, `edge`, `cloud`: a fresh process of an editable install finds them
    (no PYTHONPATH), and `harken.X` is the same module object, not a second copy."""
    editable = wheels.editable_env(workdir, workdir / "src")  # the copy `dist` was built from
    code = ("import shared.errors, edge, cloud\n"
            "import harken.shared.errors\n"
            "assert harken.shared.errors is shared.errors\n"
            "print(shared.errors.__file__)\n")
    done = editable.run(editable.python, "-W", "error", "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(workdir / "src" / "shared" / "errors.py")


def test_collector_serves_the_dashboard_and_the_fleet(role_envs, tmp_path):
    collector = role_envs["collector"]
    broker = Mosquitto(tmp_path / "mosquitto").start()
    token = "smoke-" + "x" * 32
    (tmp_path / "api.token").write_text(token + "\n")
    (tmp_path / "api.token").chmod(0o600)
    port = free_port()
    proc = subprocess.Popen([str(collector.harken), "collector", "run", "--broker", broker.url, "--db",
                             f"sqlite:///{tmp_path / 'harken.db'}", "--http-port", str(port), "--http-token-file",
                             str(tmp_path / "api.token"), "--client-id", "smoke-collector"],
                            cwd=tmp_path, env=wheels.clean_env(), stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "collector.log", "wb"))
    try:
        wait_port(port, timeout=60, proc=proc)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<html" in page.lower() and "app.js" in page
        for asset in ("app.js", "pages/fleet.js", "style.css"):  # package data, not only the page
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/static/{asset}", timeout=10).status == 200
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/fleet",
                                         headers={"Authorization": f"Bearer {token}"})
        fleet = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert fleet["devices"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        broker.stop()
    assert code == 0, (tmp_path / "collector.log").read_text()[-3000:]


def test_the_readmes_install_lines_are_the_roles_installed_here():
    """README's `pip install` lines name the roles these venvs install (mic: PortAudio; cloud = collector + lab)."""
    readme = (roles.ROOT / "README.md").read_text()
    named = set(re.findall(r"pip install '?harken(?:\[(\w+)\])?'?", readme))
    installed = {"" if r == "base" else r for r in SMOKE_ROLES}
    assert {"", "collector", "lab"} <= named
    assert named - installed <= {"mic", "cloud"}, named - installed
