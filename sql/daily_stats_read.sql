-- daily_stats_read: stored daily stats rows of a day range at one grain, for the API and the CLI.
-- Grain: day x (gateway | one id of the grain).
-- Parameters: $first, $last (DATE, both included), $grain ('gateway', 'master', ...),
--   $master_id, $key_id, $model, $provider_id, $provider_key_id (equality filters on the row's id
--   columns, NULL = any; a row carries only its own grain's id).
-- Output: every daily_stats column, date first, ordered by date then requests descending.
SELECT date, * EXCLUDE (date)
FROM daily_stats
WHERE date >= $first AND date <= $last
  AND grain = $grain
  AND ($master_id IS NULL OR master_id = $master_id)
  AND ($key_id IS NULL OR key_id = $key_id)
  AND ($model IS NULL OR model = $model)
  AND ($provider_id IS NULL OR provider_id = $provider_id)
  AND ($provider_key_id IS NULL OR provider_key_id = $provider_key_id)
ORDER BY date, requests DESC
