-- alert_error_spike: requests and errors (is_error: >= 400, 429 excluded) per key in [$start, $end), in buckets.
-- Grain: one row per (bucket, key_id) with at least one request.
-- Parameters: $start, $end (TIMESTAMPTZ, the half-open window); $start_day, $end_day (DATE, first and last
--   UTC day the window touches, for partition pruning); $bucket_seconds (BIGINT, bucket length from $start).
-- Output: bucket (BIGINT), key_id, master_id (the key's master), requests, errors
SELECT
    -- A window that fits one bucket is bucket 0 throughout: a constant, folded when planned, so a live
    -- evaluation pays no per-row arithmetic.
    CASE WHEN epoch_us($end) - epoch_us($start) <= CAST($bucket_seconds AS BIGINT) * 1000000 THEN 0
         ELSE (epoch_us(created_at) - epoch_us($start)) // (CAST($bucket_seconds AS BIGINT) * 1000000)
    END AS bucket,
    key_id,
    max(master_id) AS master_id,
    count(*) AS requests,
    count(*) FILTER (WHERE is_error(status_code)) AS errors
FROM log_records
WHERE date BETWEEN $start_day AND $end_day
  AND created_at >= $start AND created_at < $end
GROUP BY ALL
ORDER BY bucket, key_id
