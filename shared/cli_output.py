"""How every `harken` listing prints: one ``--json`` flag (``json_option``) and one table layout.

A table (``format_table``) has upper-case headers, columns two spaces apart sized to their widest
cell, ``-`` for a missing or empty value, and no trailing blanks; numeric columns may be
right-aligned. ``--json`` prints the same rows, unformatted, for scripts.
"""
from __future__ import annotations

import json
from typing import Callable, Iterable, Sequence

import click

Column = tuple[str, str]  # (row key, header)


def json_option(help_text: str = "Print JSON.") -> Callable:
    """The listing's ``--json`` flag, passed to the command as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def print_json(value, *, indent: int | None = 2, **dumps) -> None:
    click.echo(json.dumps(value, indent=indent, **dumps))


def _cell(value) -> str:
    return "-" if value is None or value == "" else str(value)


def format_table(rows: Iterable[dict], columns: Sequence[Column], *, right: Iterable[str] = ()) -> str:
    """``rows`` under ``columns`` (key, header); keys in ``right`` are right-aligned."""
    right = set(right)
    cells = [[title.upper() for _, title in columns]]
    cells += [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) if key in right else c.ljust(w)
                               for c, w, (key, _) in zip(line, widths, columns)).rstrip() for line in cells)


def print_table(rows: Sequence[dict], columns: Sequence[Column], *, right: Iterable[str] = (),
                empty: str | None = None) -> None:
    """Print the table, or ``empty`` (when given) instead of a lone header when there are no rows."""
    if not rows and empty is not None:
        click.echo(empty)
        return
    click.echo(format_table(rows, columns, right=right))
