-- daily_stats_read: stored daily stats rows of a day range at one grain, for the API and the CLI.
-- Grain: day x (gateway | one id of the grain).
-- Parameters: $first, $last (DATE, both included), $grain ('gateway', 'master', ...),
--   $master_id (BIGINT or NULL = every master; only meaningful with grain 'master').
-- Output: every daily_stats column, date first, ordered by date then requests descending.
SELECT date, * EXCLUDE (date)
FROM daily_stats
WHERE date >= $first AND date <= $last
  AND grain = $grain
  AND ($master_id IS NULL OR master_id = $master_id)
ORDER BY date, requests DESC
