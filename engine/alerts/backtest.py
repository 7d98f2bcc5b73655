"""Backtest: replay the detector minute by minute over stored history with candidate thresholds.

Instead of running the window queries once per minute (1,440 times a day), each query runs once per
UTC day over one-minute buckets; cumulative sums of those buckets give every window of every minute
at once (numpy, a minutes x scopes matrix per rule). Most of what a minute observes is healthy and
watched by no alert, and the lifecycle skips such observations anyway; so, per minute, only the
scopes that could breach a threshold (a loose vectorised test) or that have an active alert go
through the same rule functions and the same lifecycle as the live detector, into a scratch store
that is thrown away. Stored alerts are never touched. One day of buckets is held at a time.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from engine import queries
from engine.alerts import rules
from engine.alerts.detector import day_so_far, surge_windows, window_ending, window_params
from engine.alerts.history import Alert, AlertHistory
from engine.alerts.lifecycle import ACTIVE, Lifecycle
from engine.alerts.rules import Window
from engine.alerts.thresholds import Thresholds
from engine.store import ControlStore
from engine.times import DAY, midnight

MINUTE = dt.timedelta(minutes=1)
#: A value within this share of a level still goes through the rules, which judge it exactly.
_SLACK = 1e-6

#: Called after each replayed day with (minutes done, minutes in all).
Progress = Callable[[int, int], None]


class Cancelled(Exception):
    """The replay was asked to stop (the process is shutting down)."""


@dataclass
class Counts:
    """One rule's per-minute counts over a span, as cumulative minutes x scopes matrices.

    Row r of `first` / `second` is the sum of the minutes before minute r of the span, so any window
    [a, b) of minutes is `cum[b] - cum[a]`. Scopes (columns) are sorted by id.
    """

    ids: list[int]                   # the scope id of each column
    first: np.ndarray                # cumulative (minutes + 1) x scopes
    second: np.ndarray
    masters: dict[int, int]          # error_spike's keys: the key's master (the largest id seen)

    def window(self, ends: np.ndarray, width: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sums over [end - width, end) for each end (minute indexes): two rows x scopes matrices."""
        starts = np.maximum(ends - width, 0)
        return self.first[ends] - self.first[starts], self.second[ends] - self.second[starts]


#: Records per Arrow batch while a span is counted: what the replay holds of raw records at a time.
BATCH_ROWS = 1_000_000


