-- alert_rate_limit: requests and 429 answers per master in [$start, $end), cut into buckets from $start.
-- Grain: one row per (bucket, master_id) with at least one request.
-- Parameters: $start, $end (TIMESTAMPTZ, the half-open window); $start_day, $end_day (DATE, first and last
--   UTC day the window touches: the partition filter that keeps other days' files unopened);
--   $bucket_seconds (BIGINT: the window length for one bucket per master, 60 for a minute-by-minute replay).
-- Output: bucket (BIGINT, 0 = the bucket starting at $start), master_id, requests, rate_limited
SELECT
    -- A window that fits one bucket is bucket 0 throughout: a constant, folded when planned, so a live
    -- evaluation pays no per-row arithmetic.
    CASE WHEN epoch_us($end) - epoch_us($start) <= CAST($bucket_seconds AS BIGINT) * 1000000 THEN 0
         ELSE (epoch_us(created_at) - epoch_us($start)) // (CAST($bucket_seconds AS BIGINT) * 1000000)
    END AS bucket,
    master_id,
    count(*) AS requests,
    count(*) FILTER (WHERE is_rate_limited(status_code)) AS rate_limited
FROM log_records
WHERE date BETWEEN $start_day AND $end_day
  AND created_at >= $start AND created_at < $end
GROUP BY ALL
ORDER BY bucket, master_id
