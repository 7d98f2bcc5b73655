-- rollup_add: hourly rollup rows of some hours of a day with new rows added: the rows held for those hours
--   (the relation rollup_stored the engine points at rollups_hourly when it folds newly published files into
--   hours whose rows it knows, or at rollups_base for a day whose raw partition the log cleaner dropped)
--   plus rollup_fresh (rollup_hours over the new records only).
-- Grain: as rollups_hourly (hour x master_id x key_id x model x provider_id x provider_key_id x status_class).
-- Parameters: $day (DATE, the partition), $hours (TIMESTAMPTZ[], the hours wanted; rollup_fresh holds
--   rows of these hours only).
-- Output: the rollups_hourly columns, sorted by the grain: counts and sums added, maxima the larger.
WITH parts AS (
    SELECT * EXCLUDE (date) FROM rollup_stored WHERE date = $day AND list_contains($hours, hour)
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
