"""Import aliases between ``harken.X`` and the top-level ``X`` (``X`` in edge, cloud, shared).

An alias is the same module object under a second name (``sys.modules`` holds it twice); the module
is never executed a second time, so classes, exceptions and module state stay single.

* In a source checkout ``harken.X...`` resolves to the top-level ``X...`` (``install_source_aliases``).
* In an installed wheel the old top-level names resolve to ``harken.X...`` for one release, with a
  DeprecationWarning (``install_legacy_names``, run by ``harken_legacy_names.pth``). A top-level ``X``
  that another distribution installs wins: the alias is used only when no real ``X`` exists.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

ROOTS = ("edge", "cloud", "shared")
LEGACY_UNTIL = "0.2"  # the release that drops the old top-level names


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str, warn: bool):
        self.target = target
        self.warn = warn
        self._spec = None

    def create_module(self, spec):
        if self.warn and "." not in spec.name:  # once, for the top-level name
            warnings.warn(f"importing {spec.name!r} is deprecated and stops working in Harken {LEGACY_UNTIL}: "
                          f"import {self.target!r}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        # The module already ran under its own name; the import system just replaced its __spec__
        # with the alias's: give it back.
        module.__spec__ = self._spec


class AliasFinder(importlib.abc.MetaPathFinder):
    """Resolve ``alias_root.rest`` to ``target_root.rest`` for each pair in ``roots``.

    It sits first on ``sys.meta_path`` so that a submodule of an aliased package is aliased too
    (the path finder would otherwise load the file again under the alias's name). A top-level
    alias is made only when ``defer_to_real`` is off or no real module of that name exists.
    """

    def __init__(self, roots: dict[str, str], *, defer_to_real: bool, warn: bool):
        self.roots = roots
        self.defer_to_real = defer_to_real
        self.warn = warn

    def find_spec(self, fullname, path=None, target=None):
        for alias, real in self.roots.items():
            if fullname == alias:
                if self.defer_to_real and importlib.machinery.PathFinder.find_spec(fullname) is not None:
                    return None
                return self._spec(fullname, real)
            if fullname.startswith(alias + "."):
                parent = fullname.rpartition(".")[0]
                if getattr(sys.modules.get(parent), "__name__", None) != real + parent[len(alias):]:
                    return None  # the parent is not our alias (a real distribution's package)
                return self._spec(fullname, real + fullname[len(alias):])
        return None

    def _spec(self, fullname: str, target: str):
        return importlib.util.spec_from_loader(fullname, _AliasLoader(target, self.warn))


def _installed(kind: str) -> bool:
    return any(isinstance(f, AliasFinder) and getattr(f, "kind", None) == kind for f in sys.meta_path)


def install_source_aliases(repository: "object") -> None:
    """``harken.X`` → ``X`` for a source checkout at ``repository`` (put on sys.path if missing)."""
    if _installed("source"):
        return
    path = str(repository)
    if path not in sys.path:
        sys.path.append(path)
    finder = AliasFinder({f"harken.{r}": r for r in ROOTS}, defer_to_real=False, warn=False)
    finder.kind = "source"
    sys.meta_path.insert(0, finder)


def install_legacy_names() -> None:
    """``X`` → ``harken.X`` in an installed wheel, deprecated, unless another distribution owns ``X``."""
    if _installed("legacy"):
        return
    finder = AliasFinder({r: f"harken.{r}" for r in ROOTS}, defer_to_real=True, warn=True)
    finder.kind = "legacy"
    sys.meta_path.insert(0, finder)
