"""The demo generator: shape, determinism, realism, the scripted incidents and the quiet traffic around them.

Every expectation is recomputed here with Polars from the generated records, not read from the generator.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import math

import polars as pl
import pyarrow as pa
import pytest

from engine.demo import DEMO_QUOTAS, INCIDENTS, Incident, generate, generate_day
from engine.schema import LOG_RECORD_SCHEMA

DAY = dt.date(2024, 6, 3)
MIDNIGHT = dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=dt.UTC)
SEED = 7
INCIDENT = {incident.name: incident for incident in INCIDENTS}
ERROR = (pl.col("status_code") >= 400) & (pl.col("status_code") != 429)
FAILURE = pl.col("status_code") >= 500
LIMITED = pl.col("status_code") == 429


def frame(table: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


def ipc_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def share(df: pl.DataFrame, condition: pl.Expr) -> float:
    return float(df.select(condition.mean()).item())


def in_window(incident: Incident, day: dt.date = DAY) -> pl.Expr:
    start, end = incident.window(day)
    return (pl.col("created_at") >= start) & (pl.col("created_at") < end)


def near(hits: int, n: int, expected: float) -> bool:
    """Whether hits / n is within three binomial standard deviations (plus two points) of expected."""
    return abs(hits / n - expected) <= 3 * math.sqrt(expected * (1 - expected) / n) + 0.02


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return generate_day(DAY, 200_000, SEED)


@pytest.fixture(scope="module")
def logs(table: pa.Table) -> pl.DataFrame:
    return frame(table)


@pytest.fixture(scope="module", params=[20_000, 200_000], ids=lambda rows: f"{rows}rows")
def traffic(request: pytest.FixtureRequest, logs: pl.DataFrame) -> pl.DataFrame:
    """The day at the smallest supported size and at 200,000 rows."""
    return logs if request.param == logs.height else frame(generate_day(DAY, request.param, SEED))


# --- shape -------------------------------------------------------------------------------------------


def test_schema_count_order_and_day_bounds(table: pa.Table, logs: pl.DataFrame) -> None:
    assert table.schema == LOG_RECORD_SCHEMA
    assert table.num_rows == 200_000
    assert logs.select(pl.col("created_at").diff().dt.total_microseconds().min()).item() > 0
    bounds = logs.select(low=pl.col("created_at").min(), high=pl.col("created_at").max()).row(0)
    assert MIDNIGHT <= bounds[0] and bounds[1] < MIDNIGHT + dt.timedelta(days=1)


@pytest.mark.parametrize("rows", [0, 1, 12_345])
def test_exact_row_count_at_any_size(rows: int) -> None:
    table = generate_day(DAY, rows, SEED)
    assert table.num_rows == rows
    assert table.schema == LOG_RECORD_SCHEMA


def test_generate_yields_consecutive_days_with_unique_request_ids() -> None:
    days = list(generate(2, 20_000, SEED, end_day=DAY))
    assert [day for day, _ in days] == [DAY - dt.timedelta(days=1), DAY]
    ids = pl.concat([frame(table).select("request_id") for _, table in days])
    assert ids.height == 40_000
    assert ids["request_id"].n_unique() == 40_000
    assert ids.select(pl.col("request_id").str.len_bytes().min()).item() > 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rows"):
        generate_day(DAY, -1, SEED)
    with pytest.raises(ValueError, match="days"):
        next(generate(-1, 10, SEED, DAY))


# --- determinism -------------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_tables(table: pa.Table) -> None:
    assert ipc_bytes(generate_day(DAY, 200_000, SEED)) == ipc_bytes(table)


def test_another_seed_gives_other_traffic(table: pa.Table) -> None:
    other = generate_day(DAY, 200_000, SEED + 1)
    assert not other.column("created_at").equals(table.column("created_at"))
    assert not other.column("key_id").equals(table.column("key_id"))


def test_a_day_does_not_depend_on_the_other_days_generated() -> None:
    days = dict(generate(3, 5_000, SEED, end_day=DAY + dt.timedelta(days=1)))
    assert ipc_bytes(days[DAY]) == ipc_bytes(generate_day(DAY, 5_000, SEED))
    assert ipc_bytes(days[DAY]) != ipc_bytes(days[DAY + dt.timedelta(days=1)])


# --- realism -----------------------------------------------------------------------------------------


def test_zipf_skew_of_masters_and_keys(logs: pl.DataFrame) -> None:
    per_master = logs.group_by("master_id").agg(requests=pl.len(), keys=pl.col("key_id").n_unique())
    assert 150 <= per_master.height <= 200
    top_tenth = per_master.sort("requests", descending=True).head(20)["requests"].sum()  # 20 of 200
    assert top_tenth > 0.5 * logs.height
    assert per_master.select(pl.col("keys").min()).item() == 1
    assert 10 <= per_master.select(pl.col("keys").max()).item() <= 20


def test_diurnal_curve(logs: pl.DataFrame) -> None:
    per_hour = logs.group_by(pl.col("created_at").dt.hour()).len()
    assert per_hour.height == 24
    assert per_hour.select(pl.col("len").max() >= 2 * pl.col("len").min()).item()


def test_ids_and_routing_are_consistent(logs: pl.DataFrame) -> None:
    assert (logs["key_id"] // 100 == logs["master_id"]).all()
    routed = logs.filter(pl.col("provider_key_id").is_not_null())
    assert (routed["provider_key_id"] // 100 == routed["provider_id"]).all()
    types_per_key = routed.group_by("provider_key_id").agg(pl.col("provider_type").n_unique())
    assert (types_per_key["provider_type"] == 1).all()
    assert 8 <= routed["provider_id"].n_unique() <= 12
    assert set(routed["provider_type"]) == {"openai", "anthropic", "gemini", "codex", "claude_code"}
    assert set(logs["group"]) == {"default", "vip", "batch"}
    assert "通义千问-max" in set(logs["model"])
    assert logs["client_ip"].n_unique() <= 64


def test_status_mix_and_refusals(logs: pl.DataFrame) -> None:
    quiet = logs.filter(~pl.any_horizontal(in_window(i) for i in INCIDENTS[:4]))
    assert 0.005 < share(quiet, ERROR) < 0.02
    assert 0.001 < share(quiet, LIMITED) < 0.006
    refused = quiet.filter(pl.col("provider_id").is_null())
    assert 0.001 < refused.height / quiet.height < 0.004
    assert set(refused["status_code"]) == {401, 403, 429}
    assert refused["provider_type"].is_null().all() and refused["provider_key_id"].is_null().all()
    ok = logs["status_code"] == 200
    assert (logs["error_type"].is_null() == ok).all() and (logs["error_message"].is_null() == ok).all()
    assert {"invalid_request", "upstream_error", "timeout", "rate_limited"} <= set(logs["error_type"])
    assert set(logs["status_code"]) == {200, 400, 401, 403, 429, 500, 502, 503, 504}


def test_usage_columns(logs: pl.DataFrame) -> None:
    ok = logs.filter(pl.col("status_code") == 200)
    failed = logs.filter(pl.col("status_code") != 200)
    assert 0.5 < share(logs, pl.col("is_stream")) < 0.7
    assert (logs["ttft_ms"].is_not_null() == (logs["is_stream"] & (logs["status_code"] == 200))).all()
    assert ok.filter(pl.col("ttft_ms") > pl.col("latency_ms")).is_empty()
    latency = ok.select(low=pl.col("latency_ms").quantile(0.05), high=pl.col("latency_ms").quantile(0.95))
    assert latency["low"].item() > 100 and latency["high"].item() > 10_000
    by_model = ok.group_by("model").agg(pl.col("latency_ms").median()).sort("latency_ms")
    assert by_model["model"][0] in {"gpt-4o-mini", "gemini-1.5-flash", "claude-3-haiku"}
    assert (failed["completion_tokens"] == 0).all() and (failed["quota_cost"] == 0).all()
    assert (
        (ok["quota_cost"] > 0).all()
        and (ok["completion_tokens"] > 0).all()
        and (ok["prompt_tokens"] > 0).all()
    )


# --- incidents -------------------------------------------------------------------------------------------


def test_incident_table() -> None:
    alert_types = ["provider_down", "error_spike", "traffic_spike", "rate_limit", "quota_exceeded"]
    assert [i.alert_type for i in INCIDENTS] == alert_types
    windows = sorted((i.start, i.end) for i in INCIDENTS)
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(windows))
    assert all(dt.timedelta(0) <= i.start < i.end <= dt.timedelta(days=1) for i in INCIDENTS)
    assert len({i.start // dt.timedelta(hours=1) for i in INCIDENTS}) == len(INCIDENTS)
    with pytest.raises(AttributeError):
        INCIDENTS[0].scope_id = 1  # type: ignore[misc]


def test_provider_key_outage(traffic: pl.DataFrame) -> None:
    outage = INCIDENT["provider_key_outage"]
    pk = traffic.filter(pl.col("provider_key_id") == outage.scope_id)
    inside = pk.filter(in_window(outage))
    failed = inside.filter(FAILURE)
    assert inside.height >= 50 * traffic.height / 100_000
    assert failed.height >= 0.9 * inside.height
    assert set(failed["status_code"]) == {502, 503} and set(failed["error_type"]) == {"upstream_error"}
    assert share(pk.filter(~in_window(outage)), FAILURE) < 0.1


def test_key_error_spike(traffic: pl.DataFrame) -> None:
    spike = INCIDENT["key_error_spike"]
    key = traffic.filter(pl.col("key_id") == spike.scope_id)
    assert key.height > 0.03 * traffic.height  # a busy key
    inside = key.filter(in_window(spike))
    assert near(inside.filter(ERROR).height, inside.height, 0.4)
    assert share(key.filter(~in_window(spike)), ERROR) < 0.03


def test_master_traffic_spike(traffic: pl.DataFrame) -> None:
    surge = INCIDENT["master_traffic_spike"]
    master = traffic.filter(pl.col("master_id") == surge.scope_id)
    assert 0.005 < master.height / traffic.height < 0.05  # mid-size
    start, end = surge.window(DAY)
    inside = master.filter(in_window(surge)).height
    hour_before = pl.col("created_at").is_between(start - dt.timedelta(hours=1), start, closed="left")
    before = master.filter(hour_before).height
    rate_ratio = (inside / ((end - start) / dt.timedelta(minutes=1))) / (before / 60)
    tolerance = 3 * math.sqrt(1 / inside + 1 / before) + 0.1  # relative, of Poisson counts
    assert abs(math.log(rate_ratio / 8)) <= tolerance
    assert rate_ratio > 4


def test_master_rate_limit_storm(traffic: pl.DataFrame) -> None:
    storm = INCIDENT["master_rate_limit_storm"]
    master = traffic.filter(pl.col("master_id") == storm.scope_id)
    inside = master.filter(in_window(storm))
    assert near(inside.filter(LIMITED).height, inside.height, 0.6)
    assert share(master.filter(~in_window(storm)), LIMITED) < 0.01


@pytest.mark.parametrize(("rows", "days"), [(20_000, 3), (200_000, 1), (1_000_000, 1)])
def test_near_quota_key(rows: int, days: int) -> None:
    quota = INCIDENT["key_near_quota"]
    limit, period = DEMO_QUOTAS[quota.scope_id]
    assert period == "daily"
    for day, table in generate(days, rows, SEED, end_day=DAY):
        key = frame(table).filter(pl.col("key_id") == quota.scope_id)
        spent = key["quota_cost"].cum_sum()
        assert 0.9 * limit <= spent[-1] <= limit
        crossed = key.filter(spent >= 0.9 * limit)["created_at"][0]
        start, end = quota.window(day)
        assert start <= crossed < end


def test_other_quotas_stay_comfortable(logs: pl.DataFrame) -> None:
    period_days = {"daily": 1, "weekly": 7, "monthly": 31, "never": 30}
    assert len(DEMO_QUOTAS) >= 3 and {period for _, period in DEMO_QUOTAS.values()} <= set(period_days)
    for key_id, (limit, period) in DEMO_QUOTAS.items():
        used = logs.filter(pl.col("key_id") == key_id)["quota_cost"].sum()
        assert used > 0
        if key_id != INCIDENT["key_near_quota"].scope_id:  # even at 5,000,000 rows a day, all period
            assert used * 25 * period_days[period] < 0.5 * limit


# --- quiet traffic -------------------------------------------------------------------------------------


def noisy_windows(
    logs: pl.DataFrame, scope: str, failed: pl.Expr, threshold: float, incident: Incident
) -> list[dict[str, object]]:
    """5-minute windows (one starting every minute) of >= 20 requests of a scope whose failure share
    reaches the threshold, leaving out the incident's own scope in windows overlapping its window."""
    start, end = incident.window(DAY)
    windows = (
        logs.filter(pl.col(scope).is_not_null())
        .group_by_dynamic("created_at", every="1m", period="5m", group_by=scope)
        .agg(n=pl.len(), failed=failed.sum())
        .filter(pl.col("n") >= 20)
        .filter(
            (pl.col(scope) != incident.scope_id)
            | (pl.col("created_at") >= end)
            | (pl.col("created_at") + pl.duration(minutes=5) <= start)
        )
    )
    assert windows.height > 1_000  # enough judged windows for the check to mean something
    return windows.filter(pl.col("failed") >= threshold * pl.col("n")).head(5).to_dicts()


def test_keys_are_quiet_outside_the_error_spike(logs: pl.DataFrame) -> None:
    assert noisy_windows(logs, "key_id", ERROR, 0.10, INCIDENT["key_error_spike"]) == []


def test_provider_keys_are_quiet_outside_the_outage(logs: pl.DataFrame) -> None:
    assert noisy_windows(logs, "provider_key_id", FAILURE, 0.5, INCIDENT["provider_key_outage"]) == []


def test_masters_are_quiet_outside_the_storm(logs: pl.DataFrame) -> None:
    assert noisy_windows(logs, "master_id", LIMITED, 0.05, INCIDENT["master_rate_limit_storm"]) == []


def test_no_baseline_failure_near_midnight_so_windows_across_days_stay_quiet(logs: pl.DataFrame) -> None:
    edges = logs.filter(
        (pl.col("created_at") < MIDNIGHT + dt.timedelta(minutes=5))
        | (pl.col("created_at") >= MIDNIGHT + dt.timedelta(days=1, minutes=-5))
    )
    assert edges.height > 100
    assert (edges["status_code"] == 200).all()
