"""`ezstats alerts ...`: run the detector, list and act on alerts, edit and backtest thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import JsonFlag, open_engine, parse_day, parse_instant
from cli.output import err, fail, out, print_json

if TYPE_CHECKING:
    from engine.alerts.history import Alert

app: typer.Typer = typer.Typer(help="Alerts: detect, list, acknowledge, resolve; thresholds and their backtest.",
                  no_args_is_help=True)

By = Annotated[str, typer.Option(help="Who acts (recorded in the alert's history).")]
Note = Annotated[str | None, typer.Option(help="Why (recorded in the alert's history).")]


def _print_alerts(alerts: list[Alert]) -> None:
    from rich.table import Table

    grid = Table(show_header=True, header_style="bold")
    for name in ("id", "status", "severity", "type", "metric", "scope", "value", "threshold", "opened", "resolved"):
        grid.add_column(name, overflow="fold")
    for a in alerts:
        scope = a.scope if a.scope_id is None else f"{a.scope} {a.scope_id}"
        grid.add_row(str(a.id), a.status, a.severity, a.type, a.metric, scope, f"{a.value:.4g}",
                     f"{a.threshold:.4g}", f"{a.opened_at:%Y-%m-%d %H:%M:%S}",
                     f"{a.resolved_at:%Y-%m-%d %H:%M:%S}" if a.resolved_at else "")
    out.print(grid)


@app.command()
def detect(
    at: Annotated[str | None, typer.Option(help="Evaluate at this instant (RFC 3339) instead of now.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Evaluate every alert rule once and store what changed (the scheduler does this every minute).

    Example: ezstats alerts detect --at 2026-01-05T14:30:00Z
    """
    engine = open_engine()
    result = engine.alerts.run_once(parse_instant(at, "--at"))
    if json_out:
        print_json(result)
        return
    err.print(f"evaluated {result.observations} observations at {result.now} in {result.elapsed_ms:.0f} ms: "
              f"{len(result.opened)} opened, {len(result.escalated)} escalated, "
              f"{len(result.de_escalated)} de-escalated, {len(result.resolved)} resolved", soft_wrap=True)
    for note in result.skipped:
        err.print(f"[yellow]skipped[/] {note}")


