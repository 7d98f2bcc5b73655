"""Stats for any period and filter, answered from rollups plus, at most, a few hours of raw records.

A query is planned in hours: whole hours before `split` (the period's end, cut down to the hour) come
from the rollups unless the ledger says a batch committed into them after the last refresh; those
"dirty" hours and the partial last hour come from raw `log_records`. Whole closed days without a
dirty hour come from the daily tier. Counts, sums and distinct counts are therefore always exact and
current.

Latency percentiles are exact when every hour came from raw. Otherwise they come from the merged
histograms of one dimension (within 1 %) when the query involves at most one id dimension (a filter
on it and/or a group_by of it); a query filtering or grouping on two dimensions computes them
exactly from the raw records instead, or reports them unavailable where raw records are no longer
retained. The answer says which.

Work per request is bounded: a series answers at most EZ_STATS_MAX_POINTS rows (intervals x groups) and
an answer at most EZ_STATS_MAX_GROUPS groups, refused (LimitExceeded) before the rows are built. A heavy
request (raw records over more than a day, or hourly detail over more than a week) waits for one of
EZ_STATS_HEAVY_CONCURRENCY slots and runs its queries on one DuckDB thread, so light requests (today,
last7d from the daily tier) keep a core however many heavy ones arrive.
"""

from __future__ import annotations

import datetime as dt
import math
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from engine import catalog, queries
from engine.errors import InvalidParameter, LimitExceeded
from engine.infra import Infra
from engine.stats import histograms, merging
from engine.stats.answers import PeriodStats, SeriesStats
from engine.stats.live import LiveParts, relisting
from engine.stats.periods import Period
from engine.stats.rollups import Rollups
from engine.tables import LATENCY_DAILY, LOG_RECORDS, ROLLUPS_DAILY, VIEWS
from engine.times import DAY, HOUR, check_id, floor_hour, midnight

T = TypeVar("T")
GROUP_BYS = ("master", "key", "model", "provider", "provider_key", "day", "hour")
INTERVALS = ("hour", "day")
SOURCES = ("auto", "raw")
TOP_MODELS = 10
POOL_SIZE = 4  # reading connections kept open (the API serves stats from a thread pool)
CACHE_ENTRIES = 64  # cached closed-day parts of answers
CACHE_MAX_ROWS = 500_000

COUNT_METRICS = ("requests", "successes", "errors", "rate_limited", "provider_failures", "prompt_tokens",
                 "completion_tokens", "total_tokens", "quota_cost", "masters", "keys", "streams")
SERIES_METRICS = (*COUNT_METRICS, "error_rate", "latency_avg", "latency_max", "latency_p50", "latency_p95",
                  "latency_p99")

_ID_GROUPS = {"master", "key", "provider", "provider_key"}
HEAVY_RAW_HOURS = 24        # raw hours beyond which a request is heavy
HEAVY_HOURLY_HOURS = 7 * 24  # hours read from the hourly tier (not the daily one) beyond which it is heavy

LostHours = Callable[[dt.datetime, dt.datetime], list[dt.datetime]]


@dataclass(frozen=True)
class Filters:
    """Equality filters on the ids of a record; None means any."""

    master_id: int | None = None
    key_id: int | None = None
    model: str | None = None
    provider_id: int | None = None
    provider_key_id: int | None = None

    def params(self) -> dict[str, Any]:
        """As query parameters."""
        return asdict(self)

    def check(self) -> None:
        """Raises InvalidParameter for an id beyond int64 (it cannot match a stored record, and DuckDB
        cannot bind it)."""
        for name in ("master_id", "key_id", "provider_id", "provider_key_id"):
            check_id(getattr(self, name), name)

    def to_dict(self) -> dict[str, Any]:
        """The filters that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Plan:
    """Which hours of a period come from rollups and which from raw records."""

    start: dt.datetime
    end: dt.datetime
    split: dt.datetime
    raw_from: dt.datetime
    raw_hours: tuple[dt.datetime, ...]
    daily_days: tuple[dt.date, ...]
    rollup_hours: int

    @property
    def exact(self) -> bool:
        """Every record is read raw, so percentiles can be exact."""
        return self.rollup_hours == 0

    def rollup_params(self) -> dict[str, Any]:
        """The rollup part's query parameters (see stats_sources.sql)."""
        return {"start": self.start, "split": self.split, "raw_hours": list(self.raw_hours),
                "daily_days": list(self.daily_days)}

    def raw_params(self) -> dict[str, Any]:
        """The raw part's query parameters, but for its files and end (see stats_sources.sql)."""
        return {"raw_from": self.raw_from, "split": self.split, "raw_hours": list(self.raw_hours)}


