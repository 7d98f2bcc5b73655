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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from engine import catalog, queries, zones
from engine.errors import InvalidParameter, LimitExceeded
from engine.infra import Infra
from engine.stats import histograms, merging, topn
from engine.stats.answers import PeriodStats, SeriesStats
from engine.stats.live import LakeFile, LiveParts, relisting
from engine.stats.periods import Period
from engine.stats.rollups import Rollups
from engine.stats.topn import TopN
from engine.tables import LATENCY_DAILY, LOG_RECORDS, ROLLUPS_DAILY, VIEWS
from engine.times import DAY, HOUR, check_id, floor_hour, midnight

T = TypeVar("T")
#: The registry's display names of one section's ids (`Registry.names`).
NameLookup = Callable[[str, Iterable[int]], dict[int, str]]
GROUP_BYS = ("master", "key", "model", "provider", "provider_key", "day", "hour")
TIME_GROUPS = ("day", "hour")
MAX_CUT_HOURS = 48  # hours cut by local boundaries read raw; beyond it the whole period is (see plan)
INTERVALS = ("hour", "day")
SOURCES = ("auto", "raw")
TOP_MODELS = 10
POOL_SIZE = 4  # reading connections kept open (the API serves stats from a thread pool)
CACHE_ENTRIES = 64  # cached closed-day parts of answers
CACHE_MAX_ROWS = 500_000
ANSWERS_KEPT = 32  # questions whose last answer of `read` is kept (see Reader._keep)

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
    offsets: zones.Offsets = zones.UTC_OFFSETS

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

    def __init__(self, infra: Infra, rollups: Rollups, names: NameLookup, lost_hours: LostHours | None = None
                 ) -> None:
        self.infra = infra
        self.rollups = rollups
        self.names = names
        self.lost_hours = lost_hours or (lambda start, end: [])
        self.live = LiveParts(LOG_RECORDS.root(infra.data_dir), infra.lake.objects)
        self._heavy = threading.BoundedSemaphore(infra.settings.stats_heavy_concurrency)
        self._pool: queue.LifoQueue[_Pooled] = queue.LifoQueue()
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._answers: OrderedDict[tuple[Any, ...], _Kept] = OrderedDict()  # by question (see _keep)
        self._seen: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()  # inputs computed, not kept
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
        views = self.infra.lake.views()
        for table in VIEWS:
            # A view made while its table had no file reads an empty stand-in, and a glob that matches
            # nothing fails: re-point a view when its table gains its first file or loses its last. On object
            # storage a view lists the live files: re-made whenever the manifest's live set changed.
            if table.name not in pooled.globbed or pooled.globbed[table.name] != views[table.name]:
                catalog.register(pooled.con, table, data_dir, self.infra.lake.objects)
                pooled.globbed[table.name] = views[table.name]
        try:
            yield pooled.con
        finally:
            if self._pool.qsize() < POOL_SIZE:
                self._pool.put(pooled)
            else:
                pooled.con.close()

    def plan(self, period: Period, source: str = "auto", boundaries: Iterable[dt.datetime] = ()) -> Plan:
        """Split a period into daily-tier days, hourly-tier hours and raw hours (see the module docstring).

        `boundaries` are the starts of an answer's local day or hour buckets. A UTC day of the daily tier
        serves only if no boundary falls inside it (it must land in one bucket); an hour that a boundary
        (or the period's start) cuts is read raw, so each record lands in its own bucket: how zones 30
        or 45 minutes off UTC stay exact. When that would cut more than MAX_CUT_HOURS hours (hour buckets
        in such a zone), the whole period is read raw.
        """
        if source not in SOURCES:
            raise InvalidParameter(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
        start, end = period.start, max(period.end, period.start)
        split = start if source == "raw" else max(start, floor_hour(end))
        inside = [b for b in boundaries if start < b < end]
        cut = {floor_hour(b) for b in (start, *inside) if b != floor_hour(b) and floor_hour(b) < split}
        if len(cut) > MAX_CUT_HOURS:
            split, cut = start, set()
        dirty = sorted(cut | {h for h in self.rollups.pending().hours if start <= h < split})
        raw_from = max(start, min([split, *dirty]))
        first_whole = start if start == floor_hour(start) else floor_hour(start) + HOUR
        whole = max(int((split - first_whole) / HOUR), 0)
        days: tuple[dt.date, ...] = ()
        if split > start:
            dirty_days = {h.date() for h in dirty}
            days = tuple(d for d in self.rollups.daily_days()
                         if d not in dirty_days and start <= midnight(d) and midnight(d) + DAY <= split
                         and not any(midnight(d) < b < midnight(d) + DAY for b in inside))
        offsets = zones.offsets(period.tz, start, end)
        return Plan(start, end, split, raw_from, tuple(dirty), days, whole - sum(h >= first_whole for h in dirty),
                    offsets)

    def read(self, period: Period, filters: Filters, group_by: str | None = None, source: str = "auto",
             top: TopN | None = None) -> PeriodStats:
        """The SPEC metrics of a period: totals, groups, top models, and how percentiles were computed.

        Day and hour groups are those of the period's zone. `top` sorts the groups, keeps the first
        `limit` and, if asked, sums the rest into `other`; totals always cover every group.

        The last answer to each question (period, zone, filters, grouping, top-N) is kept (see `_keep`)
        and served again while nothing it was computed from changed (see `_answer_key`): the rollup
        part's versions, the raw files it read (all of them ending before the period's end), the plan,
        the registry names of its groups and the hours that lost records.

        Raises:
            InvalidParameter: an unknown group_by, source or sort; a limit below 1.
        """
        top = top or TopN()
        _check_group_by(group_by)
        top.check(SERIES_METRICS)
        filters.check()
        plan = self.plan(period, source, _boundaries(period, group_by))
        if group_by in TIME_GROUPS:
            self._check_groups(_interval_count(plan, group_by), group_by, top)
        versions = self._versions(plan)
        question = (period.name, period.tz_name, filters, group_by, top)
        key, files = self._answer_key(plan, period, filters, group_by, top, versions)
        lost = self.lost_hours(plan.start, plan.end)
        if key is not None:
            with self._cache_lock:
                kept = self._answers.get(question)
                if kept is not None:
                    self._answers.move_to_end(question)
            if kept is not None and kept.key == key and kept.lost == lost and kept.names == self._names(
                    group_by, [g.group for g in kept.answer.groups]):
                self._check_groups(kept.answer.groups_total, group_by, top)  # EZ_STATS_MAX_GROUPS may have changed
                # The figures hold for any end past the files read (see _answer_key); only `end` moves.
                return kept.answer if kept.answer.end == plan.end else kept.answer.model_copy(update={"end": plan.end})
        answer, names = self._answer(plan, period, filters, group_by, top, versions, lost, files)
        if key is not None:
            self._keep(question, _Kept(key, answer, names, lost))
        return answer

    def _keep(self, question: tuple[Any, ...], kept: _Kept) -> None:
        """Keep the answer to a question: the first one, one computed from what the kept one was (names or
        lost hours changed), or one whose inputs were already computed once before (`_seen`).

        An answer of ~500 groups is ~5,000 Python objects. Kept, they outlive the request and are promoted
        to the collector's oldest generation, whose full collection (~100 ms here over the ~130k objects
        of a served process) they bring about every few requests when every answer is new (a batch landing
        before each one). So an answer whose inputs changed since the kept one is kept only the second
        time those inputs are seen: a dashboard polling an unchanged lake is served from the second poll
        after a change; requests that each see a new batch keep nothing new.
        """
        with self._cache_lock:
            held = self._answers.get(question)
            if held is not None and held.key != kept.key and self._seen.get(question) != kept.key:
                self._seen[question] = kept.key
                self._seen.move_to_end(question)
                while len(self._seen) > ANSWERS_KEPT:
                    self._seen.popitem(last=False)
                return
            self._seen.pop(question, None)
            self._answers[question] = kept
            self._answers.move_to_end(question)
            while len(self._answers) > ANSWERS_KEPT:
                self._answers.popitem(last=False)

    def _answer_key(self, plan: Plan, period: Period, filters: Filters, group_by: str | None, top: TopN,
                    versions: tuple[Any, ...]) -> tuple[tuple[Any, ...] | None, list[LakeFile] | None]:
        """What an answer of `read` is computed from (None when it is not to be kept), and the raw files listed
        for it (None if none were), which the answer then reads: one listing a request, and the key names
        exactly the files the answer was computed from.

        The rollup part is named by its versions (as `_cached` does); the raw part by the identities of
        the files it reads, all of which must hold no record at or after the period's end: then every
        record they hold is before any later end too, and a later request that lists the same files and
        plans the same hours (same split, dirty hours and daily days) gets the same figures. A new batch,
        a late record (a new file, and its hour dirty in the ledger), a compaction (new identities) or a
        rebuilt rollup (a new version or daily file) changes the key. Exact percentiles (all raw, or two
        id dimensions) read every raw file of the period and are not kept.
        """
        if plan.exact or _histogram_dim(filters, group_by or "none", "none") is None:
            return None, None
        files = relisting(lambda: self.live.files.between(plan.raw_from, plan.end))
        if not all(f.ends_before(plan.end) for f in files):
            return None, files
        return (period.name, period.tz_name, plan.start, plan.split, plan.end > plan.split, plan.raw_from,
                plan.raw_hours, plan.daily_days, plan.rollup_hours, plan.offsets, filters, group_by, top,
                versions, tuple(sorted(f.identity for f in files))), files

    def _answer(self, plan: Plan, period: Period, filters: Filters, group_by: str | None, top: TopN,
                versions: tuple[Any, ...], lost: list[dt.datetime], files: list[LakeFile] | None = None,
                ) -> tuple[PeriodStats, dict[Any, str]]:
        """Compute an answer of `read` (from the raw `files`, when listed), and the registry names it holds."""
        rows, latency, mode = self._query(plan, filters, group_by or "none", "none", versions=versions,
                                          check=lambda groups: self._check_groups(groups.num_rows, group_by, top),
                                          files=files)
        total = next((r for r in rows if r["kind"] == "total"), None)
        total_pct = next((r for r in latency or () if r["kind"] == "total"), None)
        models = sorted((r for r in rows if r["kind"] == "model"), key=lambda r: (-r["requests"], r["model"]))
        groups = _group_metrics(group_by, [r for r in rows if r["kind"] == "group"],
                                {r["g1"]: r for r in latency or () if r["kind"] == "group"}) if group_by else []
        listed, rest = top.split(top.order(groups, _pick, group_by in TIME_GROUPS))
        other = None
        if rest and top.other:
            fold = topn.Fold.of("g1", [g["g1"] for g in listed])
            folded, latency, _ = self._query(plan, filters, group_by or "none", "none", fold=fold, versions=versions,
                                             files=files)
            found = next((r for r in folded if r["kind"] == "group" and r["g1"] == topn.OTHER), None)
            pct = next((r for r in latency or () if r["kind"] == "group" and r["g1"] == topn.OTHER), None)
            other = {"groups": len(rest), **_metrics(found, pct)}
        names = self._names(group_by, [g["group"] for g in listed])
        for g in listed:
            del g["g1"]
            g["name"] = names.get(g["group"])
        answer = PeriodStats.model_validate({
            "period": period.name,
            "tz": period.tz_name,
            "start": plan.start,
            "end": plan.end,
            "filters": filters.to_dict(),
            "group_by": group_by,
            "sort": top.sort,
            "limit": top.limit,
            "totals": _metrics(total, total_pct),
            "groups": listed,
            "groups_total": len(groups),
            "other": other,
            "top_models": [{"model": m["model"], "requests": m["requests"], "total_tokens": m["total_tokens"]}
                           for m in models[:TOP_MODELS]],
            "percentiles": mode,
            "sources": {"rollup_hours": plan.rollup_hours, "raw_hours": len(plan.raw_hours)
                        + (plan.end > plan.split), "daily_days": len(plan.daily_days),
                        "lost_hours": lost},
        })
        return answer, names

    def _check_groups(self, groups: int, group_by: str | None, top: TopN) -> None:
        """Refuse an answer that would list more than EZ_STATS_MAX_GROUPS groups (a `limit` bounds it)."""
        most = self.infra.settings.stats_max_groups
        if min(groups, top.limit or groups) > most:
            raise LimitExceeded(
                f"this answer would hold {groups:,} groups (group_by={group_by}); at most {most:,} are answered "
                "(EZ_STATS_MAX_GROUPS): add limit= (with sort= and other=true), a filter (master_id, key_id, "
                "model, provider_id, provider_key_id), group by day instead of hour, or ask a shorter period")

    def series(self, period: Period, filters: Filters, interval: str, metric: str, group_by: str | None = None,
               source: str = "auto", top: TopN | None = None) -> SeriesStats:
        """One metric per interval (and per group): flat rows with ISO times, as Grafana reads them.

        Intervals are the local days or hours of the period's zone; a row's `time` is the UTC instant
        its interval starts. With `top.limit`, the groups listed are the top ones over the whole period
        (by `top.sort`, default the series' metric, descending), and with `top.other` each interval
        also has a row summing the other groups.

        Raises:
            InvalidParameter: an unknown interval, metric, group_by, source or sort; a limit below 1.
        """
        top = top or TopN()
        if interval not in INTERVALS:
            raise InvalidParameter(f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
        if metric not in SERIES_METRICS:
            raise InvalidParameter(f"unknown metric {metric!r}; use one of {', '.join(SERIES_METRICS)}")
        _check_group_by(group_by)
        top.check(SERIES_METRICS)
        filters.check()
        intervals = _interval_count(self.plan(period, "auto"), interval)
        self._check_points(intervals, 1, interval)
        if group_by is not None and group_by not in TIME_GROUPS and intervals > 1 and top.limit is None:
            # Count the groups first, from the daily tier (cheap, cached): an hourly series of many groups is
            # refused before its query, which would be the expensive part.
            probe = self.plan(period, "auto")
            groups, _, _ = self._query(probe, filters, group_by, "none", pcts=False)
            self._check_points(intervals, sum(r["kind"] == "group" for r in groups), interval)
        elif top.limit is not None:
            self._check_points(intervals, top.limit + top.other, interval)
        fold = None
        if group_by and top.limit is not None:
            ranked = self.read(period, filters, group_by, source, TopN(top.limit, top.sort or f"-{metric}"))
            fold = topn.Fold.of("g2", [g.group for g in ranked.groups])
        bounds = sorted({*_boundaries(period, interval), *_boundaries(period, group_by)})
        plan = self.plan(period, source, bounds)
        needs_pcts = metric in ("latency_p50", "latency_p95", "latency_p99")

        def check(groups: pa.Table) -> None:
            count = len(groups.column("g2").unique()) if group_by and fold is None else 1
            self._check_points(intervals, count, interval)

        metrics, latency, mode = self._query(plan, filters, interval, group_by or "none", pcts=needs_pcts, fold=fold,
                                             check=check)
        pcts = {(r["g1"], r["g2"]): r for r in latency or ()}
        rows: list[dict[str, Any]] = []
        for r in metrics:
            if r["kind"] != "group":
                continue
            is_other = fold is not None and r["g2"] == topn.OTHER
            if is_other and not top.other:
                continue
            row: dict[str, Any] = {"time": _interval_start(interval, r["g1"], period.tz)}
            if group_by:
                row["group"] = None if is_other else _group_value(group_by, r["g2"])
                row["name"] = "other" if is_other else None
                if top.other:
                    row["other"] = is_other
            row[metric] = _pick(_metrics(r, pcts.get((r["g1"], r["g2"]))), metric)
            rows.append(row)
        rows += _empty_intervals(rows, plan, period.tz, interval, metric, group_by is not None)
        if group_by:
            names = self._names(group_by, {r["group"] for r in rows if not r.get("other")})
            for row in rows:
                if not row.get("other"):
                    row["name"] = names.get(row["group"])
        rows.sort(key=lambda x: (x["time"], bool(x.get("other")), x.get("group") is None, str(x.get("group"))))
        return SeriesStats.model_validate({
            "period": period.name, "tz": period.tz_name, "start": plan.start, "end": plan.end, "interval": interval,
            "metric": metric, "group_by": group_by, "sort": top.sort or (f"-{metric}" if fold else None),
            "limit": top.limit, "filters": filters.to_dict(), "percentiles": mode if needs_pcts else "none",
            "rows": rows})

    def _names(self, group_by: str | None, groups: Iterable[Any]) -> dict[Any, str]:
        """Registry display names of id groups (masters, keys, providers, provider keys)."""
        section = _SECTIONS.get(group_by or "")
        ids = [g for g in groups if isinstance(g, int)]
        return dict(self.names(section, ids)) if section and ids else {}

    def _check_points(self, intervals: int, groups: int, interval: str) -> None:
        most = self.infra.settings.stats_max_points
        if intervals * groups > most:
            what = f"{intervals:,} {interval}s" + (f" x {groups:,} groups" if groups > 1 else "")
            raise LimitExceeded(
                f"this series would answer {intervals * groups:,} points ({what}); at most {most:,} are answered "
                "(EZ_STATS_MAX_POINTS): ask interval=day, a shorter period, limit= (top groups), or a filter "
                "(master_id, key_id, model, provider_id, provider_key_id)")

    def heavy(self, plan: Plan, filters: Filters, group_by: str, then_by: str) -> bool:
        """Whether a request is heavy: it reads raw records for more than a day (dirty hours, source=raw, exact
        two-dimension percentiles, hours cut by a zone's boundaries) or the hourly tier for more than a week."""
        raw = len(plan.raw_hours) + math.ceil((plan.end - plan.split) / HOUR)
        if plan.exact or _histogram_dim(filters, group_by, then_by) is None:
            raw = max(raw, math.ceil((plan.end - plan.start) / HOUR))
        hourly = plan.rollup_hours - 24 * len(plan.daily_days)
        return raw > HEAVY_RAW_HOURS or hourly > HEAVY_HOURLY_HOURS

    def _query(self, plan: Plan, filters: Filters, group_by: str, then_by: str, pcts: bool = True,
               fold: topn.Fold | None = None, check: Callable[[pa.Table], None] | None = None,
               versions: tuple[Any, ...] | None = None, files: list[LakeFile] | None = None,
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
        """Counts (and exact percentiles when all raw), then percentiles; returns how they were computed.

        `check` sees the groups before they are built (see `merging.Tally.rows`), to refuse an answer over a limit.
        `versions`: the plan's (`_versions`), when the caller already read them; `files`: the raw files of
        [raw_from, end), when the caller listed them.
        """
        versions = versions if versions is not None else self._versions(plan)
        if not self.heavy(plan, filters, group_by, then_by):
            with self.connection() as con:
                return self._run(con, plan, filters, group_by, then_by, pcts, versions, fold, check, files)
        with self._heavy, self.connection() as con:
            con.execute("SET threads = 1")
            try:
                return self._run(con, plan, filters, group_by, then_by, pcts, versions, fold, check, files)
            finally:
                con.execute("RESET threads")

    def _run(self, con: duckdb.DuckDBPyConnection, plan: Plan, filters: Filters, group_by: str, then_by: str,
             pcts: bool, versions: tuple[Any, ...], fold: topn.Fold | None = None,
             check: Callable[[pa.Table], None] | None = None, files: list[LakeFile] | None = None,
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
        groups = {"group_by": group_by, "then_by": then_by, **plan.offsets.params()}
        grouped = group_by != "none" or then_by != "none"
        dim = _histogram_dim(filters, group_by, then_by) if pcts else None
        hist_shape = None
        if dim is not None and not plan.exact:
            found = filters.to_dict().get(_FILTER_OF[dim]) if dim != "gateway" else None
            hist_shape = {"dim": dim, "dim_id": None if found is None else str(found), **groups}
        rollup = self._cached(con, versions, "stats_fine", merging.Tally.of, **plan.rollup_params(),
                              **filters.params(), **groups)
        if hist_shape is not None:
            rollup = rollup.with_hist(self._cached(con, versions, "stats_hist", histograms.Histograms.of,
                                                   **plan.rollup_params(), **hist_shape))
        given = [files] if files is not None else []  # a file gone since the caller listed: list again
        shape = {**plan.raw_params(), **filters.params(), **groups, "buckets": hist_shape is not None}
        # The raw part is kept added to the rollup part it was read with: named by the plan's rollup part.
        seed_key = (versions, plan.start, plan.daily_days)

        def read() -> merging.Tally | None:
            listing = given.pop() if given else self.live.files.between(plan.raw_from, plan.end)
            return self.live.read(con, "stats_live_fine", _same, merging.Tally.add, shape, listing, plan.end,
                                  seed=rollup, seed_key=seed_key)

        tally = relisting(read) or rollup
        if fold:
            tally = tally.fold(fold)
        metrics = tally.rows(grouped, check)
        if not pcts:
            return metrics, None, "none"
        if tally.hist is not None:  # the histograms of the answer's one dimension (hist_shape)
            return metrics, histograms.percentiles(con, [tally.hist], grouped), "approx"
        if not plan.exact and not self._raw_retained(plan):
            return metrics, None, "unavailable"
        return metrics, self._exact(con, plan, filters, groups, fold), "exact"

    def _exact(self, con: duckdb.DuckDBPyConnection, plan: Plan, filters: Filters, groups: dict[str, Any],
               fold: topn.Fold | None = None) -> list[dict[str, Any]]:
        """Exact percentiles from every raw record of the period."""
        keep = fold.params() if fold else {"keep_g1": None, "keep_g2": None}

        def read() -> list[dict[str, Any]]:
            files = [f.path for f in self.live.files.between(plan.start, plan.end)]
            if not files:
                return []
            return queries.run(con, "stats_exact", files=files, start=plan.start, end=plan.end,
                               **filters.params(), **groups, **keep).to_pylist()
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
        lake = self.infra.lake
        files = (*lake.identities(ROLLUPS_DAILY, plan.daily_days), *lake.identities(LATENCY_DAILY, plan.daily_days))
        return files, self.rollups.versions(plan.start, plan.split)

    def _raw_retained(self, plan: Plan) -> bool:
        """Whether raw records still cover every day of the plan that has rollups."""
        raw = self.infra.lake.days(LOG_RECORDS)
        first_rolled = [d for d in self.rollups.days() if plan.start <= midnight(d) < plan.end]
        return not first_rolled or (bool(raw) and raw[0] <= first_rolled[0])


@dataclass(frozen=True)
class _Kept:
    """An answer of `read` kept: what it was computed from (`Reader._answer_key`) and served with."""

    key: tuple[Any, ...]
    answer: PeriodStats
    names: dict[Any, str]
    lost: list[dt.datetime]


@dataclass
class _Pooled:
    con: duckdb.DuckDBPyConnection
    globbed: dict[str, object]


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


def _empty_intervals(rows: list[dict[str, Any]], plan: Plan, tz: ZoneInfo, interval: str, metric: str,
                     grouped: bool) -> list[dict[str, Any]]:
    """Rows for the intervals (of each group seen) without records: a series without gaps, as charts
    expect; counts are 0 there, rates and latencies null."""
    starts = zones.hour_starts if interval == "hour" else zones.day_starts
    times = [_instant(at) for at in starts(plan.start, plan.end, tz)] if plan.end > plan.start else []
    keys = ("group", "name", "other")
    groups = {tuple(r.get(k) for k in keys) for r in rows} if grouped else {(None, None, None)}
    have = {(r["time"], *(r.get(k) for k in keys)) for r in rows}
    empty = 0 if metric in COUNT_METRICS else None
    out = []
    for t in times:
        for g in groups:
            if (t, *g) not in have:
                fields = {k: v for k, v in zip(keys, g, strict=True) if grouped and (k != "other" or v is not None)}
                out.append({"time": t, **fields, metric: empty})
    return out


def _interval_count(plan: Plan, interval: str) -> int:
    """About how many hours or days a plan's period touches (exact for zones of whole-hour offsets; for
    the limits, which it is for)."""
    if plan.end <= plan.start:
        return 0
    if interval == "hour":
        return math.ceil((plan.end - floor_hour(plan.start)) / HOUR)
    return ((plan.end - dt.timedelta(microseconds=1)).date() - plan.start.date()).days + 1


def _boundaries(period: Period, unit: str | None) -> list[dt.datetime]:
    """The starts of the local days or hours of a period (none for other groupings)."""
    if unit == "day":
        return zones.day_starts(period.start, period.end, period.tz)
    if unit == "hour":
        return zones.hour_starts(period.start, period.end, period.tz)
    return []


def _interval_start(interval: str, label: str, tz: ZoneInfo) -> str:
    """A series row's time: the UTC instant its local hour (labelled so already) or day starts."""
    if interval == "hour":
        return label
    return _instant(zones.local_midnight(dt.date.fromisoformat(label), tz))


def _instant(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_group_by(group_by: str | None) -> None:
    if group_by is not None and group_by not in GROUP_BYS:
        raise InvalidParameter(f"unknown group_by {group_by!r}; use one of {', '.join(GROUP_BYS)}")


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


def _group_metrics(group_by: str, rows: list[dict[str, Any]], pcts: dict[Any, dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """`_metrics` of each group row (with its `group` value and `g1` text), in one loop: an answer by key
    builds ~500 of them per request."""
    ids = group_by in _ID_GROUPS
    out = []
    none: dict[str, Any] = {}
    for r in rows:
        g1 = r["g1"]
        n = r["requests"] or 0
        errors = r["errors"] or 0
        ttft_n = r["ttft_n"] or 0
        pct = pcts.get(g1, none)
        p50, p95, p99 = pct.get("p50"), pct.get("p95"), pct.get("p99")
        out.append({
            "group": int(g1) if ids and g1 is not None else g1, "g1": g1,
            "requests": n, "successes": r["successes"] or 0, "errors": errors,
            "rate_limited": r["rate_limited"] or 0, "provider_failures": r["provider_failures"] or 0,
            "prompt_tokens": r["prompt_tokens"] or 0, "completion_tokens": r["completion_tokens"] or 0,
            "total_tokens": r["total_tokens"] or 0, "quota_cost": r["quota_cost"] or 0,
            "masters": r["masters"] or 0, "keys": r["keys"] or 0, "streams": r["streams"] or 0,
            "error_rate": errors / n if n else None,
            "latency_ms": {"avg": r["latency_sum"] / n if n else None,
                           "p50": None if p50 is None else float(p50), "p95": None if p95 is None else float(p95),
                           "p99": None if p99 is None else float(p99), "max": r.get("latency_max")},
            "ttft_ms": {"count": ttft_n, "avg": r["ttft_sum"] / ttft_n if ttft_n else None,
                        "max": r.get("ttft_max")},
        })
    return out


def _pick(m: dict[str, Any], metric: str) -> Any:
    if metric.startswith("latency_"):
        return m["latency_ms"][metric.removeprefix("latency_")]
    return m[metric]


def _round(value: float | None) -> float | None:
    return None if value is None else float(value)


#: The registry section naming each id group.
_SECTIONS = {"master": "masters", "key": "keys", "provider": "providers", "provider_key": "provider_keys"}


def _group_value(group_by: str | None, text: str | None) -> Any:
    if text is None or group_by not in _ID_GROUPS:
        return text
    return int(text)
