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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import duckdb
import pyarrow as pa

from engine import queries
from engine.stats.rollups import Rollups
from engine.times import DAY, HOUR, floor_hour, midnight

#: A reading connection with the lake views (`Reader.connection`).
Connection = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


class KeyUsage:
    """Sums of `quota_cost` per key over per-key periods, read from rollups and raw records."""

    def __init__(self, rollups: Rollups, connection: Connection) -> None:
        self.rollups = rollups
        self.connection = connection

    def sums(self, starts: dict[int, dt.datetime], end: dt.datetime) -> dict[int, int]:
        """Each key's sum of quota_cost over [its start, end); keys without records get 0.

        Exact: equal to the sum over the raw records, late records included (an hour that received a
        batch since the rollups were refreshed is read raw until they are).
        """
        if not starts:
            return {}
        keys = sorted(starts)
        key_starts = [min(starts[k], end) for k in keys]
        split = max(min(key_starts), floor_hour(end))
        dirty = sorted(h for h in self.rollups.pending().hours if min(key_starts) < h + HOUR and h < split)
        dirty_days = {h.date() for h in dirty}
        first_day = min(key_starts).date()
        daily = [d for d in self.rollups.daily_days()
                 if first_day <= d and midnight(d) + DAY <= split and d not in dirty_days]
        daily_set = set(daily)
        hourly = sorted({d for d in _days(first_day, split) if d not in daily_set}
                        | {s.date() for s in key_starts if s != midnight(s.date()) and s < split})
        common = {"key_ids": keys, "starts": key_starts, "split": split, "raw_hours": dirty}
        used: dict[int, int] = dict.fromkeys(keys, 0)
        with self.connection() as con:
            if split > min(key_starts):
                self._add(used, queries.run(con, "quota_usage_rollups", **common, daily_days=daily,
                                            hourly_days=hourly))
            for lo, hi in _raw_ranges(key_starts, dirty, split, end):
                last = hi - dt.timedelta(microseconds=1)
                self._add(used, queries.run(con, "quota_usage_raw", **common, lo=lo, hi=hi, lo_day=lo.date(),
                                            hi_day=last.date()))
        return used

    @staticmethod
    def _add(used: dict[int, int], table: pa.Table) -> None:
        for key, amount in zip(table["key_id"].to_pylist(), table["used"].to_pylist(), strict=True):
            used[key] += amount


def _days(first: dt.date, split: dt.datetime) -> Iterator[dt.date]:
    """The days that hold an hour of [midnight(first), split)."""
    day = first
    while midnight(day) < split:
        yield day
        day += DAY


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
