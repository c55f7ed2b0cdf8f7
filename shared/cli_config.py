"""Click options generated from a typed config class, and its reference table.

Every setting of a config dataclass (``shared.config``) becomes a flag: ``window_s`` →
``--window-s``, a bool → ``--x/--no-x``, a list → a repeatable option. Flags default to
None so that only the flags a person typed override the file and the environment.
"""
from __future__ import annotations

import json
from typing import Iterable

import click

from shared.config import describe


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def toml_key(name: str, sections: Iterable[str]) -> str:
    for section in sections:
        if name.startswith(section + "_"):
            return f"[{section}] {name[len(section) + 1:]}"
    return name


def setting_help(row: dict, env_prefix: str, *, reference: bool = False) -> str:
    text = row["description"]
    bounds = []
    if row["ge"] is not None:
        bounds.append(f">= {row['ge']:g}")
    if row["le"] is not None:
        bounds.append(f"<= {row['le']:g}")
    if bounds:
        text += f" [{', '.join(bounds)}]"
    if reference:
        return text
    if row["default"] not in (None, "", []) and not row["secret"]:
        text += f" (default: {row['default']})"
    return text + f" [env {env_prefix}{row['name'].upper()}]"


def _option(row: dict, env_prefix: str) -> tuple[list[str], dict]:
    name, kind = row["name"], row["type"]
    attrs: dict = {"default": None, "help": setting_help(row, env_prefix)}
    decls = [flag_name(name), name]
    if kind == "bool":
        decls = [f"{flag_name(name)}/--no-{name.replace('_', '-')}", name]
    elif kind == "list":
        attrs["multiple"] = True
    elif row["choices"]:
        attrs["type"] = click.Choice([str(c) for c in row["choices"]])
    else:
        attrs["type"] = {"int": click.INT, "float": click.FLOAT}.get(kind, click.STRING)
    return decls, attrs


def config_options(cls, env_prefix: str, *, skip: Iterable[str] = ()):
    """Decorator: one click option per setting of ``cls`` (except ``skip``)."""
    skip = set(skip)

    def decorate(fn):
        for row in reversed(describe(cls)):
            if row["name"] not in skip:
                decls, attrs = _option(row, env_prefix)
                fn = click.option(*decls, **attrs)(fn)
        return fn

    return decorate


def overrides_from_flags(flags: dict) -> dict:
    """The flags a person actually gave, as config overrides."""
    out = {}
    for name, value in flags.items():
        if value is None or value == ():
            continue
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def reference(cls, env_prefix: str, sections: Iterable[str], *, as_json: bool = False,
              with_flags: bool = True, names: Iterable[str] | None = None) -> str:
    """Every setting (or those in ``names``) with its TOML key, flag, environment variable, default and bounds."""
    sections = tuple(sections)
    rows = describe(cls)
    if names is not None:
        wanted = set(names)
        rows = [row for row in rows if row["name"] in wanted]
    for row in rows:
        row["flag"] = flag_name(row["name"])
        row["env"] = env_prefix + row["name"].upper()
        row["toml"] = toml_key(row["name"], sections)
    if as_json:
        return json.dumps(rows, default=list, indent=1)
    head = "| setting (TOML) | flag / environment | type | default | description |"
    lines = [head if with_flags else head.replace(" flag / environment |", ""),
             "|---|---|---|---|---|" if with_flags else "|---|---|---|---|"]
    for row in rows:
        default = "" if row["secret"] else json.dumps(row["default"], default=list)
        where = f" `{row['flag']}` / `{row['env']}` |" if with_flags else ""
        lines.append(f"| `{row['toml']}` |{where} {row['type']} | {default} | "
                     f"{setting_help(row, env_prefix, reference=True)} |")
    return "\n".join(lines)
