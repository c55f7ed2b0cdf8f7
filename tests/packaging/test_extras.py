"""Every import is declared in the extra of the role that runs it (pyproject.toml against the code).

A static check over the source, in the development environment: which distribution provides an
imported name comes from the installed metadata. ``test_wheel.py`` then installs each role alone.
"""
from __future__ import annotations

import importlib.metadata as md

import pytest

from tests.packaging import roles

from shared.cli import EXTRA_OF_MODULE, GROUP_EXTRA, SHARED_BY_EXTRAS


@pytest.fixture(scope="module")
def provided_by() -> dict[str, set[str]]:
    """Top-level import name → the distributions that provide it (normalised names)."""
    return {name: {d.lower().replace("_", "-") for d in dists} for name, dists in md.packages_distributions().items()}


@pytest.fixture(scope="module")
def known():
    return roles.modules()


def test_every_module_has_a_role(known):
    for name in known:
        assert roles.owner(name) in roles.INCLUDES, name


def test_third_party_imports_are_declared_in_the_owners_extra(known, provided_by):
    declared = roles.declared()
    problems = []
    for module in known.values():
        role = roles.owner(module.name)
        for name in sorted(roles.third_party(module.eager | module.lazy)):
            if name in roles.OPTIONAL and name in roles.third_party(module.lazy) - roles.third_party(module.eager):
                need = roles.OPTIONAL[name]
            else:
                need = role
            # a requirement for older Pythons only (tomli) is not installed here: its name is its import
            dists = provided_by.get(name) or ({name} & set().union(*declared.values()))
            assert dists, f"{module.name} imports {name}, which no installed distribution provides (pip install it)"
            if not dists & declared[need]:
                problems.append(f"{module.name} ({need}) imports {name} from {sorted(dists)}, not declared there")
    assert not problems, "\n".join(problems)


def test_imports_stay_within_the_roles_a_role_includes(known):
    problems = []
    for module in known.values():
        role = roles.owner(module.name)
        allowed = {role} | roles.INCLUDES[role]
        for kind, names in (("eager", module.eager), ("lazy", module.lazy)):
            reach = allowed | (roles.MIXED.get(module.name, set()) if kind == "lazy" else set())
            for target in sorted(roles.project_targets(names, known)):
                if roles.owner(target) not in reach:
                    problems.append(f"{module.name} ({role}) imports {target} ({roles.owner(target)}) [{kind}]")
    assert not problems, "\n".join(problems)


def test_the_clis_missing_extra_table_matches_pyproject(known, provided_by):
    """`harken` names the extra to install when a command misses a module: that extra declares it."""
    declared = roles.declared()
    extras = {e: d - declared["base"] for e, d in declared.items() if e not in ("base", "cloud", "dev")}
    imported = {n for m in known.values() for n in roles.third_party(m.eager | m.lazy)}
    for name in sorted(imported):
        providers = {e for e, dists in extras.items() if provided_by.get(name, set()) & dists}
        if len(providers) == 1:
            assert EXTRA_OF_MODULE.get(name) == providers.pop(), f"EXTRA_OF_MODULE[{name!r}] in shared/cli.py"
        elif providers:
            assert set(SHARED_BY_EXTRAS.get(name, ())) == providers, f"SHARED_BY_EXTRAS[{name!r}] in shared/cli.py"
    for group, extra in GROUP_EXTRA.items():
        assert extra in declared, f"GROUP_EXTRA[{group!r}] names no extra"
