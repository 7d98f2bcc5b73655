-- stats_live_fine: the raw part of a stats answer's counts from some lake files (the reader keeps it
-- file by file, see engine/stats/live.py), summed down like stats_fine.
-- Grain: g1 x g2 x model x master_id x key_id.
-- Parameters: $files (VARCHAR[], Parquet files of log_records); $raw_from, $split, $end (NULL: to the
--   file's end), $raw_hours (the plan's raw window, see stats_sources.sql); $master_id, $key_id,
--   $model, $provider_id, $provider_key_id (filters, NULL = any); $group_by, $then_by;
--   $tz_starts, $tz_offsets (the zone's UTC offsets, see stats_sources.sql).
-- Output: the stats_fine columns.
SELECT *
FROM stats_raw_fine($files, $raw_from, $split, $end, $raw_hours, $master_id, $key_id, $model, $provider_id,
                    $provider_key_id, $group_by, $then_by, $tz_starts, $tz_offsets)
