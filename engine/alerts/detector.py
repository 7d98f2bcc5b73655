"""One evaluation of every rule at an instant: the window queries over the lake, then the rules.

Each window is [now - window, now); each query filters the `date` partition (so other days' files are
never opened) and `created_at` (so row groups outside the window are skipped by their statistics),
which keeps one evaluation on a 30-day lake as cheap as on a 1-day lake.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from engine import queries
from engine.alerts import rules
from engine.alerts.rules import Observation, Window
from engine.alerts.thresholds import Thresholds

log = logging.getLogger(__name__)


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
             quotas: Any = None, credentials: Any = None) -> Evaluation:
    """Evaluate every enabled rule at `now` over the lake behind `con`.

    Args:
        con: a connection from `Engine.connect()`.
        thresholds: the settings to judge with.
        now: the evaluation instant (UTC-aware).
        quotas: the quota registry (`engine.quotas`), or a function of `now` giving its usages, or None,
            in which case quota_exceeded checks nothing.
        credentials: a function giving the provider credentials (`engine.credentials`), or None, in which
            case credential_invalid checks nothing.
    """
    out = Evaluation(now)
    t = thresholds
    jobs: dict[str, tuple[str, dict[str, Any]]] = {}
    windows: dict[str, Window] = {}
    for name in ("rate_limit", "error_spike", "provider_down"):
        if getattr(t, name).enabled:
            windows[name] = window_ending(now, getattr(t, name).window_minutes)
            jobs[name] = (_QUERIES[name], window_params(windows[name]))
    if t.traffic_spike.enabled:
        minute_window = window_ending(now, t.traffic_spike.window_minutes)
        surge, baseline = surge_windows(now, t.traffic_spike.surge_window_minutes,
                                        t.traffic_spike.surge_baseline_minutes)
        day = day_so_far(now)
        start = min(minute_window.start, baseline.start, day.start)
        jobs["traffic_spike"] = ("alert_traffic_live", {
            "start": start, "day_start": day.start, "baseline_start": baseline.start, "surge_start": surge.start,
            "window_start": minute_window.start, "end": now, "start_day": start.date(),
            "end_day": window_params(surge)["end_day"], "baseline_minutes": t.traffic_spike.surge_baseline_minutes})
    rows = run_all(con, jobs)

    if "rate_limit" in rows:
        out.observations += rules.rate_limit(tally(rows["rate_limit"], "master_id", "requests", "rate_limited"),
                                             t.rate_limit, windows["rate_limit"])
    if "error_spike" in rows:
        table = rows["error_spike"]
        masters = dict(zip(table["key_id"].to_pylist(), table["master_id"].to_pylist(), strict=True))
        out.observations += rules.error_spike(tally(table, "key_id", "requests", "errors"), masters,
                                              t.error_spike, windows["error_spike"])
    if "provider_down" in rows:
        out.observations += rules.provider_down(tally(rows["provider_down"], "provider_key_id", "requests",
                                                      "failures"), t.provider_down, windows["provider_down"])
    if "traffic_spike" in rows:
        masters_rows = rows["traffic_spike"].to_pylist()
        # A master quiet in a window is absent from it, as in a replay's sliding sums.
        minute = {r["master_id"]: (r["window_requests"], r["window_tokens"])
                  for r in masters_rows if r["window_requests"]}
        out.observations += rules.traffic_window(minute, t.traffic_spike, minute_window)
        if minute:
            out.complete = rules.VOLUME_METRICS
        covered = masters_rows[0]["baseline_minutes"] if masters_rows else 0
        out.observations += rules.traffic_surge(
            {r["master_id"]: (r["surge_requests"], 0) for r in masters_rows if r["surge_requests"]},
            {r["master_id"]: (r["baseline_requests"], 0) for r in masters_rows if r["baseline_requests"]},
            covered, t.traffic_spike, surge, baseline)
        if day.seconds > 0:
            today = {r["master_id"]: (r["day_requests"], r["day_tokens"]) for r in masters_rows if r["day_requests"]}
            out.observations += rules.traffic_day(today, t.traffic_spike, day, now.date())
    if t.quota_exceeded.enabled:
        if quotas is None:
            out.skipped.append("quota_exceeded: no quota registry")
        else:
            try:
                usages = quotas(now) if callable(quotas) else quotas.usage(now)
            except Exception as exc:  # another domain's failure must not silence the other four rules
                log.exception("quota registry failed; quota_exceeded skipped this evaluation")
                out.skipped.append(f"quota_exceeded: the quota registry failed: {exc}")
            else:
                out.observations += rules.quota_exceeded(usages, t.quota_exceeded, now)
    if credentials is not None:
        try:
            states = credentials()
        except Exception as exc:  # as for quotas: the other rules still run
            log.exception("credential source failed; credential_invalid skipped this evaluation")
            out.skipped.append(f"credential_invalid: the credential source failed: {exc}")
        else:
            out.observations += rules.credential_invalid(states, now)
    return out


#: The window query of each rate rule; traffic_spike's live figures all come from alert_traffic_live.
_QUERIES = {"rate_limit": "alert_rate_limit", "error_spike": "alert_error_spike",
            "provider_down": "alert_provider_down"}


def run_all(con: duckdb.DuckDBPyConnection, jobs: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, pa.Table]:
    """Run named queries one after the other (each already uses every core DuckDB has)."""
    return {label: queries.run(con, name, **params) for label, (name, params) in jobs.items()}
