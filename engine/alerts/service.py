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

from engine import catalog, zones
from engine.alerts import backtest, detector, rules
from engine.alerts.history import Alert, AlertCounts, AlertFilter, AlertHistory, AlertPage
from engine.alerts.lifecycle import Lifecycle
from engine.alerts.previews import Preview, PreviewRun, Previews
from engine.alerts.thresholds import StoredThresholds, Thresholds, ThresholdStore
from engine.errors import InvalidParameter
from engine.infra import Infra
from engine.stats import periods
from engine.tables import LOG_RECORDS
from engine.times import as_utc, check_day, check_id, check_instant


class QuotaSource(Protocol):
    """Where quota_exceeded reads key quota usage (`engine.quotas.Quotas`)."""

    def usage(self, now: dt.datetime) -> list[Any]:
        """Every quota's usage in its current period at `now`."""
        ...


#: Ids deleted or disabled in a registry section (`Registry.inactive`): checks leave them alone.
Inactive = Callable[[str], set[int]]

#: The provider credentials and their status (`Credentials.states`): credential_invalid reads them.
CredentialSource = Callable[[], list[Any]]

#: The registry sections whose ids alerts carry, by alert column.
_SECTIONS = (("master_id", "masters"), ("key_id", "keys"), ("provider_key_id", "provider_keys"))

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


