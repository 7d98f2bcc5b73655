"""The CLI's one error handler: one `error:` line, a documented exit code, a traceback only with --debug."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import app
from cli.errors import EXIT_CODES, HandledGroup, exit_code
from engine import Engine
from engine.errors import (
    BatchInProgress,
    Conflict,
    EzError,
    InvalidBatch,
    InvalidParameter,
    MalformedBody,
    NotFound,
    PreconditionFailed,
    QueryError,
    RecordError,
    UnsupportedFormat,
)
from engine.jobs import JobBusy

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize(("error", "code"), [
    (InvalidBatch([RecordError(1, None, "bad")]), 1),
    (MalformedBody([RecordError(0, None, "not JSON")]), 1),
    (UnsupportedFormat("x"), 1),
    (QueryError("x"), 1),
    (InvalidParameter("x"), 1),
    (EzError("x"), 1),
    (NotFound("x"), 3),
    (Conflict("x"), 4),
    (JobBusy("x"), 4),
    (BatchInProgress("x"), 4),
    (PreconditionFailed("x"), 4),
    (ValueError("x"), 70),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_every_engine_error_has_its_exit_code(error: Exception, code: int):
    assert exit_code(error) == code
    assert code in EXIT_CODES


def test_not_found_is_one_line_without_traceback(cli_env, engine: Engine):
    result = runner.invoke(app, ["alerts", "show", "999999"])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == ["error: no alert with id 999999"]
    assert result.stdout == ""


def test_debug_shows_the_traceback(cli_env, engine: Engine):
    result = runner.invoke(app, ["--debug", "alerts", "show", "999999"])
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr and "NotFound" in result.stderr
    assert result.stderr.splitlines()[-1] == "error: no alert with id 999999"


def test_unknown_job_exits_3_and_usage_errors_exit_2(cli_env, engine: Engine):
    unknown = runner.invoke(app, ["jobs", "run", "nope"])
    assert unknown.exit_code == 3 and "no job named 'nope'" in unknown.stderr
    assert runner.invoke(app, ["alerts", "show", "not-a-number"]).exit_code == 2
    assert runner.invoke(app, ["jobs", "run", "log_cleaner", "--bogus"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_a_busy_job_exits_4(cli_env, engine: Engine, settings):
    # Hold the job's flock as another process running it would (engine/jobs.py).
    locks = settings.data_dir / "_locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(locks / "job-log_cleaner.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = runner.invoke(app, ["jobs", "run", "log_cleaner"])
    finally:
        os.close(fd)
    assert busy.exit_code == 4, busy.output
    assert "running right now" in busy.stderr and "Traceback" not in busy.stderr
    assert runner.invoke(app, ["jobs", "run", "log_cleaner"]).exit_code == 0


def test_registry_import_names_the_file_in_its_error(cli_env, engine: Engine, tmp_path: Path):
    file = tmp_path / "registry.json"
    file.write_text(json.dumps({"nope": []}))
    result = runner.invoke(app, ["registry", "import", str(file)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: {file}: unknown registry section(s): nope"]


def _crashing_app() -> typer.Typer:
    crashing = typer.Typer(cls=HandledGroup)

    @crashing.callback()
    def root(debug: bool = typer.Option(False, "--debug")) -> None:
        pass

    @crashing.command()
    def boom() -> None:
        raise RuntimeError("a bug")

    @crashing.command()
    def refuse() -> None:
        raise InvalidParameter("a [bracketed] message")

    return crashing


def test_an_unexpected_error_is_an_internal_error_70():
    crashing = _crashing_app()
    quiet = runner.invoke(crashing, ["boom"])
    assert quiet.exit_code == 70
    assert quiet.stderr.splitlines() == [
        "error: internal error: RuntimeError: a bug (rerun as `ezstats --debug ...` for the traceback)"]
    loud = runner.invoke(crashing, ["--debug", "boom"])
    assert loud.exit_code == 70 and "Traceback" in loud.stderr and "RuntimeError: a bug" in loud.stderr
    # Messages are printed as they are, not read as rich markup.
    assert runner.invoke(crashing, ["refuse"]).stderr == "error: a [bracketed] message\n"


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("ezstats")  # the console script next to this interpreter
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_console_script_prints_its_version():
    from cli.root import version

    done = _script("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ezstats {version()}\n"


def test_the_console_script_exits_with_the_handlers_code(cli_env):
    done = _script("alerts", "show", "999999")
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines() == ["error: no alert with id 999999"]


def test_python_dash_m_cli_runs_the_same_app():
    done = subprocess.run([sys.executable, "-m", "cli", "--version"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("ezstats ")
