"""The one table layout and the one --json flag of every `harken` listing."""
from __future__ import annotations

import json

import click
from click.testing import CliRunner

from shared.cli import root
from shared.cli_output import format_table, json_option, print_json, print_table

# every listing command: (group, command)
LISTINGS = [("fleet", "status"), ("drift", "status"), ("drift", "report"), ("rollout", "list"), ("model", "list"),
            ("samples", "list"), ("runs", "list"), ("collector", "rejected")]


def test_a_table_has_upper_case_headers_dashes_for_missing_and_right_aligned_numbers():
    text = format_table([{"name": "kitchen", "n": 7, "note": None}, {"name": "hall", "n": 120, "note": ""}],
                        [("name", "Cohort"), ("n", "N"), ("note", "Note")], right=("n",))
    assert text.splitlines() == ["COHORT     N  NOTE",
                                 "kitchen    7  -",
                                 "hall     120  -"]


def test_no_rows_prints_the_empty_message_or_a_lone_header_and_json_prints_the_rows():
    @click.command()
    @json_option()
    @click.option("--quiet-empty", is_flag=True)
    def listing(as_json, quiet_empty):
        if as_json:
            print_json([])
            return
        print_table([], [("a", "a"), ("b", "b")], empty=None if quiet_empty else "nothing yet")

    runner = CliRunner()
    assert runner.invoke(listing, []).output == "nothing yet\n"
    assert runner.invoke(listing, ["--quiet-empty"]).output == "A  B\n"
    assert json.loads(runner.invoke(listing, ["--json"]).output) == []


def test_every_listing_takes_json():
    ctx = click.Context(root)
    for group_name, name in LISTINGS:
        group = root.get_command(ctx, group_name)
        command = group.get_command(click.Context(group, parent=ctx), name)
        flags = {opt for p in command.params for opt in p.opts}
        assert "--json" in flags, f"harken {group_name} {name}"
        assert any(p.name == "as_json" and p.is_flag for p in command.params)


def test_an_empty_store_lists_as_a_table_and_as_json(tmp_path):
    url = f"sqlite:///{tmp_path / 'harken.db'}"
    runner = CliRunner()
    table = runner.invoke(root, ["collector", "rejected", "--db", url])
    assert table.exit_code == 0 and table.output == "no rejected messages\n", table.output
    as_json = runner.invoke(root, ["collector", "rejected", "--db", url, "--json"])
    assert json.loads(as_json.output) == {"counts": {}, "latest": []}
