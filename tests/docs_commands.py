"""Find the ``harken …`` commands and the TOML examples in Markdown, and check a command against click.

A command is found in a fenced shell block (one per line; ``\\`` continues a line; ``;``, ``&&``
and `` | `` separate commands) or in an inline code span of the prose. ``a|b|c`` in a command
is a choice: each alternative is checked. ``...``, ``…`` and ``[``/``]`` mark elisions and
optional parts, and are skipped.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click

SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.S | re.M)
ANY_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(harken [^`]+)`")
SEPARATORS = re.compile(r"\s*(?:;|&&|\s\|\s)\s*")


@dataclass(frozen=True)
class Found:
    where: str  # file:line
    text: str


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def commands(path: Path, root: Path) -> list[Found]:
    text = path.read_text()
    name = path.relative_to(root).as_posix()
    found = []
    for block in SHELL_BLOCK.finditer(text):
        first = _line_of(text, block.start(1))
        logical, start = "", first
        for n, line in enumerate(block.group(1).splitlines(), first):
            if not logical:
                start = n
            if line.rstrip().endswith("\\"):
                logical += line.rstrip()[:-1] + " "
                continue
            logical += line
            found += [Found(f"{name}:{start}", c) for c in _split(logical)]
            logical = ""
    prose = ANY_BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # keep line numbers
    for span in INLINE.finditer(prose):
        found.append(Found(f"{name}:{_line_of(prose, span.start())}", " ".join(span.group(1).split())))
    return found


def _split(line: str) -> list[str]:
    line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a comment (never inside our commands' quotes)
    line = re.sub(r"^\$\s+", "", line)
    return [part for part in SEPARATORS.split(line) if part.startswith("harken ") or part == "harken"]


def toml_blocks(path: Path, root: Path) -> list[tuple[Found, str]]:
    """Each TOML example with the file it configures, named just before it (``agent.toml``:)."""
    text = path.read_text()
    out = []
    for block in TOML_BLOCK.finditer(text):
        before = text[max(0, block.start() - 400):block.start()]
        names = re.findall(r"`?([\w-]+\.toml)`?", before)
        out.append((Found(f"{path.relative_to(root).as_posix()}:{_line_of(text, block.start())}", block.group(1)),
                    names[-1] if names else ""))
    return out


ELIDED = "..."  # stands for a value or more arguments: never a subcommand or a flag


def alternatives(command: str) -> list[list[str]]:
    """The command's argv (after ``harken``), once per choice of each ``a|b`` token."""
    tokens = [ELIDED if t in ("...", "…") or "…" in t else t
              for t in shlex.split(command.replace("[", " ").replace("]", " "))[1:]]
    variants = [[]]
    for token in tokens:
        options = token.split("|") if "|" in token and not token.startswith(("-", "'", '"')) else [token]
        variants = [v + [o] for v in variants for o in options]
    return variants


def check(root_command: click.Group, argv: list[str]) -> str | None:
    """None if every subcommand and flag of ``argv`` exists in the click tree, else what is wrong."""
    command, path = root_command, ["harken"]
    ctx = click.Context(root_command)
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == ELIDED:
            i += 1
            continue
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            param = _option(command, ctx, name)
            if param is None:
                return f"`{' '.join(path)}` has no option {name}"
            if not (param.is_flag or param.count) and "=" not in token:
                i += max(1, param.nargs)
            i += 1
            continue
        if isinstance(command, click.Group):
            sub = command.get_command(ctx, token)
            if sub is None:
                return f"`{' '.join(path)}` has no command {token!r}"
            command, path = sub, [*path, token]
            ctx = click.Context(sub, parent=ctx, info_name=token)
        i += 1
    return None


def _option(command: click.Command, ctx: click.Context, name: str) -> click.Option | None:
    for param in command.get_params(ctx):
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None
