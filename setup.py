"""Build configuration that pyproject.toml cannot state: the ``harken`` import root.

``edge/``, ``cloud/`` and ``shared/`` stay at the top of the repository and install as
``harken.edge``, ``harken.cloud`` and ``harken.shared`` (see build_support/wheel_build.py and
docs/architecture.md, "Packaging").
"""
import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "build_support"))
from wheel_build import BuildPy, EditableWheel, package_data, packages  # noqa: E402

PACKAGES = packages()
setup(packages=sorted(PACKAGES), package_dir=PACKAGES, package_data=package_data(), include_package_data=False,
      cmdclass={"build_py": BuildPy, "editable_wheel": EditableWheel})
