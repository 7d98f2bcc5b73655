-- latency_records: the raw records of some hours of one day, cut down to what the latency histograms
-- count: the hour, the id of every histogram dimension and the latency and ttft buckets. The engine
-- counts them per dimension in one pass (engine/stats/histogram_counts.py) instead of grouping the
-- rows once per dimension.
-- Grain: one row per raw record.
-- Parameters: $day (DATE, the partition), $start, $end (TIMESTAMPTZ, [start, end) spans the hours and
--   lets DuckDB skip files and row groups), $hours (TIMESTAMPTZ[], the hours wanted).
-- Output: hour (TIMESTAMPTZ), master_id, key_id, model, provider_id, provider_key_id,
--   lb (SMALLINT, latency_bucket(latency_ms)), tb (SMALLINT, latency_bucket(ttft_ms), NULL without a ttft).
SELECT
    date_trunc('hour', created_at) AS hour,
    master_id,
    key_id,
    model,
    provider_id,
    provider_key_id,
    CAST(latency_bucket(latency_ms) AS SMALLINT) AS lb,
    CAST(latency_bucket(ttft_ms) AS SMALLINT) AS tb
FROM log_records
WHERE date = $day
  AND created_at >= $start AND created_at < $end
  AND (len($hours) = 24 OR list_contains($hours, date_trunc('hour', created_at)))
