"""Backtest: replay the detector minute by minute over stored history with candidate thresholds.

Instead of running the window queries once per minute (1,440 times a day), each query runs once over
the whole range cut into one-minute buckets, and sliding sums of those buckets give every window; the
sums go through the same rule functions and the same lifecycle as the live detector, into a scratch
store that is thrown away, so stored alerts are never touched.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from engine import queries
from engine.alerts import rules
from engine.alerts.detector import day_so_far, surge_windows, window_ending, window_params
from engine.alerts.history import Alert, AlertHistory
from engine.alerts.lifecycle import Lifecycle
from engine.alerts.rules import Window
from engine.alerts.thresholds import Thresholds
from engine.store import ControlStore

MINUTE = dt.timedelta(minutes=1)

#: rows of one bucket: {scope id: (count, count)}
Buckets = dict[int, dict[int, tuple[int, int]]]


def buckets(con: duckdb.DuckDBPyConnection, name: str, window: Window, scope: str, first: str,
            second: str) -> tuple[Buckets, pa.Table]:
    """Run one alert query over `window` in one-minute buckets; also returns the raw rows."""
    table = queries.run(con, name, **window_params(window, 60))
    out: Buckets = defaultdict(dict)
    for b, s, x, y in zip(*(table[c].to_pylist() for c in ("bucket", scope, first, second)), strict=True):
        out[b][s] = (x, y)
    return out, table


class Sliding:
    """Sums over the buckets [end - width, end) (from `end`'s start when width is None), moved forward."""

    def __init__(self, data: Buckets, width: int | None, end: int = 0) -> None:
        self.data = data
        self.width = width
        self.end = end
        self.sums: dict[int, tuple[int, int]] = {}

    def add(self, bucket: int, sign: int) -> None:
        """Add (sign 1) or remove (sign -1) one bucket's rows."""
        for scope, (x, y) in self.data.get(bucket, {}).items():
            a, b = self.sums.get(scope, (0, 0))
            a, b = a + sign * x, b + sign * y
            if a == 0 and b == 0:
                self.sums.pop(scope, None)
            else:
                self.sums[scope] = (a, b)

    def move(self, end: int) -> dict[int, tuple[int, int]]:
        """Slide the window's end to `end` and return the sums."""
        while self.end < end:
            self.add(self.end, 1)
            if self.width is not None:
                self.add(self.end - self.width, -1)
            self.end += 1
        return self.sums

    def restart(self, end: int) -> None:
        """Empty the sums and start accumulating at bucket `end` (a new UTC day)."""
        self.sums = {}
        self.end = end


class ScratchStore(ControlStore):
    """A backtest's throwaway store: one connection and no fsync, since nothing in it must survive a crash.

    A replay applies one transaction per minute; at a durable commit each, a day would cost seconds
    of fsync alone.
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


def replay(con: duckdb.DuckDBPyConnection, thresholds: Thresholds, start: dt.datetime,
           end: dt.datetime, scratch: Path | None = None,
           adopt: Callable[[ControlStore], object] | None = None) -> tuple[list[Alert], int]:
    """Alerts that evaluations at every minute of [start, end) would have stored, and how many evaluations.

    `start` must be a whole minute. Quota alerts are not replayed: the registry keeps only each key's
    current period, not its past limits and resets. `adopt` is given the scratch store before it goes
    (to copy its alerts into a real store).
    """
    if start.second or start.microsecond:
        raise ValueError("a replay starts on a whole minute")
    t = thresholds
    widths = {"rate_limit": t.rate_limit.window_minutes, "error_spike": t.error_spike.window_minutes,
              "provider_down": t.provider_down.window_minutes, "traffic_spike": t.traffic_spike.window_minutes}
    surge_width, baseline_width = t.traffic_spike.surge_window_minutes, t.traffic_spike.surge_baseline_minutes
    midnight = day_so_far(start).start
    # Bucket 0 starts early enough for the longest window, the surge baseline and the first day so far.
    origin = min(start - max(*widths.values(), surge_width + baseline_width) * MINUTE, midnight)
    enabled = [name for name in _SOURCES if getattr(t, name).enabled]
    data: dict[str, Buckets] = {name: {} for name in enabled}
    masters: dict[int, int] = {}
    lookback = max(*widths.values(), surge_width + baseline_width) + 2
    loaded = 0  # buckets [0, loaded) are fetched

    def load_until(index: int) -> None:
        """Fetch buckets up to `index`, a day at a time."""
        nonlocal loaded
        while loaded < index:
            upto = max(index, loaded + CHUNK_MINUTES)
            chunk = Window(origin + loaded * MINUTE, origin + upto * MINUTE)
            for name in enabled:
                rows, table = buckets(con, _SOURCES[name][0], chunk, *_SOURCES[name][1:])
                data[name].update((b + loaded, scopes) for b, scopes in rows.items())
                if name == "error_spike":
                    masters.update(zip(table["key_id"].to_pylist(), table["master_id"].to_pylist(), strict=True))
            loaded = upto

    def forget(index: int) -> None:
        """Drop buckets that every sliding sum has passed and no window reaches any more."""
        for name in enabled:
            for old in [b for b in data[name] if b < index - lookback]:
                del data[name][old]

    traffic = data.get("traffic_spike", {})
    slides = {name: Sliding(data[name], widths[name]) for name in enabled}
    day = Sliding(traffic, None, _index(origin, midnight))
    surge = Sliding(traffic, surge_width)
    baseline = Sliding(traffic, baseline_width)
    with tempfile.TemporaryDirectory(prefix="ezstats-backtest-", dir=scratch) as folder:
        scratch_store = ScratchStore(Path(folder) / "backtest.db")
        try:
            lifecycle = Lifecycle(scratch_store)
            count = 0
            for now in instants(start, end):
                count += 1
                index = _index(origin, now)
                load_until(index)
                sums = {name: slide.move(index) for name, slide in slides.items()}
                observations: list[rules.Observation] = []
                complete: frozenset[tuple[str, str]] = frozenset()
                if "rate_limit" in sums:
                    observations += rules.rate_limit(sums["rate_limit"], t.rate_limit,
                                                     window_ending(now, widths["rate_limit"]))
                if "error_spike" in sums:
                    observations += rules.error_spike(sums["error_spike"], masters, t.error_spike,
                                                      window_ending(now, widths["error_spike"]))
                if "provider_down" in sums:
                    observations += rules.provider_down(sums["provider_down"], t.provider_down,
                                                        window_ending(now, widths["provider_down"]))
                if "traffic_spike" in sums:
                    minute = sums["traffic_spike"]
                    observations += rules.traffic_window(minute, t.traffic_spike,
                                                         window_ending(now, widths["traffic_spike"]))
                    complete = rules.VOLUME_METRICS if minute else frozenset()
                    surge_window, baseline_window = surge_windows(now, surge_width, baseline_width)
                    covered = sum(1 for b in range(index - surge_width - baseline_width, index - surge_width)
                                  if traffic.get(b))
                    observations += rules.traffic_surge(surge.move(index), baseline.move(index - surge_width),
                                                        covered, t.traffic_spike, surge_window, baseline_window)
                    if now == day_so_far(now).start:
                        day.restart(index)
                    else:
                        observations += rules.traffic_day(day.move(index), t.traffic_spike, day_so_far(now),
                                                          now.date())
                lifecycle.apply(observations, t, now, complete)
                if count % CHUNK_MINUTES == 0:
                    forget(index)
            if adopt is not None:
                adopt(scratch_store)
            return AlertHistory(scratch_store).all(), count
        finally:
            scratch_store.close()


#: Per rule: its bucketed query, the scope column and the two counts the rule sums.
_SOURCES = {
    "rate_limit": ("alert_rate_limit", "master_id", "requests", "rate_limited"),
    "error_spike": ("alert_error_spike", "key_id", "requests", "errors"),
    "provider_down": ("alert_provider_down", "provider_key_id", "requests", "failures"),
    "traffic_spike": ("alert_traffic", "master_id", "requests", "tokens"),
}
#: Minutes of buckets fetched per query, so a month's replay holds one day of buckets at a time.
CHUNK_MINUTES = 1440


def _index(origin: dt.datetime, moment: dt.datetime) -> int:
    return int((moment - origin) // MINUTE)
