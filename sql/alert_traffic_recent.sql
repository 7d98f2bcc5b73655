-- alert_traffic_recent: per master, the live figures of traffic_spike's minute and surge checks in one scan:
-- requests and tokens in the RPM/TPM window [$window_start, $end), requests in the surge window
-- [$surge_start, $end) and in its baseline [$baseline_start, $surge_start), and how many minutes of the baseline hold
-- any record at all (of any master): the baseline rate is measured over those minutes, so the start of the
-- lake or an ingest gap does not read as a quiet baseline followed by a surge.
-- Grain: one row per master with at least one request in [$start, $end).
-- Parameters: $start, $baseline_start, $surge_start, $window_start, $end (TIMESTAMPTZ; $start is the
--   earliest of the other starts); $start_day, $end_day (DATE, first and last UTC day touched, for pruning).
-- Output: master_id, window_requests, window_tokens, surge_requests, baseline_requests, baseline_minutes
WITH recent AS (
    SELECT master_id,
           created_at >= $window_start AS in_window,
           created_at >= $surge_start AS in_surge,
           created_at >= $baseline_start AND created_at < $surge_start AS in_baseline,
           total_tokens(prompt_tokens, completion_tokens) AS tokens,
           (epoch_us(created_at) - epoch_us($baseline_start)) // 60000000 AS minute
    FROM log_records
    WHERE date BETWEEN $start_day AND $end_day
      AND created_at >= $start AND created_at < $end
)
SELECT
    master_id,
    count(*) FILTER (WHERE in_window) AS window_requests,
    coalesce(CAST(sum(tokens) FILTER (WHERE in_window) AS BIGINT), 0) AS window_tokens,
    count(*) FILTER (WHERE in_surge) AS surge_requests,
    count(*) FILTER (WHERE in_baseline) AS baseline_requests,
    (SELECT count(DISTINCT minute) FROM recent WHERE in_baseline) AS baseline_minutes
FROM recent
GROUP BY master_id
ORDER BY master_id