@app.command("list")
def list_alerts(
    type_: Annotated[str | None, typer.Option("--type", help="rate_limit, error_spike, quota_exceeded, provider_down, "
                                              "traffic_spike or credential_invalid.")] = None,
    severity: Annotated[str | None, typer.Option(help="info, warning or critical.")] = None,
    status: Annotated[str | None, typer.Option(help="open, acknowledged or resolved.")] = None,
    master_id: Annotated[int | None, typer.Option(help="Only this master's alerts.")] = None,
    key_id: Annotated[int | None, typer.Option(help="Only this key's alerts.")] = None,
    since: Annotated[str | None, typer.Option(help="Opened at or after (RFC 3339).")] = None,
    until: Annotated[str | None, typer.Option(help="Opened before (RFC 3339).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Alerts per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor printed by the previous page.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List alerts, newest first.

    Example: ezstats alerts list --status open --type error_spike
    """
    from engine.alerts.history import AlertFilter

    where = AlertFilter(type_, severity, status, master_id, key_id, parse_instant(since, "--since"),
                        parse_instant(until, "--until"))
    page = open_engine().alerts.list_alerts(where, cursor, limit)
    if json_out:
        print_json(page)
        return
    _print_alerts(page.alerts)
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor}")


@app.command()
def show(alert_id: Annotated[int, typer.Argument(help="Alert id.")], json_out: JsonFlag = False) -> None:
    """Show one alert and its event history.

    Example: ezstats alerts show 12
    """
    alert = open_engine().alerts.get(alert_id)
    if json_out:
        print_json(alert)
        return
    _print_alerts([alert])
    for e in alert.events:
        out.print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.kind:<13} {e.actor:<10} {e.severity or '':<8} {e.note or ''}",
                  highlight=False)


@app.command()
def ack(
    alert_id: Annotated[int, typer.Argument(help="Alert id.")],
    note: Note = None,
    expires: Annotated[str | None, typer.Option(help="Re-open at this instant (RFC 3339).")] = None,
    by: By = "cli",
    json_out: JsonFlag = False,
) -> None:
    """Acknowledge an open alert.

    Example: ezstats alerts ack 12 --note "provider notified" --expires 2026-01-05T18:00:00Z
    """
    alert = open_engine().alerts.ack(alert_id, by, note, parse_instant(expires, "--expires"))
    print_json(alert) if json_out else err.print(f"alert {alert.id} acknowledged")


@app.command()
def resolve(
    alert_id: Annotated[int, typer.Argument(help="Alert id.")],
    note: Note = None,
    by: By = "cli",
    json_out: JsonFlag = False,
) -> None:
    """Resolve an open or acknowledged alert by hand.

    Example: ezstats alerts resolve 12 --note "fixed upstream"
    """
    alert = open_engine().alerts.resolve(alert_id, by, note)
    print_json(alert) if json_out else err.print(f"alert {alert.id} resolved")


@app.command()
def stats(
    since: Annotated[str | None, typer.Option(help="Start (RFC 3339); default 24 h before --until.")] = None,
    until: Annotated[str | None, typer.Option(help="End, excluded (RFC 3339); default now.")] = None,
    period: Annotated[str | None, typer.Option(help="Instead of --since/--until: today, week, month, last7d, "
                                               "last30d or custom (with --from/--to), in --tz.")] = None,
    first: Annotated[str | None, typer.Option("--from", help="First day of --period custom, YYYY-MM-DD.")] = None,
    last: Annotated[str | None, typer.Option("--to", help="Last day of --period custom (included).")] = None,
    tz: Annotated[str | None, typer.Option(help="IANA time zone of --period's days (default $EZ_DEFAULT_TZ).")
                  ] = None,
) -> None:
    """Count alerts opened in a period by type, peak severity and status (JSON).

    Example: ezstats alerts stats --period today --tz Asia/Shanghai
    """
    print_json(open_engine().alerts.stats(parse_instant(since, "--since"), parse_instant(until, "--until"), period,
                                          parse_day(first, "--from"), parse_day(last, "--to"), tz))


@app.command()
def thresholds(
    set_file: Annotated[Path | None, typer.Option("--set", exists=True, dir_okay=False,
                                                  help="Replace the thresholds with this JSON file.")] = None,
    if_match: Annotated[int | None, typer.Option(help="Refuse unless the stored version is this one.")] = None,
) -> None:
    """Print the alert thresholds (JSON with version), or replace them with --set FILE.

    Example: ezstats alerts thresholds > t.json && ezstats alerts thresholds --set t.json
    """
    engine = open_engine()
    if set_file is None:
        stored = engine.alerts.read_thresholds()
    else:
        body = _load(set_file)
        stored = engine.alerts.update_thresholds(body, if_match, "cli")
        err.print(f"thresholds stored as version {stored.version}")
    print_json(stored)


@app.command()
def preview(
    from_day: Annotated[str, typer.Option("--from", help="First UTC day, YYYY-MM-DD.")],
    to_day: Annotated[str, typer.Option("--to", help="Last UTC day, included.")],
    thresholds_file: Annotated[Path | None, typer.Option("--thresholds", exists=True, dir_okay=False,
                                                         help="Candidate thresholds (JSON); default: stored.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Backtest: which alerts candidate thresholds would have opened and resolved over stored days.

    The replay runs as a preview run (the same queue as POST /admin/alerts/thresholds/preview), with a
    progress bar on stderr; stored alerts are not touched. Exits 1 if the run fails.

    Example: ezstats alerts preview --from 2026-01-01 --to 2026-01-07 --thresholds candidate.json
    """
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    candidate = _load(thresholds_file) if thresholds_file else None
    engine = open_engine()
    run = engine.alerts.submit_preview(candidate, parse_day(from_day, "--from"), parse_day(to_day, "--to"))
    columns = (TextColumn("preview {task.fields[run]} {task.description}"), BarColumn(),
               TextColumn("{task.completed:,.0f}/{task.total:,.0f} minutes"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(run.status, total=max(run.minutes_total, 1), run=run.id)
            while run.status in ("queued", "running"):
                time.sleep(0.2)
                run = engine.alerts.preview_run(run.id)
                bar.update(task, completed=run.minutes_done, description=run.status)
    finally:
        engine.alerts.previews.close()   # Ctrl-C: the run stops and is recorded as failed
    if run.result is None:
        raise fail(f"preview {run.id} {run.status}: {run.error}")
    if json_out:
        print_json(run.result)
        return
    result = run.result
    _print_alerts(result.alerts)
    err.print(f"{len(result.alerts)} alert(s) over {result.evaluations} evaluations "
              f"[{result.start}, {result.end}): {result.by_type}")


def _load(path: Path) -> Any:
    import json

    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"{path}: not JSON: {exc}") from None
    # `alerts thresholds` prints {version, ..., thresholds}; accept that output as input too.
    return body["thresholds"] if isinstance(body, dict) and "version" in body and "thresholds" in body else body
