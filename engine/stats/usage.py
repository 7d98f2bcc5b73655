"""Quota units used per key since a per-key start: exact, from the rollups plus a few raw records.

A key's usage is the sum of `quota_cost` of its records in [start, end). Summing a month of raw
records takes seconds, too slow for the alert detector's every-minute evaluation; the rollups hold
`quota_cost` per key and hour, and the daily tier per key and day. As for stats answers (see
`engine.stats.reader`), whole hours that the rollups hold come from them (whole closed days from the
daily tier), and the rest from raw records: the hours dirtied since the last rollup refresh, the
partial hour before the end, and the partial first hour of a start that is not on the hour (a quota
reset by hand). Each raw range is read on its own, so a manual reset a month ago costs one hour of
raw records, not a month.

Every part is kept between calls, keyed by what it was read from, so the detector's evaluation every
minute reads only what changed: the days before the end's day by the identities of the rollup files
read (a late record rewrites a file, hence a new key); the end's day hour by hour, by each hour's
rollup version; the raw records file by file (`engine.stats.live`: a published file never changes).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import duckdb
import pyarrow as pa

from engine import queries
from engine.stats.live import LiveParts, relisting
from engine.stats.rollups import Rollups
from engine.tables import LOG_RECORDS, ROLLUPS_DAILY, ROLLUPS_HOURLY
from engine.times import DAY, HOUR, floor_hour, midnight

#: Closed-day parts kept (each a dict of a few hundred keys).
CACHE_ENTRIES = 16
#: A reading connection with the lake views (`Reader.connection`).
Connection = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


class KeyUsage:
    """Sums of `quota_cost` per key over per-key periods, read from rollups and raw records."""

    def __init__(self, rollups: Rollups, connection: Connection) -> None:
        self.rollups = rollups
        self.connection = connection
        self.live = LiveParts(LOG_RECORDS.root(rollups.infra.data_dir), rollups.infra.lake.objects)
        self._closed: OrderedDict[tuple[Any, ...], dict[int, int]] = OrderedDict()
        self._hours: dict[dt.datetime, tuple[int, dict[int, int]]] = {}
        self._lock = threading.Lock()

    def sums(self, starts: dict[int, dt.datetime], end: dt.datetime) -> dict[int, int]:
        """Each key's sum of quota_cost over [its start, end); keys without records get 0.

        Exact: equal to the sum over the raw records, late records included (an hour that received a
        batch since the rollups were refreshed is read raw until they are).
        """
        if not starts:
            return {}
        keys = sorted(starts)
        key_starts = [min(starts[k], end) for k in keys]
        first = min(key_starts)
        split = max(first, floor_hour(end))
        today = midnight(split.date())
        dirty = sorted(h for h in self.rollups.pending().hours if first < h + HOUR and h < split)
        dirty_days = {h.date() for h in dirty}
        rolled = [d for d in self.rollups.days() if first.date() <= d < split.date()]
        daily = [d for d in self.rollups.daily_days()
                 if first.date() <= d and midnight(d) + DAY <= split and d not in dirty_days]
        hourly = sorted({d for d in rolled if d not in set(daily)}
                        | {s.date() for s in key_starts if s != midnight(s.date()) and s < today})
        used: dict[int, int] = dict.fromkeys(keys, 0)
        with self.connection() as con:
            _add(used, self._closed_part(con, {
                "key_ids": keys, "starts": key_starts, "split": today, "raw_hours": [h for h in dirty if h < today],
                "daily_days": daily, "hourly_days": hourly}))
            if split > today:
                _add(used, self._open_day_part(con, dict(zip(keys, key_starts, strict=True)), today, split, dirty))
            shape = {"key_ids": keys, "starts": key_starts, "split": split, "raw_hours": dirty}
            for lo, hi in _raw_ranges(key_starts, dirty, split, end):
                _add(used, self._raw_part(con, {**shape, "lo": lo}, hi))
        return used

    def _raw_part(self, con: duckdb.DuckDBPyConnection, shape: dict[str, Any], end: dt.datetime) -> dict[int, int]:
        """The raw usage of [shape's lo, end), file by file (each settled file's part is kept)."""
        def read() -> pa.Table | None:
            files = self.live.files.between(shape["lo"], end)
            return self.live.read(con, "quota_usage_raw", _same, _merged, shape, files, end)

        part = relisting(read)
        if part is None:
            return {}
        return dict(zip(part["key_id"].to_pylist(), part["used"].to_pylist(), strict=True))

    def _closed_part(self, con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> dict[int, int]:
        """The rolled-up usage of the days before the end's day, kept by the identities of its files."""
        if not params["daily_days"] and not params["hourly_days"]:
            return {}
        lake = self.rollups.infra.lake
        files = lake.identities(ROLLUPS_DAILY, params["daily_days"]) + lake.identities(ROLLUPS_HOURLY,
                                                                                         params["hourly_days"])
        key = (*(tuple(v) if isinstance(v, list) else v for v in params.values()), tuple(files))
        with self._lock:
            if key in self._closed:
                self._closed.move_to_end(key)
                return self._closed[key]
        table = queries.run(con, "quota_usage_rollups", **params)
        part = dict(zip(table["key_id"].to_pylist(), table["used"].to_pylist(), strict=True))
        with self._lock:
            self._closed[key] = part
            while len(self._closed) > CACHE_ENTRIES:
                self._closed.popitem(last=False)
        return part

    def _open_day_part(self, con: duckdb.DuckDBPyConnection, starts: dict[int, dt.datetime], today: dt.datetime,
                       split: dt.datetime, dirty: list[dt.datetime]) -> dict[int, int]:
        """The rolled-up usage of the end's day before the split, hour by hour, each hour kept by version.

        A version changes once an hour's rows are republished (`Rollups.versions`), and a dirty hour is
        read raw instead, so a kept hour always holds what the rollups hold for it.
        """
        versions = {dt.datetime.fromisoformat(h): v for h, v in self.rollups.versions(today, split)}
        with self._lock:
            stale = [h for h, v in versions.items() if self._hours.get(h, (None,))[0] != v]
        if stale:
            table = queries.run(con, "quota_usage_hours", day=today.date(), hours=stale)
            fresh: dict[dt.datetime, dict[int, int]] = {h: {} for h in stale}
            for hour, key, amount in zip(table["hour"].to_pylist(), table["key_id"].to_pylist(),
                                         table["used"].to_pylist(), strict=True):
                fresh[hour][key] = amount
            with self._lock:
                for h in [h for h in self._hours if not today <= h < today + DAY]:
                    del self._hours[h]   # another day's (the day has moved on, or a replay of the past)
                self._hours.update({h: (versions[h], fresh[h]) for h in stale})
        skip = set(dirty)
        out: dict[int, int] = {}
        with self._lock:
            hours = [(h, self._hours[h][1]) for h in versions if h not in skip and h in self._hours]
        for hour, per_key in hours:
            for key, amount in per_key.items():
                start = starts.get(key)
                if start is not None and start <= hour:
                    out[key] = out.get(key, 0) + amount
        return out


def _add(used: dict[int, int], part: dict[int, int]) -> None:
    for key, amount in part.items():
        used[key] += amount


def _same(table: pa.Table) -> pa.Table:
    return table


def _merged(a: pa.Table, b: pa.Table) -> pa.Table:
    """Two raw parts (key_id, used) as one."""
    summed = pa.concat_tables([a, b]).group_by("key_id").aggregate([("used", "sum")])
    return summed.rename_columns(["key_id", "used"]).select(["key_id", "used"])


def _raw_ranges(starts: list[dt.datetime], dirty: list[dt.datetime], split: dt.datetime, end: dt.datetime
                ) -> list[tuple[dt.datetime, dt.datetime]]:
    """The disjoint time ranges that hold every record the rollups cannot answer for, merged."""
    wanted = [(max(split, min(starts)), end)] if end > split else []
    wanted += [(h, h + HOUR) for h in dirty]
    wanted += [(s, min(floor_hour(s) + HOUR, split)) for s in starts if s != floor_hour(s) and s < split]
    merged: list[tuple[dt.datetime, dt.datetime]] = []
    for lo, hi in sorted(w for w in wanted if w[0] < w[1]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged
