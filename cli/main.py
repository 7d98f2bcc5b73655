"""The `ezstats` command assembled: the root app with every command registered, and the console entry point."""

from __future__ import annotations

from cli import alerts, credentials, jobs, lake, notify, quotas, registry, stats
from cli.root import app

# Top-level commands, in the order `ezstats --help` lists them.
app.command("serve")(lake.serve)
app.command("ingest")(lake.ingest)
app.command("demo")(lake.demo)
app.command("sql")(lake.sql)
app.command("snapshot")(lake.snapshot)
app.command("stats")(stats.stats)
app.command("backfill")(stats.backfill)
app.command("daily-stats")(stats.daily_stats)
app.command("scheduler")(jobs.scheduler)

# Command groups.
app.add_typer(jobs.app, name="jobs")
app.add_typer(quotas.app, name="quotas")
app.add_typer(registry.app, name="registry")
app.add_typer(alerts.app, name="alerts")
app.add_typer(credentials.app, name="credentials")
app.add_typer(notify.app, name="notify")
app.add_typer(lake.app, name="lake")


def main() -> None:
    """The `ezstats` console script."""
    app()