class Alerts:
    """The alerts domain of one engine."""

    def __init__(self, infra: Infra, quotas: QuotaSource | None, inactive: Inactive,
                 credentials: CredentialSource | None = None, deleted: Inactive | None = None) -> None:
        """`quotas` None: quota_exceeded checks nothing; `credentials` None: credential_invalid checks nothing.
        `deleted` (`Registry.deleted`) retires credential_invalid alerts, which are about disabled keys."""
        self.infra = infra
        self.quotas = quotas
        self.inactive = inactive
        self.credentials = credentials
        self.deleted = deleted
        self.thresholds = ThresholdStore(infra.store, infra.now)
        self.lifecycle = Lifecycle(infra.store)
        self.history = AlertHistory(infra.store)
        self.previews = Previews(infra, self.replay)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()

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
                catalog.register(self._con, LOG_RECORDS, self.infra.data_dir, self.infra.lake.objects)
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
            # Quota usage is read afresh every time: from rollups plus raw records it costs tens of ms.
            evaluation = detector.evaluate(con, thresholds, now, self.quotas, self.credentials)
        changes = self.lifecycle.apply(evaluation.observations, thresholds, now, evaluation.complete,
                                       self._retired(), self._deleted())
        return Detection(
            now=now, observations=len(evaluation.observations), opened=changes.opened, escalated=changes.escalated,
            de_escalated=changes.de_escalated, resolved=changes.resolved, updated=changes.updated,
            suppressed=changes.suppressed, skipped=evaluation.skipped,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _retired(self) -> dict[str, set[int]]:
        """Masters, keys and provider keys deleted or disabled in the registry."""
        return {column: self.inactive(section) for column, section in _SECTIONS}

    def _deleted(self) -> dict[str, set[int]]:
        """Masters, keys and provider keys deleted from the registry."""
        deleted = self.deleted
        return {column: deleted(section) for column, section in _SECTIONS} if deleted else {}

    def credential_changed(self, provider_key_id: int, valid: bool) -> list[int]:
        """A credential was disabled (open its credential_invalid alert now) or imported working again
        (resolve it now); `Credentials.on_change` calls this. Returns the ids of the alerts opened or resolved."""
        now = as_utc(self.infra.now())
        if valid:
            return self.lifecycle.resolve_scope("provider_key_id", provider_key_id, "credentials",
                                                "a working credential was imported", now, "credential_invalid")
        if self.credentials is None:
            return []
        states = [c for c in self.credentials() if getattr(c, "provider_key_id", None) == provider_key_id]
        changes = self.lifecycle.apply(rules.credential_invalid(states, now), self.thresholds.read().thresholds,
                                       now, deleted=self._deleted())
        return changes.opened

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

    def stats(self, since: dt.datetime | None = None, until: dt.datetime | None = None, period: str | None = None,
              first: dt.date | None = None, last: dt.date | None = None, tz: str | None = None) -> AlertCounts:
        """Alerts opened in [since, until) (default: the last 24 hours), or in a stats period (`today`,
        `last7d`, `custom` with first/last...) of the zone `tz` (default EZ_DEFAULT_TZ), by type, peak
        severity and status.

        Raises:
            InvalidParameter: a period with since/until; an unknown period or zone; since not before until.
        """
        zone = zones.zone(tz or self.infra.settings.default_tz)
        if period is not None:
            if since is not None or until is not None:
                raise InvalidParameter("give either period (with from/to for custom) or since/until, not both")
            resolved = periods.resolve(period, self.infra.now(), first, last, zone)
            since, until = resolved.start, resolved.end
        elif first is not None or last is not None:
            raise InvalidParameter("from and to go with period=custom")
        until = check_instant(until, "until") if until else as_utc(self.infra.now())
        since = check_instant(since, "since") if since else until - dt.timedelta(days=1)
        counts = self.history.counts(AlertFilter(since=since, until=until))
        return AlertCounts(start=since, end=until, tz=zone.key, **counts)

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
        """Replay the detector at every minute of the days [from_day, to_day] with candidate thresholds,
        here and now (`submit_preview` queues the same as a job).

        `candidate` None replays the stored thresholds. Stored alerts are not touched; quota alerts are
        not replayed (see `backtest.replay`); the replay stops at the engine clock's now.

        Raises:
            InvalidParameter: invalid candidate, from_day after to_day, or more than 31 days.
        """
        return self.replay(*self._preview_span(candidate, from_day, to_day))

    def submit_preview(self, candidate: Any, from_day: dt.date, to_day: dt.date) -> PreviewRun:
        """Queue the backtest of `preview` as a run: answers at once; read it with `preview_run`.

        Raises:
            InvalidParameter: as `preview`. Conflict: too many previews are waiting already.
        """
        return self.previews.submit(*self._preview_span(candidate, from_day, to_day))

    def preview_run(self, run_id: int) -> PreviewRun:
        """A queued backtest: its status and progress, and its result once done. Raises NotFound."""
        return self.previews.get(run_id)

    def _preview_span(self, candidate: Any, from_day: dt.date, to_day: dt.date
                      ) -> tuple[Thresholds, dt.datetime, dt.datetime]:
        thresholds = self.read_thresholds().thresholds if candidate is None else Thresholds.parse(candidate)
        check_day(from_day, "from")
        check_day(to_day, "to")
        if from_day > to_day:
            raise InvalidParameter(f"from ({from_day}) is after to ({to_day})")
        if (to_day - from_day).days + 1 > MAX_PREVIEW_DAYS:
            raise InvalidParameter(f"a preview covers at most {MAX_PREVIEW_DAYS} days")
        start = dt.datetime.combine(from_day, dt.time(), dt.UTC)
        end = dt.datetime.combine(to_day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return thresholds, start, max(start, min(end, as_utc(self.infra.now())))

    def backfill(self, start: dt.datetime, end: dt.datetime) -> Preview:
        """Store the alerts the detector would have raised had it run every minute of [start, end) with the
        stored thresholds (the backtest's replay, kept instead of thrown away); e.g. after loading history.

        Alerts already stored (same fingerprint and opening instant) are not stored twice. Quota alerts
        are not replayed; `run_once` at the end judges the current quota periods.
        """
        thresholds = self.read_thresholds().thresholds
        start = as_utc(start).replace(second=0, microsecond=0)
        con = self.infra.connect()
        try:
            alerts, evaluations = backtest.replay(con, thresholds, start, as_utc(end), adopt=self.lifecycle.adopt)
        finally:
            con.close()
        return Preview.of(start, as_utc(end), evaluations, thresholds, alerts)

    def replay(self, thresholds: Thresholds, start: dt.datetime, end: dt.datetime,
               progress: backtest.Progress | None = None, stop: Callable[[], bool] | None = None) -> Preview:
        """The backtest of `preview` over any whole-minute range [start, end); `progress` and `stop` as
        `backtest.replay` takes them."""
        # A replay runs for seconds: on its own connection, so that evaluations never wait for it.
        con = self.infra.connect()
        try:
            alerts, evaluations = backtest.replay(con, thresholds, as_utc(start), as_utc(end), progress=progress,
                                                  stop=stop)
        finally:
            con.close()
        return Preview.of(as_utc(start), as_utc(end), evaluations, thresholds, alerts)
