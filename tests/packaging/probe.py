"""Run inside a role's venv (standard library only): import the role's modules, report what else is there.

argv[1] is JSON: {"modules": [...], "foreign": [...], "declared": [...]}. Prints JSON: "foreign"
lists each foreign import name that is importable although no declared distribution requires it
(transitively), "system" whether the venv is isolated from the system's site-packages.
"""
import importlib
import importlib.metadata as md
import importlib.util
import json
import re
import sys


def _name(spec: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", spec).group(0).lower().replace("_", "-")


def closure(declared):
    seen, todo = set(), list(declared)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def main():
    job = json.loads(sys.argv[1])
    for name in job["modules"]:
        importlib.import_module(name)
    needed = closure(job["declared"])
    owners = md.packages_distributions()
    present = [n for n in job["foreign"] if importlib.util.find_spec(n) is not None
               and not {_name(d) for d in owners.get(n, [])} & needed]
    isolated = sys.prefix != sys.base_prefix and not any(p.startswith(sys.base_prefix) and "site-packages" in p
                                                         for p in sys.path)
    print(json.dumps({"foreign": present, "isolated": isolated}))


main()
