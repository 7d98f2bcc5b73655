"""`ezstats jobs ...` and `ezstats scheduler`: the scheduled jobs, by hand or on their schedules."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from cli.common import JsonFlag, open_engine
from cli.output import err, fail, out, print_json

app: typer.Typer = typer.Typer(help="Scheduled jobs: list them, run one now, read their runs.", no_args_is_help=True)


@app.command("list")
def list_jobs(json_out: JsonFlag = False) -> None:
    """List the jobs with their schedule, last run and next run (UTC).

    Example: ezstats jobs list --json
    """
    from rich.table import Table

    engine = open_engine()
    statuses = engine.jobs.status(engine.clock())
    if json_out:
        print_json(statuses)
        return
    grid = Table("job", "schedule", "last run", "outcome", "rows", "next run", header_style="bold")
    for s in statuses:
        last = s.last_run
        grid.add_row(s.name, s.schedule, f"{last.started_at:%Y-%m-%d %H:%M:%S}" if last else "never",
                     (last.outcome + (f": {last.error}" if last.error else "")) if last else "",
                     str(last.rows) if last and last.rows is not None else "", f"{s.next_run_at:%Y-%m-%d %H:%M:%S}")
    out.print(grid)


@app.command("run")
def run_job(
    name: Annotated[str, typer.Argument(help="The job, e.g. log_cleaner (see `ezstats jobs list`).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what the job would do.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Run one job now and wait for it (recorded like a scheduled run; a dry run is not recorded).

    Exits 1 when the job failed, 3 when there is no such job, 4 when it is already running elsewhere
    (retry later).
    Example: ezstats jobs run log_cleaner --dry-run
    """
    engine = open_engine()
    if dry_run:
        outcome = engine.jobs.dry_run(name)
        if json_out:
            print_json(dataclasses.asdict(outcome))
        else:
            err.print(f"{name} (dry run): {outcome.message}", soft_wrap=True)
        return
    result = engine.jobs.run(name)
    if json_out:
        print_json(result)
    else:
        err.print(f"{result.job}: {result.outcome} in {result.duration_ms or 0:.0f} ms, {result.rows} rows. "
                  f"{result.message or ''}", soft_wrap=True)
    if result.outcome != "ok":
        raise fail(f"{result.job} failed: {result.error}")


@app.command("runs")
def list_runs(
    name: Annotated[str | None, typer.Argument(help="Only this job.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    json_out: JsonFlag = False,
) -> None:
    """Show the latest recorded runs (start, end, outcome, rows touched, error).

    Example: ezstats jobs runs compaction --limit 5
    """
    from rich.table import Table

    runs = open_engine().jobs.runs(name, limit)
    if json_out:
        print_json(runs)
        return
    grid = Table("id", "job", "trigger", "started", "ms", "outcome", "rows", "message / error", header_style="bold")
    for r in runs:
        grid.add_row(str(r.run_id), r.job, r.trigger, f"{r.started_at:%Y-%m-%d %H:%M:%S}",
                     f"{r.duration_ms or 0:.0f}", r.outcome, "" if r.rows is None else str(r.rows),
                     r.error or r.message or "")
    out.print(grid)


def scheduler(
    once: Annotated[bool, typer.Option("--once", help="Run the jobs that are due now, then exit.")] = False,
) -> None:
    """Run the job scheduler on its own (for when `ezstats serve` runs with EZ_SCHEDULER_ENABLED=false).

    Several schedulers on the same data run each tick once. Ctrl-C (or SIGTERM) stops it after the
    running jobs finish.
    Example: EZ_DATA_DIR=/srv/ezstats ezstats scheduler
    """
    import signal

    from engine.scheduler import Scheduler

    engine = open_engine()
    if once:
        runs = engine.jobs.run_due(engine.clock())
        for r in runs:
            err.print(f"{r.job}: {r.outcome} ({r.rows} rows) {r.error or r.message or ''}", soft_wrap=True)
        if any(r.outcome != "ok" for r in runs):
            raise typer.Exit(1)
        return
    loop = Scheduler(engine.jobs, engine.clock)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop(wait=False))
    err.print(f"scheduler running jobs {', '.join(sorted(engine.jobs.specs()))} on {engine.settings.data_dir}")
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        err.print("stopping: waiting for running jobs")
    finally:
        loop.stop()
