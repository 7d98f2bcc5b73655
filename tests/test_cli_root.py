"""The root of the CLI: `--version`, the exit codes in `--help`, and how `cli/` modules may import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from cli.errors import EXIT_CODES
from cli.root import version

CLI = Path(__file__).resolve().parents[1] / "cli"
COMMAND_MODULES = ["lake", "stats", "jobs", "quotas", "registry", "alerts", "credentials", "notify"]
runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"ezstats {version()}\n" and version() != ""


def test_root_help_lists_the_exit_codes_and_debug():
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for code, meaning in EXIT_CODES.items():
        assert f"{code}  {meaning}" in result.stdout
    assert "--debug" in result.stdout and "--version" in result.stdout


def test_the_readme_documents_the_same_exit_codes():
    readme = (CLI.parent / "README.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in readme, code


def _cli_imports(module: str) -> set[str]:
    tree = ast.parse((CLI / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cli":
            found |= {node.module} if node.module != "cli" else {f"cli.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cli"}
    return found


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_a_command_module_imports_only_the_shared_modules(module: str):
    assert _cli_imports(module) <= {"cli.common", "cli.output"}, module


@pytest.mark.parametrize(("module", "allowed"), [
    ("output", set()),
    ("errors", {"cli.output"}),
    ("common", {"cli.errors", "cli.output"}),
    ("root", {"cli.errors"}),
])
def test_the_shared_modules_import_no_command(module: str, allowed: set[str]):
    assert _cli_imports(module) <= allowed, module


def test_main_registers_every_command_module():
    assert _cli_imports("main") == {"cli.root", *(f"cli.{m}" for m in COMMAND_MODULES)}
    names = {g.name for g in app.registered_groups} | {c.name for c in app.registered_commands}
    assert {"serve", "ingest", "demo", "sql", "stats", "backfill", "daily-stats", "scheduler",
            "jobs", "quotas", "registry", "alerts", "credentials", "notify"} <= names
