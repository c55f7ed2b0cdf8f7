"""The operations files: systemd units and container files name real settings and commands, keep
secrets out of Environment= and command lines, and pass `systemd-analyze verify`.

No Docker daemon runs here, so the images are not built: their Dockerfiles and the compose file
are checked as text against the tree (what they copy exists, what they install is a role's extra,
what they run is a real `harken` command, every HARKEN_* variable is a real setting).
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.cli import root
from tests.docs_commands import check

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
DOCKERFILES = {p.name.split(".")[1]: p for p in (ROOT / "deploy" / "docker").glob("Dockerfile.*")}
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "CapabilityBoundingSet=", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
             "RestrictSUIDSGID=yes", "UMask=0077")


def _settings() -> dict[str, set[str]]:
    from cloud.config import CollectorConfig
    from edge.config import AgentConfig

    return {"HARKEN_AGENT_": {f.name for f in dataclasses.fields(AgentConfig)},
            "HARKEN_COLLECTOR_": {f.name for f in dataclasses.fields(CollectorConfig)}}


def _check_variable(name: str, value: str) -> None:
    if name in ("HARKEN_DB", "HARKEN_RUNS_DIR"):
        assert "@" not in value, f"{name} holds credentials: put it in an EnvironmentFile (0600)"
        return
    for prefix, fields in _settings().items():
        if name.startswith(prefix):
            assert name[len(prefix):].lower() in fields, f"{name} is no setting (see docs/configuration.md)"
            if re.search("PASSWORD|TOKEN", name):
                assert name.endswith("_FILE"), f"{name}: a secret goes in a file, never in the environment"
            return
    raise AssertionError(f"{name} is not a Harken variable")


def _unit(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in path.read_text().splitlines()
            if line and not line.startswith(("#", "[")) and "=" in line]


def _harken_argv(command: list[str]) -> list[str]:
    assert Path(command[0]).name == "harken", command
    return command[1:]


def test_there_is_a_unit_per_long_running_role():
    assert [u.name for u in UNITS] == ["harken-agent.service", "harken-collector.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_unit_runs_a_real_command_with_real_settings_and_no_secret_in_sight(unit):
    entries = _unit(unit)
    keys = {k for k, _ in entries}
    text = unit.read_text()
    assert ("DynamicUser", "yes") in entries or dict(entries).get("User") not in (None, "root")
    assert {"StateDirectory", "LoadCredential"} <= keys
    assert all(h in text for h in HARDENING), [h for h in HARDENING if h not in text]
    exec_start = shlex.split(dict(entries)["ExecStart"])
    assert check(root, _harken_argv(exec_start)) is None
    assert not any(re.search("password|token", a, re.I) and not a.startswith("--config") for a in exec_start)
    for key, value in entries:
        if key == "Environment":
            for assignment in shlex.split(value):
                name, _, val = assignment.partition("=")
                _check_variable(name, val)
                if name.endswith("_FILE") and re.search("PASSWORD|TOKEN", name):
                    assert val.startswith("%d/"), f"{name} should name a credential (%d/...)"
    for key, value in entries:
        if key == "LoadCredential":
            assert value.split(":", 1)[1].startswith("/etc/harken/")


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: scripts/setup.sh installs Debian's systemd package"
    return tool


def _runnable_copy(unit: Path, folder: Path) -> Path:
    """The unit with ExecStart's /opt/harken/bin/harken pointed at this environment's (verify runs it)."""
    here = Path(sys.executable).parent / "harken"
    copy = folder / unit.name
    copy.write_text(unit.read_text().replace("/opt/harken/bin/harken", str(here if here.exists() else sys.executable)))
    return copy


def test_the_units_pass_systemd_analyze_verify(systemd_analyze, tmp_path):
    copies = [_runnable_copy(u, tmp_path) for u in UNITS]
    done = subprocess.run([systemd_analyze, "verify", *map(str, copies)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr  # unknown keys are only warned about


def test_the_units_exposure_is_low(systemd_analyze, tmp_path):
    for unit in UNITS:
        copy = _runnable_copy(unit, tmp_path)
        done = subprocess.run([systemd_analyze, "security", "--offline=yes", "--threshold=25", "--no-pager",
                               str(copy)], capture_output=True, text=True, timeout=60)
        level = float(re.search(r"exposure level for \S+: (\d+\.\d)", done.stdout).group(1))
        assert done.returncode == 0 and level <= 2.5, done.stdout[-2000:]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_there_is_a_dockerfile_per_role():
    assert sorted(DOCKERFILES) == ["agent", "collector", "lab"]


@pytest.mark.parametrize("role", ["agent", "collector", "lab"])
def test_each_dockerfile_builds_the_wheel_and_installs_its_role(role):
    steps = _instructions(DOCKERFILES[role])
    known = {"FROM", "RUN", "COPY", "WORKDIR", "USER", "ENV", "ARG", "VOLUME", "EXPOSE", "ENTRYPOINT", "CMD",
             "HEALTHCHECK"}
    assert {k for k, _ in steps} <= known
    ignored = (ROOT / ".dockerignore").read_text().split()
    for key, value in steps:
        if key == "COPY" and not value.startswith("--from"):
            *sources, _ = value.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert f"!{source}" in ignored, f".dockerignore leaves out {source}"
        if key == "ENV":
            for name, val in re.findall(r"(HARKEN_\w+)=(\S+)", value):
                _check_variable(name, val)
    installs = [v for k, v in steps if k == "RUN" and "pip install" in v]
    extra = {"agent": '"$wheel${EXTRAS:+[$EXTRAS]}"', "collector": '"$wheel[collector]"', "lab": '"$wheel[lab]"'}[role]
    assert len(installs) == 1 and extra in installs[0]
    entry = [a for k, v in steps if k in ("ENTRYPOINT", "CMD") for a in yaml.safe_load(v)]
    assert check(root, _harken_argv(entry)) is None, entry


def test_the_compose_file_runs_a_broker_postgresql_and_the_collector():
    compose_path = ROOT / "deploy" / "docker" / "compose.yaml"
    compose = yaml.safe_load(compose_path.read_text())
    services = compose["services"]
    assert {"broker", "postgres", "collector"} <= set(services)
    collector = services["collector"]
    assert (compose_path.parent / collector["build"]["context"] / collector["build"]["dockerfile"]).is_file()
    assert check(root, collector["command"]) is None
    init = services["broker-init"]["entrypoint"]
    assert check(root, _harken_argv(init)) is None
    for service in services.values():
        for name, value in (service.get("environment") or {}).items():
            if name.startswith("HARKEN_"):
                _check_variable(name, str(value))
            assert not re.search("PASSWORD$|TOKEN$", name), f"{name}: use a *_FILE variable and a secret"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"]
    assert all(s["file"].startswith("secrets/") for s in compose["secrets"].values())
    assert "deploy/docker/secrets/" in (ROOT / ".gitignore").read_text()
