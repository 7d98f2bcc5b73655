"""`engine.alerts`: the alert use cases that the API, the CLI and the scheduler call."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import duckdb
from pydantic import BaseModel, Field

from engine import catalog
from engine.alerts import backtest, detector
from engine.alerts.history import Alert, AlertCounts, AlertFilter, AlertHistory, AlertPage
from engine.alerts.lifecycle import Lifecycle
from engine.alerts.thresholds import StoredThresholds, Thresholds, ThresholdStore
from engine.errors import InvalidParameter
from engine.infra import Infra
from engine.tables import LOG_RECORDS
from engine.times import as_utc, check_day, check_id, check_instant


class QuotaSource(Protocol):
    """Where quota_exceeded reads key quota usage (`engine.quotas.Quotas`)."""

    def usage(self, now: dt.datetime) -> list[Any]:
        """Every quota's usage in its current period at `now`."""
        ...


#: Ids deleted or disabled in a registry section (`Registry.inactive`): checks leave them alone.
Inactive = Callable[[str], set[int]]

#: Longest range a preview replays (each day is 1,440 evaluations).
MAX_PREVIEW_DAYS = 31


class Detection(BaseModel):
    """What one evaluation did: alert ids by change, and how long it took."""

    now: dt.datetime
    observations: int = Field(description="Metric values judged.")
    opened: list[int]
    escalated: list[int]
    de_escalated: list[int]
    resolved: list[int]
    updated: list[int]
    suppressed: list[str] = Field(description="Fingerprints in their cooldown that would have opened.")
    skipped: list[str] = Field(description="Rules not evaluated, and why.")
    elapsed_ms: float


class Preview(BaseModel):
    """What candidate thresholds would have opened and resolved over a day range; stored alerts are untouched."""

    start: dt.datetime
    end: dt.datetime
    evaluations: int = Field(description="Minutes replayed.")
    opened: int
    resolved: int
    by_type: dict[str, int]
    by_severity: dict[str, int] = Field(description="By peak severity.")
    thresholds: Thresholds
    alerts: list[Alert]

    @classmethod
    def of(cls, start: dt.datetime, end: dt.datetime, evaluations: int, thresholds: Thresholds,
           alerts: list[Alert]) -> Preview:
        """A preview of replayed alerts, with their counts."""
        by_type: dict[str, int] = {}
        by_severity: dict[str, int] = {}
        for a in alerts:
            by_type[a.type] = by_type.get(a.type, 0) + 1
            by_severity[a.peak_severity] = by_severity.get(a.peak_severity, 0) + 1
        return cls(start=start, end=end, evaluations=evaluations, opened=len(alerts),
                   resolved=sum(a.status == "resolved" for a in alerts), by_type=by_type, by_severity=by_severity,
                   thresholds=thresholds, alerts=alerts)


