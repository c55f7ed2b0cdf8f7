"""Build Harken's sdist and wheel from a copy of the tree, and make clean venvs of one role each.

A role's venv is what a user gets from the README's line (`pip install harken`, `pip install
'harken[collector]'`, `pip install 'harken[lab]'`) with the built wheel in place of the index's
name: no system site packages, no PYTHONPATH, dependencies from the index through pip's cache.
It is made without pip of its own (this interpreter's pip installs into it) and without
compiling bytecode, which takes a lab venv from ~30 s to ~6 s.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


def tracked_files() -> list[str]:
    """The tree as a clean clone has it (plus new files not yet committed, never ignored ones)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def build(workdir: Path) -> Dist:
    """sdist, then the wheel from the unpacked sdist (so the sdist is proven complete)."""
    src = workdir / "src"
    for name in tracked_files():
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    out = workdir / "dist"
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Dist(wheel=next(out.glob("harken-*.whl")), sdist=next(out.glob("harken-*.tar.gz")))


def clean_env(**extra: str) -> dict[str, str]:
    """This environment less what would let a venv see the source tree or the test settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARKEN_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p)
    return {**env, **extra}


@dataclass(frozen=True)
class RoleEnv:
    role: str
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def harken(self) -> Path:
        return self.path / "bin" / "harken"

    def run(self, *argv: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in argv], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                              timeout=timeout, **kwargs)


def role_env(workdir: Path, dist: Dist, role: str) -> RoleEnv:
    """A clean venv with the wheel and one extra (``base``: none)."""
    requirement = str(dist.wheel) if role == "base" else f"{dist.wheel}[{role}]"
    return _venv_with(workdir / f"venv-{role}", role, requirement)


def editable_env(workdir: Path, source: Path) -> RoleEnv:
    """A clean venv with ``pip install -e source`` alone (no dependencies)."""
    return _venv_with(workdir / "venv-editable", "editable", "--no-deps", "-e", str(source))


def _venv_with(path: Path, role: str, *pip_args: str) -> RoleEnv:
    venv.EnvBuilder(with_pip=False, system_site_packages=False, clear=True).create(path)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install",
                           "--quiet", "--no-compile", "--disable-pip-version-check", *pip_args],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return RoleEnv(role, path)


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
