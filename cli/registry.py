"""`ezstats registry ...`: names and status of masters, keys and providers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonFlag, about, open_engine
from cli.output import err, fail, print_json

app: typer.Typer = typer.Typer(help="The registry of masters, keys, providers and provider keys.", no_args_is_help=True)


@app.command("import")
def import_registry(
    file: Annotated[Path, typer.Argument(help="A JSON document (see PUT /admin/registry).", exists=True,
                                         dir_okay=False, readable=True)],
    replace: Annotated[bool, typer.Option("--replace", help="Also delete entities of the given sections "
                                          "that the file does not list.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Upsert (and delete) registry entities from a JSON file, in one transaction.

    Example: ezstats registry import registry.json --replace
    """
    try:
        document = json.loads(file.read_text())
    except ValueError as exc:
        raise fail(f"{file}: {exc}") from None
    with about(file):
        result = open_engine().registry.sync(document, replace=replace)
    if json_out:
        print_json(result)
    else:
        err.print("upserted " + (", ".join(f"{n} {s}" for s, n in result.upserted.items() if n) or "nothing"))
        if any(result.deleted.values()):
            err.print("deleted " + ", ".join(f"{n} {s}" for s, n in result.deleted.items() if n))


@app.command("show")
def show_registry() -> None:
    """Print the whole registry as JSON.

    Example: ezstats registry show > registry.json
    """
    print_json(open_engine().registry.read())
