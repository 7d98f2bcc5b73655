"""`engine.alerts`: the alert use cases that the API, the CLI and the scheduler call."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from engine import catalog
from engine.alerts import backtest, detector
from engine.alerts.history import Alert, AlertFilter, AlertHistory, AlertPage
from engine.alerts.lifecycle import Lifecycle, iso
from engine.alerts.thresholds import StoredThresholds, Thresholds, ThresholdStore
from engine.errors import InvalidParameter

if TYPE_CHECKING:
    from engine.facade import Engine

#: Longest range a preview replays (each day is 1,440 evaluations).
MAX_PREVIEW_DAYS = 31


@dataclass(frozen=True)
class DetectionResult:
    """What one evaluation did: alert ids by change, and how long it took."""

    now: str
    observations: int
    opened: list[int]
    escalated: list[int]
    de_escalated: list[int]
    resolved: list[int]
    updated: list[int]
    suppressed: list[str]
    skipped: list[str]
    elapsed_ms: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class Preview:
    """A backtest: the alerts candidate thresholds would have opened and resolved over a day range."""

    start: str
    end: str
    evaluations: int
    thresholds: dict[str, Any]
    alerts: list[Alert] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Alerts by type and by peak severity."""
        out: dict[str, dict[str, int]] = {"by_type": {}, "by_severity": {}}
        for a in self.alerts:
            out["by_type"][a.type] = out["by_type"].get(a.type, 0) + 1
            out["by_severity"][a.peak_severity] = out["by_severity"].get(a.peak_severity, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"start": self.start, "end": self.end, "evaluations": self.evaluations,
                "opened": len(self.alerts), "resolved": sum(a.status == "resolved" for a in self.alerts),
                **self.counts, "thresholds": self.thresholds, "alerts": [a.to_dict() for a in self.alerts]}


