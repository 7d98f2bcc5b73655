-- latency_hours: per-dimension latency and ttft histograms recomputed from raw records, for some hours
-- of one day. Mergeable over any set of hours: p50/p95/p99 of any period within 1 %.
-- Grain: hour x dim x id x metric x bucket; dim is 'gateway' (id NULL), 'master', 'key', 'model',
--   'provider' or 'provider_key' (id the value as text; NULL for records without a provider);
--   metric is 'latency' (latency_ms) or 'ttft' (ttft_ms of records that have one).
-- Parameters: $day (DATE, the partition), $start, $end (TIMESTAMPTZ, [start, end) spans the hours),
--   $hours (TIMESTAMPTZ[], the hours wanted).
-- Output: hour, dim, id, metric, b (SMALLINT, latency_bucket()), n (BIGINT records), sorted.
WITH r AS MATERIALIZED (
    SELECT date_trunc('hour', created_at) AS hour, master_id, key_id, model, provider_id, provider_key_id,
           latency_ms, ttft_ms
    FROM log_records
    WHERE date = $day
      AND created_at >= $start AND created_at < $end
      AND (len($hours) = 24 OR list_contains($hours, date_trunc('hour', created_at)))
),
measured AS (
    SELECT * EXCLUDE (latency_ms, ttft_ms), 'latency' AS metric, CAST(latency_bucket(latency_ms) AS SMALLINT) AS b
    FROM r
    UNION ALL
    SELECT * EXCLUDE (latency_ms, ttft_ms), 'ttft', CAST(latency_bucket(ttft_ms) AS SMALLINT)
    FROM r
    WHERE ttft_ms IS NOT NULL
)
SELECT
    hour,
    CASE
        WHEN GROUPING(master_id) = 0 THEN 'master'
        WHEN GROUPING(key_id) = 0 THEN 'key'
        WHEN GROUPING(model) = 0 THEN 'model'
        WHEN GROUPING(provider_id) = 0 THEN 'provider'
        WHEN GROUPING(provider_key_id) = 0 THEN 'provider_key'
        ELSE 'gateway'
    END AS dim,
    CASE
        WHEN GROUPING(master_id) = 0 THEN CAST(master_id AS VARCHAR)
        WHEN GROUPING(key_id) = 0 THEN CAST(key_id AS VARCHAR)
        WHEN GROUPING(model) = 0 THEN model
        WHEN GROUPING(provider_id) = 0 THEN CAST(provider_id AS VARCHAR)
        WHEN GROUPING(provider_key_id) = 0 THEN CAST(provider_key_id AS VARCHAR)
    END AS id,
    metric,
    b,
    count(*) AS n
FROM measured
GROUP BY GROUPING SETS (
    (hour, metric, b), (hour, master_id, metric, b), (hour, key_id, metric, b), (hour, model, metric, b),
    (hour, provider_id, metric, b), (hour, provider_key_id, metric, b)
)
ORDER BY hour, dim, id NULLS FIRST, metric, b
