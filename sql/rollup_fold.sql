-- rollup_fold: hourly rollup rows of some hours of a day with the records of newly published files folded
--   in: the rows rollups_hourly holds for those hours plus the rows of the new files' records (the
--   relation rollup_fresh the engine registers: rollup_hours over those files only). The refresh folds
--   only what is new into the hours whose rows it knows to be exactly the records of the files it read.
-- Grain: as rollups_hourly (hour x master_id x key_id x model x provider_id x provider_key_id x status_class).
-- Parameters: $day (DATE, the partition), $hours (TIMESTAMPTZ[], the hours folded; rollup_fresh holds rows
--   of these hours only).
-- Output: the rollups_hourly columns, sorted by the grain: counts and sums added, maxima the larger.
WITH parts AS (
    SELECT * EXCLUDE (date) FROM rollups_hourly WHERE date = $day AND list_contains($hours, hour)
    UNION ALL BY NAME
    SELECT * FROM rollup_fresh
)
SELECT
    hour,
    master_id,
    key_id,
    model,
    provider_id,
    provider_key_id,
    status_class,
    CAST(sum(COLUMNS(lambda c: summed_measure(c))) AS BIGINT),
    max(COLUMNS(lambda c: max_measure(c)))
FROM parts
GROUP BY hour, master_id, key_id, model, provider_id, provider_key_id, status_class
ORDER BY hour, master_id, key_id, model, provider_id NULLS FIRST, provider_key_id NULLS FIRST, status_class
