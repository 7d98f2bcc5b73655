-- rollup_keep: the stored hourly rollup rows of one day, except some hours (which are being recomputed).
-- Grain: as rollups_hourly (hour x master x key x model x provider x provider key x status class).
-- Parameters: $day (DATE, the partition), $hours (TIMESTAMPTZ[], the hours to leave out).
-- Output: the rollups_hourly columns (without the date partition column).
SELECT * EXCLUDE (date)
FROM rollups_hourly
WHERE date = $day AND NOT list_contains($hours, hour)
