"""One evaluation of every rule at an instant: the window queries over the lake, then the rules.

Each window is [now - window, now); each query filters the `date` partition (so other days' files are
never opened) and `created_at` (so row groups outside the window are skipped by their statistics),
which keeps one evaluation on a 30-day lake as cheap as on a 1-day lake.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from engine import queries
from engine.alerts import rules
from engine.alerts.rules import Observation, Window
from engine.alerts.thresholds import Thresholds


@dataclass
class Evaluation:
    """The observations of one evaluation and what the lifecycle needs to judge absences."""

    now: dt.datetime
    observations: list[Observation] = field(default_factory=list)
    complete: frozenset[tuple[str, str]] = frozenset()
    skipped: list[str] = field(default_factory=list)


def window_ending(now: dt.datetime, minutes: int) -> Window:
    """[now - minutes, now)."""
    return Window(now - dt.timedelta(minutes=minutes), now)


def surge_windows(now: dt.datetime, window_minutes: int, baseline_minutes: int) -> tuple[Window, Window]:
    """The surge window [now - w, now) and its baseline [now - w - b, now - w)."""
    window = window_ending(now, window_minutes)
    return window, Window(window.start - dt.timedelta(minutes=baseline_minutes), window.start)


def day_so_far(now: dt.datetime) -> Window:
    """[the UTC midnight of now, now)."""
    return Window(dt.datetime.combine(now.date(), dt.time(), dt.UTC), now)


def window_params(window: Window, bucket_seconds: int | None = None) -> dict[str, Any]:
    """Parameters of the alert_* queries; one bucket covering the window unless `bucket_seconds` is given."""
    last = window.end - dt.timedelta(microseconds=1)
    return {
        "start": window.start,
        "end": window.end,
        "start_day": window.start.date(),
        "end_day": max(last.date(), window.start.date()),
        "bucket_seconds": bucket_seconds or math.ceil(window.seconds) + 1,
    }


def tally(table: pa.Table, scope: str, first: str, second: str) -> dict[int, tuple[int, int]]:
    """Rows of one bucket as {scope id: (first, second)}."""
    return {s: (a, b) for s, a, b in zip(table[scope].to_pylist(), table[first].to_pylist(),
                                          table[second].to_pylist(), strict=True)}


def evaluate(con: duckdb.DuckDBPyConnection, thresholds: Thresholds, now: dt.datetime,
             quotas: Any = None) -> Evaluation:
    """Evaluate every enabled rule at `now` over the lake behind `con`.

    Args:
        con: a connection from `Engine.connect()`.
        thresholds: the settings to judge with.
        now: the evaluation instant (UTC-aware).
        quotas: the quota registry (`engine.quotas`) or None, in which case quota_exceeded checks nothing.
    """
    out = Evaluation(now)
    t = thresholds
    if t.rate_limit.enabled:
        w = window_ending(now, t.rate_limit.window_minutes)
        rows = queries.run(con, "alert_rate_limit", **window_params(w))
        out.observations += rules.rate_limit(tally(rows, "master_id", "requests", "rate_limited"), t.rate_limit, w)
    if t.error_spike.enabled:
        w = window_ending(now, t.error_spike.window_minutes)
        rows = queries.run(con, "alert_error_spike", **window_params(w))
        masters = dict(zip(rows["key_id"].to_pylist(), rows["master_id"].to_pylist(), strict=True))
        out.observations += rules.error_spike(tally(rows, "key_id", "requests", "errors"), masters,
                                              t.error_spike, w)
    if t.provider_down.enabled:
        w = window_ending(now, t.provider_down.window_minutes)
        rows = queries.run(con, "alert_provider_down", **window_params(w))
        out.observations += rules.provider_down(tally(rows, "provider_key_id", "requests", "failures"),
                                                t.provider_down, w)
    if t.traffic_spike.enabled:
        w = window_ending(now, t.traffic_spike.window_minutes)
        minute = tally(queries.run(con, "alert_traffic", **window_params(w)), "master_id", "requests", "tokens")
        out.observations += rules.traffic_window(minute, t.traffic_spike, w)
        if minute:
            out.complete = rules.VOLUME_METRICS
        surge, baseline = surge_windows(now, t.traffic_spike.surge_window_minutes,
                                        t.traffic_spike.surge_baseline_minutes)
        rows = queries.run(con, "alert_traffic_surge", start=baseline.start, window_start=surge.start, end=now,
                           start_day=baseline.start.date(), end_day=window_params(surge)["end_day"])
        minutes = rows["baseline_minutes"][0].as_py() if rows.num_rows else 0
        out.observations += rules.traffic_surge(tally(rows, "master_id", "requests", "requests"),
                                                tally(rows, "master_id", "baseline_requests", "requests"),
                                                minutes, t.traffic_spike, surge, baseline)
        day = day_so_far(now)
        if day.seconds > 0:
            today = tally(queries.run(con, "alert_traffic", **window_params(day)), "master_id", "requests", "tokens")
            out.observations += rules.traffic_day(today, t.traffic_spike, day, now.date())
    if t.quota_exceeded.enabled:
        if quotas is None:
            out.skipped.append("quota_exceeded: no quota registry")
        else:
            out.observations += rules.quota_exceeded(quotas.usage(now), t.quota_exceeded, now)
    return out
