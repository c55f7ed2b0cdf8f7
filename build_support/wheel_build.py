"""The build step that puts ``edge/``, ``cloud/`` and ``shared/`` under the ``harken`` import root.

setup.py maps the three folders to ``harken.edge``, ``harken.cloud`` and ``harken.shared``; this
``build_py`` then rewrites, in the copies that go into the wheel, every absolute import of the old
top-level names (``from shared.x import y`` → ``from harken.shared.x import y``) and every string
that names one of the project's modules (``"edge.cli:group"``, ``"-m", "edge.sandbox"``). The
edits are made token by token on the original text, so line numbers in tracebacks match the source.
The source tree keeps its imports: tests and an editable install use the top-level names, so an
editable install maps those names too (``EditableWheel``).
"""
from __future__ import annotations

import ast
import io
import re
import shutil
import tokenize
from pathlib import Path

from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOTS = ("edge", "cloud", "shared")
PREFIX = "harken."
HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
LEGACY_PTH = "harken_legacy_names.pth"
# a module path with at least one dot or an attribute: "cloud" alone is an extra's name, not a module
MODULE_STRING = re.compile(r"(?P<module>(?:%s)(?:\.[A-Za-z_]\w*)*)(?::[A-Za-z_]\w*)?\Z" % "|".join(ROOTS))


class BuildError(Exception):
    pass


def packages() -> dict[str, str]:
    """Every package of the wheel → its folder in the repository.

    A folder without ``__init__.py`` (the dashboard's static files) is a data package: it has no
    modules, and ``package_data()`` ships all its files.
    """
    found = {"harken": "build_support/harken"}
    for root in ROOTS:
        for folder in sorted([REPOSITORY / root, *(REPOSITORY / root).rglob("*")]):
            if folder.is_dir() and folder.name != "__pycache__" and any(_shipped(f) for f in folder.iterdir()):
                relative = folder.relative_to(REPOSITORY)
                found[PREFIX + ".".join(relative.parts)] = relative.as_posix()
    return found


def package_data() -> dict[str, list[str]]:
    """Each package's non-Python files (the dashboard; any file the code reads beside its module)."""
    data = {}
    for package, folder in packages().items():
        names = sorted(f.name for f in (REPOSITORY / folder).iterdir() if _shipped(f) and f.suffix != ".py")
        if names:
            data[package] = names
    return data


def _shipped(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix not in (".pyc", ".pyo")


def _is_project_module(dotted: str, repository: Path) -> bool:
    path = repository.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def rewrite(source: str, repository: Path = REPOSITORY, filename: str = "<source>") -> str:
    """The module's text with the old top-level names moved under ``harken.``."""
    edits: list[tuple[int, int, int, str]] = []  # (row, col, length, replacement)
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    starts_statement = True
    for i, tok in enumerate(tokens):
        if tok.type in (tokenize.NL, tokenize.COMMENT):
            continue
        if starts_statement and tok.type == tokenize.NAME and tok.string in ("from", "import"):
            edits += _import_edits(tokens, i, filename)
        elif tok.type == tokenize.STRING:
            edits += _string_edit(tok, repository)
        starts_statement = (tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)
                            or (tok.type == tokenize.OP and tok.string in (";", ":")))
    lines = source.splitlines(keepends=True)
    for row, col, length, text in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + text + line[col + length:]
    return "".join(lines)


def _import_edits(tokens, i: int, filename: str) -> list[tuple[int, int, int, str]]:
    """Edits for the statement starting at tokens[i] (``from X... import`` or ``import X...``)."""
    keyword = tokens[i].string
    edits, j, expect_name = [], i + 1, True
    while tokens[j].type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
        tok = tokens[j]
        if tok.type == tokenize.NAME and expect_name and tok.string in ROOTS:
            if keyword == "import" and not _has_alias(tokens, j):
                raise BuildError(f"{filename}:{tok.start[0]}: `import {tok.string}...` binds the top-level name; "
                                 f"write `from {tok.string}... import name` (or add `as name`)")
            edits.append((tok.start[0], tok.start[1], len(tok.string), PREFIX + tok.string))
        if keyword == "from" and tok.type == tokenize.NAME and tok.string == "import":
            break  # the names after `import` are attributes, not modules
        expect_name = tok.type == tokenize.OP and tok.string in (",", "(") or (
            tok.type == tokenize.NAME and tok.string in ("import", "from"))
        if tok.type == tokenize.OP and tok.string == ".":
            expect_name = False
        j += 1
    return edits


def _has_alias(tokens, j: int) -> bool:
    """Whether the dotted name starting at tokens[j] is followed by ``as``."""
    k = j + 1
    while tokens[k].type == tokenize.OP and tokens[k].string == "." or tokens[k].type == tokenize.NAME and \
            tokens[k - 1].string == ".":
        k += 1
    return tokens[k].type == tokenize.NAME and tokens[k].string == "as"


def _string_edit(tok, repository: Path) -> list[tuple[int, int, int, str]]:
    if tok.start[0] != tok.end[0]:
        return []  # docstrings and other multi-line text name modules only in prose
    try:
        value = ast.literal_eval(tok.string)
    except (ValueError, SyntaxError):
        return []
    match = MODULE_STRING.match(value) if isinstance(value, str) else None
    if not match or value in ROOTS or not _is_project_module(match["module"], repository):
        return []
    quote_at = min(tok.string.find(q) for q in "'\"" if q in tok.string)
    text = tok.string[:quote_at + 1] + PREFIX + tok.string[quote_at + 1:]
    if ast.literal_eval(text) != PREFIX + value:  # an escape or prefix this simple edit cannot keep
        raise BuildError(f"cannot rewrite the module string {tok.string} at line {tok.start[0]}")
    return [(tok.start[0], tok.start[1], len(tok.string), text)]


class BuildPy(build_py):
    """setuptools' build_py, plus the import rewrite and the legacy-names .pth file."""

    def build_module(self, module, module_file, package):
        done = super().build_module(module, module_file, package)
        if isinstance(package, str):
            package = package.split(".")
        if not getattr(self, "editable_mode", False) and package[0] == "harken" and len(package) > 1:
            target = Path(done[0])
            text = target.read_text(encoding="utf-8")
            new = rewrite(text, REPOSITORY, module_file)
            if new != text:
                target.write_text(new, encoding="utf-8")
        return done

    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            shutil.copyfile(HERE / LEGACY_PTH, Path(self.build_lib) / LEGACY_PTH)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(str(Path(self.build_lib) / LEGACY_PTH))
        return outputs


class EditableWheel(editable_wheel):
    """setuptools' editable_wheel, whose finder also maps the checkout's top-level ``edge``, ``cloud``
    and ``shared`` (the names the source imports): ``import shared`` then works in a fresh process
    without ``import harken`` first. ``harken.X`` stays the same module object: ``harken/__init__``
    puts its alias finder ahead of setuptools' one."""

    def run(self):
        dist = self.distribution
        dist.packages = [*dist.packages, *(r for r in ROOTS if r not in dist.packages)]
        dist.package_dir.update({root: root for root in ROOTS})
        super().run()
