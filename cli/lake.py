"""Lake commands: `ezstats serve`, `ezstats ingest`, `ezstats demo`, `ezstats sql`, `ezstats lake check`."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from cli.common import JsonFlag, open_engine, parse_day
from cli.output import err, fail, print_arrow, print_json

app = typer.Typer(help="The lake's files: check them, repair what cannot be read.", no_args_is_help=True)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default $EZ_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default $EZ_PORT, 8000).")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Bind a non-loopback address although EZ_INGEST_TOKEN or EZ_ADMIN_TOKEN is unset: "
        "anyone who can reach it can write and read everything.")] = False,
    workers: Annotated[int, typer.Option(
        min=1, help="Server processes sharing the port (uvicorn workers), each with its own engine over the same "
        "data dir: the lake, ledger and job claims are multi-process safe. Up to one per core.")] = 1,
) -> None:
    """Serve the HTTP API (ingest, stats, alerts, /metrics, /docs).

    Without both EZ_INGEST_TOKEN and EZ_ADMIN_TOKEN set, only a loopback address may be bound; any other
    exits 1 unless --insecure is given. A token set but empty is a configuration error (exit 78).

    With --workers N, N processes serve the port, each reading its settings from the environment. Each runs
    the scheduler (when EZ_SCHEDULER_ENABLED): every tick is claimed in the control store, so it runs once
    across all of them, and a job holds its lock, so it never overlaps itself.

    Example: EZ_INGEST_TOKEN=gw-secret EZ_ADMIN_TOKEN=secret ezstats serve --host 0.0.0.0 --port 8000 --workers 2
    """
    import uvicorn

    from api.app import create_app

    engine = open_engine()
    settings = engine.settings
    host = host or settings.host
    port = port or settings.port
    if settings.ingest_token is None or settings.admin_token is None:
        unset = " and ".join(n for n, t in (("EZ_INGEST_TOKEN", settings.ingest_token),
                                             ("EZ_ADMIN_TOKEN", settings.admin_token)) if t is None)
        if not _is_loopback(host) and not insecure:
            raise fail(f"refusing to serve on {host}: {unset} unset, so anyone who reaches it could read and write "
                       "everything. Set the token(s), bind 127.0.0.1, or pass --insecure")
        err.print(f"[yellow]warning:[/] {unset} unset: parts of the API are unauthenticated"
                  + (f" on {host} (--insecure)." if not _is_loopback(host) else " (loopback only)."), soft_wrap=True)
    err.print(f"ezstats serving {settings.data_dir.resolve()} at http://{host}:{port}  "
              f"(API docs: http://{host}:{port}/docs, metrics: /metrics)", soft_wrap=True)
    if workers == 1:
        uvicorn.run(create_app(engine=engine), host=host, port=port, log_level=settings.log_level.lower())
        return
    # Each worker process builds its own app and engine from the environment (uvicorn imports the factory).
    uvicorn.run("api.app:create_app", factory=True, workers=workers, host=host, port=port,
                log_level=settings.log_level.lower())


def ingest(
    files: Annotated[list[Path], typer.Argument(help="NDJSON/JSONL, JSON, CSV or Parquet files.", exists=True,
                                                dir_okay=False, readable=True)],
    json_out: JsonFlag = False,
) -> None:
    """Validate and store log record files, each file one batch (re-ingesting a file stores nothing new).

    A file with any invalid record is refused whole; the others still go in; the exit code is 1 if any
    file was refused.

    Example: ezstats ingest logs/2026-01-01.ndjson exports/*.parquet
    """
    from rich.progress import Progress

    from engine.errors import EzError

    engine = open_engine()
    results: list[dict[str, object]] = []
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("ingesting", total=len(files))
        for path in files:
            progress.update(task, description=f"ingesting {path.name}")
            try:
                receipt = engine.ingest_file(path)
                results.append({"file": str(path), "ok": True, **receipt.model_dump(mode="json"),
                                "replayed": receipt.replayed})
            except EzError as exc:  # a refused file is reported with the others, not raised
                results.append({"file": str(path), "ok": False, "error": str(exc)})
            progress.advance(task)
    failed = [r for r in results if not r["ok"]]
    if json_out:
        print_json(results)
    else:
        for r in results:
            if r["ok"]:
                note = " (already stored)" if r["replayed"] else ""
                if r["duplicates"]:
                    note += f"; {r['duplicates']} already held (same request_id) not stored again"
                if r["truncated"]:
                    note += f"; {r['truncated']} error_message(s) cut to 2,000 characters"
                err.print(f"[green]stored[/] {r['file']}: {r['records']} records{note}")
            else:
                err.print(f"[red]refused[/] {r['file']}: {r['error']}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def demo(
    days: Annotated[int, typer.Option(min=1, help="How many days, ending today (UTC).")] = 7,
    rows_per_day: Annotated[int, typer.Option(min=1000, help="Records per whole day.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 42,
    end_day: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (default: today UTC, up to now; a "
                                                "past day gives whole days).")] = None,
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing if the lake has records.")] = False,
    alerts: Annotated[bool, typer.Option("--alerts/--no-alerts", help="Run the alert detector over the demo "
                                         "period, as if it had run every minute, so its alerts exist.")] = True,
    follow: Annotated[bool, typer.Option("--follow", help="Then keep going: write each second's records as "
                                         "they happen, until interrupted (Ctrl-C).")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Generate deterministic synthetic gateway traffic with scripted incidents into the lake, as a gateway
    would have sent it by now: records stop at this moment; the registry names every master, key and
    provider; the alert detector is replayed over the period so its alerts are there (five incidents a
    day). Run it again later, or with --follow, and it adds the records since.

    Example: ezstats demo --days 7 && ezstats serve   (or: ezstats demo --follow, beside ezstats serve)
    """
    import datetime as dt
    import time

    from rich.progress import Progress

    engine = open_engine()
    if if_empty and engine.lake_has_records():
        err.print(f"{engine.settings.data_dir} already has log records; skipping the demo (--if-empty).")
        if not follow:
            return
    else:
        last = parse_day(end_day or None, "--end-day")
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("generating", total=days)
            receipts = engine.generate_demo(
                days, rows_per_day, seed, last,
                progress=lambda day, _: progress.update(task, advance=1, description=f"wrote {day}"),
            )
        total = sum(r.records for r in receipts)
        if json_out:
            print_json(receipts)
        else:
            err.print(f"demo: {total:,} new records over {days} day(s) in {engine.settings.data_dir}")
        if alerts:
            now = engine.clock()
            first = (last or now.date()) - dt.timedelta(days=days - 1)
            start = dt.datetime.combine(first, dt.time(), dt.UTC)
            end = min(now, dt.datetime.combine((last or now.date()) + dt.timedelta(days=1), dt.time(), dt.UTC))
            err.print("replaying the alert detector over the demo period ...")
            replay = engine.alerts.backfill(start, end.replace(second=0, microsecond=0))
            engine.alerts.run_once(now)  # and judge the current quota periods now
            err.print(f"demo: {replay.opened} alert(s) over {replay.evaluations:,} minute(s)")
    if follow:
        err.print("following: writing live demo traffic every second (Ctrl-C stops)")
        try:
            while True:
                time.sleep(1)
                # Yesterday too: the last records of a day land just after midnight.
                engine.ingest_demo(2, rows_per_day, seed)
        except KeyboardInterrupt:
            err.print("stopped")


def sql(
    query: Annotated[str, typer.Argument(help="SQL over the views log_records, daily_stats, ...")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv, json (lines) or parquet.")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Run ad-hoc SQL (DuckDB dialect) over the lake's views and print the result.

    Example: ezstats sql "SELECT model, count(*) FROM log_records WHERE date = current_date GROUP BY 1"
    """
    if fmt not in ("table", "csv", "json", "parquet"):
        raise fail(f"unknown --format {fmt!r}; use table, csv, json or parquet")
    print_arrow(open_engine().sql(query), fmt, output)


def snapshot(
    table: Annotated[str, typer.Option(help="The lake table: log_records, daily_stats, rollups_hourly, ...")] =
    "log_records",
    fmt: Annotated[str, typer.Option("--format", "-f", help="duckdb, polars, spark, files (one per line) or json.")]
    = "duckdb",
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", help="Also write the snapshot (files, rows, statements) as JSON to this file.")] = None,
) -> None:
    """Print a statement reading exactly the live files of a lake table now (DuckDB, Polars or Spark).

    On S3 (EZ_LAKE_URL s3://...) a raw glob of the bucket is not the table: during a compaction's grace
    period it sees both the small files and the file merged from them. The snapshot lists the manifest's
    live files, which stay readable for EZ_LAKE_GRACE_SECONDS even if replaced meanwhile.

    Example: ezstats snapshot --format polars --manifest /tmp/log_records.json
    """
    from engine.snapshot import write_manifest

    if fmt not in ("duckdb", "polars", "spark", "files", "json"):
        raise fail(f"unknown --format {fmt!r}; use duckdb, polars, spark, files or json")
    snap = open_engine().snapshot(table)
    if manifest is not None:
        write_manifest(snap, str(manifest))
    if fmt == "json":
        print_json(snap)
    elif fmt == "files":
        typer.echo("\n".join(snap.files))
    else:
        typer.echo(getattr(snap, fmt))
    err.print(f"{snap.table}: {len(snap.files):,} files, {snap.rows:,} rows; readable at least until "
              f"{snap.readable_until.isoformat()}", soft_wrap=True)


@app.command("check")
def check(
    repair: Annotated[bool, typer.Option("--repair", help="Move unreadable files to <data>/_quarantine/ and "
                                         "recompute the rollups and daily stats they fed.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Check every lake file (readable, exact schema, valid UTF-8) and each day's record count against the
    ingest ledger; exit 1 if anything is wrong (after --repair: if anything is left).

    A file that no reader can read makes every query over its day fail; --repair quarantines it, rebuilds
    the day's request id index and recomputes the hours it held. Stats then say which hours lost records
    (`sources.lost_hours`). Count mismatches are reported only.

    Example: ezstats lake check --repair
    """
    report = open_engine().check_lake(repair)
    if json_out:
        print_json(report)
    else:
        for p in report.problems:
            err.print(f"[red]{p.action}[/] {p.path}: {p.problem}", soft_wrap=True)
        for m in report.mismatches:
            err.print(f"[red]count[/] {m.day}: {m.files:,} records in files, {m.ledger:,} per the ingest ledger")
        for day in report.unchecked_days:
            err.print(f"[yellow]unchecked[/] {day}: the ledger cannot account for it (an older batch)")
        verdict = "[green]ok[/]" if report.ok else "[red]problems[/]"
        err.print(f"{verdict}: {report.files_checked:,} files, {report.rows_checked:,} rows checked; "
                  f"{len(report.quarantined)} quarantined, {report.recomputed_hours} hours recomputed")
    if not report.ok:
        raise typer.Exit(1)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