class Alerts:
    """The alerts domain of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.thresholds = ThresholdStore(engine.store, engine.clock)
        self.lifecycle = Lifecycle(engine.store)
        self.history = AlertHistory(engine.store)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()
        self._quota_usage: tuple[object, dt.datetime, list[Any]] | None = None

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection evaluations share, one evaluation at a time, its lake view made afresh.

        Opening a connection (macros, views) costs as much as a third of an evaluation and the
        scheduler evaluates every minute, so one is kept; re-creating the `log_records` view (a few
        ms) each time picks up whatever the catalog says the lake is now.
        """
        with self._con_lock:
            if self._con is None:
                self._con = self.engine.connect()
            else:
                catalog.register(self._con, catalog.LOG_RECORDS, self.engine.settings.data_dir)
            yield self._con

    # -- detection ----------------------------------------------------------------------------

    def run_once(self, now: dt.datetime | None = None) -> DetectionResult:
        """Evaluate every rule at `now` (default: the engine clock) and apply the result to stored alerts.

        The scheduler calls this every minute; `ezstats alerts detect --at` calls it for any instant.
        """
        now = _utc(now or self.engine.clock())
        started = time.perf_counter()
        thresholds = self.thresholds.read().thresholds
        with self._connection() as con:
            evaluation = detector.evaluate(con, thresholds, now, self._quotas())
        changes = self.lifecycle.apply(evaluation.observations, thresholds, now, evaluation.complete,
                                       self._retired())
        return DetectionResult(
            iso(now), len(evaluation.observations), changes.opened, changes.escalated, changes.de_escalated,
            changes.resolved, changes.updated, changes.suppressed, evaluation.skipped,
            round((time.perf_counter() - started) * 1000, 2),
        )

    def _quotas(self) -> Callable[[dt.datetime], list[Any]] | None:
        """Key quota usage for an evaluation, reused for `alert_quota_refresh_seconds` after it was summed.

        Usage comes from raw records (seconds on a month of data), while the rule it feeds moves slowly
        (a share of a period's quota), so a minute-by-minute detector recomputes it every few minutes.
        An evaluation at an earlier instant than the cached one (a replay) recomputes.
        """
        quotas = getattr(self.engine, "quotas", None)
        if quotas is None:
            return None
        refresh = dt.timedelta(seconds=self.engine.settings.alert_quota_refresh_seconds)

        def usage(now: dt.datetime) -> list[Any]:
            cached = self._quota_usage
            if cached is not None and cached[0] is quotas and dt.timedelta(0) <= now - cached[1] < refresh:
                return cached[2]
            fresh = list(quotas.usage(now))
            self._quota_usage = (quotas, now, fresh)
            return fresh

        return usage

    def _retired(self) -> dict[str, set[int]]:
        """Masters, keys and provider keys deleted or disabled in the registry (when there is one)."""
        registry = getattr(self.engine, "registry", None)
        if registry is None:
            return {}
        return {column: registry.inactive(section) for column, section in (
            ("master_id", "masters"), ("key_id", "keys"), ("provider_key_id", "provider_keys"))}

    # -- reading and acting on alerts ---------------------------------------------------------

    def list_alerts(self, where: AlertFilter | None = None, cursor: str | None = None, limit: int = 50) -> AlertPage:
        """Alerts matching `where`, newest first, with a cursor for the next page. Raises InvalidParameter."""
        return self.history.page(where or AlertFilter(), cursor, limit)

    def get(self, alert_id: int) -> Alert:
        """One alert with its event history. Raises NotFound."""
        return self.history.get(alert_id)

    def ack(self, alert_id: int, by: str = "admin", note: str | None = None,
            expires_at: dt.datetime | None = None) -> Alert:
        """Acknowledge an open alert, optionally until `expires_at`. Raises NotFound, Conflict, InvalidParameter."""
        self.lifecycle.acknowledge(alert_id, by, note, _utc(expires_at) if expires_at else None,
                                   _utc(self.engine.clock()))
        return self.get(alert_id)

    def resolve(self, alert_id: int, by: str = "admin", note: str | None = None) -> Alert:
        """Resolve an open or acknowledged alert by hand. Raises NotFound, Conflict."""
        self.lifecycle.resolve(alert_id, by, note, _utc(self.engine.clock()))
        return self.get(alert_id)

    def resolve_scope(self, column: str, scope_id: int, by: str = "registry", note: str = "deleted") -> list[int]:
        """Resolve every active alert of a master, key or provider key (e.g. one deleted from the registry).

        Args:
            column: `master_id`, `key_id` or `provider_key_id`.
        Returns:
            The ids of the alerts resolved. Raises InvalidParameter for another column.
        """
        return self.lifecycle.resolve_scope(column, scope_id, by, note, _utc(self.engine.clock()))

    def stats(self, since: dt.datetime | None = None, until: dt.datetime | None = None) -> dict[str, Any]:
        """Alerts opened in [since, until) (default: the last 24 hours) by type, peak severity and status."""
        until = _utc(until or self.engine.clock())
        since = _utc(since) if since else until - dt.timedelta(days=1)
        counts = self.history.counts(AlertFilter(since=since, until=until))
        return {"start": iso(since), "end": iso(until), **counts}

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
        if from_day > to_day:
            raise InvalidParameter(f"from ({from_day}) is after to ({to_day})")
        if (to_day - from_day).days + 1 > MAX_PREVIEW_DAYS:
            raise InvalidParameter(f"a preview covers at most {MAX_PREVIEW_DAYS} days")
        start = dt.datetime.combine(from_day, dt.time(), dt.UTC)
        end = dt.datetime.combine(to_day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return self.replay(thresholds, start, min(end, _utc(self.engine.clock())))

    def replay(self, thresholds: Thresholds, start: dt.datetime, end: dt.datetime) -> Preview:
        """The backtest of `preview` over any whole-minute range [start, end)."""
        # A replay runs for seconds: on its own connection, so that evaluations never wait for it.
        con = self.engine.connect()
        try:
            alerts, evaluations = backtest.replay(con, thresholds, _utc(start), _utc(end))
        finally:
            con.close()
        return Preview(iso(_utc(start)), iso(_utc(end)), evaluations, thresholds.model_dump(mode="json"), alerts)


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise InvalidParameter(f"{moment.isoformat()} has no time zone; give UTC (e.g. 2026-01-01T00:00:00Z)")
    return moment.astimezone(dt.UTC)
