"""`engine.notifications`: the notification use cases that the API, the CLI and the scheduler call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from engine.alerts.history import AlertEvent
from engine.infra import Infra
from engine.notifications.channels import Channel, ChannelStore, check_name
from engine.notifications.deliveries import Delivery, DeliveryPage
from engine.notifications.notifier import AlertSource, NameLookup, Notifier, NotifierRun
from engine.notifications.outbox import Outbox
from engine.schedules import JobOutcome
from engine.times import as_utc


class ChannelTest(BaseModel):
    """What a channel's receiver answered to a synthetic alert."""

    channel: str
    ok: bool = Field(description="The receiver answered 2xx.")
    status_code: int | None = Field(description="Its HTTP status; null when it did not answer.")
    latency_ms: float
    response: str = Field(description="The start of its answer's body (2,000 characters at most).")
    error: str | None = Field(description="Why it failed: the connection error, or the status and body.")
    sent_at: dt.datetime


class RetryCount(BaseModel):
    """How many deliveries a re-drive queued again."""

    retried: int


class ChannelMetrics(BaseModel):
    """One channel's figures for /metrics."""

    channel: str
    totals: dict[str, int] = Field(description="Deliveries ever, by outcome (delivered, failed, dead), and "
                                   "Alertmanager re-sends (resent, resend_failed).")
    pending: int
    dead: int


class NotificationMetrics(BaseModel):
    """The notifier's figures across every process on the data dir."""

    channels: list[ChannelMetrics]
    outbox_lag_seconds: float = Field(description="Age of the oldest event not yet delivered (0: none waiting).")


class Notifications:
    """The notifications domain of one engine (channels, the outbox, the notifier)."""

    def __init__(self, infra: Infra, alerts: AlertSource, names: NameLookup) -> None:
        self.infra = infra
        self.alerts = alerts
        self.store = ChannelStore(infra.store, infra.now, alerts.last_event_id, infra.secret_box)
        self.outbox = Outbox(infra.store)
        self.notifier = Notifier(infra, self.store, self.outbox, alerts, names)

    # -- channels ------------------------------------------------------------------------------

    def reencrypt(self) -> int:
        """Re-encrypt every channel's URL and secret with the first secret key in force; returns how many."""
        return self.store.reencrypt()

    def list_channels(self) -> list[Channel]:
        """Every channel, by name, secrets masked."""
        return [c.answer() for c in self.store.all()]

    def get_channel(self, name: str) -> Channel:
        """One channel, secrets masked. Raises NotFound."""
        return self.store.get(name).answer()

    def put_channel(self, name: str, fields: Mapping[str, Any]) -> Channel:
        """Create or replace a channel (see `ChannelStore.put` for the fields); it receives events from now on.

        Raises:
            InvalidParameter: a field out of its domain.
        """
        stored, _ = self.store.put(name, fields)
        return stored.answer()

    def delete_channel(self, name: str) -> None:
        """Delete a channel; its queued and dead-lettered deliveries are cancelled. Raises NotFound."""
        check_name(name)
        self.store.delete(name)
        self.outbox.cancel(name, as_utc(self.infra.now()))

    def test_channel(self, name: str) -> ChannelTest:
        """Send the channel a synthetic alert now (outside the outbox) and answer its receiver's response.

        Raises:
            NotFound: no such channel.
        """
        now = as_utc(self.infra.now())
        response = self.notifier.test(self.store.get(name), now)
        return ChannelTest(channel=name, ok=response.ok, status_code=response.status_code,
                           latency_ms=response.latency_ms, response=response.body,
                           error=None if response.ok else response.describe(), sent_at=now)

    # -- delivery ------------------------------------------------------------------------------

    def run(self) -> NotifierRun:
        """Queue new alert events and deliver what is due now (the `notifier` job).

        It reads the engine clock at each step rather than taking an instant: sends take real time, and
        backoff, leases and minimum intervals count from when each send ended.
        """
        return self.notifier.run(as_utc(self.infra.now()))

    def run_job(self, now: dt.datetime) -> JobOutcome:
        """`run` as a job outcome (`now`, the job's start, is the engine clock's): rows are the deliveries delivered."""
        result = self.run()
        message = (f"{result.events} event(s) read, {result.queued} queued; {result.messages} message(s): "
                   f"{result.delivered} delivered, {result.failed} to retry, {result.dead} dead-lettered; "
                   f"{result.resent} re-sent")
        return JobOutcome(rows=result.delivered, message=message, details=result.model_dump(mode="json"))

    def deliveries(self, status: str | None = None, channel: str | None = None, alert_id: int | None = None,
                   cursor: str | None = None, limit: int = 50) -> DeliveryPage:
        """Deliveries, newest first (e.g. `status="dead"`: the dead letters). Raises InvalidParameter."""
        return self.outbox.page(status, channel, alert_id, cursor, limit)

    def delivery(self, delivery_id: int) -> Delivery:
        """One delivery with every attempt (status code, latency, error). Raises NotFound."""
        return self.outbox.get(delivery_id)

    def retry(self, delivery_id: int) -> Delivery:
        """Re-drive a dead delivery (a fresh set of attempts; the next notifier run sends it), or make a pending
        one due now.

        Raises:
            NotFound: no such delivery. Conflict: it was delivered or cancelled.
        """
        return self.outbox.retry(delivery_id, as_utc(self.infra.now()))

    def retry_dead(self, channel: str | None = None) -> RetryCount:
        """Re-drive every dead delivery, of one channel or of all."""
        if channel is not None:
            check_name(channel)
        return RetryCount(retried=self.outbox.retry_dead(channel, as_utc(self.infra.now())))

    # -- visibility ----------------------------------------------------------------------------

    def history(self, alert_id: int) -> list[AlertEvent]:
        """An alert's notification entries (`notified`, `notify_failed`), merged into its history."""
        return self.outbox.history(alert_id)

    def metrics(self, now: dt.datetime | None = None) -> NotificationMetrics:
        """Deliveries by channel and outcome, what waits, and the outbox lag (read from the store, so they
        cover every notifier on the data dir)."""
        now = as_utc(now or self.infra.now())
        totals = self.outbox.totals()
        counts = self.outbox.counts()
        names = sorted({c for c, _ in totals} | {c for c, _ in counts} | {c.name for c in self.store.all()})
        channels = [ChannelMetrics(channel=n, totals={o: v for (c, o), v in totals.items() if c == n},
                                   pending=counts.get((n, "pending"), 0), dead=counts.get((n, "dead"), 0))
                    for n in names]
        oldest = [head[2] for head in self.outbox.heads().values()]
        waiting = self.alerts.changes_after(self.outbox.cursor(), 1)
        if waiting and self.store.all():
            oldest.append(waiting[0].event.at)
        lag = max(0.0, (now - min(oldest)).total_seconds()) if oldest else 0.0
        return NotificationMetrics(channels=channels, outbox_lag_seconds=round(lag, 3))

