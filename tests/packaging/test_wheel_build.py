"""The build's import rewrite (build_support/wheel_build.py), on small sources: what moves under
`harken.`, what stays, and what the build refuses."""
from __future__ import annotations

import sys

import pytest

from tests.packaging.roles import ROOT

sys.path.insert(0, str(ROOT / "build_support"))
from wheel_build import BuildError, packages, rewrite  # noqa: E402

SOURCE = '''"""Docs may say: from shared.x import y, or "edge.cli"."""
from __future__ import annotations
import os, cloud.store.sql as sql
from shared.errors import HarkenError
from shared import (keys,
                    bundle)
from . import sibling
from .shared import thing
if TYPE_CHECKING: from cloud.api.app import create_app
try:
    from edge.sandbox import smoke_test_in_child
except ImportError: pass
GROUPS = {"agent": ("edge.cli:group", "Run the agent"), "x": ('shared.cli', "cloud"), "extra": "cloud"}
ARGV = [sys.executable, "-m", "edge.sandbox", f"shared.cli{1}", "shared.not_a_module", "edge.cli:group extra"]
shared_errors = "shared.errors"  # a module path: rewritten
'''

EXPECTED = '''"""Docs may say: from shared.x import y, or "edge.cli"."""
from __future__ import annotations
import os, harken.cloud.store.sql as sql
from harken.shared.errors import HarkenError
from harken.shared import (keys,
                    bundle)
from . import sibling
from .shared import thing
if TYPE_CHECKING: from harken.cloud.api.app import create_app
try:
    from harken.edge.sandbox import smoke_test_in_child
except ImportError: pass
GROUPS = {"agent": ("harken.edge.cli:group", "Run the agent"), "x": ('harken.shared.cli', "cloud"), "extra": "cloud"}
ARGV = [sys.executable, "-m", "harken.edge.sandbox", f"shared.cli{1}", "shared.not_a_module", "edge.cli:group extra"]
shared_errors = "harken.shared.errors"  # a module path: rewritten
'''


def test_imports_and_module_strings_move_under_harken_and_nothing_else_changes():
    assert rewrite(SOURCE, ROOT) == EXPECTED


def test_a_plain_import_of_an_old_name_is_refused():
    with pytest.raises(BuildError, match="binds the top-level name"):
        rewrite("import shared.keys\n", ROOT)


def test_every_package_and_data_folder_is_mapped():
    mapped = packages()
    assert mapped["harken"] == "build_support/harken"
    assert mapped["harken.cloud.dashboard.pages"] == "cloud/dashboard/pages"  # data only: no __init__.py
    assert mapped["harken.edge.serve"] == "edge/serve"
    assert all(not name.endswith("__pycache__") for name in mapped)