def minute_counts(con: duckdb.DuckDBPyConnection, span: Window) -> dict[str, Counts]:
    """Every rule's per-minute counts over `span` (whole minutes), from one pass over its records.

    Per rule the same figures as its window query (alert_rate_limit, alert_error_spike,
    alert_provider_down, alert_traffic) gives per one-minute bucket.
    """
    minutes = int((span.end - span.start) // MINUTE)
    masters = _Sums(minutes, ("requests", "rate_limited", "tokens"))
    keys = _Sums(minutes, ("requests", "errors"))
    provider_keys = _Sums(minutes, ("requests", "failures"))
    key_masters: dict[int, int] = {}
    params = window_params(span)
    del params["bucket_seconds"]
    for batch in queries.stream(con, "alert_minutes", BATCH_ROWS, **params):
        minute = batch["minute"].to_numpy(zero_copy_only=False).astype(np.int64)
        masters.add(batch["master_id"], minute, requests=None, rate_limited=batch["rate_limited"],
                    tokens=batch["tokens"])
        keys.add(batch["key_id"], minute, requests=None, errors=batch["error"])
        routed = batch["provider_key_id"].is_valid()
        provider_keys.add(batch["provider_key_id"].filter(routed), minute[routed.to_numpy(zero_copy_only=False)],
                          requests=None, failures=batch["failure"].filter(routed))
        largest = pa.table({"key": batch["key_id"], "master": batch["master_id"]}).group_by("key").aggregate(
            [("master", "max")])
        for key, master in zip(largest["key"].to_pylist(), largest["master_max"].to_pylist(), strict=True):
            key_masters[key] = max(master, key_masters.get(key, master))
    by_master = masters.cumulative()
    return {
        "rate_limit": Counts(by_master[0], by_master[1]["requests"], by_master[1]["rate_limited"], {}),
        "traffic_spike": Counts(by_master[0], by_master[1]["requests"], by_master[1]["tokens"], {}),
        "error_spike": Counts(*_pair(keys.cumulative(), "errors"), key_masters),
        "provider_down": Counts(*_pair(provider_keys.cumulative(), "failures"), {}),
    }


def _pair(found: tuple[list[int], dict[str, np.ndarray]], second: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    return found[0], found[1]["requests"], found[1][second]


class _Sums:
    """Per minute and scope sums of some measures, filled batch by batch; scopes are added as they appear."""

    def __init__(self, minutes: int, measures: tuple[str, ...]) -> None:
        self.minutes = minutes
        self.column: dict[int, int] = {}
        self.sums = {m: np.zeros((minutes, 0), np.int64) for m in measures}

    def add(self, scopes: pa.Array, minute: np.ndarray, **weights: pa.Array | None) -> None:
        """Count each record once (`None`) or add its value, in its minute and scope."""
        if len(scopes) == 0:
            return
        encoded = scopes.dictionary_encode()
        found = np.array([self.column.setdefault(s, len(self.column)) for s in encoded.dictionary.to_pylist()],
                         np.int64)
        width = len(self.column)
        for name, matrix in self.sums.items():
            if matrix.shape[1] < width:
                grown = np.zeros((self.minutes, max(width, 2 * matrix.shape[1])), np.int64)
                grown[:, :matrix.shape[1]] = matrix
                self.sums[name] = grown
        codes = minute * width + found[encoded.indices.to_numpy(zero_copy_only=False)]
        for name, values in weights.items():
            weight = None if values is None else values.to_numpy(zero_copy_only=False).astype(np.float64)
            # float64 sums of integers are exact up to 2^53, far above a minute's tokens of one scope.
            counted = np.bincount(codes, weights=weight, minlength=self.minutes * width)
            self.sums[name][:, :width] += counted.reshape(self.minutes, width).astype(np.int64)

    def cumulative(self) -> tuple[list[int], dict[str, np.ndarray]]:
        """The scope ids, sorted, and per measure the cumulative (minutes + 1) x scopes matrix."""
        ids = np.array(list(self.column), np.int64)
        order = np.argsort(ids)
        columns = np.array(list(self.column.values()), np.int64)[order]
        out = {}
        for name, matrix in self.sums.items():
            cum = np.zeros((self.minutes + 1, len(ids)), np.int64)
            np.cumsum(matrix[:, columns], axis=0, out=cum[1:])
            out[name] = cum
        return [int(i) for i in ids[order].tolist()], out


class ScratchStore(ControlStore):
    """A backtest's throwaway store: one connection and no fsync, since nothing in it must survive a crash.

    A replay applies one transaction per minute that has anything to apply; at a durable commit each,
    a busy day would cost seconds of fsync alone.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._con.row_factory = sqlite3.Row
        self._con.execute("PRAGMA synchronous=OFF")
        super().__init__(path)  # migrates through the connection above

    @contextmanager
    def connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction on the store's single connection (one thread only: there are no other writers)."""
        self._con.execute("BEGIN")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (before the scratch folder goes)."""
        self._con.close()


def instants(start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """Every whole minute in [start, end)."""
    now = start
    while now < end:
        yield now
        now += MINUTE


def replay(con: duckdb.DuckDBPyConnection, thresholds: Thresholds, start: dt.datetime, end: dt.datetime,
           scratch: Path | None = None, progress: Progress | None = None,
           stop: Callable[[], bool] | None = None,
           adopt: Callable[[ControlStore], object] | None = None) -> tuple[list[Alert], int]:
    """Alerts that evaluations at every minute of [start, end) would have stored, and how many evaluations.

    `start` must be a whole minute. Quota alerts are not replayed: the registry keeps only each key's
    current period, not its past limits and resets. `progress` is told after each day; `stop` is asked
    before each day, and True raises `Cancelled`. `adopt` is given the scratch store before it goes
    (to copy its alerts into a real store).
    """
    if start.second or start.microsecond:
        raise ValueError("a replay starts on a whole minute")
    total = max(0, -int((start - end) // MINUTE))
    with tempfile.TemporaryDirectory(prefix="ezstats-backtest-", dir=scratch) as folder:
        store = ScratchStore(Path(folder) / "backtest.db")
        try:
            day = _Replay(con, thresholds, Lifecycle(store), store)
            done = 0
            for first, last in _days(start, end):
                if stop is not None and stop():
                    raise Cancelled("the replay was stopped")
                done += day.run(first, last)
                if progress is not None:
                    progress(done, total)
            if adopt is not None:
                adopt(store)
            return AlertHistory(store).all(), done
        finally:
            store.close()


def _days(start: dt.datetime, end: dt.datetime) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """[start, end) cut at UTC midnights."""
    first = start
    while first < end:
        last = min(end, midnight(first.date()) + DAY)
        yield first, last
        first = last


#: The rules a replay judges (quota_exceeded is not replayed).
_RULES = ("rate_limit", "error_spike", "provider_down", "traffic_spike")


class _Replay:
    """Replays the minutes of one UTC day at a time, keeping the alerts' state in the scratch store."""

    def __init__(self, con: duckdb.DuckDBPyConnection, thresholds: Thresholds, lifecycle: Lifecycle,
                 store: ControlStore) -> None:
        self.con = con
        self.t = thresholds
        self.lifecycle = lifecycle
        self.store = store
        t = thresholds
        self.widths = {"rate_limit": t.rate_limit.window_minutes, "error_spike": t.error_spike.window_minutes,
                       "provider_down": t.provider_down.window_minutes,
                       "traffic_spike": t.traffic_spike.window_minutes}
        self.enabled = [name for name in _RULES if getattr(t, name).enabled]
        surge = t.traffic_spike.surge_window_minutes + t.traffic_spike.surge_baseline_minutes
        self.lookback = max(*self.widths.values(), surge)
        self.watched: dict[tuple[str, str], set[int | None]] = {}

    def run(self, first: dt.datetime, last: dt.datetime) -> int:
        """Evaluate every minute of [first, last) (within one UTC day); returns how many."""
        t = self.t
        origin = min(first - self.lookback * MINUTE, midnight(first.date()))
        minutes = -((first - last) // MINUTE)   # the whole minutes in [first, last), `last` maybe not whole
        # Counted up to the last minute evaluated: its windows end there.
        span = Window(origin, first + (minutes - 1) * MINUTE)
        counts = queries.retrying(lambda: minute_counts(self.con, span))
        ends = np.arange(minutes) + int((first - origin) // MINUTE)
        parts = {name: self._rate(name, counts[name], ends) for name in self.enabled if name != "traffic_spike"}
        # Minutes whose traffic window holds any record: then a master absent from it is a measured zero.
        with_data = np.zeros(len(ends), bool)
        if "traffic_spike" in self.enabled:
            traffic, with_data = self._traffic(counts["traffic_spike"], ends,
                                               int((midnight(first.date()) - origin) // MINUTE))
            parts.update(traffic)
        count = 0
        for row, index in enumerate(ends.tolist()):
            now = origin + index * MINUTE
            count += 1
            observations: list[rules.Observation] = []
            complete: frozenset[tuple[str, str]] = frozenset()
            for part in parts.values():
                observations += part.observe(row, now, self.watched)
            if with_data[row]:
                complete = rules.VOLUME_METRICS
            if observations or any(self.watched.values()):
                self.lifecycle.apply(observations, t, now, complete)
                self._read_watched()
        return count

    def _read_watched(self) -> None:
        with self.store.connect(write=False) as con:
            rows = con.execute("SELECT type, metric, scope_id FROM alerts WHERE status IN (?, ?)", ACTIVE).fetchall()
        self.watched = {}
        for r in rows:
            self.watched.setdefault((r["type"], r["metric"]), set()).add(r["scope_id"])

    def _rate(self, name: str, counts: Counts, ends: np.ndarray) -> _Part:
        """A rate rule (rate_limit, error_spike, provider_down) at every minute."""
        rule = getattr(self.t, name)
        width = self.widths[name]
        requests, second = counts.window(ends, width)
        enough = requests >= rule.min_samples
        if name == "rate_limit":
            enough &= second >= rule.min_count
        level = min(rule.warning, rule.critical) * (1 - _SLACK)
        breach = enough & (second >= level * requests)
        metric = {"rate_limit": "rate_limited_share", "error_spike": "error_rate",
                  "provider_down": "failure_rate"}[name]

        def observe(row: int, tally: rules.Tally, now: dt.datetime) -> list[rules.Observation]:
            window = window_ending(now, width)
            if name == "rate_limit":
                return rules.rate_limit(tally, rule, window)
            if name == "error_spike":
                return rules.error_spike(tally, counts.masters, rule, window)
            return rules.provider_down(tally, rule, window)

        return _Part(name, (metric,), counts.ids, requests, second, breach, observe)

    def _traffic(self, counts: Counts, ends: np.ndarray, day_start: int) -> tuple[dict[str, _Part], np.ndarray]:
        """traffic_spike's checks at every minute: the window (global QPS, RPM, TPM), the surge, the day so far."""
        rule = self.t.traffic_spike
        factor = 1 - _SLACK   # the warning levels (critical ones are critical_factor >= 1 times higher)
        width = self.widths["traffic_spike"]
        requests, tokens = counts.window(ends, width)
        minutes = width
        limits = {metric: np.array([rule.limit(metric, m) for m in counts.ids]) * factor
                  for metric in ("master_rpm", "master_tpm", "master_rpd", "master_tpd")}
        enough = requests >= rule.min_samples
        breach = enough & ((requests / minutes >= limits["master_rpm"]) | (tokens / minutes >= limits["master_tpm"]))
        totals = requests.sum(axis=1)
        global_breach = totals / (width * 60) >= rule.global_qps * factor

        def window_observe(row: int, tally: rules.Tally, now: dt.datetime) -> list[rules.Observation]:
            window = window_ending(now, width)
            out = rules.traffic_masters(tally, rule, window)
            if global_breach[row] or self.watched.get(("traffic_spike", "global_qps")):
                out.insert(0, rules.traffic_global(int(totals[row]), rule, window))
            return out


        # Surge: [now - s, now) against the baseline [now - s - b, now - s), per minute holding any record.
        s, b = rule.surge_window_minutes, rule.surge_baseline_minutes
        surge, _ = counts.window(ends, s)
        baseline, _ = counts.window(ends - s, b)
        busy = np.concatenate([[0], np.cumsum(np.diff(counts.first.sum(axis=1)) > 0)])
        covered = busy[ends - s] - busy[np.maximum(ends - s - b, 0)]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (surge / s) / (baseline / covered[:, None])
        surge_breach = ((surge >= rule.surge_min_samples) & (baseline > 0) & (covered[:, None] * 2 >= b)
                        & (ratio >= rule.surge_factor * factor))

        column_of = {scope: i for i, scope in enumerate(counts.ids)}

        def surge_observe(row: int, tally: rules.Tally, now: dt.datetime) -> list[rules.Observation]:
            window, before = surge_windows(now, s, b)
            base = {m: (int(baseline[row, column_of[m]]), 0) for m in tally}
            return rules.traffic_surge(tally, base, int(covered[row]), rule, window, before)

        # The UTC day so far, [midnight, now); nothing at midnight itself, as the detector.
        day_requests, day_tokens = counts.window(ends, ends - day_start)
        day_breach = (day_requests > 0) & ((day_requests >= limits["master_rpd"])
                                           | (day_tokens >= limits["master_tpd"]))

        def day_observe(row: int, tally: rules.Tally, now: dt.datetime) -> list[rules.Observation]:
            today = day_so_far(now)
            return rules.traffic_day(tally, rule, today, now.date()) if today.seconds > 0 else []

        return {
            "traffic_spike": _Part("traffic_spike", ("master_rpm", "master_tpm"), counts.ids, requests, tokens,
                                   breach, window_observe),
            "traffic_surge": _Part("traffic_spike", ("master_surge",), counts.ids, surge, np.zeros_like(surge),
                                   surge_breach, surge_observe),
            "traffic_day": _Part("traffic_spike", ("master_rpd", "master_tpd"), counts.ids, day_requests, day_tokens,
                                 day_breach, day_observe),
        }, totals > 0


@dataclass
class _Part:
    """One rule's window sums at every replayed minute, which scopes could breach, and its rule function."""

    type: str
    metrics: tuple[str, ...]
    ids: list[int]
    first: np.ndarray            # minutes x scopes
    second: np.ndarray
    breach: np.ndarray           # minutes x scopes: may reach a threshold (the rule decides)
    rule: Callable[[int, rules.Tally, dt.datetime], list[rules.Observation]]

    def __post_init__(self) -> None:
        rows, columns = np.nonzero(self.breach)
        self._columns = columns
        self._bounds = np.searchsorted(rows, np.arange(self.breach.shape[0] + 1))
        self._column_of = {scope: i for i, scope in enumerate(self.ids)}

    def tally(self, row: int, watched: dict[tuple[str, str], set[int | None]]) -> dict[int, tuple[int, int]]:
        """The scopes of minute `row` worth judging, with their sums: breaching, or watched by an alert."""
        columns = set(self._columns[self._bounds[row]:self._bounds[row + 1]].tolist())
        for metric in self.metrics:
            for scope in watched.get((self.type, metric), ()):
                column = self._column_of.get(scope) if scope is not None else None
                if column is not None:
                    columns.add(column)
        first, second = self.first[row], self.second[row]
        # A scope without requests is absent from a window, as in the detector's query rows.
        return {self.ids[c]: (int(first[c]), int(second[c])) for c in sorted(columns) if first[c] > 0}

    def observe(self, row: int, now: dt.datetime, watched: dict[tuple[str, str], set[int | None]]
                ) -> list[rules.Observation]:
        """The observations of minute `row` that the lifecycle would not skip (and maybe a few it will)."""
        return self.rule(row, self.tally(row, watched), now)


