"""The CLI's one error handler: an engine error becomes one `error:` line on stderr and a documented exit code.

A user's mistake never shows a traceback; `ezstats --debug ...` shows it for every error. The handler sits
in the root group's `invoke`, so the console script and `typer.testing.CliRunner` behave the same.
"""

from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from cli.output import error

if TYPE_CHECKING:
    from engine.errors import EzError

OK = 0
FAILED = 1  # the work failed or the input was refused
USAGE = 2  # Click's own: an unknown option, a missing argument, a bad value
NOT_FOUND = 3
BUSY = 4  # a conflict with the current state, or busy: retry later
INTERNAL = 70  # EX_SOFTWARE: a bug, not the user's mistake
CONFIG = 78  # EX_CONFIG: an EZ_ variable is invalid (an empty token, a bad schedule)

# Shown by `ezstats --help`, one line each (the README's CLI section has the same table).
EXIT_CODES: dict[int, str] = {
    OK: "ok",
    FAILED: "the work failed or the input was refused (a file, a job, a backfill day)",
    USAGE: "usage error: unknown option, missing or malformed argument",
    NOT_FOUND: "not found: no such alert, job, quota, ...",
    BUSY: "conflict or busy (stale version, job running): retry later",
    INTERNAL: "internal error: a bug (`ezstats --debug ...` shows the traceback)",
    CONFIG: "configuration error: an EZ_ variable is invalid (an empty token...)",
}

# Typer's own signals pass through untouched: Exit (also --help and `fail()`), Abort (Ctrl-C) and Click's
# errors (usage errors exit 2). Typer vendors Click in recent versions, so Click's base exception is found
# through a public subclass instead of being imported from either place.
_CLICK_ERROR: type[Exception] = next((c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
                                     typer.BadParameter)
_PASS_THROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, _CLICK_ERROR)


class ErrorAbout(Exception):
    """An engine error with what it is about (e.g. the file a command read), raised by `cli.common.about()`."""

    def __init__(self, subject: object, cause: EzError) -> None:
        super().__init__(f"{subject}: {cause}")
        self.error = cause


def exit_code(exc: BaseException) -> int:
    """The exit code of an exception that reached the handler (see `EXIT_CODES`)."""
    from engine.errors import BatchInProgress, ConfigurationError, Conflict, EzError, NotFound

    if isinstance(exc, ErrorAbout):
        return exit_code(exc.error)
    if isinstance(exc, ConfigurationError):
        return CONFIG
    if isinstance(exc, NotFound):
        return NOT_FOUND
    if isinstance(exc, Conflict | BatchInProgress):  # Conflict covers JobBusy and PreconditionFailed
        return BUSY
    if isinstance(exc, EzError):
        return FAILED
    return INTERNAL


def report(exc: Exception, debug: bool) -> int:
    """Print `exc` for a person (its traceback first with `debug`) and return its exit code."""
    code = exit_code(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if code == INTERNAL:
        hint = "" if debug else " (rerun as `ezstats --debug ...` for the traceback)"
        error(f"internal error: {type(exc).__name__}: {exc}{hint}")
    else:
        error(str(exc))
    return code


class HandledGroup(TyperGroup):
    """The root group: runs the command and turns what it raises into a message and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            raise typer.Exit(report(exc, debug=bool(ctx.params.get("debug")))) from None
