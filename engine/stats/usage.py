"""Quota units used per key since a per-key start: exact, from the rollups plus a few raw records.

A key's usage is the sum of `quota_cost` of its records in [start, end). Summing a month of raw
records takes seconds, too slow for the alert detector's every-minute evaluation; the rollups hold
`quota_cost` per key and hour, and the daily tier per key and day. As for stats answers (see
`engine.stats.reader`), whole hours that the rollups hold come from them (whole closed days from the
daily tier), and the rest from raw records: the hours dirtied since the last rollup refresh, the
partial hour before the end, and the partial first hour of a start that is not on the hour (a quota
reset by hand). Each raw range is scanned on its own, so a manual reset a month ago costs one hour
of raw records, not a month.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from engine import queries
from engine.stats.rollups import Rollups
from engine.tables import ROLLUPS_DAILY, ROLLUPS_HOURLY
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
        self._closed: OrderedDict[tuple[object, ...], dict[int, int]] = OrderedDict()
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
        dirty = sorted(h for h in self.rollups.pending().hours if first < h + HOUR and h < split)
        dirty_days = {h.date() for h in dirty}
        rolled = [d for d in self.rollups.days() if first.date() <= d and midnight(d) < split]
        daily = [d for d in self.rollups.daily_days()
                 if first.date() <= d and midnight(d) + DAY <= split and d not in dirty_days]
        hourly = sorted({d for d in rolled if d not in set(daily)}
                        | {s.date() for s in key_starts if s != midnight(s.date()) and s < split})
        used: dict[int, int] = dict.fromkeys(keys, 0)
        with self.connection() as con:
            # Days before the split's: their rollup files change only when late records arrive, so
            # their part is kept, keyed by the files' identities (a rewritten file is a new key).
            today = midnight(split.date())
            closed = {"key_ids": keys, "starts": key_starts, "split": today,
                      "raw_hours": [h for h in dirty if h < today], "daily_days": daily,
                      "hourly_days": [d for d in hourly if d < split.date()]}
            self._add(used, self._closed_part(con, closed))
            if split > today:
                self._add(used, queries.run(con, "quota_usage_rollups", key_ids=keys, starts=key_starts, split=split,
                                            raw_hours=dirty, daily_days=[], hourly_days=[split.date()]))
            for lo, hi in _raw_ranges(key_starts, dirty, split, end):
                last = hi - dt.timedelta(microseconds=1)
                self._add(used, queries.run(con, "quota_usage_raw", key_ids=keys, starts=key_starts, split=split,
                                            raw_hours=dirty, lo=lo, hi=hi, lo_day=lo.date(), hi_day=last.date()))
        return used

    def _closed_part(self, con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> dict[int, int]:
        if not params["daily_days"] and not params["hourly_days"]:
            return {}
        files = [_identity(self.rollups.infra.data_dir / ROLLUPS_DAILY.file(d)) for d in params["daily_days"]]
        files += [_identity(self.rollups.infra.data_dir / ROLLUPS_HOURLY.file(d)) for d in params["hourly_days"]]
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

    @staticmethod
    def _add(used: dict[int, int], part: pa.Table | dict[int, int]) -> None:
        if isinstance(part, pa.Table):
            part = dict(zip(part["key_id"].to_pylist(), part["used"].to_pylist(), strict=True))
        for key, amount in part.items():
            used[key] += amount


def _identity(path: Path) -> tuple[int, int, int]:
    """What changes when a derived file is replaced: inode, mtime, size (0s when there is none)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


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
