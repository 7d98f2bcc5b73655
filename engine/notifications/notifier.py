"""The notifier: turns new alert events into deliveries, sends what is due, re-sends open alerts to Alertmanager.

It runs as the `notifier` job (every `EZ_SCHEDULE_NOTIFIER`, inside `ezstats serve` or `ezstats scheduler`),
outside the detector: the detector only records events. Channels are served in parallel (a receiver that
hangs holds up only its own channel), each by one notifier at a time (the outbox's lease), oldest
event first; a failed send stops that channel until its backoff has passed, so its events stay in order.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from pydantic import BaseModel, Field

from engine.alerts.history import Alert, AlertChange
from engine.infra import Infra
from engine.notifications import alertmanager, slack, webhook
from engine.notifications.channels import ChannelStore, StoredChannel
from engine.notifications.messages import Entry, Message, Subject, entries, refs
from engine.notifications.outbox import Outbox, Queued
from engine.notifications.transport import Response, post

log = logging.getLogger(__name__)

#: Alert events read per fan-out step.
FAN_OUT_CHUNK = 1000
#: Events per message (Slack: see `slack.MAX_EVENTS`).
MAX_EVENTS = 100
#: A run stops starting new sends after this long; the next run carries on.
RUN_BUDGET_SECONDS = 30.0
#: Channels served at once.
WORKERS = 8
#: +-20 % around each backoff step, so receivers coming back are not hit by every retry at once.
JITTER = 0.2


class AlertSource(Protocol):
    """What the notifier reads about alerts (`engine.alerts.history.AlertHistory`)."""

    def changes_after(self, event_id: int, limit: int = 1000) -> list[AlertChange]:
        """Lifecycle events after `event_id`, oldest first."""
        ...

    def by_ids(self, ids: Iterable[int]) -> dict[int, Alert]:
        """Alerts by id."""
        ...

    def last_event_id(self) -> int:
        """The latest lifecycle event's id."""
        ...


#: Registry display names of one section by id (`Registry.names`).
NameLookup = Callable[[str, Iterable[int]], dict[int, str]]


class NotifierRun(BaseModel):
    """What one notifier run did."""

    now: dt.datetime
    events: int = Field(description="Alert events read from the event log.")
    queued: int = Field(description="Deliveries queued from them (an event times the channels that take it).")
    messages: int = Field(description="Messages sent (a message may carry several events).")
    delivered: int
    failed: int = Field(description="Deliveries whose attempt failed and that will be retried.")
    dead: int = Field(description="Deliveries dead-lettered.")
    resent: int = Field(description="Open alerts re-sent to Alertmanager channels.")
    busy: list[str] = Field(description="Channels another notifier was sending to.")
    elapsed_ms: float


@dataclass
class _Tally:
    messages: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    resent: int = 0
    busy: list[str] = field(default_factory=list)


def backoff_delay(attempt: int, retry_after: float | None, base: float, cap: float,
                  rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before the attempt after failed attempt number `attempt`: `base` doubling up to `cap`, +-20 %
    jitter, and never sooner than the receiver's Retry-After."""
    delay = min(cap, base * 2 ** (attempt - 1)) * rng(1 - JITTER, 1 + JITTER)
    return delay if retry_after is None else max(delay, retry_after)


class Notifier:
    """Delivery from the outbox."""

    def __init__(self, infra: Infra, channels: ChannelStore, outbox: Outbox, alerts: AlertSource,
                 names: NameLookup) -> None:
        self.infra = infra
        self.channels = channels
        self.outbox = outbox
        self.alerts = alerts
        self.names = names
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()

    def run(self, now: dt.datetime) -> NotifierRun:
        """Queue new events, then send every channel's due deliveries (and re-sends), channels in parallel."""
        started = time.perf_counter()
        events, queued = self.fan_out(now)
        channels = {c.name: c for c in self.channels.all()}
        heads = self.outbox.heads()
        for gone in heads.keys() - channels.keys():   # a channel deleted while its deliveries were queued
            self.outbox.cancel(gone, now)
        due = [c for c in channels.values() if self._due(c, heads.get(c.name), now)]
        if len(due) > 1:
            with ThreadPoolExecutor(min(len(due), WORKERS), thread_name_prefix="ezstats-notify") as pool:
                tallies = list(pool.map(self._serve, due))
        else:
            tallies = [self._serve(c) for c in due]
        total = _Tally()
        for t in tallies:
            total.messages += t.messages
            total.delivered += t.delivered
            total.failed += t.failed
            total.dead += t.dead
            total.resent += t.resent
            total.busy += t.busy
        return NotifierRun(now=now, events=events, queued=queued, messages=total.messages, delivered=total.delivered,
                           failed=total.failed, dead=total.dead, resent=total.resent, busy=sorted(total.busy),
                           elapsed_ms=round((time.perf_counter() - started) * 1000, 2))

    def fan_out(self, now: dt.datetime) -> tuple[int, int]:
        """Turn every alert event not yet seen into deliveries; returns (events read, deliveries queued)."""
        events = queued = 0
        if not self.channels.all():
            return 0, 0   # a channel created later starts after the events recorded by then
        while True:
            after = self.outbox.cursor()
            changes = self.alerts.changes_after(after, FAN_OUT_CHUNK)
            if not changes:
                return events, queued
            # Channels are read after the events: a channel created before one of these events was committed
            # (see ChannelStore.put), so it is in the list.
            done = self.outbox.fan_out(after, changes, self.channels.all(), now)
            if done is None:
                continue  # another notifier took these events; read from where it left the cursor
            events += len(changes)
            queued += done
            if len(changes) < FAN_OUT_CHUNK:
                return events, queued

    def send(self, client: httpx.Client, channel: StoredChannel, message: Message) -> Response:
        """POST one message to a channel in its format."""
        headers = {"Content-Type": "application/json"}
        if channel.type == "alertmanager":
            url, body = alertmanager.url(channel.url), alertmanager.body(message)
            if channel.secret:
                headers["Authorization"] = f"Bearer {channel.secret}"
        elif channel.type == "webhook":
            url, body = channel.url, webhook.body(message, channel.name)
            headers[webhook.SIGNATURE_HEADER] = webhook.sign(channel.secret or "", body)
            headers["X-Ezstats-Event-Ids"] = ",".join(str(e.id) for e in message.events)
        else:
            url, body = channel.url, slack.body(message, self._name)
        return post(client, url, body, headers, channel.secrets())

    def test(self, channel: StoredChannel, now: dt.datetime) -> Response:
        """Send a channel a synthetic alert (`ezstats_test`) and answer what its receiver said."""
        entry = Entry(Subject.synthetic(channel.name, now), "warning", 0.3, "test", None)
        message = Message(channel.name, [entry], [], self.infra.settings.public_url, now)
        return self.send(self._client(), channel, message)

    # -- one channel ------------------------------------------------------------------------

    def _due(self, channel: StoredChannel, head: tuple[dt.datetime, dt.datetime | None, dt.datetime] | None,
             now: dt.datetime) -> bool:
        if head is not None:
            next_attempt, last_sent, _ = head
            interval = dt.timedelta(seconds=channel.min_interval_seconds)
            if next_attempt <= now and (last_sent is None or last_sent + interval <= now):
                return True
        if channel.type != "alertmanager":
            return False
        resend = self.outbox.resend_at(channel.name)
        return resend is not None and resend <= now

    def _serve(self, channel: StoredChannel) -> _Tally:
        tally = _Tally()
        owner = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}:{uuid.uuid4().hex[:8]}"
        lease = self._lease_seconds()
        limit = slack.MAX_EVENTS if channel.type == "slack" else MAX_EVENTS
        resends = channel.type == "alertmanager"   # they need the lease too, batch or not
        batch = self.outbox.claim(channel.name, owner, self.infra.now(), lease, channel.min_interval_seconds, limit,
                                  hold=resends)
        if batch is None:
            tally.busy.append(channel.name)
            return tally
        held = bool(batch) or resends
        try:
            client = self._client()
            deadline = time.monotonic() + RUN_BUDGET_SECONDS
            while batch:
                response = self.send(client, channel, self._message(channel, batch, self.infra.now()))
                tally.messages += 1
                # A short batch was all that was queued: done, and the lease goes back with the outcome.
                more = response.ok and len(batch) == limit and time.monotonic() < deadline
                last = not more and not resends
                outcome, batch = self.outbox.complete(
                    channel.name, owner, batch, response, self.infra.now(), self.infra.settings.notify_max_attempts,
                    self._backoff, lease, release=last,
                    next_batch=(channel.min_interval_seconds, limit) if more else None)
                held = not last
                tally.delivered += outcome.delivered
                tally.failed += outcome.failed
                tally.dead += outcome.dead
                if not response.ok:
                    log.warning("notification channel %r: %s (%d deliveries retried, %d dead-lettered)",
                                channel.name, response.describe(), outcome.failed, outcome.dead)
                if not batch and held and not resends:
                    self.outbox.release(channel.name, owner)   # a full batch was, after all, the last one
                    held = False
            if resends:
                tally.resent += self._resend(client, channel)
        finally:
            if held:
                self.outbox.release(channel.name, owner)
        return tally

    def _message(self, channel: StoredChannel, batch: list[Queued], now: dt.datetime) -> Message:
        alerts = self.alerts.by_ids({d.alert_id for d in batch})
        return Message(channel.name, entries(batch, alerts), refs(batch), self.infra.settings.public_url, now)

    def _resend(self, client: httpx.Client, channel: StoredChannel) -> int:
        """If due, re-send the alerts the channel shows firing, so Alertmanager does not resolve them on its own.

        The first time only schedules it: what was just delivered needs no re-send.
        """
        now = self.infra.now()
        interval = dt.timedelta(seconds=self.infra.settings.notify_resend_seconds)
        due = self.outbox.resend_at(channel.name)
        if due is None or due > now:
            if due is None:
                self.outbox.resent(channel.name, None, now, now + interval)
            return 0
        shown = self.outbox.shown(channel.name)
        alerts = [a for a in self.alerts.by_ids(shown).values() if a.status != "resolved"]
        if not alerts:
            self.outbox.resent(channel.name, None, now, now + interval)
            return 0
        message = Message(channel.name, [Entry(Subject.of(a), shown[a.id], a.value, "resend", None) for a in alerts],
                          [], self.infra.settings.public_url, now)
        response = self.send(client, channel, message)
        # A failed re-send is tried again sooner, still without hammering a receiver that is down.
        self.outbox.resent(channel.name, response, now, now + (interval if response.ok else interval / 4))
        if not response.ok:
            log.warning("notification channel %r: re-send failed: %s", channel.name, response.describe())
        return len(alerts) if response.ok else 0

    def _name(self, section: str, ident: int) -> str | None:
        return self.names(section, [ident]).get(ident)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        s = self.infra.settings
        return backoff_delay(attempt, retry_after, s.notify_backoff_seconds, s.notify_backoff_max_seconds)

    def _lease_seconds(self) -> float:
        # Longer than any one send can take, so a lease never lapses while its owner is still sending.
        return 2 * self.infra.settings.notify_timeout_seconds + 30

    def _client(self) -> httpx.Client:
        # One client for the engine's life: creating one loads the CA bundle (tens of ms), and it pools
        # connections to receivers; httpx clients are safe to share between threads.
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self.infra.settings.notify_timeout_seconds, follow_redirects=False)
            return self._http