class Reader:
    """Reads stats for periods; one instance per engine."""

    def __init__(self, infra: Infra, rollups: Rollups, lost_hours: LostHours | None = None) -> None:
        self.infra = infra
        self.rollups = rollups
        self.lost_hours = lost_hours or (lambda start, end: [])
        self.live = LiveParts(LOG_RECORDS.root(infra.data_dir))
        self._heavy = threading.BoundedSemaphore(infra.settings.stats_heavy_concurrency)
        self._pool: queue.LifoQueue[_Pooled] = queue.LifoQueue()
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._cache_lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A reading connection from a small pool: macros, views and the Parquet metadata cache are
        paid for once, not on every request. One user at a time; closed explicitly when not kept
        (a DuckDB connection must not be left to a garbage collector on another thread)."""
        try:
            pooled = self._pool.get_nowait()
        except queue.Empty:
            con = self.infra.connect()
            load_sources(con)
            con.execute("SET parquet_metadata_cache = true")
            pooled = _Pooled(con, {})
        data_dir = self.infra.data_dir
        for table in VIEWS:
            # A view made while its table had no file reads an empty stand-in, and a glob that matches
            # nothing fails: re-point a view when its table gains its first file or loses its last.
            has = table.has_files(data_dir)
            if pooled.globbed.get(table.name) != has:
                catalog.register(pooled.con, table, data_dir)
                pooled.globbed[table.name] = has
        try:
            yield pooled.con
        finally:
            if self._pool.qsize() < POOL_SIZE:
                self._pool.put(pooled)
            else:
                pooled.con.close()

    def plan(self, period: Period, source: str = "auto", daily: bool = True) -> Plan:
        """Split a period into daily-tier days, hourly-tier hours and raw hours (see the module docstring).

        `daily=False` keeps whole days out of the daily tier (answers grouped by hour need hours).
        """
        if source not in SOURCES:
            raise InvalidParameter(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
        start, end = period.start, max(period.end, period.start)
        split = start if source == "raw" else max(start, floor_hour(end))
        dirty = sorted(h for h in self.rollups.pending().hours if start <= h < split)
        raw_from = min([split, *dirty])
        total_hours = int((split - start) / HOUR)
        days: tuple[dt.date, ...] = ()
        if daily and split > start:
            dirty_days = {h.date() for h in dirty}
            days = tuple(d for d in self.rollups.daily_days()
                         if d not in dirty_days and start <= midnight(d) and midnight(d) + DAY <= split)
        return Plan(start, end, split, raw_from, tuple(dirty), days, total_hours - len(dirty))

    def read(self, period: Period, filters: Filters, group_by: str | None = None, source: str = "auto"
             ) -> PeriodStats:
        """The SPEC metrics of a period: totals, groups, top models, and how percentiles were computed.

        Raises:
            InvalidParameter: an unknown group_by or source.
        """
        if group_by is not None and group_by not in GROUP_BYS:
            raise InvalidParameter(f"unknown group_by {group_by!r}; use one of {', '.join(GROUP_BYS)}")
        filters.check()
        plan = self.plan(period, source, daily=group_by != "hour")
        if group_by in ("hour", "day"):
            self._check_groups(_interval_count(plan, group_by), group_by)
        rows, latency, mode = self._query(plan, filters, group_by or "none", "none",
                                          check=lambda groups: self._check_groups(groups.num_rows, group_by))
        pcts = {(r["kind"], r["g1"]): r for r in latency or ()}
        total = next((r for r in rows if r["kind"] == "total"), None)
        groups = [r for r in rows if r["kind"] == "group"] if group_by else []
        models = sorted((r for r in rows if r["kind"] == "model"), key=lambda r: (-r["requests"], r["model"]))
        groups.sort(key=lambda r: (r["g1"] is None, r["g1"]) if group_by in ("day", "hour")
                    else (-r["requests"], str(r["g1"])))
        return PeriodStats.model_validate({
            "period": period.name,
            "start": plan.start,
            "end": plan.end,
            "filters": filters.to_dict(),
            "group_by": group_by,
            "totals": _metrics(total, pcts.get(("total", None))),
            "groups": [{"group": _group_value(group_by, g["g1"]),
                        **_metrics(g, pcts.get(("group", g["g1"])))} for g in groups],
            "top_models": [{"model": m["model"], "requests": m["requests"], "total_tokens": m["total_tokens"]}
                           for m in models[:TOP_MODELS]],
            "percentiles": mode,
            "sources": {"rollup_hours": plan.rollup_hours, "raw_hours": len(plan.raw_hours)
                        + (plan.end > plan.split), "daily_days": len(plan.daily_days),
                        "lost_hours": self.lost_hours(plan.start, plan.end)},
        })

    def _check_groups(self, groups: int, group_by: str | None) -> None:
        most = self.infra.settings.stats_max_groups
        if groups > most:
            raise LimitExceeded(
                f"this answer would hold {groups:,} groups (group_by={group_by}); at most {most:,} are answered "
                "(EZ_STATS_MAX_GROUPS): add a filter (master_id, key_id, model, provider_id, provider_key_id), "
                "group by day instead of hour, or ask a shorter period")

    def series(self, period: Period, filters: Filters, interval: str, metric: str, group_by: str | None = None,
               source: str = "auto") -> SeriesStats:
        """One metric per interval (and per group): flat rows with ISO times, as Grafana reads them.

        Raises:
            InvalidParameter: an unknown interval, metric, group_by or source.
        """
        if interval not in INTERVALS:
            raise InvalidParameter(f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
        if metric not in SERIES_METRICS:
            raise InvalidParameter(f"unknown metric {metric!r}; use one of {', '.join(SERIES_METRICS)}")
        if group_by is not None and group_by not in GROUP_BYS:
            raise InvalidParameter(f"unknown group_by {group_by!r}; use one of {', '.join(GROUP_BYS)}")
        filters.check()
        plan = self.plan(period, source, daily=interval != "hour" and group_by != "hour")
        intervals = _interval_count(plan, interval)
        self._check_points(intervals, 1, interval)
        if group_by is not None and group_by not in ("hour", "day") and intervals > 1:
            # Count the groups first, from the daily tier (cheap, cached): an hourly series of many groups is
            # refused before its query, which would be the expensive part.
            probe = self.plan(period, "auto", daily=True)
            groups, _, _ = self._query(probe, filters, group_by, "none", pcts=False)
            self._check_points(intervals, sum(r["kind"] == "group" for r in groups), interval)
        needs_pcts = metric in ("latency_p50", "latency_p95", "latency_p99")

        def check(groups: pa.Table) -> None:
            count = len(groups.column("g2").unique()) if group_by else 1
            self._check_points(intervals, count, interval)

        metrics, latency, mode = self._query(plan, filters, interval, group_by or "none", pcts=needs_pcts,
                                             check=check)
        pcts = {(r["g1"], r["g2"]): r for r in latency or ()}
        rows = []
        for r in metrics:
            if r["kind"] != "group":
                continue
            m = _metrics(r, pcts.get((r["g1"], r["g2"])))
            value = _pick(m, metric)
            time = r["g1"] if interval == "hour" else r["g1"] + "T00:00:00Z"
            row: dict[str, Any] = {"time": time}
            if group_by:
                row[group_by] = _group_value(group_by, r["g2"])
            row[metric] = value
            rows.append(row)
        rows += _empty_intervals(rows, plan, interval, metric, group_by)
        rows.sort(key=lambda x: (x["time"], str(x.get(group_by or "", ""))))
        return SeriesStats.model_validate({
            "period": period.name, "start": plan.start, "end": plan.end, "interval": interval, "metric": metric,
            "group_by": group_by, "filters": filters.to_dict(), "percentiles": mode if needs_pcts else "none",
            "rows": rows})

    def _check_points(self, intervals: int, groups: int, interval: str) -> None:
        most = self.infra.settings.stats_max_points
        if intervals * groups > most:
            what = f"{intervals:,} {interval}s" + (f" x {groups:,} groups" if groups > 1 else "")
            raise LimitExceeded(
                f"this series would answer {intervals * groups:,} points ({what}); at most {most:,} are answered "
                "(EZ_STATS_MAX_POINTS): ask interval=day, a shorter period, or a filter (master_id, key_id, model, "
                "provider_id, provider_key_id)")

    def heavy(self, plan: Plan, filters: Filters, group_by: str, then_by: str) -> bool:
        """Whether a request is heavy: it reads raw records for more than a day (dirty hours, source=raw, exact
        two-dimension percentiles) or the hourly tier for more than a week."""
        raw = len(plan.raw_hours) + math.ceil((plan.end - plan.split) / HOUR)
        if plan.exact or _histogram_dim(filters, group_by, then_by) is None:
            raw = max(raw, math.ceil((plan.end - plan.start) / HOUR))
        hourly = plan.rollup_hours - 24 * len(plan.daily_days)
        return raw > HEAVY_RAW_HOURS or hourly > HEAVY_HOURLY_HOURS

    def _query(self, plan: Plan, filters: Filters, group_by: str, then_by: str, pcts: bool = True,
               check: Callable[[pa.Table], None] | None = None,
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
        """Counts (and exact percentiles when all raw), then percentiles; returns how they were computed.

        `check` sees the groups before they are built (see `merging.metrics`), to refuse an answer over a limit.
        """
        if not self.heavy(plan, filters, group_by, then_by):
            with self.connection() as con:
                return self._run(con, plan, filters, group_by, then_by, pcts, check)
        with self._heavy, self.connection() as con:
            con.execute("SET threads = 1")
            try:
                return self._run(con, plan, filters, group_by, then_by, pcts, check)
            finally:
                con.execute("RESET threads")

    def _run(self, con: duckdb.DuckDBPyConnection, plan: Plan, filters: Filters, group_by: str, then_by: str,
             pcts: bool, check: Callable[[pa.Table], None] | None = None,
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
        groups = {"group_by": group_by, "then_by": then_by}
        grouped = group_by != "none" or then_by != "none"
        dim = _histogram_dim(filters, group_by, then_by) if pcts else None
        hist_shape = None
        if dim is not None and not plan.exact:
            found = filters.to_dict().get(_FILTER_OF[dim]) if dim != "gateway" else None
            hist_shape = {"dim": dim, "dim_id": None if found is None else str(found), **groups}
        versions = self._versions(plan)
        fine: pa.Table = self._cached(con, versions, "stats_fine", _same, **plan.rollup_params(),
                                      **filters.params(), **groups)
        live_fine, live_hist = relisting(lambda: self._raw_parts(con, plan, {**filters.params(), **groups},
                                                                 hist_shape))
        metrics = merging.metrics([fine] if live_fine is None else [fine, live_fine], grouped, check)
        if not pcts:
            return metrics, None, "none"
        if hist_shape is not None:
            parts = [self._cached(con, versions, "stats_hist", histograms.Histograms.of, **plan.rollup_params(),
                                  **hist_shape)]
            parts += [live_hist] if live_hist is not None else []
            return metrics, histograms.percentiles(con, parts, grouped), "approx"
        if not plan.exact and not self._raw_retained(plan):
            return metrics, None, "unavailable"
        return metrics, self._exact(con, plan, filters, groups), "exact"

    def _raw_parts(self, con: duckdb.DuckDBPyConnection, plan: Plan, fine_shape: dict[str, Any],
                   hist_shape: dict[str, Any] | None) -> tuple[pa.Table | None, histograms.Histograms | None]:
        """The raw part of an answer's counts and, for a `hist_shape`, of its histograms, from one listing."""
        files = self.live.files.between(plan.raw_from, plan.end)
        fine = self.live.read(con, "stats_live_fine", _same, merging.add_fine, {**plan.raw_params(), **fine_shape},
                              files, plan.end)
        if hist_shape is None:
            return fine, None
        hist = self.live.read(con, "stats_live_hist", histograms.Histograms.of, histograms.Histograms.add,
                              {**plan.raw_params(), **hist_shape}, files, plan.end)
        return fine, hist

    def _exact(self, con: duckdb.DuckDBPyConnection, plan: Plan, filters: Filters, groups: dict[str, str]
               ) -> list[dict[str, Any]]:
        """Exact percentiles from every raw record of the period."""
        def read() -> list[dict[str, Any]]:
            files = [f.path for f in self.live.files.between(plan.start, plan.end)]
            if not files:
                return []
            return queries.run(con, "stats_exact", files=files, start=plan.start, end=plan.end,
                               **filters.params(), **groups).to_pylist()
        return relisting(read)

    def _cached(self, con: duckdb.DuckDBPyConnection, versions: tuple[Any, ...], name: str,
                prepare: Callable[[pa.Table], T], **params: Any) -> T:
        """The rollup-served part of an answer (a query's rows, or what `prepare` makes of them), cached.

        Its key holds the plan's `versions`: late data rewrites a daily file or bumps an hour's version,
        so a stale entry is never looked up again."""
        key = (name, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(params.items())), versions)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit  # type: ignore[no-any-return]
        table = queries.run(con, name, **params)
        part = prepare(table)
        if table.num_rows <= CACHE_MAX_ROWS:
            with self._cache_lock:
                self._cache[key] = part
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return part

    def _versions(self, plan: Plan) -> tuple[Any, ...]:
        """What the rollup part of a plan was read from: each daily file's identity (inode, mtime, size)
        and the version of each rolled-up hour."""
        out = []
        for day in plan.daily_days:
            for table in (ROLLUPS_DAILY, LATENCY_DAILY):
                try:
                    st = (self.infra.data_dir / table.file(day)).stat()
                except FileNotFoundError:
                    out.append((0, 0, 0))
                    continue
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out), self.rollups.versions(plan.start, plan.split)

    def _raw_retained(self, plan: Plan) -> bool:
        """Whether raw records still cover every day of the plan that has rollups."""
        raw = LOG_RECORDS.days(self.infra.data_dir)
        first_rolled = [d for d in self.rollups.days() if plan.start <= midnight(d) < plan.end]
        return not first_rolled or (bool(raw) and raw[0] <= first_rolled[0])


