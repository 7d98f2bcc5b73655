"""Stats commands: `ezstats stats`, `ezstats backfill`, `ezstats daily-stats`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import JsonFlag, open_engine, parse_day
from cli.output import err, fail, out, print_json

if TYPE_CHECKING:
    from engine.stats import DayResult

FromOpt = Annotated[str | None, typer.Option("--from", help="First day, YYYY-MM-DD.")]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (included).")]


def stats(
    period: Annotated[str, typer.Option(help="today, week, month, last7d, last30d, all or custom.")] = "today",
    first: FromOpt = None,
    last: ToOpt = None,
    group_by: Annotated[str | None, typer.Option(help="master, key, model, provider, provider_key, day or hour."
                                                 )] = None,
    master_id: Annotated[int | None, typer.Option(help="Only this master.")] = None,
    key_id: Annotated[int | None, typer.Option(help="Only this key.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    provider_id: Annotated[int | None, typer.Option(help="Only this provider.")] = None,
    provider_key_id: Annotated[int | None, typer.Option(help="Only this provider key.")] = None,
    source: Annotated[str, typer.Option(help="auto (rollups + recent raw) or raw (exact percentiles).")] = "auto",
    tz: Annotated[str | None, typer.Option(help="IANA time zone of the period's days and of day/hour groups, "
                                           "e.g. Asia/Shanghai (default $EZ_DEFAULT_TZ, UTC).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="List at most this many groups.")] = None,
    sort: Annotated[str | None, typer.Option(help="Sort groups by a metric, '-' first for descending "
                                             "(e.g. -errors); default -requests.")] = None,
    other: Annotated[bool, typer.Option("--other", help="Sum the groups past --limit into one row.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Print the stats of a period (the same answer as GET /admin/stats) as tables or JSON.

    Example: ezstats stats --period last7d --group-by key --limit 10 --sort -errors --tz Asia/Shanghai
    """
    from engine.stats import Filters, TopN

    engine = open_engine()
    filters = Filters(master_id, key_id, model, provider_id, provider_key_id)
    result = engine.stats.read(period, parse_day(first or None, "--from"), parse_day(last or None, "--to"),
                               filters, group_by, source, tz, TopN(limit, sort, other))
    if json_out:
        print_json(result)
        return
    _print_stats(result.model_dump())


def backfill(
    first: FromOpt = None,
    last: ToOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite daily stats that are already written.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be done.")] = False,
    executor: Annotated[str | None, typer.Option(
        help="Where the per-day tasks run: local, or dask://HOST:PORT (a Dask scheduler whose workers have the "
        "same EZ_ settings and reach the same lake). Default: $EZ_EXECUTOR, local.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Recompute rollups and daily stats of a day range from the raw records (idempotent).

    Daily stats already written are kept unless the day received late records or --force is given.
    A day that fails (or whose Dask worker died) does not stop the others; the exit code is 1 if any day
    failed, and running the same range again repairs it.

    Example: ezstats backfill --from 2026-01-01 --to 2026-01-31 --executor dask://10.0.0.5:8786
    """
    from rich.progress import Progress

    from engine.executors import open_executor

    if first is None or last is None:
        raise fail("backfill needs --from and --to (YYYY-MM-DD)")
    engine = open_engine()
    start, end = parse_day(first, "--from"), parse_day(last, "--to")
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("backfill", total=max((end - start).days + 1, 0))

        def advance(result: DayResult) -> None:
            progress.update(task, advance=1, description=f"{result.day} {result.daily}")

        results = engine.stats.backfill(start, end, force, dry_run, progress=advance,
                                        executor=open_executor(executor) if executor else None)
    failed = [r for r in results if not r.ok]
    if json_out:
        print_json({"dry_run": dry_run, "days": [r.to_dict() for r in results],
                    "failed": [r.day.isoformat() for r in failed]})
    else:
        from rich.table import Table

        grid = Table("day", "rollup rows", "daily stats", "error", header_style="bold")
        for r in results:
            rows = "" if r.rollup_rows is None else f"{r.rollup_rows:,}"
            grid.add_row(r.day.isoformat(), rows, r.daily, r.error or "", style="red" if not r.ok else None)
        out.print(grid)
        verb = "would process" if dry_run else "processed"
        err.print(f"backfill {verb} {len(results)} day(s); {len(failed)} failed"
                  + (": " + ", ".join(r.day.isoformat() for r in failed) if failed else ""))
    if failed:
        raise typer.Exit(1)


def daily_stats(json_out: JsonFlag = False) -> None:
    """Run the daily stats job now: refresh rollups, write every closed day that has no stats yet.

    Example: ezstats daily-stats
    """
    engine = open_engine()
    written = engine.stats.run_daily(engine.clock())
    late = [d.isoformat() for d in engine.stats.late_days()]
    if json_out:
        print_json({"written": written, "late_days": late})
    else:
        err.print(f"daily stats: {written} day(s) written"
                  + (f"; days with late data (run `ezstats backfill`): {', '.join(late)}" if late else ""))


def _print_stats(result: dict[str, Any]) -> None:
    from zoneinfo import ZoneInfo

    from rich.table import Table

    zone = ZoneInfo(result["tz"])
    start, end = result["start"].astimezone(zone), result["end"].astimezone(zone)
    out.print(f"[bold]{result['period']}[/] {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} {result['tz']}"
              f"  (percentiles {result['percentiles']})")
    totals = Table("metric", "value", header_style="bold")
    for name, value in _flat(result["totals"]).items():
        totals.add_row(name, _fmt(value))
    out.print(totals)
    if result["groups"]:
        cols = ["requests", "errors", "rate_limited", "total_tokens", "keys", "latency_ms.avg", "latency_ms.p95"]
        grid = Table(result["group_by"], "name", *cols, header_style="bold")
        for g in result["groups"]:
            flat = _flat(g)
            grid.add_row(str(g["group"]), g["name"] or "", *(_fmt(flat[c]) for c in cols))
        if result["other"]:
            flat = _flat(result["other"])
            grid.add_row(f"({result['other']['groups']} others)", "", *(_fmt(flat[c]) for c in cols), style="dim")
        out.print(grid)
        if result["groups_total"] > len(result["groups"]):
            err.print(f"{len(result['groups'])} of {result['groups_total']} groups shown")
    if result["top_models"]:
        top = Table("model", "requests", "total_tokens", title="top models", header_style="bold")
        for m in result["top_models"]:
            top.add_row(m["model"], _fmt(m["requests"]), _fmt(m["total_tokens"]))
        out.print(top)


def _flat(metrics: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        elif name not in ("group", "name", "groups"):
            flat[name] = value
    return flat


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
