-- alert_traffic_live: every figure of one live traffic_spike evaluation, per master, in a single scan of
-- [$start, $end): requests and tokens in the UTC day so far [$day_start, $end) (RPD/TPD), in the RPM/TPM
-- window [$window_start, $end), requests in the surge window [$surge_start, $end) and in its baseline
-- [$baseline_start, $surge_start) of $baseline_minutes minutes; and how many of those baseline minutes hold
-- any record at all (of any master; a bitmap per master, OR-ed over all): the surge compares rates per
-- covered minute, so the start of the lake or an ingest gap does not read as a quiet baseline followed by
-- a surge. (A replay sums alert_traffic's one-minute buckets instead.)
-- Grain: one row per master with a request in [$start, $end).
-- Parameters: $start (TIMESTAMPTZ, the earliest of the four starts), $day_start, $baseline_start,
--   $surge_start, $window_start, $end (TIMESTAMPTZ); $baseline_minutes (INTEGER, the baseline's length);
--   $start_day, $end_day (DATE, first and last UTC day touched, for partition pruning).
-- Output: master_id, day_requests, day_tokens, window_requests, window_tokens, surge_requests,
--   baseline_requests, baseline_minutes (the same on every row)
WITH recent AS (
    SELECT master_id,
           created_at >= $day_start AS in_day,
           created_at >= $window_start AS in_window,
           created_at >= $surge_start AS in_surge,
           created_at >= $baseline_start AND created_at < $surge_start AS in_baseline,
           total_tokens(prompt_tokens, completion_tokens) AS tokens,
           (epoch_us(created_at) - epoch_us($baseline_start)) // 60000000 AS minute
    FROM log_records
    WHERE date BETWEEN $start_day AND $end_day
      AND created_at >= $start AND created_at < $end
), per_master AS (
    SELECT
        master_id,
        count(*) FILTER (WHERE in_day) AS day_requests,
        coalesce(CAST(sum(tokens) FILTER (WHERE in_day) AS BIGINT), 0) AS day_tokens,
        count(*) FILTER (WHERE in_window) AS window_requests,
        coalesce(CAST(sum(tokens) FILTER (WHERE in_window) AS BIGINT), 0) AS window_tokens,
        count(*) FILTER (WHERE in_surge) AS surge_requests,
        count(*) FILTER (WHERE in_baseline) AS baseline_requests,
        bitstring_agg(minute, 0, $baseline_minutes - 1) FILTER (WHERE in_baseline) AS minutes
    FROM recent
    GROUP BY master_id
)
SELECT master_id, day_requests, day_tokens, window_requests, window_tokens, surge_requests, baseline_requests,
       coalesce(bit_count(bit_or(minutes) OVER ()), 0) AS baseline_minutes
FROM per_master
ORDER BY master_id
