"""The root `ezstats` app: its name, help and root options (`--version`, `--debug`); `cli.main` adds the commands."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import EXIT_CODES, HandledGroup

HELP = (
    "ezstats: analytics for LLM API gateway traffic. Data lives under $EZ_DATA_DIR (default ./data).\n\n"
    "Exit codes:\n" + "\n".join(f"{code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    + "\n\n--debug shows the traceback of any error."
)

app = typer.Typer(
    name="ezstats",
    help=HELP,
    cls=HandledGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def version() -> str:
    """The installed ezstats version ("dev" when running from a checkout that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("ezstats")
    except PackageNotFoundError:
        return "dev"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ezstats {version()}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                               help="Print `ezstats <version>` and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of any error.")] = False,
) -> None:
    # The help is the app's; `debug` is read by the error handler from the context (cli/errors.py).
    pass
