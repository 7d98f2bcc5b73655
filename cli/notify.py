"""`ezstats notify ...`: notification channels (Alertmanager, webhooks, Slack) and the delivery outbox."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import JsonFlag, open_engine
from cli.output import err, fail, out, print_json

if TYPE_CHECKING:
    from engine.notifications.deliveries import Delivery

app: typer.Typer = typer.Typer(help="Alert notifications: channels, test sends, deliveries and dead letters.",
                               no_args_is_help=True)
channels: typer.Typer = typer.Typer(help="Notification channels: list, set, delete, test.", no_args_is_help=True)
deliveries: typer.Typer = typer.Typer(help="The delivery outbox: list, show, retry dead letters.",
                                      no_args_is_help=True)
app.add_typer(channels, name="channels")
app.add_typer(deliveries, name="deliveries")


@channels.command("list")
def list_channels(json_out: JsonFlag = False) -> None:
    """List the channels (secrets masked).

    Example: ezstats notify channels list --json
    """
    from rich.table import Table

    found = open_engine().notifications.list_channels()
    if json_out:
        print_json(found)
        return
    grid = Table("name", "type", "url", "secret", "min severity", "types", "scopes", "min interval",
                 "acknowledged", header_style="bold")
    for c in found:
        grid.add_row(c.name, c.type, c.url, "set" if c.secret_set else "", c.min_severity,
                     ", ".join(c.types) if c.types else "all", ", ".join(c.scopes) if c.scopes else "all",
                     f"{c.min_interval_seconds} s", "notify" if c.notify_acknowledged else "quiet")
    out.print(grid)


@channels.command("set")
def set_channel(
    name: Annotated[str, typer.Argument(help="The channel's name (letters, digits, '_', '.', '-').")],
    type_: Annotated[str, typer.Option("--type", help="alertmanager, webhook or slack.")],
    url: Annotated[str, typer.Option(help="Alertmanager base URL, webhook URL or Slack incoming-webhook URL.")],
    secret: Annotated[str | None, typer.Option(
        help="Webhook signing key (required for webhooks) or Alertmanager bearer token; '-' reads it from stdin "
        "(keeps it out of shell history). Omitted: an existing channel keeps its secret.")] = None,
    no_secret: Annotated[bool, typer.Option("--no-secret", help="Remove the stored secret.")] = False,
    min_severity: Annotated[str, typer.Option(help="warning or critical: alerts below it are not sent.")] = "warning",
    alert_type: Annotated[list[str] | None, typer.Option(
        "--alert-type", help="Only this alert type (repeat for several); default: every type.")] = None,
    scope: Annotated[list[str] | None, typer.Option(
        help="Only this scope: global, master, key, provider_key, or master:ID, key:ID, provider_key:ID "
        "(repeat for several); default: every scope.")] = None,
    min_interval: Annotated[int, typer.Option(min=0, max=86_400, help="Least seconds between two messages; "
                                              "events meanwhile go together in the next.")] = 0,
    notify_acknowledged: Annotated[bool, typer.Option(
        "--notify-acknowledged", help="Keep notifying acknowledged alerts' de-escalations.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Create or replace a channel; it receives the alert events recorded from now on.

    Example: ezstats notify channels set oncall --type alertmanager --url http://alertmanager:9093
    """
    fields: dict[str, object] = {"type": type_, "url": url, "min_severity": min_severity, "types": alert_type or None,
                                 "scopes": scope or None, "min_interval_seconds": min_interval,
                                 "notify_acknowledged": notify_acknowledged}
    if no_secret:
        fields["secret"] = None
    elif secret is not None:
        fields["secret"] = sys.stdin.readline().strip() if secret == "-" else secret
    channel = open_engine().notifications.put_channel(name, fields)
    if json_out:
        print_json(channel)
    else:
        err.print(f"channel {channel.name}: {channel.type} to {channel.url}", soft_wrap=True)


