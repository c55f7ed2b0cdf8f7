"""Harken's import root: ``harken.edge`` (the device), ``harken.cloud`` (collector and lab), ``harken.shared``.

The repository keeps ``edge/``, ``cloud/`` and ``shared/`` at its top; the build maps them under this
package and rewrites their imports (``build_support/wheel_build.py``), so an installed Harken owns one
top-level name and cannot collide with another distribution's ``edge``, ``cloud`` or ``shared``.

In a source checkout (an editable install, or ``PYTHONPATH`` at the repository) the three folders are
top-level packages and ``harken.X`` is an alias of ``X``: the same module objects, never a second copy.
"""
from pathlib import Path as _Path

ROOTS = ("edge", "cloud", "shared")

if not (_Path(__file__).resolve().parent / "shared").is_dir():  # a source checkout, not the wheel
    from harken import _aliases

    _aliases.install_source_aliases(_Path(__file__).resolve().parents[2])
