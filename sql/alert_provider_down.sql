-- alert_provider_down: requests and provider failures (is_provider_failure) per provider key in [$start, $end).
-- Grain: one row per (bucket, provider_key_id) with at least one routed request (provider_key_id not null).
-- Parameters: $start, $end (TIMESTAMPTZ, the half-open window); $start_day, $end_day (DATE, first and last
--   UTC day the window touches, for partition pruning); $bucket_seconds (BIGINT, bucket length from $start).
-- Output: bucket (BIGINT), provider_key_id, requests, failures
SELECT
    -- A window that fits one bucket is bucket 0 throughout: a constant, folded when planned, so a live
    -- evaluation pays no per-row arithmetic.
    CASE WHEN epoch_us($end) - epoch_us($start) <= CAST($bucket_seconds AS BIGINT) * 1000000 THEN 0
         ELSE (epoch_us(created_at) - epoch_us($start)) // (CAST($bucket_seconds AS BIGINT) * 1000000)
    END AS bucket,
    provider_key_id,
    count(*) AS requests,
    count(*) FILTER (WHERE is_provider_failure(provider_key_id, status_code)) AS failures
FROM log_records
WHERE date BETWEEN $start_day AND $end_day
  AND created_at >= $start AND created_at < $end
  AND provider_key_id IS NOT NULL
GROUP BY ALL
ORDER BY bucket, provider_key_id