@channels.command("delete")
def delete_channel(name: Annotated[str, typer.Argument(help="The channel.")]) -> None:
    """Delete a channel; its queued and dead-lettered deliveries are cancelled.

    Example: ezstats notify channels delete oncall
    """
    open_engine().notifications.delete_channel(name)
    err.print(f"deleted channel {name}")


@channels.command("test")
def test_channel(name: Annotated[str, typer.Argument(help="The channel.")], json_out: JsonFlag = False) -> None:
    """Send the channel a synthetic alert (alertname ezstats_test) and print its receiver's answer; exits 1 if it
    failed.

    Example: ezstats notify channels test oncall
    """
    result = open_engine().notifications.test_channel(name)
    if json_out:
        print_json(result)
    else:
        status = f"HTTP {result.status_code}" if result.status_code is not None else "no answer"
        err.print(f"{name}: {status} in {result.latency_ms:.0f} ms {result.response[:200]}", soft_wrap=True)
    if not result.ok:
        raise fail(f"channel {name}: {result.error}")


def _print_deliveries(found: list[Delivery]) -> None:
    from rich.table import Table

    grid = Table("id", "channel", "alert", "event", "event at", "status", "attempts", "next attempt", "last answer",
                 header_style="bold")
    for d in found:
        answer = d.last_error or (f"HTTP {d.last_status_code}" if d.last_status_code else "")
        grid.add_row(str(d.id), d.channel, str(d.alert_id), d.kind, f"{d.event_at:%Y-%m-%d %H:%M:%S}", d.status,
                     str(d.attempts), f"{d.next_attempt_at:%H:%M:%S}" if d.next_attempt_at else "", answer)
    out.print(grid)


@deliveries.command("list")
def list_deliveries(
    status: Annotated[str | None, typer.Option(help="pending, delivered, dead or cancelled.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel's.")] = None,
    alert_id: Annotated[int | None, typer.Option(help="Only this alert's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Deliveries per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor printed by the previous page.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List deliveries, newest first (--status dead: the dead letters).

    Example: ezstats notify deliveries list --status dead
    """
    page = open_engine().notifications.deliveries(status, channel, alert_id, cursor, limit)
    if json_out:
        print_json(page)
        return
    _print_deliveries(page.deliveries)
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor}")


@deliveries.command("show")
def show_delivery(
    delivery_id: Annotated[int, typer.Argument(help="The delivery.")], json_out: JsonFlag = False,
) -> None:
    """Show one delivery with every attempt (status code, latency, error).

    Example: ezstats notify deliveries show 42
    """
    from rich.table import Table

    delivery = open_engine().notifications.delivery(delivery_id)
    if json_out:
        print_json(delivery)
        return
    _print_deliveries([delivery])
    grid = Table("attempt", "at", "outcome", "status", "ms", "error", header_style="bold")
    for a in delivery.attempt_log:
        grid.add_row(str(a.attempt), f"{a.at:%Y-%m-%d %H:%M:%S}", a.outcome,
                     "" if a.status_code is None else str(a.status_code), f"{a.latency_ms or 0:.0f}", a.error or "")
    out.print(grid)


@deliveries.command("retry")
def retry_deliveries(
    ids: Annotated[list[int] | None, typer.Argument(help="Deliveries to re-drive.")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Re-drive every dead delivery (see --channel).")] = False,
    channel: Annotated[str | None, typer.Option(help="With --dead: only this channel's.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Re-drive dead deliveries (a fresh set of attempts); the next notifier run sends them, in order.

    Example: ezstats notify deliveries retry --dead --channel oncall
    """
    engine = open_engine()
    if dead == bool(ids):
        raise fail("give delivery ids or --dead, not both")
    if dead:
        count = engine.notifications.retry_dead(channel)
        if json_out:
            print_json(count)
        else:
            err.print(f"{count.retried} dead deliveries queued again")
        return
    redriven = [engine.notifications.retry(i) for i in ids or []]
    if json_out:
        print_json(redriven)
    else:
        err.print(f"{len(redriven)} deliveries queued again: {', '.join(str(d.id) for d in redriven)}")
