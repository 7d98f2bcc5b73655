"""Docs that cannot rot: every setting described, every .sql file headed and tested, every command helped."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.main import get_command

from cli import app
from engine import queries
from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_has_a_description_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"EZ_{name.upper()}" in readme, f"EZ_{name.upper()} missing from the README settings table"


@pytest.mark.parametrize("name", queries.names())
def test_every_sql_file_has_a_header_and_a_test(name: str):
    query = queries.load(name)
    assert query.text.startswith("--") and len(query.header) > 20, name
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_docs.py")
    assert name in tests, f"sql/{name}.sql has no test naming it"


def _commands(group: typer.Typer) -> list[tuple[str, object]]:
    root = get_command(group)
    found = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for sub_name, sub in subs.items():
                walk(sub, [*path, sub_name])
        else:
            found.append((" ".join(path), cmd))

    walk(root, [])
    return found


@pytest.mark.parametrize(("path", "command"), _commands(app), ids=lambda v: v if isinstance(v, str) else "")
def test_every_cli_command_has_help_with_an_example(path, command):
    assert command.help and "Example:" in command.help, path


def test_every_problem_type_is_in_the_readme():
    from api.problems import KINDS

    readme = (ROOT / "README.md").read_text()
    for slug, (status, title, _) in KINDS.items():
        assert f"| {status} | `/problems/{slug}` | {title} |" in readme, slug


def test_the_reference_documents_the_record_schema_definitions_and_periods():
    """docs/reference.md is the project's own contract: generated from engine/schema.py, checked against
    sql/definitions.sql and the periods the engine resolves."""
    from engine import schema
    from engine.stats.periods import PERIODS

    doc = (ROOT / "docs" / "reference.md").read_text()
    assert schema.markdown_table() in doc, "docs/reference.md: regenerate the record table from engine/schema.py"
    definitions = queries.load("definitions").text
    for macro in ("total_tokens(prompt, completion)", "is_success(status)", "is_rate_limited(status)",
                  "is_error(status)", "is_provider_failure(provider_key, status)"):
        body = definitions.split(f"MACRO {macro} AS ", 1)[1].split(";", 1)[0].strip()
        assert f"`{body}`" in doc, (macro, body)
    for name in PERIODS:
        assert f"| `{name}` |" in doc, name
    readme = (ROOT / "README.md").read_text()
    assert "docs/reference.md" in readme and "../shared" not in readme
