"""What the commands share: the `--json` flag, opening the engine, parsing days and instants."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, overload

import typer

from cli.errors import ErrorAbout
from cli.output import fail

if TYPE_CHECKING:
    from engine import Engine

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def open_engine() -> Engine:
    """The engine over the settings of this process's environment."""
    from engine import Engine, get_settings

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("engine.queries").setLevel(logging.WARNING)
    return Engine(settings)


@overload
def parse_day(text: str, option: str | None = None) -> dt.date: ...
@overload
def parse_day(text: None, option: str | None = None) -> None: ...
@overload
def parse_day(text: str | None, option: str | None = None) -> dt.date | None: ...
def parse_day(text: str | None, option: str | None = None) -> dt.date | None:
    """A `YYYY-MM-DD` day (None stays None); anything else exits 1 with a message naming `option`."""
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        where = f"{option}: " if option else ""
        raise fail(f"{where}not a date (YYYY-MM-DD): {text!r}") from None


@overload
def parse_instant(text: str, option: str) -> dt.datetime: ...
@overload
def parse_instant(text: None, option: str) -> None: ...
@overload
def parse_instant(text: str | None, option: str) -> dt.datetime | None: ...
def parse_instant(text: str | None, option: str) -> dt.datetime | None:
    """An RFC 3339 instant with its offset (None stays None); anything else exits 1 naming `option`."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option}: not an RFC 3339 instant: {text!r}") from None
    if moment.tzinfo is None:
        raise fail(f"{option}: {text!r} has no offset; add Z for UTC")
    return moment


@contextmanager
def about(subject: object) -> Iterator[None]:
    """Name `subject` (e.g. the file read) before the message of an engine error raised inside.

    The error keeps its exit code: `error: registry.json: unknown registry section(s): nope`, exit 1.
    """
    from engine.errors import EzError

    try:
        yield
    except EzError as exc:
        raise ErrorAbout(subject, exc) from exc