class Alerts:
    """The alerts domain of one engine."""

    def __init__(self, infra: Infra, quotas: QuotaSource | None, inactive: Inactive) -> None:
        """`quotas` None: quota_exceeded checks nothing."""
        self.infra = infra
        self.quotas = quotas
        self.inactive = inactive
        self.thresholds = ThresholdStore(infra.store, infra.now)
        self.lifecycle = Lifecycle(infra.store)
        self.history = AlertHistory(infra.store)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()
        self._quota_usage: tuple[dt.datetime, list[Any]] | None = None

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection evaluations share, one evaluation at a time, its lake view made afresh.

        Opening a connection (macros, views) costs as much as a third of an evaluation and the
        scheduler evaluates every minute, so one is kept; re-creating the `log_records` view (a few
        ms) each time picks up whatever the catalog says the lake is now.
        """
        with self._con_lock:
            if self._con is None:
                self._con = self.infra.connect()
            else:
                catalog.register(self._con, LOG_RECORDS, self.infra.data_dir)
            yield self._con

    # -- detection ----------------------------------------------------------------------------

    def run_once(self, now: dt.datetime | None = None) -> Detection:
        """Evaluate every rule at `now` (default: the engine clock) and apply the result to stored alerts.

        The scheduler calls this every minute; `ezstats alerts detect --at` calls it for any instant.
        """
        now = as_utc(now or self.infra.now())
        started = time.perf_counter()
        thresholds = self.thresholds.read().thresholds
        with self._connection() as con:
            evaluation = detector.evaluate(con, thresholds, now, self._quotas())
        changes = self.lifecycle.apply(evaluation.observations, thresholds, now, evaluation.complete,
                                       self._retired())
        return Detection(
            now=now, observations=len(evaluation.observations), opened=changes.opened, escalated=changes.escalated,
            de_escalated=changes.de_escalated, resolved=changes.resolved, updated=changes.updated,
            suppressed=changes.suppressed, skipped=evaluation.skipped,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _quotas(self) -> Callable[[dt.datetime], list[Any]] | None:
        """Key quota usage for an evaluation, reused for `alert_quota_refresh_seconds` after it was summed.

        Usage comes from raw records (seconds on a month of data), while the rule it feeds moves slowly
        (a share of a period's quota), so a minute-by-minute detector recomputes it every few minutes.
        An evaluation at an earlier instant than the cached one (a replay) recomputes.
        """
        quotas = self.quotas
        if quotas is None:
            return None
        refresh = dt.timedelta(seconds=self.infra.settings.alert_quota_refresh_seconds)

        def usage(now: dt.datetime) -> list[Any]:
            cached = self._quota_usage
            if cached is not None and dt.timedelta(0) <= now - cached[0] < refresh:
                return cached[1]
            fresh = list(quotas.usage(now))
            self._quota_usage = (now, fresh)
            return fresh

        return usage

    def _retired(self) -> dict[str, set[int]]:
        """Masters, keys and provider keys deleted or disabled in the registry."""
        return {column: self.inactive(section) for column, section in (
            ("master_id", "masters"), ("key_id", "keys"), ("provider_key_id", "provider_keys"))}

    # -- reading and acting on alerts ---------------------------------------------------------

    def list_alerts(self, where: AlertFilter | None = None, cursor: str | None = None, limit: int = 50) -> AlertPage:
        """Alerts matching `where`, newest first, with a cursor for the next page. Raises InvalidParameter."""
        return self.history.page(where or AlertFilter(), cursor, limit)

    def get(self, alert_id: int) -> Alert:
        """One alert with its event history. Raises NotFound."""
        check_id(alert_id, "alert id")
        return self.history.get(alert_id)

    def ack(self, alert_id: int, by: str = "admin", note: str | None = None,
            expires_at: dt.datetime | None = None) -> Alert:
        """Acknowledge an open alert, optionally until `expires_at`. Raises NotFound, Conflict, InvalidParameter."""
        check_id(alert_id, "alert id")
        self.lifecycle.acknowledge(alert_id, by, note, check_instant(expires_at, "expires_at") if expires_at else None,
                                   as_utc(self.infra.now()))
        return self.get(alert_id)

    def resolve(self, alert_id: int, by: str = "admin", note: str | None = None) -> Alert:
        """Resolve an open or acknowledged alert by hand. Raises NotFound, Conflict."""
        check_id(alert_id, "alert id")
        self.lifecycle.resolve(alert_id, by, note, as_utc(self.infra.now()))
        return self.get(alert_id)

    def resolve_scope(self, column: str, scope_id: int, by: str = "registry", note: str = "deleted") -> list[int]:
        """Resolve every active alert of a master, key or provider key (e.g. one deleted from the registry).

        Args:
            column: `master_id`, `key_id` or `provider_key_id`.
        Returns:
            The ids of the alerts resolved. Raises InvalidParameter for another column.
        """
        return self.lifecycle.resolve_scope(column, scope_id, by, note, as_utc(self.infra.now()))

    def stats(self, since: dt.datetime | None = None, until: dt.datetime | None = None) -> AlertCounts:
        """Alerts opened in [since, until) (default: the last 24 hours) by type, peak severity and status."""
        until = check_instant(until, "until") if until else as_utc(self.infra.now())
        since = check_instant(since, "since") if since else until - dt.timedelta(days=1)
        counts = self.history.counts(AlertFilter(since=since, until=until))
        return AlertCounts(start=since, end=until, **counts)

    # -- thresholds ---------------------------------------------------------------------------

    def read_thresholds(self) -> StoredThresholds:
        """The thresholds in force and their version (created with the defaults on first read)."""
        return self.thresholds.read()

    def update_thresholds(self, body: Any, if_match: int | None, by: str = "admin") -> StoredThresholds:
        """Replace the thresholds if `if_match` is the current version (None: unconditionally).

        Raises:
            InvalidParameter: the body is invalid. PreconditionFailed: `if_match` is stale.
        """
        return self.thresholds.update(body, if_match, by)

    def preview(self, candidate: Any, from_day: dt.date, to_day: dt.date) -> Preview:
        """Replay the detector at every minute of the days [from_day, to_day] with candidate thresholds.

        `candidate` None replays the stored thresholds. Stored alerts are not touched; quota alerts are
        not replayed (see `backtest.replay`); the replay stops at the engine clock's now.

        Raises:
            InvalidParameter: invalid candidate, from_day after to_day, or more than 31 days.
        """
        thresholds = self.read_thresholds().thresholds if candidate is None else Thresholds.parse(candidate)
        check_day(from_day, "from")
        check_day(to_day, "to")
        if from_day > to_day:
            raise InvalidParameter(f"from ({from_day}) is after to ({to_day})")
        if (to_day - from_day).days + 1 > MAX_PREVIEW_DAYS:
            raise InvalidParameter(f"a preview covers at most {MAX_PREVIEW_DAYS} days")
        start = dt.datetime.combine(from_day, dt.time(), dt.UTC)
        end = dt.datetime.combine(to_day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return self.replay(thresholds, start, min(end, as_utc(self.infra.now())))

    def replay(self, thresholds: Thresholds, start: dt.datetime, end: dt.datetime) -> Preview:
        """The backtest of `preview` over any whole-minute range [start, end)."""
        # A replay runs for seconds: on its own connection, so that evaluations never wait for it.
        con = self.infra.connect()
        try:
            alerts, evaluations = backtest.replay(con, thresholds, as_utc(start), as_utc(end))
        finally:
            con.close()
        return Preview.of(as_utc(start), as_utc(end), evaluations, thresholds, alerts)

