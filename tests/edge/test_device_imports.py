"""A device installs only the base dependencies: running the agent must import nothing else.

The real entry point runs in a fresh interpreter (``harken agent replay`` on a WAV, ``harken agent
run`` offline on the same WAV); every top-level module it imported must be the standard library,
Harken's ``edge`` / ``shared``, or a module of a distribution the base dependencies of
pyproject.toml pull in (their closure, read from the installed metadata).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from shared.audio import write_wav

ROOT = Path(__file__).resolve().parents[2]
NEVER = {"cloud", "sklearn", "skl2onnx", "onnx", "scipy", "psycopg", "fastapi", "uvicorn", "matplotlib", "msgspec",
         "tests"}
# top-level names a distribution's compiled extension registers without a file of its own
REGISTERED_BY = {"_openssl": "cryptography"}
RUN_AND_LIST = (
    "import atexit, json, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted({m.split('.')[0] for m in sys.modules}))))\n"
    "sys.argv[0] = 'harken'\n"
    "from shared.cli import run\n"
    "run()\n")


def _requirement_name(spec: str) -> str | None:
    if "extra ==" in spec:  # optional extras are not installed on a device
        return None
    return re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0)


def base_closure() -> set[str]:
    """Distributions the base dependencies need, transitively (markers other than extras kept: a superset)."""
    todo = [_requirement_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name is None or name.lower() in seen:
            continue
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:  # a marker-excluded requirement (tomli on 3.11)
            continue
        seen.add(name.lower())
        todo += [_requirement_name(r) for r in requires]
    return seen


def top_level_modules(distribution: str) -> set[str]:
    dist = md.distribution(distribution)
    tops = set((dist.read_text("top_level.txt") or "").split())
    for f in dist.files or []:
        first = f.parts[0]
        if first.endswith((".dist-info", ".data")) or first == "..":
            continue
        tops.add(first.split(".")[0])
    return tops


@pytest.fixture(scope="module")
def allowed() -> set[str]:
    names = set(sys.stdlib_module_names) | {"edge", "shared", "__main__", "builtins", "sys"}
    closure = base_closure()
    for dist in closure:
        names |= top_level_modules(dist)
    names |= {name for name, dist in REGISTERED_BY.items() if dist in closure}
    return names


@pytest.fixture(scope="module")
def at_startup(tmp_path_factory) -> set[str]:
    """What the interpreter imports before any code runs (site hooks of this environment)."""
    listing = tmp_path_factory.mktemp("startup") / "modules.json"
    code = f"import json, sys; open({str(listing)!r}, 'w').write(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    return set(json.loads(listing.read_text()))


def imported_by(args: list[str], tmp_path: Path) -> set[str]:
    listing = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", RUN_AND_LIST, str(listing), *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(listing.read_text()))


def test_the_base_closure_is_what_a_device_installs():
    closure = base_closure()
    assert {"numpy", "onnxruntime", "webrtcvad-wheels", "paho-mqtt", "cryptography", "click"} <= closure
    assert not closure & {"scikit-learn", "skl2onnx", "onnx", "scipy", "psycopg", "fastapi"}


def test_running_the_agent_imports_only_its_base_dependencies(tmp_path, speech, bundle_paths, signing,
                                                              release_signing, allowed, at_startup):
    wav = tmp_path / "speech.wav"
    write_wav(wav, speech[0][:16000 * 8])
    replay = imported_by(["agent", "replay", str(wav), "--bundle", str(bundle_paths[0]), "--trust-key",
                          str(signing[2]), "--json"], tmp_path)
    run = imported_by(["agent", "run", "--device-id", "imports-1", "--source", str(wav), "--bundle",
                       str(bundle_paths[0]), "--trust-keys", str(signing[2]), "--release-keys",
                       str(release_signing[2]), "--state-dir", str(tmp_path / "state"),
                       "--decisions", str(tmp_path / "decisions.jsonl")], tmp_path)
    for what, modules in (("agent replay", replay - at_startup), ("agent run", run - at_startup)):
        assert {"edge", "onnxruntime", "webrtcvad", "numpy"} <= modules, what  # it really ran
        assert not modules & NEVER, f"{what} imported {sorted(modules & NEVER)}"
        assert modules <= allowed, f"{what} imported modules outside the base dependencies: {sorted(modules - allowed)}"
    assert (tmp_path / "decisions.jsonl").read_text().count("\n") >= 3


def test_the_agent_commands_load_their_configuration_without_the_audio_stack(tmp_path):
    """``harken agent feedback`` and the rest import ``edge.cli`` and ``edge.config``, not numpy or webrtcvad
    (``GateConfig`` comes from ``shared.gate_config``)."""
    listing = tmp_path / "modules.json"
    code = (f"import json, sys, edge.cli; open({str(listing)!r}, 'w')"
            ".write(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=tmp_path)
    modules = set(json.loads(listing.read_text()))
    assert "edge" in modules and not modules & {"numpy", "webrtcvad", "onnxruntime", "paho"}
