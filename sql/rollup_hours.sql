-- rollup_hours: hourly rollup rows recomputed from raw log records, for some hours of one day.
-- Grain: hour x master_id x key_id x model x provider_id x provider_key_id x status_class.
-- Parameters: $day (DATE, the partition), $start, $end (TIMESTAMPTZ, [start, end) spans the hours and
--   lets DuckDB skip files and row groups), $hours (TIMESTAMPTZ[], the hours wanted).
-- Output: the rollups_hourly columns (engine/stats/rollups.py ROLLUP_SCHEMA): counts and BIGINT sums,
--   latency sum/max, stream and ttft sums/counts/max, sorted by the grain. (Latency histograms are
--   kept per dimension in latency_hourly, see latency_records.sql.)
-- The records are grouped by the hour's number and the status code's hundreds, and only the groups
-- are turned into a timestamp and a '2xx' text: per record, date_trunc on a TIMESTAMPTZ and building a
-- string cost more than the aggregation itself.
WITH grouped AS (
    SELECT
        epoch_us(created_at) // 3600000000 AS hour_number,
        master_id,
        key_id,
        model,
        provider_id,
        provider_key_id,
        status_code // 100 AS hundreds,
        count(*) AS requests,
        count(*) FILTER (WHERE is_success(status_code)) AS successes,
        count(*) FILTER (WHERE is_error(status_code)) AS errors,
        count(*) FILTER (WHERE is_rate_limited(status_code)) AS rate_limited,
        count(*) FILTER (WHERE is_provider_failure(provider_key_id, status_code)) AS provider_failures,
        CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens,
        CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
        CAST(sum(total_tokens(prompt_tokens, completion_tokens)) AS BIGINT) AS total_tokens,
        CAST(sum(quota_cost) AS BIGINT) AS quota_cost,
        CAST(sum(latency_ms) AS BIGINT) AS latency_sum,
        max(latency_ms) AS latency_max,
        count(*) FILTER (WHERE is_stream) AS streams,
        count(ttft_ms) AS ttft_n,
        CAST(sum(ttft_ms) AS BIGINT) AS ttft_sum,
        max(ttft_ms) AS ttft_max
    FROM log_records
    WHERE date = $day
      AND created_at >= $start AND created_at < $end
      AND (len($hours) = 24 OR list_contains($hours, date_trunc('hour', created_at)))
    GROUP BY ALL
)
SELECT
    make_timestamptz(hour_number * 3600000000) AS hour,
    master_id,
    key_id,
    model,
    provider_id,
    provider_key_id,
    status_class(CAST(hundreds * 100 AS SMALLINT)) AS status_class,
    * EXCLUDE (hour_number, master_id, key_id, model, provider_id, provider_key_id, hundreds)
FROM grouped
ORDER BY hour, master_id, key_id, model, provider_id NULLS FIRST, provider_key_id NULLS FIRST, status_class
