"""An independent recomputation of SPEC metrics in Polars, straight from the records, for the stats tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

COLUMNS = {"master": "master_id", "key": "key_id", "model": "model", "provider": "provider_id",
           "provider_key": "provider_key_id"}


def frame(*tables: pa.Table) -> pl.DataFrame:
    """All records ever ingested, as one frame."""
    return pl.from_arrow(pa.concat_tables(tables))  # type: ignore[return-value]


def expected(df: pl.DataFrame, start: dt.datetime, end: dt.datetime, group_by: str | None = None,
             tz: str = "UTC", **filters: Any) -> dict[Any, dict[str, Any]]:
    """{group value (None for the total): metrics} over [start, end) with equality filters; day and hour
    groups are those of the zone `tz` (a day as its local date, an hour as the UTC instant it starts)."""
    d = df.filter((pl.col("created_at") >= start) & (pl.col("created_at") < end))
    for name, value in filters.items():
        d = d.filter(pl.col(name) == value)
    if group_by is None:
        d = d.with_columns(pl.lit(None).alias("g"))
    elif group_by == "day":
        d = d.with_columns(pl.col("created_at").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d").alias("g"))
    elif group_by == "hour":
        local = pl.col("created_at").dt.convert_time_zone(tz)
        # The local hour's start: the instant minus the local minutes and seconds past the hour.
        past = pl.duration(minutes=local.dt.minute(), seconds=local.dt.second(), microseconds=local.dt.microsecond())
        d = d.with_columns((pl.col("created_at") - past).dt.convert_time_zone("UTC")
                           .dt.strftime("%Y-%m-%dT%H:%M:00Z").alias("g"))
    else:
        d = d.with_columns(pl.col(COLUMNS[group_by]).alias("g"))
    status = pl.col("status_code").cast(pl.Int64)
    out = {}
    for (g,), part in d.group_by(["g"]):
        s = part.select(
            requests=pl.len(),
            successes=(status < 400).sum(),
            errors=((status >= 400) & (status != 429)).sum(),
            rate_limited=(status == 429).sum(),
            provider_failures=(pl.col("provider_key_id").is_not_null() & (status >= 500)).sum(),
            prompt_tokens=pl.col("prompt_tokens").cast(pl.Int64).sum(),
            completion_tokens=pl.col("completion_tokens").cast(pl.Int64).sum(),
            total_tokens=(pl.col("prompt_tokens").cast(pl.Int64) + pl.col("completion_tokens").cast(pl.Int64)).sum(),
            quota_cost=pl.col("quota_cost").sum(),
            masters=pl.col("master_id").n_unique(),
            keys=pl.col("key_id").n_unique(),
            streams=pl.col("is_stream").sum(),
            latency_max=pl.col("latency_ms").max(),
            latency_avg=pl.col("latency_ms").cast(pl.Float64).mean(),
        ).to_dicts()[0]
        lat = part["latency_ms"].to_numpy()
        for p in (50, 95, 99):
            s[f"p{p}"] = float(np.quantile(lat, p / 100, method="inverted_cdf"))
        models = part.group_by("model").agg(
            requests=pl.len(),
            total_tokens=(pl.col("prompt_tokens").cast(pl.Int64) + pl.col("completion_tokens").cast(pl.Int64)).sum(),
        ).sort(["requests", "model"], descending=[True, False])
        s["top_models"] = models.head(10).to_dicts()
        out[g] = s
    return out


def check(actual: dict[str, Any], want: dict[str, Any], exact: bool) -> None:
    """Assert one metrics dict of the API equals the recomputation (percentiles within 1 % if approx)."""
    for name in ("requests", "successes", "errors", "rate_limited", "provider_failures", "prompt_tokens",
                 "completion_tokens", "total_tokens", "quota_cost", "masters", "keys", "streams"):
        assert actual[name] == want[name], (name, actual[name], want[name])
    lat = actual["latency_ms"]
    assert lat["max"] == want["latency_max"]
    assert abs(lat["avg"] - want["latency_avg"]) <= 1e-9 * max(1.0, want["latency_avg"])
    for p in ("p50", "p95", "p99"):
        if exact:
            assert lat[p] == want[p], (p, lat[p], want[p])
        else:
            assert abs(lat[p] - want[p]) <= 0.01 * want[p], (p, lat[p], want[p])
