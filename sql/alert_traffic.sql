-- alert_traffic: requests and total tokens per master in [$start, $end), in buckets: the figures behind
-- traffic_spike's QPS (summed over masters), RPM/TPM (a minutes window) and RPD/TPD (the UTC day so far).
-- Grain: one row per (bucket, master_id) with at least one request.
-- Parameters: $start, $end (TIMESTAMPTZ, the half-open window); $start_day, $end_day (DATE, first and last
--   UTC day the window touches, for partition pruning); $bucket_seconds (BIGINT, bucket length from $start).
-- Output: bucket (BIGINT), master_id, requests, tokens (sum of total_tokens)
SELECT
    -- A window that fits one bucket is bucket 0 throughout: a constant, folded when planned, so a live
    -- evaluation pays no per-row arithmetic.
    CASE WHEN epoch_us($end) - epoch_us($start) <= CAST($bucket_seconds AS BIGINT) * 1000000 THEN 0
         ELSE (epoch_us(created_at) - epoch_us($start)) // (CAST($bucket_seconds AS BIGINT) * 1000000)
    END AS bucket,
    master_id,
    count(*) AS requests,
    CAST(sum(total_tokens(prompt_tokens, completion_tokens)) AS BIGINT) AS tokens
FROM log_records
WHERE date BETWEEN $start_day AND $end_day
  AND created_at >= $start AND created_at < $end
GROUP BY ALL
ORDER BY bucket, master_id
