"""The docs run: every `harken …` command in README.md and docs/*.md names real subcommands and flags
(checked against the click tree the CLI builds), and every TOML example loads with the real loader."""
from __future__ import annotations

import tomllib
from pathlib import Path

from shared.cli import root
from tests.docs_commands import alternatives, check, commands, toml_blocks

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _loaders():
    from cloud.config import load_collector_config
    from edge.config import load_agent_config
    from edge.serve.config import load_serve_config

    return {"agent.toml": load_agent_config, "collector.toml": load_collector_config, "serve.toml": load_serve_config}


def test_the_docs_show_commands():
    found = [c for doc in DOCS for c in commands(doc, ROOT)]
    assert len(found) > 100  # the finder works: README alone shows ~90
    assert any("harken agent replay" in c.text for c in found)


def test_every_harken_command_in_the_docs_exists_with_its_flags():
    wrong = []
    for doc in DOCS:
        for found in commands(doc, ROOT):
            for argv in alternatives(found.text):
                problem = check(root, argv)
                if problem:
                    wrong.append(f"{found.where}: {found.text}\n    {problem}")
    assert not wrong, "\n".join(wrong)


def _rooted(value, base: Path):
    """Absolute paths moved under ``base``, each made a small secret file (mode 0600) as the docs say."""
    if isinstance(value, dict):
        return {k: _rooted(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_rooted(v, base) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path = base / value.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix or "password" in path.name:
            path.write_text("secret-from-the-docs-test\n")
            path.chmod(0o600)
        else:
            path.mkdir(exist_ok=True)
        return str(path)
    return value


def _dump(value: dict, prefix: str = "") -> str:
    import json

    scalars = [f"{k} = {json.dumps(v)}" for k, v in value.items() if not isinstance(v, dict)]
    tables = [f"\n[{prefix}{k}]\n" + _dump(v, f"{prefix}{k}.") for k, v in value.items() if isinstance(v, dict)]
    return "\n".join(scalars) + "\n" + "".join(tables)


def test_every_toml_example_loads_with_the_real_loader(tmp_path):
    loaders = _loaders()
    blocks = [block for doc in DOCS for block in toml_blocks(doc, ROOT)]
    assert blocks  # the finder works: README shows an agent.toml
    for found, name in blocks:
        assert name in loaders, f"{found.where}: say which file the example is (agent.toml, collector.toml, ...)"
        data = _rooted(tomllib.loads(found.text), tmp_path / "root")
        path = tmp_path / name
        path.write_text(_dump(data))
        loaders[name](path, env={})