@dataclass
class _Pooled:
    con: duckdb.DuckDBPyConnection
    globbed: dict[str, bool]


_FILTER_OF = {"master": "master_id", "key": "key_id", "model": "model", "provider": "provider_id",
              "provider_key": "provider_key_id"}


def _histogram_dim(filters: Filters, group_by: str, then_by: str) -> str | None:
    """The one histogram dimension that answers a query's percentiles, or None if it needs two."""
    by_filter = {dim for dim, name in _FILTER_OF.items() if getattr(filters, name) is not None}
    by_group = {g for g in (group_by, then_by) if g in _FILTER_OF}
    dims = by_filter | by_group
    if len(dims) > 1:
        return None
    return dims.pop() if dims else "gateway"


def _empty_intervals(rows: list[dict[str, Any]], plan: Plan, interval: str, metric: str, group_by: str | None
                     ) -> list[dict[str, Any]]:
    """Rows for the intervals (of each group seen) without records: a series without gaps, as charts
    expect; counts are 0 there, rates and latencies null."""
    times = _interval_times(plan, interval)
    groups = {r[group_by] for r in rows} if group_by else {None}
    have = {(r["time"], r[group_by] if group_by else None) for r in rows}
    empty = 0 if metric in COUNT_METRICS else None
    return [{"time": t, **({group_by: g} if group_by else {}), metric: empty}
            for t in times for g in groups if (t, g) not in have]


