"""Which role's dependencies each of Harken's modules needs, read from pyproject.toml.

A role is a set of distributions: ``base`` is the package's own dependencies (a device), and
each extra adds its own (``cloud`` = ``collector`` + ``lab``). Every module has one owner role,
the first pattern below it matches; its imports must be satisfied by that role.
"""
from __future__ import annotations

import ast
import fnmatch
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "cloud", "shared")
# a string that names one of the project's modules ("edge.cli:group", "shared.cli")
PACKAGES_RE = re.compile(r"(?:edge|cloud|shared)(?:\.\w+)+(?::\w+)?|(?:edge|cloud|shared):\w+")

OWNERS: list[tuple[str, str]] = [
    ("edge.serve*", "serve"),
    ("edge.sim*", "cloud"),  # the simulated fleet: the demo's and the tests' tool
    ("edge*", "base"),
    ("shared*", "base"),
    # the model group itself (inspect, verify); its train/evaluate load the lab and its
    # register/list/show the collector's store, each inside its command (MIXED below)
    ("cloud.cli.model", "base"),
    ("cloud.cli.keys", "base"),
    ("cloud.lab", "base"),  # the package itself imports nothing
    ("cloud.lab.lineage", "base"),  # printed by `harken model show` on a collector
    ("cloud.lab.loeo_table", "base"),
    ("cloud.cli.data", "lab"),
    ("cloud.cli.runs", "lab"),
    ("cloud.lab*", "lab"),
    ("cloud.demo*", "cloud"),
    ("cloud.cli.demo", "cloud"),
    ("cloud*", "collector"),
]
# roles a role's modules may import besides its own (everything includes base)
INCLUDES = {"base": set(), "mic": {"base"}, "serve": {"base"}, "collector": {"base"}, "lab": {"base"},
            "cloud": {"base", "collector", "lab"}}
# modules whose commands belong to several roles: their function-level imports may reach these roles
MIXED = {"cloud.cli.model": {"lab", "collector"}}
# a third-party module imported inside a function, only when an optional feature is used → its extra
OPTIONAL = {"sounddevice": "mic"}


def requirement_name(spec: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0).lower().replace("_", "-")


def declared() -> dict[str, set[str]]:
    """Role → the distributions it declares directly (base included; self-referencing extras expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def expand(extra: str) -> set[str]:
        names = set()
        for spec in extras[extra]:
            own = re.fullmatch(r"harken\[([\w,]+)\]", spec.replace(" ", ""))
            names |= set().union(*(expand(e) for e in own.group(1).split(","))) if own else {requirement_name(spec)}
        return names

    base = {requirement_name(s) for s in project["dependencies"]}
    return {"base": base, **{extra: base | expand(extra) for extra in extras}}


@dataclass
class Module:
    name: str
    path: Path
    eager: set[str] = field(default_factory=set)  # imported at module level (dotted names)
    lazy: set[str] = field(default_factory=set)  # imported inside a function


def modules() -> dict[str, Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = _read(name, path)
    return found


def _read(name: str, path: Path) -> Module:
    module = Module(name, path)
    tree = ast.parse(path.read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module != "__future__":
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        (module.lazy if id(node) in inside else module.eager).update(names)
    return module


def owner(name: str) -> str:
    for pattern, role in OWNERS:
        if fnmatch.fnmatchcase(name, pattern):
            return role
    raise LookupError(f"no role owns {name}: add a pattern to OWNERS")


def project_targets(names: set[str], known: dict[str, Module]) -> set[str]:
    """The project modules among imported dotted names (``from a.b import c`` may name a module or not)."""
    return {n for n in names if n.split(".")[0] in PACKAGES and n in known}


def third_party(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - set(PACKAGES)
