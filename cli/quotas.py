"""`ezstats quotas ...`: key quotas and their usage."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import JsonFlag, open_engine
from cli.output import out, print_json

app: typer.Typer = typer.Typer(help="Key quotas: set them, read usage.", no_args_is_help=True)


@app.command("set")
def set_quota(
    key_id: Annotated[int, typer.Argument(help="The key.")],
    limit: Annotated[int, typer.Option("--limit", help="Quota units per period.")],
    period: Annotated[str, typer.Option("--period", help="daily, weekly, monthly or never.")] = "monthly",
    json_out: JsonFlag = False,
) -> None:
    """Set (create or replace) a key's quota.

    Example: ezstats quotas set 42 --limit 1000000 --period monthly
    """
    quota = open_engine().quotas.put(key_id, limit, period)
    if json_out:
        print_json(quota)
    else:
        out.print(f"key {quota.key_id}: {quota.quota_limit:,} per {quota.reset_period} period, "
                  f"current period since {quota.last_reset_at:%Y-%m-%d %H:%M}")


@app.command("list")
def list_usage(
    over: Annotated[float, typer.Option(min=0, help="Only keys at or over this share of their quota.")] = 0.0,
    json_out: JsonFlag = False,
) -> None:
    """Show each key's quota usage in its current period (exact), highest share first.

    Example: ezstats quotas list --over 0.9
    """
    from rich.table import Table

    engine = open_engine()
    usages = engine.quotas.over(over, engine.clock())
    if json_out:
        print_json(usages)
        return
    grid = Table("key", "name", "limit", "used", "share", "period", "since", "until", header_style="bold")
    for u in usages:
        grid.add_row(str(u.key_id), u.key_name or "", f"{u.quota_limit:,}", f"{u.used:,}", f"{u.ratio:.1%}",
                     u.reset_period, f"{u.period_start:%Y-%m-%d %H:%M}",
                     f"{u.period_end:%Y-%m-%d %H:%M}" if u.period_end else "")
    out.print(grid)
