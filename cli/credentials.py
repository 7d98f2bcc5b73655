"""`ezstats credentials ...`: provider keys' OAuth credentials: import, list, refresh, history, keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonFlag, about, open_engine
from cli.output import err, fail, out, print_json

app: typer.Typer = typer.Typer(help="OAuth credentials of provider keys (Codex, Claude Code, Gemini CLI, "
                               "Antigravity accounts): import, list, refresh.", no_args_is_help=True)


def _target(text: str) -> tuple[Path, int | None]:
    """`ID=PATH` or `PATH`."""
    key, sep, rest = text.partition("=")
    if sep and key.isdigit() and int(key) > 0:
        return Path(rest), int(key)
    return Path(text), None


@app.command("import")
def import_credentials(
    files: Annotated[list[str], typer.Argument(help="Credential files, each `PATH` or `PROVIDER_KEY_ID=PATH`.")],
    provider_key_id: Annotated[int | None, typer.Option("--provider-key-id", min=1, help="The provider key of a "
                                                        "single file.")] = None,
    provider_type: Annotated[str | None, typer.Option("--type", help="codex, claude-code, gemini-cli or antigravity "
                                                      "(default: what the file says).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Import the credential files the tools write: CLIProxyAPI auth files, Codex auth.json, Claude Code
    .credentials.json, Gemini CLI oauth_creds.json. A file of an account already imported replaces it (no id
    needed) and re-enables its key; a new account needs its provider key id (created in the registry if absent).

    Example: ezstats credentials import 31=~/.codex/auth.json 32=~/.claude/.credentials.json
    """
    targets = [_target(f) for f in files]
    if provider_key_id is not None:
        if len(targets) != 1:
            raise fail("--provider-key-id goes with a single file; give several as ID=PATH")
        targets = [(targets[0][0], provider_key_id)]
    engine = open_engine()
    imported = []
    for path, key in targets:
        with about(path):
            credential = engine.credentials.import_file(path, key, provider_type, by="cli")
        imported.append(credential)
        if not json_out:
            account = credential.email or credential.account_id or ""
            err.print(f"{path}: provider key {credential.provider_key_id}, {credential.provider_type} {account}, "
                      f"expires {credential.expires_at:%Y-%m-%d %H:%M}Z")
    if json_out:
        print_json({"credentials": imported})


@app.command("list")
def list_credentials(json_out: JsonFlag = False) -> None:
    """Show every credential: provider key, type, account, status, expiry, last refresh, next attempt, failures
    (secrets masked).

    Example: ezstats credentials list --json
    """
    from rich.table import Table

    listing = open_engine().credentials.list_all()
    if json_out:
        print_json(listing)
        return
    grid = Table("key", "type", "account", "status", "expires", "last refresh", "next attempt", "failures",
                 "reason / last error", header_style="bold")
    for c in listing.credentials:
        grid.add_row(str(c.provider_key_id), c.provider_type, c.email or c.account_id or "", c.status,
                     f"{c.expires_at:%Y-%m-%d %H:%M}",
                     f"{c.last_refresh_at:%Y-%m-%d %H:%M}" if c.last_refresh_at else "",
                     f"{c.next_attempt_at:%Y-%m-%d %H:%M:%S}" if c.next_attempt_at else "", str(c.failures),
                     c.reason or c.last_error or "")
    out.print(grid)


@app.command("refresh")
def refresh_credential(
    provider_key_id: Annotated[int, typer.Argument(help="The provider key whose credential to refresh.")],
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for the outcome (0: only queue it for "
                                        "the refresh job).")] = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """Refresh one credential now, whether due or not; prints the outcome, or the request id when it is still
    running. Exits 1 unless refreshed (or queued), 3 for an unknown key, 4 when the credential is disabled.

    Example: ezstats credentials refresh 31
    """
    request = open_engine().credentials.request_refresh(provider_key_id, "cli", "cli", wait)
    if json_out:
        print_json(request)
    elif request.state == "done":
        said = f": {request.error}" if request.error else ""
        err.print(f"provider key {provider_key_id}: {request.outcome}{said}", soft_wrap=True)
    else:
        err.print(f"provider key {provider_key_id}: refresh request {request.id} is {request.state}; the "
                  "token_refresh job finishes it")
    if request.state == "done" and request.outcome != "refreshed":
        raise typer.Exit(1)


@app.command("history")
def history(
    provider_key_id: Annotated[int | None, typer.Argument(help="Only this provider key.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    json_out: JsonFlag = False,
) -> None:
    """Show the refresh attempts (imports, refreshes, failures, deactivations), newest first.

    Example: ezstats credentials history 31 --limit 5
    """
    from rich.table import Table

    attempts = open_engine().credentials.attempts(provider_key_id, limit)
    if json_out:
        print_json(attempts)
        return
    grid = Table("at", "key", "trigger", "outcome", "http", "ms", "error", header_style="bold")
    for a in attempts:
        grid.add_row(f"{a.at:%Y-%m-%d %H:%M:%S}", str(a.provider_key_id), a.trigger, a.outcome,
                     str(a.http_status or ""), f"{a.duration_ms:.0f}" if a.duration_ms is not None else "",
                     a.error or "")
    out.print(grid)


@app.command("rotate-key")
def rotate_key(
    new_key: Annotated[bool, typer.Option("--new-key", help="First add a new key to <data>/secret.key (when "
                                          "EZ_SECRET_KEY is unset).")] = False,
) -> None:
    """Re-encrypt every stored secret (credentials, notification channel URLs and secrets) with the first secret
    key in force. With EZ_SECRET_KEY: put the new key first (old ones after it), restart, run this, then drop
    the old keys. With the key file: --new-key.

    Example: ezstats credentials rotate-key --new-key
    """
    counts = open_engine().rotate_secret_key(new_key)
    err.print(f"re-encrypted {counts['credentials']} credential(s) and {counts['channels']} notification "
              "channel(s) with the first key")


@app.command("new-key")
def new_key() -> None:
    """Print a new random secret key (for EZ_SECRET_KEY).

    Example: export EZ_SECRET_KEY=$(ezstats credentials new-key)
    """
    from engine.secretbox import new_key as make

    typer.echo(make())