def _interval_count(plan: Plan, interval: str) -> int:
    """How many hours or days a plan's period touches (what `_interval_times` would list)."""
    if plan.end <= plan.start:
        return 0
    if interval == "hour":
        return math.ceil((plan.end - floor_hour(plan.start)) / HOUR)
    return ((plan.end - dt.timedelta(microseconds=1)).date() - plan.start.date()).days + 1


def _interval_times(plan: Plan, interval: str) -> list[str]:
    """The start of every interval of a plan's period, as the series answers them."""
    step = HOUR if interval == "hour" else DAY
    at = floor_hour(plan.start) if interval == "hour" else midnight(plan.start.date())
    times = []
    while at < plan.end:
        times.append(at.strftime("%Y-%m-%dT%H:00:00Z"))
        at += step
    return times


def _same(table: pa.Table) -> pa.Table:
    return table


def load_sources(con: duckdb.DuckDBPyConnection) -> None:
    """Define the stats_sources macros in a connection."""
    queries.run(con, "stats_sources")


def _metrics(row: dict[str, Any] | None, pct: dict[str, Any] | None) -> dict[str, Any]:
    row = row or {}
    n = row.get("requests") or 0
    source = pct or {}
    out: dict[str, Any] = {name: row.get(name) or 0 for name in COUNT_METRICS}
    out["error_rate"] = (out["errors"] / n) if n else None
    out["latency_ms"] = {
        "avg": row["latency_sum"] / n if n else None,
        "p50": _round(source.get("p50")),
        "p95": _round(source.get("p95")),
        "p99": _round(source.get("p99")),
        "max": row.get("latency_max"),
    }
    ttft_n = row.get("ttft_n") or 0
    out["ttft_ms"] = {"count": ttft_n, "avg": row["ttft_sum"] / ttft_n if ttft_n else None,
                      "max": row.get("ttft_max")}
    return out


def _pick(m: dict[str, Any], metric: str) -> Any:
    if metric.startswith("latency_"):
        return m["latency_ms"][metric.removeprefix("latency_")]
    return m[metric]


def _round(value: float | None) -> float | None:
    return None if value is None else float(value)


def _group_value(group_by: str | None, text: str | None) -> Any:
    if text is None or group_by not in _ID_GROUPS:
        return text
    return int(text)
