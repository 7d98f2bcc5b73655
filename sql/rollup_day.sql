-- rollup_day: the daily rollup of one closed day, merged from its hourly rollup rows.
-- Grain: day x master_id x key_id x model x provider_id x provider_key_id (status classes merged:
--   status_class is NULL), so a month of dashboard reads touches ~30 small files.
-- Parameters: $day (DATE).
-- Output: the rollups_daily columns (= rollups_hourly's; hour is the day's 00:00; measures merged as
--   definitions.sql declares), sorted.
SELECT
    CAST($day AS TIMESTAMPTZ) AS hour,
    master_id,
    key_id,
    model,
    provider_id,
    provider_key_id,
    CAST(NULL AS VARCHAR) AS status_class,
    CAST(sum(COLUMNS(lambda c: summed_measure(c))) AS BIGINT),
    max(COLUMNS(lambda c: max_measure(c)))
FROM rollups_hourly
WHERE date = $day
GROUP BY master_id, key_id, model, provider_id, provider_key_id
ORDER BY master_id, key_id, model, provider_id NULLS FIRST, provider_key_id NULLS FIRST
