-- alert_traffic_surge: per master, requests in the surge window [$window_start, $end) and in the baseline
-- [$start, $window_start) before it, with how many minutes of the baseline hold any record at all (of any
-- master): the baseline rate is measured over those minutes, so the start of the lake or an ingest gap
-- does not read as a quiet baseline followed by a surge.
-- Grain: one row per master with at least one request in [$start, $end).
-- Parameters: $start, $window_start, $end (TIMESTAMPTZ); $start_day, $end_day (DATE, first and last UTC day
--   touched, for partition pruning).
-- Output: master_id, requests (surge window), baseline_requests, baseline_minutes (minutes counted from
--   $start that hold a record, any master)
WITH recent AS (
    SELECT master_id,
           created_at >= $window_start AS in_window,
           (epoch_us(created_at) - epoch_us($start)) // 60000000 AS minute
    FROM log_records
    WHERE date BETWEEN $start_day AND $end_day
      AND created_at >= $start AND created_at < $end
)
SELECT
    master_id,
    count(*) FILTER (WHERE in_window) AS requests,
    count(*) FILTER (WHERE NOT in_window) AS baseline_requests,
    (SELECT count(DISTINCT minute) FROM recent WHERE NOT in_window) AS baseline_minutes
FROM recent
GROUP BY master_id
ORDER BY master_id
